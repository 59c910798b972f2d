package canonicaljson_test

import (
	"bytes"
	"encoding/json"
	"math/big"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/idemkit/idempotency/canonicaljson"
)

// FuzzCanonicalExactValue checks Canonical against a reference written
// independently of it: encoding/json decodes both texts (numbers as
// json.Number), and the trees are compared with numbers as exact rationals
// (math/big). Two texts that both canonicalize must canonicalize to the
// same bytes exactly when the reference finds them equal; and each text's
// canonical form must canonicalize to itself and hold the same data.
func FuzzCanonicalExactValue(f *testing.F) {
	for _, p := range [][2]string{
		// Equal data, spelled differently.
		{`1`, `1.0`},
		{`1`, `1e0`},
		{`1`, `10e-1`},
		{`100`, `1e2`},
		{`100`, `1E+2`},
		{`0`, `-0`},
		{`0`, `-0.0e-7`},
		{`1.5`, `15e-1`},
		{`0.001`, `1e-3`},
		{`1e21`, `1000000000000000000000`},
		{`1e-21`, `0.000000000000000000001`},
		{`1e-22`, `0.0000000000000000000001`},
		{`123e-25`, `0.0000000000000000000000123`},
		{`1234567890123456789`, `1234567890123456789.000`},
		{`12345678901234567890123456789`, `1.2345678901234567890123456789e28`},
		{`-4.50`, `-45e-1`},
		{`{"a":1,"b":[true,null]}`, ` { "b" : [ true , null ] , "a" : 1.0 } `},
		{`{"a":{"y":1,"x":2},"b":"c"}`, `{"b":"c","a":{"x":2,"y":1}}`},
		{`"A"`, `"\u0041"`},
		{`"/"`, `"\/"`},
		{`"é"`, `"\u00e9"`},
		{`"😀"`, `"\ud83d\ude00"`},
		{`"\n"`, `"\u000a"`},
		{`{"\u0061":1}`, `{"a":1e0}`},
		{`[{"k":0.5},{"k":5e-1}]`, `[{"k":50e-2},{"k":0.50}]`},
		{"{\"\u20ac\":1,\"\U0001F600\":2,\"\ufb33\":3}", `{"\ufb33":3,"\ud83d\ude00":2,"\u20ac":1}`},
		// Different data, spelled alike.
		{`{"account_id":1234567890123456789}`, `{"account_id":1234567890123456788}`},
		{`9007199254740993`, `9007199254740992`},
		{`0.1`, `0.10000000000000000001`},
		{`1e400`, `1e401`},
		{`1e-400`, `0`},
		{`1`, `-1`},
		{`1`, `"1"`},
		{`[1,2]`, `[2,1]`},
		{`{"a":1}`, `{"a":1,"b":null}`},
		{`"\u00e9"`, `"e\u0301"`},
		{`100`, `10`},
		{`0.5`, `5`},
		{`1e20`, `1e21`},
		{`{}`, `[]`},
		{`true`, `"true"`},
	} {
		f.Add([]byte(p[0]), []byte(p[1]))
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		ca, errA := canonicaljson.Canonical(a)
		cb, errB := canonicaljson.Canonical(b)
		ra, okA := checkCanonical(t, a, ca, errA)
		rb, okB := checkCanonical(t, b, cb, errB)
		if !okA || !okB {
			return
		}
		if got, want := bytes.Equal(ca, cb), refEqual(ra, rb); got != want {
			t.Fatalf("Canonical(%q) = %q, Canonical(%q) = %q: equal %v, but the reference says %v", a, ca, b, cb, got, want)
		}
	})
}

// checkCanonical checks what Canonical returned for in (out, err) on its
// own, and returns in's reference tree when the reference can compare it.
func checkCanonical(t *testing.T, in, out []byte, err error) (any, bool) {
	t.Helper()
	if err != nil {
		if expectCanonical(in) {
			t.Fatalf("Canonical(%q): %v; want a canonical form", in, err)
		}
		return nil, false
	}
	if !json.Valid(in) {
		t.Fatalf("Canonical accepted %q, which encoding/json rejects", in)
	}
	again, err := canonicaljson.Canonical(out)
	if err != nil {
		t.Fatalf("Canonical(%q) = %q, which does not canonicalize: %v", in, out, err)
	}
	if !bytes.Equal(again, out) {
		t.Fatalf("not idempotent: %q -> %q -> %q", in, out, again)
	}
	ref, err := refDecode(in)
	if err != nil {
		t.Fatalf("Canonical accepted %q, which encoding/json cannot decode: %v", in, err)
	}
	refOut, err := refDecode(out)
	if err != nil {
		t.Fatalf("Canonical(%q) = %q, which encoding/json cannot decode: %v", in, out, err)
	}
	if !boundedNumbers(ref) || !boundedNumbers(refOut) {
		return nil, false
	}
	if !refEqual(ref, refOut) {
		t.Fatalf("Canonical(%q) = %q: the reference finds other data", in, out)
	}
	return ref, true
}

