package idemhttp_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemhttp"
)

func TestParseKey(t *testing.T) {
	tests := []struct {
		name    string
		values  []string
		want    string
		wantErr error
	}{
		{"quoted", []string{`"abc"`}, "abc", nil},
		{"bare", []string{`abc`}, "abc", nil},
		{"bare uuid", []string{"8e03978e-40d5-43e8-bc93-6894a57f9324"}, "8e03978e-40d5-43e8-bc93-6894a57f9324", nil},
		{"bare base64", []string{"q1w2/e3r+4t=="}, "q1w2/e3r+4t==", nil},
		{"surrounding white space", []string{" \t\"abc\" \t"}, "abc", nil},
		{"escapes", []string{`"a\"b\\c"`}, `a"b\c`, nil},
		{"inner space quoted", []string{`"a b"`}, "a b", nil},
		{"inner space bare", []string{`a b`}, "a b", nil},
		{"comma inside quotes", []string{`"a,b"`}, "a,b", nil},
		{"255 bytes", []string{strings.Repeat("k", 255)}, strings.Repeat("k", 255), nil},
		{"non-ASCII bare", []string{"clé-1"}, "", idempotency.ErrInvalidKey},

		{"missing", nil, "", idemhttp.ErrKeyMissing},
		{"256 bytes", []string{strings.Repeat("k", 256)}, "", idempotency.ErrInvalidKey},
		{"two lines", []string{"a", "b"}, "", idempotency.ErrInvalidKey},
		{"quoted list", []string{`"a", "b"`}, "", idempotency.ErrInvalidKey},
		{"bare list", []string{"a, b"}, "", idempotency.ErrInvalidKey},
		{"empty", []string{""}, "", idempotency.ErrInvalidKey},
		{"empty quoted", []string{`""`}, "", idempotency.ErrInvalidKey},
		{"lone quote", []string{`"`}, "", idempotency.ErrInvalidKey},
		{"unterminated", []string{`"abc`}, "", idempotency.ErrInvalidKey},
		{"escape at end", []string{`"abc\`}, "", idempotency.ErrInvalidKey},
		{"unknown escape", []string{`"a\nb"`}, "", idempotency.ErrInvalidKey},
		{"parameters", []string{`"abc";a=1`}, "", idempotency.ErrInvalidKey},
		{"quote inside bare", []string{`ab"c`}, "", idempotency.ErrInvalidKey},
		{"control in bare", []string{"a\x00b"}, "", idempotency.ErrInvalidKey},
		{"control in quoted", []string{"\"a\x1fb\""}, "", idempotency.ErrInvalidKey},
		{"non-ASCII quoted", []string{`"clé"`}, "", idempotency.ErrInvalidKey},
		{"C1 control bare", []string{"a\u0085b"}, "", idempotency.ErrInvalidKey},
		{"invalid UTF-8 bare", []string{"a\xc3b"}, "", idempotency.ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := idemhttp.ParseKey(tt.values)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("ParseKey(%q) = %q, %v; want error %v", tt.values, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseKey(%q) = %q, %v; want %q", tt.values, got, err, tt.want)
			}
		})
	}
}

// quote writes key as an RFC 8941 sf-string.
func quote(key string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(key) + `"`
}

func FuzzParseKey(f *testing.F) {
	for _, s := range []string{`"abc"`, `abc`, `"a\"b"`, `"a", "b"`, ` x `, `"`, `"\`, "a\x00", strings.Repeat("k", 256)} {
		f.Add(s, "")
	}
	f.Add("a", "b")
	f.Fuzz(func(t *testing.T, v1, v2 string) {
		values := []string{v1}
		if v2 != "" {
			values = append(values, v2)
		}
		key, err := idemhttp.ParseKey(values)
		if err != nil {
			if !errors.Is(err, idempotency.ErrInvalidKey) {
				t.Fatalf("ParseKey(%q): error %v does not wrap ErrInvalidKey", values, err)
			}
			return
		}
		if len(values) != 1 {
			t.Fatalf("ParseKey(%q) = %q, want an error for two lines", values, key)
		}
		if err := idempotency.ValidateKey(key); err != nil {
			t.Fatalf("ParseKey(%q) = %q, which ValidateKey refuses: %v", values, key, err)
		}
		// Every key accepted is printable ASCII, and round-trips through its
		// quoted form.
		if !isPrintableASCII(key) {
			t.Fatalf("ParseKey(%q) = %q, which is not printable ASCII", values, key)
		}
		again, err := idemhttp.ParseKey([]string{quote(key)})
		if err != nil || again != key {
			t.Fatalf("ParseKey(quote(%q)) = %q, %v; want the key back", key, again, err)
		}
	})
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
