package canonicaljson

import (
	"bytes"
	"errors"
	"math"
	"strconv"
	"unicode/utf8"
)

// RFC8785 returns the RFC 8785 (JSON Canonicalization Scheme) form of the
// JSON text data. It differs from Canonical in two ways:
//
//   - numbers are IEEE 754 doubles written the ECMAScript way (shortest
//     round-trip digits; integers below 1e21 without an exponent; -0 as 0),
//     so distinct numbers that round to one double share a form;
//   - object members are sorted by their names as UTF-16 code units.
//
// It returns an error, and no output, for text that is not JSON or that RFC
// 8785 cannot canonicalize: an object with a duplicate member name
// (compared after unescaping), invalid UTF-8 or an unpaired surrogate
// escape, a number outside the range of a double, or nesting deeper than
// 10000 levels.
//
// It is for matching hashes and signatures computed by other RFC 8785
// implementations; it must not be used for request fingerprints.
func RFC8785(data []byte) ([]byte, error) {
	return AppendRFC8785(make([]byte, 0, len(data)), data)
}

// AppendRFC8785 appends the RFC 8785 form of data (see RFC8785) to dst and
// returns the extended buffer. On an error it returns dst, its length
// unchanged, and the error.
func AppendRFC8785(dst, data []byte) ([]byte, error) {
	return run(data, dst, rfc8785)
}

// doubleNumber appends the number in[start:c.pos] as RFC 8785 writes it.
func (c *canonicalizer) doubleNumber(start int, n *numberText) error {
	// An integer of at most 15 digits is exact in a double, and ECMAScript
	// writes it back digit for digit: the text is already canonical (but
	// for -0, which is written 0).
	lit := c.in[start:c.pos]
	if n.fracStart == n.fracEnd && !n.hasExp && n.intEnd-n.intStart <= 15 && string(lit) != "-0" {
		c.out = append(c.out, lit...)
		return nil
	}
	text := string(lit)
	f, err := strconv.ParseFloat(text, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return c.errorf("invalid number %q at offset %d", text, start)
	}
	if math.IsInf(f, 0) {
		return c.errorf("number %q at offset %d is out of the range of a double", text, start)
	}
	c.out = appendESNumber(c.out, f)
	return nil
}

// appendESNumber appends f as ECMAScript's Number::toString writes it
// (ECMA-262, Number::toString with radix 10), which RFC 8785 adopts. f is
// finite.
func appendESNumber(dst []byte, f float64) []byte {
	if f == 0 {
		return append(dst, '0') // also -0
	}
	if f < 0 {
		dst = append(dst, '-')
		f = -f
	}
	// Shortest round-trip digits s (k of them) and exponent, from Go's
	// formatter: "d.ddde±x" means x = n-1 in ECMAScript's terms.
	var scratch [32]byte
	e := strconv.AppendFloat(scratch[:0], f, 'e', -1, 64)
	mant, exp, _ := bytes.Cut(e, []byte("e"))
	var s []byte
	if len(mant) > 1 { // "d.ddd"
		s = append(append(make([]byte, 0, len(mant)), mant[0]), mant[2:]...)
	} else {
		s = mant
	}
	x, _ := strconv.Atoi(string(exp))
	k, n := len(s), x+1
	switch {
	case k <= n && n <= 21:
		dst = append(dst, s...)
		for range n - k {
			dst = append(dst, '0')
		}
	case 0 < n && n <= 21:
		dst = append(dst, s[:n]...)
		dst = append(dst, '.')
		dst = append(dst, s[n:]...)
	case -6 < n && n <= 0:
		dst = append(dst, '0', '.')
		for range -n {
			dst = append(dst, '0')
		}
		dst = append(dst, s...)
	default:
		dst = append(dst, s[0])
		if k > 1 {
			dst = append(dst, '.')
			dst = append(dst, s[1:]...)
		}
		dst = append(dst, 'e')
		if n-1 >= 0 {
			dst = append(dst, '+')
		}
		dst = strconv.AppendInt(dst, int64(n-1), 10)
	}
	return dst
}

// compareUTF16 compares two valid UTF-8 strings by their UTF-16 code units,
// the order RFC 8785 sorts member names in. It differs from byte (code
// point) order only for characters above U+FFFF, whose surrogates
// (0xD800-0xDFFF) sort before U+E000-U+FFFF.
func compareUTF16(a, b []byte) int {
	// Up to the first byte that differs the texts agree; when that byte is
	// ASCII in both (or one text ends there), it starts a character in both,
	// and byte order is UTF-16 order.
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	switch {
	case i == len(a) || i == len(b):
		return len(a) - len(b)
	case a[i] < utf8.RuneSelf && b[i] < utf8.RuneSelf:
		return int(a[i]) - int(b[i])
	}
	for len(a) > 0 && len(b) > 0 {
		ra, na := utf8.DecodeRune(a)
		rb, nb := utf8.DecodeRune(b)
		if ra != rb {
			ua, ub := utf16Units(ra), utf16Units(rb)
			if ua[0] != ub[0] {
				return int(ua[0]) - int(ub[0])
			}
			return int(ua[1]) - int(ub[1])
		}
		a, b = a[na:], b[nb:]
	}
	return len(a) - len(b)
}

// utf16Units returns r's UTF-16 code units; the second is 0 for a
// character in the Basic Multilingual Plane.
func utf16Units(r rune) [2]uint16 {
	if r < 0x10000 {
		return [2]uint16{uint16(r), 0}
	}
	r -= 0x10000
	return [2]uint16{uint16(0xd800 + r>>10), uint16(0xdc00 + r&0x3ff)}
}
