package redisrec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/idemkit/idempotency"
)

// A record is one Redis string. Its fixed part is read and written by the
// Lua scripts (scripts.go); the payload of a completed record only by Go.
// Integers are big-endian.
//
//	kind     1 byte   'F' claim in flight, 'C' completed
//	fence    8 bytes  the fence of the claim that wrote it (kept by Store)
//	until    8 bytes  server clock, µs: end of the lease ('F'; 0 once
//	                  released) or expiry ('C')
//	owner    4-byte length, bytes (empty in records written by Store)
//	fp       4-byte length, bytes: the request fingerprint
//	-- completed records only --
//	stamp    8 bytes  server clock, µs, when the record was written
//	payload  the response (AppendPayload)
//
// The payload:
//
//	flags    1 byte   FlagTombstone | FlagStamped | FlagHeader | FlagBody
//	status   varint
//	storedAt varint seconds, uvarint nanoseconds (absent with FlagStamped:
//	         StoredAt is then the stamp)
//	ttl      varint nanoseconds
//	header   with FlagHeader: uvarint count, then per name its uvarint
//	         length and bytes, uvarint value count, and each value's uvarint
//	         length and bytes
//	body     the rest (a nil WireBody unless FlagBody)
//
// Records are the same whichever client writes them: redisstore and
// rueidisstore, given the same prefix and secret, share them.
const (
	KindInFlight  = 'F'
	KindCompleted = 'C'
)

// Payload flags.
const (
	FlagTombstone = 1 << iota // the record is a tombstone
	FlagStamped               // StoredAt is the server's stamp
	FlagHeader                // a header map follows the TTL
	FlagBody                  // the rest of the record is WireBody
)

// FixedLen is the length of kind, fence and until.
const FixedLen = 1 + 8 + 8

// ErrCorrupt is matched by the errors of DecodeRecord.
var ErrCorrupt = errors.New("corrupt record")

// AppendPayload appends the payload encoding of c. StoredAt is left to the
// server's stamp when stamped is set.
func AppendPayload(dst []byte, c *idempotency.Cached, stamped bool) []byte {
	var flags byte
	if c.Tombstone {
		flags |= FlagTombstone
	}
	if stamped {
		flags |= FlagStamped
	}
	if c.Header != nil {
		flags |= FlagHeader
	}
	if c.WireBody != nil {
		flags |= FlagBody
	}
	dst = append(dst, flags)
	dst = binary.AppendVarint(dst, int64(c.Status))
	if !stamped {
		dst = binary.AppendVarint(dst, c.StoredAt.Unix())
		dst = binary.AppendUvarint(dst, uint64(c.StoredAt.Nanosecond()))
	}
	dst = binary.AppendVarint(dst, int64(c.TTL))
	if c.Header != nil {
		dst = binary.AppendUvarint(dst, uint64(len(c.Header)))
		for name, values := range c.Header {
			dst = appendString(dst, name)
			dst = binary.AppendUvarint(dst, uint64(len(values)))
			for _, v := range values {
				dst = appendString(dst, v)
			}
		}
	}
	return append(dst, c.WireBody...)
}

