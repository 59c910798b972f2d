package idempotency_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
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

func TestRecordKeyInjective(t *testing.T) {
	pairs := [][2]string{{"a:b", "c"}, {"a", "b:c"}, {"ab", ""}, {"", "ab"}, {"a", "b"}, {"a\x01", "b"}, {"a", "\x01b"}}
	for _, secret := range [][]byte{nil, []byte("s3cret")} {
		seen := map[[32]byte][2]string{}
		for _, p := range pairs {
			h := idempotency.RecordKey(secret, p[0], p[1])
			if q, dup := seen[h]; dup {
				t.Fatalf("RecordKey(%q) collides with %q", p, q)
			}
			seen[h] = p
		}
	}
	if idempotency.RecordKey(nil, "k", "i") == idempotency.RecordKey([]byte("s"), "k", "i") {
		t.Error("the secret does not change the record key")
	}
	if idempotency.RecordKey([]byte("s"), "k", "i") != idempotency.RecordKey([]byte("s"), "k", "i") {
		t.Error("RecordKey is not deterministic")
	}
}

// FuzzRecordKey checks that two distinct (key, identity) pairs never share
// a record name: the length-prefixed encoding is injective.
func FuzzRecordKey(f *testing.F) {
	f.Add("a:b", "c", "a", "b:c")
	f.Add("ab", "", "a", "b")
	f.Fuzz(func(t *testing.T, k1, i1, k2, i2 string) {
		if k1 == k2 && i1 == i2 {
			return
		}
		if idempotency.RecordKey(nil, k1, i1) == idempotency.RecordKey(nil, k2, i2) {
			t.Fatalf("(%q, %q) and (%q, %q) share a record key", k1, i1, k2, i2)
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

func TestNewOwnerIsRandom(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		o := idempotency.NewOwner()
		if len(o) < 26 || seen[o] {
			t.Fatalf("NewOwner = %q: short or repeated", o)
		}
		seen[o] = true
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

// TestRecordKeyReference pins the record name to its definition, so that a
// faster implementation cannot silently rename every stored record.
func TestRecordKeyReference(t *testing.T) {
	enc := func(parts ...string) []byte {
		var b []byte
		for _, p := range parts {
			b = binary.AppendUvarint(b, uint64(len(p)))
			b = append(b, p...)
		}
		return b
	}
	long := strings.Repeat("i", 300) // past the stack buffer
	for _, p := range [][2]string{{"k", "alice"}, {"", ""}, {"order-42", long}} {
		want := sha256.Sum256(append([]byte("idemkit/record/v1\x00"), enc(p[0], p[1])...))
		if got := idempotency.RecordKey(nil, p[0], p[1]); got != want {
			t.Errorf("RecordKey(nil, %q, …) = %x, want %x", p[0], got, want)
		}
		mac := hmac.New(sha256.New, []byte("secret"))
		mac.Write(enc(p[0], p[1]))
		var wantMAC [32]byte
		copy(wantMAC[:], mac.Sum(nil))
		h := idempotency.NewRecordHasher([]byte("secret"))
		for range 2 { // the pooled state is reset between uses
			if got := h.Sum(p[0], p[1]); got != wantMAC {
				t.Errorf("RecordHasher.Sum(%q, …) = %x, want %x", p[0], got, wantMAC)
			}
		}
	}
}

func TestRecordHasherAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector; run without -race")
	}
	plain, keyed := idempotency.NewRecordHasher(nil), idempotency.NewRecordHasher([]byte("secret"))
	keyed.Sum("warm", "up")
	for name, h := range map[string]*idempotency.RecordHasher{"plain": plain, "keyed": keyed} {
		if n := testing.AllocsPerRun(100, func() { h.Sum("order-42", "identity-hash") }); n > 0 {
			t.Errorf("%s RecordHasher.Sum allocates %v times per call, want 0", name, n)
		}
	}
}

func BenchmarkRecordHasher(b *testing.B) {
	for _, secret := range [][]byte{nil, []byte("secret")} {
		h := idempotency.NewRecordHasher(secret)
		b.Run(map[bool]string{true: "keyed", false: "plain"}[secret != nil], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				h.Sum("bench-key-000000000000000000000000000000", "identity")
			}
		})
	}
}
