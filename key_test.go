package idempotency_test

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/idemkit/idempotency"
)

func TestValidateKey(t *testing.T) {
	for _, tc := range []struct {
		key string
		ok  bool
	}{
		{"a", true},
		{"order-2026-11-26/42", true},
		{strings.Repeat("k", idempotency.MaxKeyLen), true},
		{"clé-ünïcødé ✓", true},
		{"spaces are fine", true},
		{"", false},
		{strings.Repeat("k", idempotency.MaxKeyLen+1), false},
		{strings.Repeat("k", 300), false},
		{"new\nline", false},
		{"nul\x00", false},
		{"del\x7f", false},
		{"c1\u0085control", false},
		{"bad utf8 \xff", false},
	} {
		err := idempotency.ValidateKey(tc.key)
		if (err == nil) != tc.ok {
			t.Errorf("ValidateKey(%q) = %v, want ok=%v", tc.key, err, tc.ok)
		}
		if err != nil && !errors.Is(err, idempotency.ErrInvalidKey) {
			t.Errorf("ValidateKey(%q) = %v, want it to wrap ErrInvalidKey", tc.key, err)
		}
	}
}

func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"a", "", "a\nb", "\xff", strings.Repeat("x", 256), "é"} {
		f.Add(s)
	}
	f.Add("abcdefgh\x7fabcdefgh")
	f.Add("abcdefghabcdefg\x1f")
	f.Fuzz(func(t *testing.T, key string) {
		// The rule, spelled out rune by rune.
		want := key != "" && len(key) <= idempotency.MaxKeyLen && utf8.ValidString(key)
		for _, r := range key {
			if r < 0x20 || (r >= 0x7f && r < 0xa0) {
				want = false
			}
		}
		if got := idempotency.ValidateKey(key) == nil; got != want {
			t.Fatalf("ValidateKey(%q) ok = %v, want %v", key, got, want)
		}
	})
}

func TestFingerprint(t *testing.T) {
	a := idempotency.Fingerprint([]byte("ab"), []byte("c"))
	b := idempotency.Fingerprint([]byte("a"), []byte("bc"))
	if a == b {
		t.Error(`Fingerprint("ab","c") == Fingerprint("a","bc")`)
	}
	if a != idempotency.Fingerprint([]byte("ab"), []byte("c")) {
		t.Error("Fingerprint is not deterministic")
	}
	if len(a) != 32 {
		t.Errorf("len(Fingerprint) = %d, want 32 hex digits", len(a))
	}
}

// TestRootImportsOnlyStdlib keeps the root module free of transports and
// backends: its go.mod requires nothing, and every dependency of its packages
// (core, storetest, idemhttp, dispatcher), tests included, is in the standard
// library or in the module itself.
func TestRootImportsOnlyStdlib(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "-test", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", "./...")
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	const mod = "github.com/idemkit/idempotency"
	for _, p := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		p, _, _ = strings.Cut(p, " ") // "pkg [pkg.test]"
		p = strings.TrimSuffix(strings.TrimSuffix(p, ".test"), "_test")
		if p != mod && !strings.HasPrefix(p, mod+"/") {
			t.Errorf("the root module depends on non-standard package %s", p)
		}
	}
	gomod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(gomod), "require") {
		t.Errorf("the root go.mod requires modules:\n%s", gomod)
	}
}
