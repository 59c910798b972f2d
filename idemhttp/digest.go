package idemhttp

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// digester builds the message a digest is taken of in one buffer, then
// hashes it in one call, so that digesting a request's identity or
// fingerprint allocates only the resulting string. It computes exactly what
// idempotency.Fingerprint and the identity hash compute with a fresh hash:
// every part length-prefixed (uvarint). A part too large to copy is hashed
// in a stream instead.
type digester struct {
	h     hash.Hash // for messages with a large part; nil until needed
	msg   []byte    // the message so far (or, once streaming, not yet hashed)
	sum   [sha256.Size]byte
	hex   [2 * sha256.Size]byte
	canon []byte // a body's canonical JSON

	streaming bool
}

var digesters = sync.Pool{New: func() any { return new(digester) }}

func getDigester() *digester {
	d := digesters.Get().(*digester)
	d.msg, d.streaming = d.msg[:0], false
	return d
}

// maxPooledScratch bounds the buffers kept in the pool; a part longer than
// maxCopied is hashed where it lies instead of being copied.
const (
	maxPooledScratch = 4 << 10
	maxCopied        = 2 << 10
)

func (d *digester) put() {
	if cap(d.msg) > maxPooledScratch {
		d.msg = nil
	}
	if cap(d.canon) > maxPooledScratch {
		d.canon = nil
	}
	digesters.Put(d)
}

// raw adds s without a length prefix.
func (d *digester) raw(s string) { d.msg = append(d.msg, s...) }

// part adds p with its length prefix.
func (d *digester) part(p []byte) {
	d.msg = binary.AppendUvarint(d.msg, uint64(len(p)))
	if len(p) <= maxCopied {
		d.msg = append(d.msg, p...)
		return
	}
	if !d.streaming {
		if d.h == nil {
			d.h = sha256.New()
		}
		d.h.Reset()
		d.streaming = true
	}
	d.h.Write(d.msg)
	d.h.Write(p)
	d.msg = d.msg[:0]
}

// partString adds s with its length prefix.
func (d *digester) partString(s string) {
	d.msg = binary.AppendUvarint(d.msg, uint64(len(s)))
	d.msg = append(d.msg, s...)
}

// hexSum returns the hex form of the first n bytes of the digest.
func (d *digester) hexSum(n int) string {
	if d.streaming {
		d.h.Write(d.msg)
		d.h.Sum(d.sum[:0])
	} else {
		d.sum = sha256.Sum256(d.msg)
	}
	hex.Encode(d.hex[:], d.sum[:n])
	return string(d.hex[:2*n])
}

// identityMemo remembers the identities of the credentials seen last, so
// that a client sending the same Authorization header request after request
// is not hashed every time. It is direct-mapped (a slot per hash of the
// credential, the newest wins), holds the credential only in this process's
// memory, and compares it whole on a hit.
type identityMemo struct {
	seed  maphash.Seed
	slots [identityMemoSlots]atomic.Pointer[memoEntry]
}

const identityMemoSlots = 256

type memoEntry struct{ credential, identity string }

var identities = identityMemo{seed: maphash.MakeSeed()}

func (m *identityMemo) get(credential string, compute func(string) string) string {
	slot := &m.slots[maphash.String(m.seed, credential)%identityMemoSlots]
	if e := slot.Load(); e != nil && e.credential == credential {
		return e.identity
	}
	id := compute(credential)
	slot.Store(&memoEntry{credential, id})
	return id
}