// maxRefExponent bounds the exponents the reference expands: big.Rat
// writes 1e1000000000 out in full, and even 1e-10000 costs it 100 µs, which
// stalls the fuzzer while it minimizes inputs full of them. 400 is past the
// range of a double, where the RFC 8785 form would lose values.
const maxRefExponent = 400

// refDecode decodes data with encoding/json, numbers as json.Number.
func refDecode(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

// boundedNumbers reports whether refEqual can compare v's numbers: whether
// none has an exponent past maxRefExponent.
func boundedNumbers(v any) bool {
	switch v := v.(type) {
	case json.Number:
		_, exp, ok := strings.Cut(strings.ToLower(string(v)), "e")
		if !ok {
			return true
		}
		e, err := strconv.Atoi(exp)
		return err == nil && -maxRefExponent <= e && e <= maxRefExponent
	case []any:
		for _, x := range v {
			if !boundedNumbers(x) {
				return false
			}
		}
	case map[string]any:
		for _, x := range v {
			if !boundedNumbers(x) {
				return false
			}
		}
	}
	return true
}

// refEqual compares two decoded trees, numbers by exact value.
func refEqual(x, y any) bool {
	switch x := x.(type) {
	case nil:
		return y == nil
	case bool:
		y, ok := y.(bool)
		return ok && x == y
	case string:
		y, ok := y.(string)
		return ok && x == y
	case json.Number:
		y, ok := y.(json.Number)
		if !ok {
			return false
		}
		var rx, ry big.Rat
		if _, ok := rx.SetString(string(x)); !ok {
			panic("reference: bad number " + string(x))
		}
		if _, ok := ry.SetString(string(y)); !ok {
			panic("reference: bad number " + string(y))
		}
		return rx.Cmp(&ry) == 0
	case []any:
		y, ok := y.([]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if !refEqual(x[i], y[i]) {
				return false
			}
		}
		return true
	case map[string]any:
		y, ok := y.(map[string]any)
		if !ok || len(x) != len(y) {
			return false
		}
		for k, vx := range x {
			vy, ok := y[k]
			if !ok || !refEqual(vx, vy) {
				return false
			}
		}
		return true
	}
	panic("reference: unexpected type")
}

// expectCanonical reports whether in certainly has a canonical form: it is
// JSON, valid UTF-8, without surrogate escapes (which the reference does not
// check for pairing), without duplicate member names and with exponents
// well within the bound.
func expectCanonical(in []byte) bool {
	if !json.Valid(in) || !utf8.Valid(in) || bytes.Contains(bytes.ToLower(in), []byte(`\ud`)) {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(in))
	dec.UseNumber()
	// A stack of the member names seen in each open container (nil for an
	// array), to find duplicates.
	var names []map[string]bool
	key := false // whether the next token of the innermost object is a name
	for {
		tok, err := dec.Token()
		if err != nil {
			return true // io.EOF: the text was valid, and is read
		}
		if name, ok := tok.(string); ok && key {
			if names[len(names)-1][name] {
				return false
			}
			names[len(names)-1][name] = true
			key = false
			continue
		}
		switch tok := tok.(type) {
		case json.Delim:
			switch tok {
			case '{':
				names = append(names, map[string]bool{})
				key = true
				continue
			case '[':
				names = append(names, nil)
			case '}', ']':
				names = names[:len(names)-1]
			}
		case json.Number:
			if _, exp, ok := strings.Cut(strings.ToLower(string(tok)), "e"); ok {
				// Normalizing the digits moves the exponent by fewer places
				// than the text has bytes.
				e, err := strconv.ParseInt(exp, 10, 64)
				if bound := int64(1_000_000_000 - len(in)); err != nil || e > bound || e < -bound {
					return false
				}
			}
		}
		key = len(names) > 0 && names[len(names)-1] != nil
	}
}
