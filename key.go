package idempotency

import (
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

func writeParts(h hash.Hash, parts ...[]byte) {
	var n [binary.MaxVarintLen64]byte
	for _, p := range parts {
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(p)))])
		h.Write(p)
	}
}
