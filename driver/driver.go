package driver

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"sync"

	"github.com/idemkit/idempotency"
)

// NewOwner returns a random owner id for idempotency.ClaimRequest.Owner: 128 bits from
// crypto/rand, as 26 base32 characters.
func NewOwner() string { return rand.Text() }

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

// ValidateBegin checks Begin's arguments as every ClaimStore must: the key
// passes idempotency.ValidateKey, the owner is not empty and the lease is
// positive. Stores call it first so that they all refuse the same input the
// same way (ErrInvalidKey, ErrInvalidArgument).
func ValidateBegin(key string, req idempotency.ClaimRequest) error {
	if err := idempotency.ValidateKey(key); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if req.Owner == "" {
		return fmt.Errorf("begin: %w: empty owner", idempotency.ErrInvalidArgument)
	}
	if req.Lease <= 0 {
		return fmt.Errorf("begin: %w: lease %v is not positive", idempotency.ErrInvalidArgument, req.Lease)
	}
	return nil
}
