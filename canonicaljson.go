package idempotency

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
	"unicode/utf8"
)

// maxJSONDepth bounds the nesting CanonicalJSON accepts, as encoding/json does.
const maxJSONDepth = 10000

// CanonicalJSON returns the RFC 8785 (JSON Canonicalization Scheme) form of
// the JSON text data, so that two texts holding the same data canonicalize to
// the same bytes whatever their whitespace, member order, number spelling or
// string escapes:
//
//   - no whitespace between tokens;
//   - object members sorted by their names as UTF-16 code units;
//   - numbers as IEEE 754 doubles written the ECMAScript way (shortest
//     round-trip digits; integers below 1e21 without an exponent; -0 as 0);
//   - strings escaped only where JSON requires it: \" \\ \b \f \n \r \t and
//     \u00xx for the other control characters; "/", HTML characters and
//     non-ASCII text are written as themselves (UTF-8).
//
// It returns an error, and no output, for text that is not JSON (RFC 8259)
// or that RFC 8785 cannot canonicalize: an object with a duplicate member
// name (compared after unescaping), invalid UTF-8 or an unpaired surrogate
// escape, a number outside the range of a double, or nesting deeper than
// 10000 levels.
func CanonicalJSON(data []byte) ([]byte, error) {
	return AppendCanonicalJSON(make([]byte, 0, len(data)), data)
}

// AppendCanonicalJSON appends the RFC 8785 form of data (see CanonicalJSON)
// to dst and returns the extended buffer. On an error it returns dst as it
// was, with the error. With a reused dst it allocates nothing for most
// inputs.
func AppendCanonicalJSON(dst, data []byte) ([]byte, error) {
	c := canonicalizer{in: data, out: dst}
	out, err := c.run()
	if c.pooled != nil {
		if cap(c.scratch) <= maxPooledScratch {
			*c.pooled = c.scratch
			scratchPool.Put(c.pooled)
		}
	}
	if err != nil {
		return dst, err
	}
	return out, nil
}

func (c *canonicalizer) run() ([]byte, error) {
	c.skipSpace()
	if err := c.value(0); err != nil {
		return nil, err
	}
	c.skipSpace()
	if c.pos < len(c.in) {
		return nil, c.syntaxError("after top-level value")
	}
	return c.out, nil
}

// scratchPool holds the buffers objects are reordered in, so that
// canonicalizing allocates only its result.
var scratchPool = sync.Pool{New: func() any { return new([]byte) }}

// maxPooledScratch bounds the scratch buffers kept for reuse.
const maxPooledScratch = 64 << 10

// canonicalizer parses in and appends the canonical form of what it parsed
// to out in one pass. An object's members are written to out as they come
// and reordered once the object is complete.
type canonicalizer struct {
	in      []byte
	pos     int
	out     []byte
	scratch []byte  // an object's members while they are reordered
	pooled  *[]byte // where scratch came from, when it did
}

// jcsMember is an object member already written to canonicalizer.out: its
// decoded name and where its canonical text (name, colon, value) lies in out.
type jcsMember struct {
	name       []byte
	start, end int
}

func (c *canonicalizer) errorf(format string, args ...any) error {
	return fmt.Errorf("idempotency: canonical JSON: "+format, args...)
}

func (c *canonicalizer) syntaxError(where string) error {
	if c.pos >= len(c.in) {
		return c.errorf("unexpected end of input %s", where)
	}
	return c.errorf("invalid character %q at offset %d %s", c.in[c.pos], c.pos, where)
}

