package idempotency

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"unicode/utf8"
)

// MaxKeyLen is the longest idempotency key accepted, in bytes.
const MaxKeyLen = 255

// ValidateKey reports whether key is usable as an idempotency key: non-empty,
// at most MaxKeyLen bytes, valid UTF-8, and free of control characters. The
// error wraps ErrInvalidKey and says which rule failed.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty", ErrInvalidKey)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%w: %d bytes, longer than %d", ErrInvalidKey, len(key), MaxKeyLen)
	}
	for i := 0; i < len(key); {
		c := key[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == 0x7f {
				return fmt.Errorf("%w: control character at byte %d", ErrInvalidKey, i)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(key[i:])
		if r == utf8.RuneError && n == 1 {
			return fmt.Errorf("%w: invalid UTF-8 at byte %d", ErrInvalidKey, i)
		}
		if r >= 0x80 && r < 0xa0 { // C1 controls
			return fmt.Errorf("%w: control character at byte %d", ErrInvalidKey, i)
		}
		i += n
	}
	return nil
}

// NewOwner returns a random owner id for ClaimRequest.Owner: 128 bits from
// crypto/rand, as 26 base32 characters.
func NewOwner() string { return rand.Text() }

// Fingerprint digests the parts that identify a request (for example method,
// path and a digest of the body) into a short string for
// ClaimRequest.Fingerprint and Cached.Fingerprint. Parts are length-prefixed
// before hashing, so ("ab","c") and ("a","bc") differ.
func Fingerprint(parts ...[]byte) string {
	h := sha256.New()
	writeParts(h, parts...)
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:16])
}

// RecordKey hashes (key, identity) into the fixed-size name a shared store
// files the record under, so that raw keys and identities (which may derive
// from credentials) never reach the store. The encoding is injective: each
// part is length-prefixed, so ("a:b","c") and ("a","b:c") never share a name.
// With a non-empty secret the hash is HMAC-SHA-256 keyed by it, so callers who
// do not know the secret cannot craft colliding pairs; with none it is plain
// SHA-256 under a fixed domain-separation prefix.
func RecordKey(secret []byte, key, identity string) [sha256.Size]byte {
	var h hash.Hash
	if len(secret) > 0 {
		h = hmac.New(sha256.New, secret)
	} else {
		h = sha256.New()
		h.Write([]byte("idemkit/record/v1\x00"))
	}
	writeStrings(h, key, identity)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

func writeParts(h hash.Hash, parts ...[]byte) {
	var n [binary.MaxVarintLen64]byte
	for _, p := range parts {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(p)))])
		h.Write(p)
	}
}

func writeStrings(h hash.Hash, parts ...string) {
	var n [binary.MaxVarintLen64]byte
	for _, p := range parts {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(p)))])
		h.Write([]byte(p))
	}
}
