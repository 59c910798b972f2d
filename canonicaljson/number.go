package canonicaljson

import "strconv"

// maxExponent bounds a number's exponent in the exact form, as its text
// writes it and once its digits are normalized (10e1000000000 is
// 1e1000000001): the canonical form of an accepted number is accepted
// again. Real payloads stay far below it; the bound keeps a reader that
// expands the number (big.Rat, a decimal library) from being made to
// allocate without limit by a few bytes of input.
const maxExponent = 1_000_000_000

// maxPlainZeros is the most zeros the exact form writes to place a
// number's significant digits without an exponent: the trailing zeros of an
// integer, or the zeros between a fraction's point and its first
// significant digit. Every integer of up to 21 digits (all of int64 and
// uint64) and every decimal fraction payloads commonly carry keep their
// usual spelling, and no number's text grows by more than that: 1e999999999
// stays short.
const maxPlainZeros = 20

// numberText is a number's text split at its parts: in[intStart:intEnd]
// are the integer digits, in[fracStart:fracEnd] the fraction digits (none
// when fracStart == fracEnd), and exp the exponent's value.
type numberText struct {
	neg                                  bool
	intStart, intEnd, fracStart, fracEnd int
	exp                                  int64
	hasExp                               bool
}

// number parses a JSON number (RFC 8259 grammar) and appends it in the
// form's spelling.
func (c *canonicalizer) number() error {
	start := c.pos
	var n numberText
	if c.in[c.pos] == '-' {
		n.neg = true
		c.pos++
	}
	n.intStart = c.pos
	switch {
	case c.pos < len(c.in) && c.in[c.pos] == '0':
		c.pos++
	case c.digits() == 0:
		return c.syntaxError("in number")
	}
	n.intEnd = c.pos
	n.fracStart, n.fracEnd = c.pos, c.pos
	if c.pos < len(c.in) && c.in[c.pos] == '.' {
		c.pos++
		n.fracStart = c.pos
		if c.digits() == 0 {
			return c.syntaxError("in number fraction")
		}
		n.fracEnd = c.pos
	}
	if c.pos < len(c.in) && (c.in[c.pos] == 'e' || c.in[c.pos] == 'E') {
		n.hasExp = true
		c.pos++
		negExp := false
		if c.pos < len(c.in) && (c.in[c.pos] == '+' || c.in[c.pos] == '-') {
			negExp = c.in[c.pos] == '-'
			c.pos++
		}
		expStart := c.pos
		if c.digits() == 0 {
			return c.syntaxError("in number exponent")
		}
		if c.form == exact {
			for _, d := range c.in[expStart:c.pos] {
				if n.exp = 10*n.exp + int64(d-'0'); n.exp > maxExponent {
					return c.errorf("number at offset %d: exponent beyond ±%d", start, maxExponent)
				}
			}
			if negExp {
				n.exp = -n.exp
			}
		}
	}
	if c.form == rfc8785 {
		return c.doubleNumber(start, &n)
	}
	out, ok := appendExactNumber(c.out, c.in, &n, start, c.pos)
	if !ok {
		return c.errorf("number at offset %d: exponent beyond ±%d", start, maxExponent)
	}
	c.out = out
	return nil
}

func (c *canonicalizer) digits() int {
	n := 0
	for c.pos < len(c.in) && '0' <= c.in[c.pos] && c.in[c.pos] <= '9' {
		c.pos++
		n++
	}
	return n
}

// appendExactNumber appends the exact form of the number in[start:end],
// split as n. Its value is D × 10^(exp − len(fraction)), where D is the
// integer and fraction digits read as one integer; only D's significant
// digits are written, so no digit is ever lost and no value has two
// spellings. It reports false, and appends nothing, for a number whose
// normalized exponent is out of range.
func appendExactNumber(dst, in []byte, n *numberText, start, end int) ([]byte, bool) {
	intDigits, frac := in[n.intStart:n.intEnd], in[n.fracStart:n.fracEnd]
	// Most numbers are written in their canonical form already: an integer
	// (JSON allows no leading zeros) that is not zero and does not end in
	// too many zeros, or a decimal fraction that does not end in a zero and
	// has not too many zeros after its point.
	if !n.hasExp {
		switch {
		case len(frac) == 0 && intDigits[0] != '0' && trailingZeros(intDigits) <= maxPlainZeros,
			len(frac) > 0 && frac[len(frac)-1] != '0' && (intDigits[0] != '0' || leadingZeros(frac) <= maxPlainZeros):
			return append(dst, in[start:end]...), true
		}
	}
	// The significant digits run from the first non-zero digit of D to its
	// last, either of which may lie in either part.
	digits := splitDigits{intDigits, frac}
	first := leadingZeros(intDigits)
	if first == len(intDigits) {
		first += leadingZeros(frac)
	}
	if first == digits.len() {
		return append(dst, '0'), true // -0, 0.0, 0e5: the value is 0
	}
	last := digits.len() - 1 - trailingZeros(frac) // index of the last significant digit
	if last < len(intDigits) {
		last -= trailingZeros(intDigits[:last+1])
	}
	k := last + 1 - first // the number of significant digits
	// D = significant × 10^(len(D)−1−last), so the value is significant × 10^e.
	e := n.exp - int64(len(frac)) + int64(digits.len()-1-last)
	if e < -maxExponent || e > maxExponent {
		return dst, false
	}
	if n.neg {
		dst = append(dst, '-')
	}
	switch {
	case 0 <= e && e <= maxPlainZeros: // an integer
		dst = digits.append(dst, first, last+1)
		for range e {
			dst = append(dst, '0')
		}
	case e < 0 && -e < int64(k): // a fraction with an integer part
		point := first + k + int(e)
		dst = digits.append(dst, first, point)
		dst = append(dst, '.')
		dst = digits.append(dst, point, last+1)
	case e < 0 && -e-int64(k) <= maxPlainZeros: // a fraction below 1
		dst = append(dst, '0', '.')
		for range -e - int64(k) {
			dst = append(dst, '0')
		}
		dst = digits.append(dst, first, last+1)
	default:
		dst = digits.append(dst, first, last+1)
		dst = append(dst, 'e')
		dst = strconv.AppendInt(dst, e, 10)
	}
	return dst, true
}

// splitDigits is a number's digits, read as one string, that lie in two
// parts of its text (around the point).
type splitDigits [2][]byte

func (d splitDigits) len() int { return len(d[0]) + len(d[1]) }

// append appends the digits at [from, to) to dst.
func (d splitDigits) append(dst []byte, from, to int) []byte {
	n := len(d[0])
	if from < n {
		dst = append(dst, d[0][from:min(to, n)]...)
	}
	if to > n {
		dst = append(dst, d[1][max(from, n)-n:to-n]...)
	}
	return dst
}

// leadingZeros counts the '0' digits that start digits.
func leadingZeros(digits []byte) int {
	n := 0
	for n < len(digits) && digits[n] == '0' {
		n++
	}
	return n
}

// trailingZeros counts the '0' digits that end digits.
func trailingZeros(digits []byte) int {
	n := 0
	for i := len(digits) - 1; i >= 0 && digits[i] == '0'; i-- {
		n++
	}
	return n
}
