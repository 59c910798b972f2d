package idempotency

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"sync"
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
	i := printableASCIIPrefix(key)
	for i < len(key) {
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

// printableASCIIPrefix returns how many leading bytes of s, in whole 8-byte
// words, are printable ASCII (0x20 to 0x7e): the common case of a key,
// checked a word at a time.
func printableASCIIPrefix(s string) int {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	i := 0
	for ; i+8 <= len(s); i += 8 {
		w := binary.LittleEndian.Uint64([]byte(s[i : i+8]))
		below := (w - 0x20*ones) &^ w & highs      // a byte < 0x20 (or >= 0x80)
		above := ((w &^ highs) + ones | w) & highs // a byte >= 0x7f
		if below|above != 0 {
			break
		}
	}
	return i
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
// SHA-256 under a fixed domain-separation prefix. A store that names many
// records should keep a RecordHasher, which gives the same names for less work.
func RecordKey(secret []byte, key, identity string) [sha256.Size]byte {
	return NewRecordHasher(secret).Sum(key, identity)
}

// recordDomain prefixes the unkeyed record hash, so that its inputs cannot
// be confused with another use of SHA-256.
const recordDomain = "idemkit/record/v1\x00"

// RecordHasher computes RecordKey for one secret, reusing its HMAC state
// across calls. It is safe for concurrent use.
type RecordHasher struct {
	secret []byte
	pool   sync.Pool // of *recordMAC, when secret is set
}

type recordMAC struct {
	h   hash.Hash
	buf []byte
}

// NewRecordHasher returns a RecordHasher for secret (nil or empty: unkeyed
// SHA-256). The secret is copied.
func NewRecordHasher(secret []byte) *RecordHasher {
	return &RecordHasher{secret: bytes.Clone(secret)}
}

// Sum returns RecordKey(secret, key, identity).
func (r *RecordHasher) Sum(key, identity string) [sha256.Size]byte {
	if len(r.secret) == 0 {
		var buf [256]byte
		b := append(buf[:0], recordDomain...)
		return sha256.Sum256(appendParts(b, key, identity))
	}
	m, _ := r.pool.Get().(*recordMAC)
	if m == nil {
		m = &recordMAC{h: hmac.New(sha256.New, r.secret)}
	}
	m.h.Reset()
	m.buf = appendParts(m.buf[:0], key, identity)
	m.h.Write(m.buf)
	var sum [sha256.Size]byte
	m.buf = m.h.Sum(m.buf[:0])
	copy(sum[:], m.buf)
	r.pool.Put(m)
	return sum
}

// appendParts appends each part with its length as a uvarint before it.
func appendParts(b []byte, parts ...string) []byte {
	for _, p := range parts {
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
	}
	return b
}

func writeParts(h hash.Hash, parts ...[]byte) {
	var n [binary.MaxVarintLen64]byte
	for _, p := range parts {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(p)))])
		h.Write(p)
	}
}
