package canonicaljson

import (
	"bytes"
	"fmt"
	"slices"
	"sync"
	"unicode/utf8"
)

// A form is one of the canonical forms: it decides how numbers are written
// and in which order object members are sorted; the rest is shared.
type form uint8

const (
	exact   form = iota // Append: numbers by exact value, names by bytes
	rfc8785             // AppendRFC8785: numbers as doubles, names by UTF-16
)

// maxDepth bounds the nesting accepted, as encoding/json does.
const maxDepth = 10000

// run canonicalizes data in form f onto dst.
func run(data, dst []byte, f form) ([]byte, error) {
	c := canonicalizer{in: data, out: dst, form: f}
	out, err := c.document()
	if c.bufs != nil {
		c.bufs.put()
	}
	if err != nil {
		return dst, err
	}
	return out, nil
}

// buffers are what canonicalizing takes beyond the stack: the texts of an
// object's members while they are reordered, and the lists of members of
// objects with many of them. They are pooled, so that canonicalizing
// allocates only its result; they are taken only when needed, since most
// payloads need neither.
type buffers struct {
	text    []byte
	members []member // the long member lists of the objects being parsed, innermost last
}

var bufferPool = sync.Pool{New: func() any { return new(buffers) }}

// Buffers larger than these are dropped rather than kept for reuse.
const (
	maxPooledText    = 64 << 10
	maxPooledMembers = 1 << 10
)

func (b *buffers) put() {
	clear(b.members) // left by an error: the names point into the input
	b.members = b.members[:0]
	if cap(b.text) > maxPooledText {
		b.text = nil
	}
	if cap(b.members) > maxPooledMembers {
		b.members = nil
	}
	bufferPool.Put(b)
}

// canonicalizer parses in and appends the canonical form of what it parsed
// to out in one pass. An object's members are written to out as they come
// and reordered once the object is complete, only if they came out of
// order.
type canonicalizer struct {
	in   []byte
	pos  int
	out  []byte
	form form
	bufs *buffers // from bufferPool, once needed
}

func (c *canonicalizer) buffers() *buffers {
	if c.bufs == nil {
		c.bufs = bufferPool.Get().(*buffers)
	}
	return c.bufs
}

// member is an object member already written to canonicalizer.out: its
// decoded name and where its canonical text (name, colon, value) lies in out.
type member struct {
	name       []byte
	start, end int
}

