package idemhttp

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"sync"
)

// digester is a reusable SHA-256 state with scratch space, so that digesting
// a request's identity or fingerprint allocates only the resulting string.
// It computes exactly what idempotency.Fingerprint and the identity hash
// compute with a fresh hash: every part length-prefixed (uvarint).
type digester struct {
	h     hash.Hash
	n     [binary.MaxVarintLen64]byte
	sum   [sha256.Size]byte
	hex   [2 * sha256.Size]byte
	buf   []byte // scratch for string parts
	canon []byte // a body's canonical JSON
}

var digesters = sync.Pool{New: func() any { return &digester{h: sha256.New()} }}

func getDigester() *digester {
	d := digesters.Get().(*digester)
	d.h.Reset()
	return d
}

// maxPooledScratch bounds the scratch buffer kept in the pool.
const maxPooledScratch = 4 << 10

func (d *digester) put() {
	if cap(d.buf) > maxPooledScratch {
		d.buf = nil
	}
	if cap(d.canon) > maxPooledScratch {
		d.canon = nil
	}
	digesters.Put(d)
}

// raw writes p without a length prefix.
func (d *digester) raw(p []byte) { d.h.Write(p) }

// part writes p with its length prefix.
func (d *digester) part(p []byte) {
	d.h.Write(d.n[:binary.PutUvarint(d.n[:], uint64(len(p)))])
	d.h.Write(p)
}

// partString writes s with its length prefix, through the scratch buffer.
func (d *digester) partString(s string) {
	d.buf = append(d.buf[:0], s...)
	d.part(d.buf)
}

// hexSum returns the hex form of the first n bytes of the digest.
func (d *digester) hexSum(n int) string {
	d.h.Sum(d.sum[:0])
	hex.Encode(d.hex[:], d.sum[:n])
	return string(d.hex[:2*n])
}