// PayloadLen is an upper bound of len(AppendPayload(nil, c, _)), to size buffers.
func PayloadLen(c *idempotency.Cached) int {
	n := 1 + 3*binary.MaxVarintLen64 + 2 + len(c.WireBody)
	if c.Header != nil {
		n += binary.MaxVarintLen64
		for name, values := range c.Header {
			n += 2*binary.MaxVarintLen64 + len(name)
			for _, v := range values {
				n += binary.MaxVarintLen64 + len(v)
			}
		}
	}
	return n
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// DecodeRecord decodes a completed record as returned by the begin and
// lookup scripts. The result shares no memory with v.
func DecodeRecord(v string) (*idempotency.Cached, error) {
	return decodeRecord(v, "")
}

// BeginRecord turns a record replied by BeginScript into the claim it means:
// a replay of it, or a mismatch when the record and the request
// (fingerprint) both carry a fingerprint and they differ. The script leaves
// that comparison to the client, which reads the record anyway.
func BeginRecord(v, fingerprint string) (idempotency.Claim, error) {
	rec, err := decodeRecord(v, fingerprint)
	switch {
	case err != nil:
		return idempotency.Claim{}, err
	case rec.Fingerprint != "" && fingerprint != "" && rec.Fingerprint != fingerprint:
		return idempotency.Claim{Status: idempotency.ClaimMismatch}, nil
	}
	return idempotency.Claim{Status: idempotency.ClaimReplay, Record: rec}, nil
}

// decodeRecord is DecodeRecord; a fingerprint equal to fp is fp itself
// rather than a copy.
func decodeRecord(v, fp string) (*idempotency.Cached, error) {
	if len(v) < FixedLen || v[0] != KindCompleted {
		return nil, fmt.Errorf("%w: not a completed record", ErrCorrupt)
	}
	d := decoder{s: v, off: FixedLen}
	d.skip(int(d.u32())) // owner
	if n := int(d.u32()); !d.equal(n, fp) {
		fp = d.bytes(n)
	}
	stamp := int64(d.u64())
	if d.err != nil {
		return nil, d.err
	}
	c := &idempotency.Cached{Fingerprint: fp}
	flags := d.byte()
	c.Status = int(d.varint())
	if flags&FlagStamped != 0 {
		c.StoredAt = time.UnixMicro(stamp)
	} else {
		sec := d.varint()
		c.StoredAt = time.Unix(sec, int64(d.uvarint()))
	}
	c.TTL = time.Duration(d.varint())
	c.Tombstone = flags&FlagTombstone != 0
	if flags&FlagHeader != 0 {
		n := d.count()
		c.Header = make(map[string][]string, n)
		for range n {
			name := d.bytes(d.count())
			values := make([]string, d.count())
			for j := range values {
				values[j] = d.bytes(d.count())
			}
			c.Header[name] = values
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	if flags&FlagBody != 0 {
		c.WireBody = []byte(v[d.off:])
	} else if d.off != len(v) {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrCorrupt, len(v)-d.off)
	}
	return c, nil
}

// decoder reads a record; the first error sticks and later reads return zeros.
type decoder struct {
	s   string
	off int
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: bad %s at byte %d", ErrCorrupt, what, d.off)
	}
	d.off = len(d.s)
}

func (d *decoder) need(n int, what string) bool {
	if d.err != nil {
		return false
	}
	if n < 0 || n > len(d.s)-d.off {
		d.fail(what)
		return false
	}
	return true
}

func (d *decoder) skip(n int) {
	if d.need(n, "length") {
		d.off += n
	}
}

func (d *decoder) byte() byte {
	if !d.need(1, "flags") {
		return 0
	}
	d.off++
	return d.s[d.off-1]
}

func (d *decoder) u32() uint32 {
	if !d.need(4, "length") {
		return 0
	}
	d.off += 4
	s := d.s[d.off-4 : d.off]
	return uint32(s[0])<<24 | uint32(s[1])<<16 | uint32(s[2])<<8 | uint32(s[3])
}

func (d *decoder) u64() uint64 {
	return uint64(d.u32())<<32 | uint64(d.u32())
}

// equal reads the next n bytes if they are s.
func (d *decoder) equal(n int, s string) bool {
	if n != len(s) || !d.need(n, "string") || d.s[d.off:d.off+n] != s {
		return false
	}
	d.off += n
	return true
}

// bytes returns the next n bytes as a new string.
func (d *decoder) bytes(n int) string {
	if !d.need(n, "string") {
		return ""
	}
	d.off += n
	return strings.Clone(d.s[d.off-n : d.off]) // a copy: v is not kept alive
}

func (d *decoder) varint() int64 {
	ux := d.uvarint()
	x := int64(ux >> 1)
	if ux&1 != 0 {
		x = ^x
	}
	return x
}

// uvarint reads what binary.AppendUvarint wrote, straight from the string.
func (d *decoder) uvarint() uint64 {
	var x uint64
	for i, shift := 0, uint(0); d.err == nil; i, shift = i+1, shift+7 {
		if i == binary.MaxVarintLen64 || d.off >= len(d.s) {
			break
		}
		b := d.s[d.off]
		d.off++
		if b < 0x80 {
			if i == binary.MaxVarintLen64-1 && b > 1 {
				break // overflows 64 bits
			}
			return x | uint64(b)<<shift
		}
		x |= uint64(b&0x7f) << shift
	}
	d.fail("varint")
	return 0
}

// count reads a length or count, which must fit in what is left of the record.
func (d *decoder) count() int {
	x := d.uvarint()
	if x > uint64(len(d.s)-d.off) {
		d.fail("count")
		return 0
	}
	return int(x)
}
