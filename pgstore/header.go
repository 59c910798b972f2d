package pgstore

import (
	"encoding/binary"
	"errors"
	"maps"
	"slices"
)

// The header column holds Cached.Header as a count of names, then for each
// name in sorted order its length-prefixed bytes, the count of its values
// and each value length-prefixed; every number is an unsigned varint. An
// empty or nil header is NULL.

var errCorruptHeader = errors.New("pgstore: corrupt header column")

// maxHeaderBytes guards the encoding's lengths against overflow; no
// sensible response header comes near it.
const maxHeaderBytes = 1 << 30

func encodeHeader(h map[string][]string) ([]byte, error) {
	if len(h) == 0 {
		return nil, nil
	}
	n := binary.MaxVarintLen64
	for k, vs := range h {
		n += 2*binary.MaxVarintLen64 + len(k)
		for _, v := range vs {
			n += binary.MaxVarintLen64 + len(v)
		}
	}
	if n > maxHeaderBytes {
		return nil, errors.New("header larger than 1 GiB")
	}
	b := make([]byte, 0, n)
	b = binary.AppendUvarint(b, uint64(len(h)))
	for _, k := range slices.Sorted(maps.Keys(h)) {
		b = appendString(b, k)
		vs := h[k]
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = appendString(b, v)
		}
	}
	return b, nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func decodeHeader(b []byte) (map[string][]string, error) {
	if len(b) == 0 {
		return nil, nil
	}
	d := decoder{b: b}
	n := d.count()
	h := make(map[string][]string, n)
	for range n {
		k := d.string()
		vs := make([]string, d.count())
		for i := range vs {
			vs[i] = d.string()
		}
		h[k] = vs
	}
	if d.bad || len(d.b) != 0 {
		return nil, errCorruptHeader
	}
	return h, nil
}

// decoder reads the header encoding; after the first error it reads
// zeros and sets bad.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.bad, d.b = true, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a number of items; each item takes at least one byte, so a
// count beyond what is left is corrupt (and would allocate without bound).
func (d *decoder) count() int {
	v := d.uvarint()
	if v > uint64(len(d.b)) {
		d.bad, d.b = true, nil
		return 0
	}
	return int(v)
}

func (d *decoder) string() string {
	n := d.count()
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