func (c *canonicalizer) skipSpace() {
	for c.pos < len(c.in) {
		switch c.in[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

func (c *canonicalizer) value(depth int) error {
	if c.pos >= len(c.in) {
		return c.syntaxError("looking for a value")
	}
	switch b := c.in[c.pos]; {
	case b == '{':
		return c.object(depth + 1)
	case b == '[':
		return c.array(depth + 1)
	case b == '"':
		s, err := c.string()
		if err != nil {
			return err
		}
		c.out = appendJCSString(c.out, s)
		return nil
	case b == '-' || ('0' <= b && b <= '9'):
		return c.number()
	default:
		for _, lit := range [...]string{"true", "false", "null"} {
			if bytes.HasPrefix(c.in[c.pos:], []byte(lit)) {
				c.pos += len(lit)
				c.out = append(c.out, lit...)
				return nil
			}
		}
		return c.syntaxError("looking for a value")
	}
}

func (c *canonicalizer) array(depth int) error {
	if depth > maxJSONDepth {
		return c.errorf("nesting deeper than %d at offset %d", maxJSONDepth, c.pos)
	}
	c.pos++ // '['
	c.out = append(c.out, '[')
	c.skipSpace()
	if c.pos < len(c.in) && c.in[c.pos] == ']' {
		c.pos++
		c.out = append(c.out, ']')
		return nil
	}
	for {
		c.skipSpace()
		if err := c.value(depth); err != nil {
			return err
		}
		c.skipSpace()
		if c.pos >= len(c.in) {
			return c.syntaxError("in array")
		}
		switch c.in[c.pos] {
		case ',':
			c.pos++
			c.out = append(c.out, ',')
		case ']':
			c.pos++
			c.out = append(c.out, ']')
			return nil
		default:
			return c.syntaxError("after array element")
		}
	}
}

func (c *canonicalizer) object(depth int) error {
	if depth > maxJSONDepth {
		return c.errorf("nesting deeper than %d at offset %d", maxJSONDepth, c.pos)
	}
	c.pos++ // '{'
	c.out = append(c.out, '{')
	start := len(c.out)
	c.skipSpace()
	if c.pos < len(c.in) && c.in[c.pos] == '}' {
		c.pos++
		c.out = append(c.out, '}')
		return nil
	}
	// Members are written in input order, each with its name; most objects
	// come with their members in canonical order already, and are then done.
	var small [8]jcsMember // most objects: no allocation for the list
	members := small[:0]
	sorted := true
	for {
		c.skipSpace()
		if c.pos >= len(c.in) || c.in[c.pos] != '"' {
			return c.syntaxError("looking for an object member name")
		}
		name, err := c.string()
		if err != nil {
			return err
		}
		c.skipSpace()
		if c.pos >= len(c.in) || c.in[c.pos] != ':' {
			return c.syntaxError("after object member name")
		}
		c.pos++
		c.skipSpace()
		if len(members) > 0 {
			c.out = append(c.out, ',')
			if sorted {
				switch d := compareUTF16(members[len(members)-1].name, name); {
				case d == 0:
					return c.errorf("duplicate object member name %q", name)
				case d > 0:
					sorted = false
				}
			}
		}
		from := len(c.out)
		c.out = appendJCSString(c.out, name)
		c.out = append(c.out, ':')
		if err := c.value(depth); err != nil {
			return err
		}
		members = append(members, jcsMember{name: name, start: from, end: len(c.out)})
		c.skipSpace()
		if c.pos >= len(c.in) {
			return c.syntaxError("in object")
		}
		if c.in[c.pos] == '}' {
			c.pos++
			break
		}
		if c.in[c.pos] != ',' {
			return c.syntaxError("after object member")
		}
		c.pos++
	}
	if !sorted {
		if err := c.reorder(members, start); err != nil {
			return err
		}
	}
	c.out = append(c.out, '}')
	return nil
}

// reorder rewrites out[start:], the members of an object in input order
// (separated by commas), in canonical order.
func (c *canonicalizer) reorder(members []jcsMember, start int) error {
	if len(members) <= 12 {
		for i := 1; i < len(members); i++ { // insertion sort: few members
			for j := i; j > 0 && compareUTF16(members[j-1].name, members[j].name) > 0; j-- {
				members[j-1], members[j] = members[j], members[j-1]
			}
		}
	} else {
		slices.SortFunc(members, func(a, b jcsMember) int { return compareUTF16(a.name, b.name) })
	}
	for i := 1; i < len(members); i++ {
		if bytes.Equal(members[i].name, members[i-1].name) {
			return c.errorf("duplicate object member name %q", members[i].name)
		}
	}
	if c.pooled == nil {
		if sp, ok := scratchPool.Get().(*[]byte); ok {
			c.pooled, c.scratch = sp, (*sp)[:0]
		}
	}
	c.scratch = append(c.scratch[:0], c.out[start:]...)
	text := c.scratch
	c.out = c.out[:start]
	for i, m := range members {
		if i > 0 {
			c.out = append(c.out, ',')
		}
		c.out = append(c.out, text[m.start-start:m.end-start]...)
	}
	return nil
}

// string parses a JSON string at c.pos and returns its decoded value: a
// slice of the input when it has no escapes.
func (c *canonicalizer) string() ([]byte, error) {
	c.pos++ // opening quote
	var buf []byte
	runStart := c.pos
	for {
		if c.pos >= len(c.in) {
			return nil, c.syntaxError("in string")
		}
		b := c.in[c.pos]
		switch {
		case b == '"':
			s := c.in[runStart:c.pos:c.pos]
			if buf != nil {
				s = append(buf, s...)
			}
			c.pos++
			return s, nil
		case b == '\\':
			buf = append(buf, c.in[runStart:c.pos]...)
			var err error
			if buf, err = c.escape(buf); err != nil {
				return nil, err
			}
			runStart = c.pos
		case b < 0x20:
			return nil, c.syntaxError("in string (control characters must be escaped)")
		case b < utf8.RuneSelf:
			c.pos++
		default:
			r, n := utf8.DecodeRune(c.in[c.pos:])
			if r == utf8.RuneError && n == 1 {
				return nil, c.errorf("invalid UTF-8 at offset %d", c.pos)
			}
			c.pos += n
		}
	}
}

// escape decodes the escape sequence at c.pos (a backslash) onto buf.
func (c *canonicalizer) escape(buf []byte) ([]byte, error) {
	at := c.pos
	c.pos++
	if c.pos >= len(c.in) {
		return nil, c.syntaxError("in string escape")
	}
	e := c.in[c.pos]
	c.pos++
	switch e {
	case '"', '\\', '/':
		return append(buf, e), nil
	case 'b':
		return append(buf, '\b'), nil
	case 'f':
		return append(buf, '\f'), nil
	case 'n':
		return append(buf, '\n'), nil
	case 'r':
		return append(buf, '\r'), nil
	case 't':
		return append(buf, '\t'), nil
	case 'u':
		r, ok := c.hex4()
		if !ok {
			return nil, c.errorf("invalid \\u escape at offset %d", at)
		}
		switch {
		case 0xdc00 <= r && r <= 0xdfff:
			return nil, c.errorf("unpaired surrogate \\u%04x at offset %d", r, at)
		case 0xd800 <= r && r <= 0xdbff:
			if !bytes.HasPrefix(c.in[c.pos:], []byte(`\u`)) {
				return nil, c.errorf("unpaired surrogate \\u%04x at offset %d", r, at)
			}
			c.pos += 2
			lo, ok := c.hex4()
			if !ok || lo < 0xdc00 || lo > 0xdfff {
				return nil, c.errorf("unpaired surrogate \\u%04x at offset %d", r, at)
			}
			r = 0x10000 + (r-0xd800)<<10 + (lo - 0xdc00)
		}
		return utf8.AppendRune(buf, r), nil
	}
	c.pos = at
	return nil, c.errorf("invalid escape at offset %d", at)
}

func (c *canonicalizer) hex4() (rune, bool) {
	if len(c.in)-c.pos < 4 {
		return 0, false
	}
	var r rune
	for _, b := range c.in[c.pos : c.pos+4] {
		var d byte
		switch {
		case '0' <= b && b <= '9':
			d = b - '0'
		case 'a' <= b && b <= 'f':
			d = b - 'a' + 10
		case 'A' <= b && b <= 'F':
			d = b - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(d)
	}
	c.pos += 4
	return r, true
}

// number parses a JSON number (RFC 8259 grammar) and appends its ECMAScript form.
func (c *canonicalizer) number() error {
	start := c.pos
	if c.in[c.pos] == '-' {
		c.pos++
	}
	switch {
	case c.pos < len(c.in) && c.in[c.pos] == '0':
		c.pos++
	case c.digits() == 0:
		return c.syntaxError("in number")
	}
	fracOrExp := false
	if c.pos < len(c.in) && c.in[c.pos] == '.' {
		fracOrExp = true
		c.pos++
		if c.digits() == 0 {
			return c.syntaxError("in number fraction")
		}
	}
	if c.pos < len(c.in) && (c.in[c.pos] == 'e' || c.in[c.pos] == 'E') {
		fracOrExp = true
		c.pos++
		if c.pos < len(c.in) && (c.in[c.pos] == '+' || c.in[c.pos] == '-') {
			c.pos++
		}
		if c.digits() == 0 {
			return c.syntaxError("in number exponent")
		}
	}
	// An integer of at most 15 digits is exact in a double, and ECMAScript
	// writes it back digit for digit: the text is already canonical (but
	// for -0, which is written 0).
	lit := c.in[start:c.pos]
	digits := len(lit)
	if lit[0] == '-' {
		digits--
	}
	if !fracOrExp && digits <= 15 && string(lit) != "-0" {
		c.out = append(c.out, lit...)
		return nil
	}
	text := string(c.in[start:c.pos])
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

func (c *canonicalizer) digits() int {
	n := 0
	for c.pos < len(c.in) && '0' <= c.in[c.pos] && c.in[c.pos] <= '9' {
		c.pos++
		n++
	}
	return n
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

// appendJCSString appends s (valid UTF-8) as a JSON string the way RFC 8785
// (and ECMAScript's JSON.stringify) writes it.
func appendJCSString(dst []byte, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	run := 0
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b >= 0x20 && b != '"' && b != '\\' {
			continue
		}
		dst = append(dst, s[run:i]...)
		switch b {
		case '"', '\\':
			dst = append(dst, '\\', b)
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xf])
		}
		run = i + 1
	}
	dst = append(dst, s[run:]...)
	return append(dst, '"')
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
