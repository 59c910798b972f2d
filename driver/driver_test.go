package driver_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
)

func TestRecordKeyInjective(t *testing.T) {
	pairs := [][2]string{{"a:b", "c"}, {"a", "b:c"}, {"ab", ""}, {"", "ab"}, {"a", "b"}, {"a\x01", "b"}, {"a", "\x01b"}}
	for _, secret := range [][]byte{nil, []byte("s3cret")} {
		seen := map[[32]byte][2]string{}
		for _, p := range pairs {
			h := driver.RecordKey(secret, p[0], p[1])
			if q, dup := seen[h]; dup {
				t.Fatalf("RecordKey(%q) collides with %q", p, q)
			}
			seen[h] = p
		}
	}
	if driver.RecordKey(nil, "k", "i") == driver.RecordKey([]byte("s"), "k", "i") {
		t.Error("the secret does not change the record key")
	}
	if driver.RecordKey([]byte("s"), "k", "i") != driver.RecordKey([]byte("s"), "k", "i") {
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
		if driver.RecordKey(nil, k1, i1) == driver.RecordKey(nil, k2, i2) {
			t.Fatalf("(%q, %q) and (%q, %q) share a record key", k1, i1, k2, i2)
		}
	})
}

func TestNewOwnerIsRandom(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		o := driver.NewOwner()
		if len(o) < 26 || seen[o] {
			t.Fatalf("NewOwner = %q: short or repeated", o)
		}
		seen[o] = true
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
		if got := driver.RecordKey(nil, p[0], p[1]); got != want {
			t.Errorf("RecordKey(nil, %q, …) = %x, want %x", p[0], got, want)
		}
		mac := hmac.New(sha256.New, []byte("secret"))
		mac.Write(enc(p[0], p[1]))
		var wantMAC [32]byte
		copy(wantMAC[:], mac.Sum(nil))
		h := driver.NewRecordHasher([]byte("secret"))
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
	plain, keyed := driver.NewRecordHasher(nil), driver.NewRecordHasher([]byte("secret"))
	keyed.Sum("warm", "up")
	for name, h := range map[string]*driver.RecordHasher{"plain": plain, "keyed": keyed} {
		if n := testing.AllocsPerRun(100, func() { h.Sum("order-42", "identity-hash") }); n > 0 {
			t.Errorf("%s RecordHasher.Sum allocates %v times per call, want 0", name, n)
		}
	}
}

func BenchmarkRecordHasher(b *testing.B) {
	for _, secret := range [][]byte{nil, []byte("secret")} {
		h := driver.NewRecordHasher(secret)
		b.Run(map[bool]string{true: "keyed", false: "plain"}[secret != nil], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				h.Sum("bench-key-000000000000000000000000000000", "identity")
			}
		})
	}
}

func TestValidateBegin(t *testing.T) {
	ok := idempotency.ClaimRequest{Owner: "o", Lease: 1}
	for _, tc := range []struct {
		key  string
		req  idempotency.ClaimRequest
		want error
	}{
		{"k", ok, nil},
		{"", ok, idempotency.ErrInvalidKey},
		{"k", idempotency.ClaimRequest{Lease: 1}, idempotency.ErrInvalidArgument},
		{"k", idempotency.ClaimRequest{Owner: "o"}, idempotency.ErrInvalidArgument},
		{"k", idempotency.ClaimRequest{Owner: "o", Lease: -1}, idempotency.ErrInvalidArgument},
	} {
		err := driver.ValidateBegin(tc.key, tc.req)
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("ValidateBegin(%q, %+v) = %v, want %v", tc.key, tc.req, err, tc.want)
		}
	}
}