func (c *canonicalizer) document() ([]byte, error) {
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

func (c *canonicalizer) errorf(format string, args ...any) error {
	return fmt.Errorf("canonicaljson: "+format, args...)
}

func (c *canonicalizer) syntaxError(where string) error {
	if c.pos >= len(c.in) {
		return c.errorf("unexpected end of input %s", where)
	}
	return c.errorf("invalid character %q at offset %d %s", c.in[c.pos], c.pos, where)
}

// compareNames orders member names as the form sorts them.
func (c *canonicalizer) compareNames(a, b []byte) int {
	if c.form == rfc8785 {
		return compareUTF16(a, b)
	}
	return bytes.Compare(a, b)
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
	switch b := c.in[c.pos]; b {
	case '{':
		return c.object(depth + 1)
	case '[':
		return c.array(depth + 1)
	case '"':
		return c.stringValue()
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return c.number()
	case 't':
		return c.literal("true")
	case 'f':
		return c.literal("false")
	case 'n':
		return c.literal("null")
	}
	return c.syntaxError("looking for a value")
}

func (c *canonicalizer) literal(lit string) error {
	if !bytes.HasPrefix(c.in[c.pos:], []byte(lit)) {
		return c.syntaxError("looking for a value")
	}
	c.pos += len(lit)
	c.out = append(c.out, lit...)
	return nil
}

func (c *canonicalizer) array(depth int) error {
	if depth > maxDepth {
		return c.errorf("nesting deeper than %d at offset %d", maxDepth, c.pos)
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
	if depth > maxDepth {
		return c.errorf("nesting deeper than %d at offset %d", maxDepth, c.pos)
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
	// Members are written in input order, each with its name; many objects
	// come with their members in canonical order already, and are then done.
	// The list of members is on the stack while it is short; a longer one
	// moves to the pooled buffers' stack of lists, at base.
	var small [8]member
	members, base, long := small[:0], 0, false
	sorted := true
	var last []byte // the previous member's name
	for {
		c.skipSpace()
		if c.pos >= len(c.in) || c.in[c.pos] != '"' {
			return c.syntaxError("looking for an object member name")
		}
		name, escaped, err := c.string()
		if err != nil {
			return err
		}
		c.skipSpace()
		if c.pos >= len(c.in) || c.in[c.pos] != ':' {
			return c.syntaxError("after object member name")
		}
		c.pos++
		c.skipSpace()
		if len(members) > 0 || long {
			c.out = append(c.out, ',')
			if sorted {
				switch d := c.compareNames(last, name); {
				case d == 0:
					return c.errorf("duplicate object member name %q", name)
				case d > 0:
					sorted = false
				}
			}
		}
		last = name
		from := len(c.out)
		c.out = appendString(c.out, name, escaped)
		c.out = append(c.out, ':')
		if err := c.value(depth); err != nil {
			return err
		}
		m := member{name: name, start: from, end: len(c.out)}
		switch {
		case long:
			c.bufs.members = append(c.bufs.members, m)
		case len(members) < len(small):
			members = append(members, m)
		default:
			b := c.buffers()
			base, long = len(b.members), true
			b.members = append(append(b.members, members...), m)
		}
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
	if long {
		members = c.bufs.members[base:]
	}
	if !sorted {
		if err := c.reorder(members, start); err != nil {
			return err
		}
	}
	if long {
		clear(members) // the names point into the input: keep none in the pool
		c.bufs.members = c.bufs.members[:base]
	}
	c.out = append(c.out, '}')
	return nil
}

// reorder rewrites out[start:], the members of an object in input order
// (separated by commas), in canonical order.
func (c *canonicalizer) reorder(members []member, start int) error {
	// A few members are sorted through their indexes (an insertion sort that
	// moves bytes, not members); many are sorted where they lie.
	var small [12]uint8
	order := small[:0]
	if len(members) <= len(small) {
		for i := range members {
			order = append(order, uint8(i))
		}
		for i := 1; i < len(order); i++ {
			for j := i; j > 0 && c.compareNames(members[order[j-1]].name, members[order[j]].name) > 0; j-- {
				order[j-1], order[j] = order[j], order[j-1]
			}
		}
	} else {
		slices.SortFunc(members, func(a, b member) int { return c.compareNames(a.name, b.name) })
	}
	at := func(i int) *member {
		if len(order) > 0 {
			return &members[order[i]]
		}
		return &members[i]
	}
	for i := 1; i < len(members); i++ {
		if bytes.Equal(at(i).name, at(i-1).name) {
			return c.errorf("duplicate object member name %q", at(i).name)
		}
	}
	// The members' texts are copied aside and written back in order: a
	// small object's on the stack, a larger one's in the pooled buffer.
	var stack [512]byte
	var text []byte
	if n := len(c.out) - start; n <= len(stack) {
		text = append(stack[:0], c.out[start:]...)
	} else {
		b := c.buffers()
		b.text = append(b.text[:0], c.out[start:]...)
		text = b.text
	}
	c.out = c.out[:start]
	for i := range members {
		if i > 0 {
			c.out = append(c.out, ',')
		}
		m := at(i)
		c.out = append(c.out, text[m.start-start:m.end-start]...)
	}
	return nil
}

func (c *canonicalizer) stringValue() error {
	s, escaped, err := c.string()
	if err != nil {
		return err
	}
	c.out = appendString(c.out, s, escaped)
	return nil
}

// string parses a JSON string at c.pos and returns its decoded value: a
// slice of the input when it has no escapes (escaped is then false).
func (c *canonicalizer) string() (s []byte, escaped bool, err error) {
	c.pos++ // opening quote
	var buf []byte
	runStart := c.pos
	for {
		for c.pos < len(c.in) && plain[c.in[c.pos]] {
			c.pos++
		}
		if c.pos >= len(c.in) {
			return nil, false, c.syntaxError("in string")
		}
		b := c.in[c.pos]
		switch {
		case b == '"':
			s := c.in[runStart:c.pos:c.pos]
			if escaped {
				s = append(buf, s...)
			}
			c.pos++
			return s, escaped, nil
		case b == '\\':
			buf = append(buf, c.in[runStart:c.pos]...)
			if buf, err = c.escape(buf); err != nil {
				return nil, false, err
			}
			escaped = true
			runStart = c.pos
		case b < 0x20:
			return nil, false, c.syntaxError("in string (control characters must be escaped)")
		default:
			r, n := utf8.DecodeRune(c.in[c.pos:])
			if r == utf8.RuneError && n == 1 {
				return nil, false, c.errorf("invalid UTF-8 at offset %d", c.pos)
			}
			c.pos += n
		}
	}
}

// plain tells the bytes a string's text holds as they are: ASCII but for
// the quote, the backslash and the control characters.
var plain = func() (t [256]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		t[b] = b != '"' && b != '\\'
	}
	return t
}()

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

// appendString appends the string s (valid UTF-8, decoded) as both forms
// write strings: escaped only where JSON requires it. A string that had no
// escapes in the input has nothing to escape (its text cannot hold a quote,
// a backslash or a control character), so it is copied as it is.
func appendString(dst, s []byte, escaped bool) []byte {
	dst = append(dst, '"')
	if !escaped {
		dst = append(dst, s...)
		return append(dst, '"')
	}
	const hex = "0123456789abcdef"
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
