package idemhttp

import (
	"errors"
	"fmt"
	"strings"

	"github.com/idemkit/idempotency"
)

// Header names of the IETF Idempotency-Key draft and of replays.
const (
	// HeaderKey carries the idempotency key of a request.
	HeaderKey = "Idempotency-Key"
	// HeaderReplayed is set to "true" on a response replayed from the store.
	HeaderReplayed = "Idempotent-Replayed"
)

// ErrKeyMissing is ParseKey's error when the request has no Idempotency-Key
// header. The middleware passes such a request through unless the key is
// required (WithRequired), when it answers 400.
var ErrKeyMissing = errors.New("idemhttp: no Idempotency-Key header")

// ParseKey returns the idempotency key carried by the Idempotency-Key header
// lines values, as r.Header.Values(HeaderKey) returns them.
//
// The key may be sent as the draft's structured-field string (RFC 8941: in
// double quotes, printable ASCII, with \" and \\ as the only escapes, no
// parameters) or, leniently, bare: the value as it is. Both are trimmed of
// surrounding spaces and tabs, so `"abc"` and `abc` are the same key. Either
// way the key is printable ASCII (0x20 to 0x7e), as an sf-string is; a bare
// key may not contain a comma or a double quote, since it could then be a
// list. The key must also pass idempotency.ValidateKey (1 to 255 bytes).
//
// It returns ErrKeyMissing when values is empty, and an error wrapping
// idempotency.ErrInvalidKey for a malformed value, for more than one header
// line, and for a list.
func ParseKey(values []string) (string, error) {
	switch len(values) {
	case 0:
		return "", ErrKeyMissing
	case 1:
	default:
		return "", fmt.Errorf("%w: %d %s header lines; send exactly one", idempotency.ErrInvalidKey, len(values), HeaderKey)
	}
	v := trimSpaceTab(values[0])
	var key string
	switch {
	case v == "":
		return "", fmt.Errorf("%w: empty", idempotency.ErrInvalidKey)
	case v[0] == '"':
		var err error
		if key, err = parseString(v); err != nil {
			return "", err
		}
	default:
		for i := 0; i < len(v); i++ {
			switch c := v[i]; {
			case c < 0x20 || c > 0x7e:
				return "", fmt.Errorf("%w: a key holds printable ASCII only (byte %d is 0x%02x)", idempotency.ErrInvalidKey, i, c)
			case c == ',' || c == '"':
				return "", fmt.Errorf("%w: a bare key may not contain a comma or a double quote (a list?); send one quoted string", idempotency.ErrInvalidKey)
			}
		}
		key = v
	}
	if err := idempotency.ValidateKey(key); err != nil {
		return "", err
	}
	return key, nil
}

// trimSpaceTab trims spaces and tabs from both ends of v.
func trimSpaceTab(v string) string {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// parseString parses v, which starts with a double quote, as a whole
// RFC 8941 sf-string.
func parseString(v string) (string, error) {
	var b strings.Builder
	for i := 1; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\':
			i++
			if i == len(v) || (v[i] != '"' && v[i] != '\\') {
				return "", fmt.Errorf("%w: a quoted key may escape only \" and \\", idempotency.ErrInvalidKey)
			}
			b.WriteByte(v[i])
		case c == '"':
			if i != len(v)-1 {
				return "", fmt.Errorf("%w: text after the closing quote (lists and parameters are not accepted)", idempotency.ErrInvalidKey)
			}
			return b.String(), nil
		case c < 0x20 || c > 0x7e:
			return "", fmt.Errorf("%w: a quoted key holds printable ASCII only (byte %d is 0x%02x)", idempotency.ErrInvalidKey, i, c)
		default:
			b.WriteByte(c)
		}
	}
	return "", fmt.Errorf("%w: missing closing quote", idempotency.ErrInvalidKey)
}
