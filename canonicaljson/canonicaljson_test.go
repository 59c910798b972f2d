package canonicaljson_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/idemkit/idempotency/canonicaljson"
)

func TestCanonicalNumbers(t *testing.T) {
	tests := []struct{ in, want string }{
		{"0", "0"},
		{"-0", "0"},
		{"0.000", "0"},
		{"-0.0e-5", "0"},
		{"0e999999999", "0"},
		{"1", "1"},
		{"-1", "-1"},
		{"1.0", "1"},
		{"1e0", "1"},
		{"1E+0", "1"},
		{"10e-1", "1"},
		{"100e-2", "1"},
		{"0.01e2", "1"},
		{"1e2", "100"},
		{"1000", "1000"},
		{"1234567890123456789", "1234567890123456789"},
		{"-1234567890123456788", "-1234567890123456788"},
		{"18446744073709551615", "18446744073709551615"},
		{"100000000000000000000", "100000000000000000000"}, // 20 zeros: still plain
		{"1e20", "100000000000000000000"},
		{"1000000000000000000000", "1e21"}, // 21 zeros: an exponent
		{"1e21", "1e21"},
		{"1.5e300", "15e299"},
		{"1e400", "1e400"}, // beyond a double, still exact
		{"123000000000000000000000", "123e21"},
		{"0.5", "0.5"},
		{"-0.5", "-0.5"},
		{"4.50", "4.5"},
		{"2e-3", "0.002"},
		{"0.002", "0.002"},
		{"1e-400", "1e-400"},                 // no underflow to zero
		{"1e-21", "0.000000000000000000001"}, // 20 zeros after the point: still plain
		{"1e-22", "1e-22"},                   // 21: an exponent
		{"0.0000000000000000000000123", "123e-25"},
		{"-12.5e-30", "-125e-31"},
		{"1.5", "1.5"},
		{"15e-1", "1.5"},
		{"0.15e1", "1.5"},
		{"10.5", "10.5"},
		{"0.19", "0.19"},
		{"49.990", "49.99"},
		{"12e-1", "1.2"},
		{"120e-1", "12"},
		{"123456789.123456789e5", "12345678912345.6789"},
		{"123.456", "123.456"},
		{"123.4560e3", "123456"},
		{"100.001", "100.001"},
		{"100.000", "100"},
		{"0.00100", "0.001"},
		{"9007199254740993", "9007199254740993"},
		{"12345678901234567890.12345678901234567890", "12345678901234567890.1234567890123456789"},
		{"1e000000000000000000001", "10"},  // leading zeros in the exponent
		{"1e1000000000", "1e1000000000"},   // the largest exponent accepted
		{"1e-1000000000", "1e-1000000000"}, // and the smallest
		{"0.1e1000000000", "1e999999999"},
		{"100e-1000000000", "1e-999999998"},
		{"[1.0,-0,2e1]", "[1,0,20]"},
	}
	for _, tt := range tests {
		got, err := canonicaljson.Canonical([]byte(tt.in))
		if err != nil {
			t.Errorf("Canonical(%s): %v", tt.in, err)
			continue
		}
		if string(got) != tt.want {
			t.Errorf("Canonical(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// Texts that hold the same data must canonicalize to the same bytes.
func TestCanonicalEqual(t *testing.T) {
	tests := []struct{ name, a, b string }{
		{"1.0 and 1", `{"n":1.0}`, `{"n":1}`},
		{"1e2 and 100", `[1e2]`, `[100]`},
		{"10e-1 and 1", `10e-1`, `1`},
		{"0.1 and 1e-1", `0.1`, `1e-1`},
		{"1.50 and 15E-1", `1.50`, `15E-1`},
		{"-0 and 0", `-0`, `0`},
		{"-0.0 and 0e10", `-0.0`, `0e10`},
		{"long integer, two spellings", `1234567890123456789`, `12345678901234567890e-1`},
		{"long fraction, two spellings", `0.1000000000000000000000000000001`, `1000000000000000000000000000001e-31`},
		{"member order", `{"b":2,"a":1,"c":3}`, `{"a":1,"c":3,"b":2}`},
		{"nested member order", `{"x":{"q":[{"z":0,"y":1}],"p":2}}`, `{"x":{"p":2,"q":[{"y":1,"z":0}]}}`},
		{"white space", " { \"a\" :\t[ 1 ,\r\n2 ] } ", `{"a":[1,2]}`},
		{"escaped letter", `"\u0041"`, `"A"`},
		{"escaped slash", `"\/"`, `"/"`},
		{"escaped non-ASCII", `"\u00e9\u20ac"`, `"é€"`},
		{"surrogate pair", `"\ud83d\ude00"`, `"😀"`},
		{"escaped control, two spellings", `"\n\u0001"`, `"\u000a\u0001"`},
		{"escaped member name", `{"\u0061":1,"b":2}`, `{"b":2,"a":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, errA := canonicaljson.Canonical([]byte(tt.a))
			b, errB := canonicaljson.Canonical([]byte(tt.b))
			if errA != nil || errB != nil {
				t.Fatalf("Canonical(%s): %v; Canonical(%s): %v", tt.a, errA, tt.b, errB)
			}
			if !bytes.Equal(a, b) {
				t.Errorf("Canonical(%s) = %s, Canonical(%s) = %s; want them equal", tt.a, a, tt.b, b)
			}
		})
	}
}

// Texts that hold different data must canonicalize to different bytes,
// also where RFC 8785 makes them equal.
func TestCanonicalDistinct(t *testing.T) {
	tests := []struct{ name, a, b string }{
		{"integers one apart beyond 2^53", `{"account_id":1234567890123456789}`, `{"account_id":1234567890123456788}`},
		{"2^53+1 and 2^53", `9007199254740993`, `9007199254740992`},
		{"a digit past a double's precision", `0.1`, `0.10000000000000000001`},
		{"huge numbers", `1e400`, `1e401`},
		{"tiny number and zero", `1e-400`, `0`},
		{"negative and positive", `-1`, `1`},
		{"1e21 and 1e20", `1e21`, `1e20`},
		{"number and string", `1`, `"1"`},
		{"literal and string", `true`, `"true"`},
		{"null and missing member", `{"a":1,"b":null}`, `{"a":1}`},
		{"array order", `[1,2]`, `[2,1]`},
		{"nesting", `[[1]]`, `[1]`},
		{"letter case", `"A"`, `"a"`},
		{"composed and decomposed é", `"\u00e9"`, `"e\u0301"`},
		{"member name", `{"a":1}`, `{"b":1}`},
		{"empty object and array", `{}`, `[]`},
		{"trailing zeros of an integer", `100`, `10`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, errA := canonicaljson.Canonical([]byte(tt.a))
			b, errB := canonicaljson.Canonical([]byte(tt.b))
			if errA != nil || errB != nil {
				t.Fatalf("Canonical(%s): %v; Canonical(%s): %v", tt.a, errA, tt.b, errB)
			}
			if bytes.Equal(a, b) {
				t.Errorf("Canonical(%s) = Canonical(%s) = %s; want them different", tt.a, tt.b, a)
			}
		})
	}
}

// Members are sorted by their names' bytes (code point order), not by
// UTF-16 code units as in RFC 8785: the two differ above U+FFFF.
func TestCanonicalMemberOrder(t *testing.T) {
	in := `{"\u20ac":1,"\r":2,"\ufb33":3,"1":4,"\ud83d\ude00":5,"\u0080":6,"\u00f6":7,"":8}`
	want := "{\"\":8,\"\\r\":2,\"1\":4,\"\u0080\":6,\"ö\":7,\"€\":1,\"\ufb33\":3,\"😀\":5}"
	got, err := canonicaljson.Canonical([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("Canonical =\n%s\nwant\n%s", got, want)
	}
	// More members than the insertion sort handles, in reverse order.
	var rev, sorted strings.Builder
	for i := 30; i >= 10; i-- {
		rev.WriteString(`,"k` + string(rune('0'+i/10)) + string(rune('0'+i%10)) + `":0`)
	}
	for i := 10; i <= 30; i++ {
		sorted.WriteString(`,"k` + string(rune('0'+i/10)) + string(rune('0'+i%10)) + `":0`)
	}
	got, err = canonicaljson.Canonical([]byte("{" + rev.String()[1:] + "}"))
	if want := "{" + sorted.String()[1:] + "}"; err != nil || string(got) != want {
		t.Errorf("Canonical(21 members reversed) = %s, %v; want %s", got, err, want)
	}
}

// Strings are written the same way in both forms.
func TestStrings(t *testing.T) {
	tests := []struct{ in, want string }{
		{`"plain"`, `"plain"`},
		{`""`, `""`},
		{`"\/"`, `"/"`},
		{`"<>&"`, `"<>&"`},                      // no HTML escaping
		{`"\u003c"`, `"<"`},                     // unescaped where not needed
		{`"é\u00e9"`, `"éé"`},                   // non-ASCII written as itself
		{`"\u001f\u007f"`, "\"\\u001f\u007f\""}, // DEL is not a control for JSON
		{`"\b\f\n\r\t"`, `"\b\f\n\r\t"`},
		{`"\u0008\u000C"`, `"\b\f"`},
		{`"\u0000"`, `"\u0000"`},
		{`"\"\\"`, `"\"\\"`},
		{`"\u0022\u005C"`, `"\"\\"`},
		{`"\u2028"`, "\"\u2028\""},
		{`"\uD834\uDD1E"`, `"𝄞"`},
		{`"a\u0062c"`, `"abc"`},
	}
	for _, tt := range tests {
		for _, f := range forms {
			got, err := f.fn([]byte(tt.in))
			if err != nil {
				t.Errorf("%s(%s): %v", f.name, tt.in, err)
				continue
			}
			if string(got) != tt.want {
				t.Errorf("%s(%s) = %s, want %s", f.name, tt.in, got, tt.want)
			}
		}
	}
}

var forms = []struct {
	name string
	fn   func([]byte) ([]byte, error)
}{
	{"Canonical", canonicaljson.Canonical},
	{"RFC8785", canonicaljson.RFC8785},
}

func TestRejects(t *testing.T) {
	tests := []struct{ name, in string }{
		{"empty", ``},
		{"space only", ` `},
		{"duplicate key", `{"a":1,"a":2}`},
		{"duplicate key after unescaping", `{"a":1,"\u0061":2}`},
		{"duplicate key out of order", `{"b":1,"a":2,"b":3}`},
		{"nested duplicate", `[{"x":{"k":1,"k":1}}]`},
		{"trailing comma object", `{"a":1,}`},
		{"trailing comma array", `[1,]`},
		{"trailing text", `{} x`},
		{"two values", `1 2`},
		{"single quotes", `{'a':1}`},
		{"unquoted key", `{a:1}`},
		{"missing colon", `{"a" 1}`},
		{"leading zero", `01`},
		{"negative leading zero", `-01`},
		{"plus sign", `+1`},
		{"bare minus", `-`},
		{"bare dot", `1.`},
		{"leading dot", `.5`},
		{"empty exponent", `1e`},
		{"signed empty exponent", `1e+`},
		{"hex", `0x10`},
		{"NaN", `NaN`},
		{"Infinity", `Infinity`},
		{"raw control in string", "\"a\x01b\""},
		{"raw newline in string", "\"a\nb\""},
		{"bad escape", `"\x"`},
		{"short unicode escape", `"\u12"`},
		{"non-hex unicode escape", `"\u12g4"`},
		{"lone high surrogate", `"\ud800"`},
		{"lone low surrogate", `"\udc00"`},
		{"high surrogate then letter", `"\ud800\u0041"`},
		{"invalid UTF-8", "\"\xff\""},
		{"invalid UTF-8 in a name", "{\"\xc3\":1}"},
		{"encoded surrogate", "\"\xed\xa0\x80\""},
		{"unterminated string", `"abc`},
		{"unterminated object", `{"a":1`},
		{"unterminated array", `[1`},
		{"truncated literal", `tru`},
		{"capital literal", `True`},
		{"byte order mark", "\ufeff{}"},
		{"too deep", strings.Repeat("[", 10001) + strings.Repeat("]", 10001)},
		{"too deep objects", strings.Repeat(`{"a":`, 10001) + "1" + strings.Repeat("}", 10001)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, f := range forms {
				if got, err := f.fn([]byte(tt.in)); err == nil {
					t.Errorf("%s(%q) = %s, want an error", f.name, tt.in, got)
				}
			}
		})
	}
}

// The exact form refuses exponents beyond ±1e9, in the text (0e1000000001
// is zero, but is refused like any other) or once the digits are
// normalized (10e1000000000 is 1e1000000001).
func TestCanonicalRejectsHugeExponents(t *testing.T) {
	for _, in := range []string{
		"1e1000000001", "1e-1000000001", "0e1000000001", "1E+99999999999999999999",
		"1e" + strings.Repeat("9", 1000), `{"a":[1e2000000000]}`,
		"10e1000000000", "0.1e-1000000000", "1" + strings.Repeat("0", 30) + "e999999990",
	} {
		if got, err := canonicaljson.Canonical([]byte(in)); err == nil {
			t.Errorf("Canonical(%.40s) = %.40s, want an error", in, got)
		}
	}
}

func TestDeepButAllowed(t *testing.T) {
	in := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	for _, f := range forms {
		got, err := f.fn([]byte(in))
		if err != nil {
			t.Fatalf("%s(10000 nested arrays): %v", f.name, err)
		}
		if string(got) != in {
			t.Errorf("%s(10000 nested arrays) changed the input", f.name)
		}
	}
}

func TestAppend(t *testing.T) {
	for _, tt := range []struct {
		name string
		fn   func(dst, data []byte) ([]byte, error)
	}{{"Append", canonicaljson.Append}, {"AppendRFC8785", canonicaljson.AppendRFC8785}} {
		dst := []byte("prefix:")
		got, err := tt.fn(dst, []byte(`{"b":2, "a":1}`))
		if want := `prefix:{"a":1,"b":2}`; err != nil || string(got) != want {
			t.Errorf("%s = %q, %v; want %q", tt.name, got, err, want)
		}
		got, err = tt.fn(dst, []byte(`{"b":2,"a":`))
		if err == nil || string(got) != "prefix:" {
			t.Errorf("%s on bad JSON = %q, %v; want dst unchanged and an error", tt.name, got, err)
		}
	}
}

func TestAppendAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector; run without -race")
	}
	buf := make([]byte, 0, 2048)
	for _, bi := range benchInputs {
		in := []byte(bi.in)
		if n := testing.AllocsPerRun(100, func() { buf, _ = canonicaljson.Append(buf[:0], in) }); n != 0 {
			t.Errorf("Append(%s) into a reused buffer: %v allocs, want 0", bi.name, n)
		}
	}
}
