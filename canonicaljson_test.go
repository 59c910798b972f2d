package idempotency_test

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/idemkit/idempotency"
)

// TestCanonicalJSONNumbers checks the number serialization table of RFC 8785
// appendix B (IEEE 754 bit patterns and their canonical text).
func TestCanonicalJSONNumbers(t *testing.T) {
	tests := []struct {
		bits string
		want string
	}{
		{"0000000000000000", "0"},
		{"8000000000000000", "0"},
		{"0000000000000001", "5e-324"},
		{"8000000000000001", "-5e-324"},
		{"7fefffffffffffff", "1.7976931348623157e+308"},
		{"ffefffffffffffff", "-1.7976931348623157e+308"},
		{"4340000000000000", "9007199254740992"},
		{"c340000000000000", "-9007199254740992"},
		{"4430000000000000", "295147905179352830000"},
		{"44b52d02c7e14af5", "9.999999999999997e+22"},
		{"44b52d02c7e14af6", "1e+23"},
		{"44b52d02c7e14af7", "1.0000000000000001e+23"},
		{"444b1ae4d6e2ef4e", "999999999999999700000"},
		{"444b1ae4d6e2ef4f", "999999999999999900000"},
		{"444b1ae4d6e2ef50", "1e+21"},
		{"3eb0c6f7a0b5ed8c", "9.999999999999997e-7"},
		{"3eb0c6f7a0b5ed8d", "0.000001"},
		{"41b3de4355555553", "333333333.3333332"},
		{"41b3de4355555554", "333333333.33333325"},
		{"41b3de4355555555", "333333333.3333333"},
		{"41b3de4355555556", "333333333.3333334"},
		{"41b3de4355555557", "333333333.33333343"},
		{"becbf647612f3696", "-0.0000033333333333333333"},
		{"43143ff3c1cb0959", "1424953923781206.2"},
	}
	for _, tt := range tests {
		t.Run(tt.bits, func(t *testing.T) {
			u, err := strconv.ParseUint(tt.bits, 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			f := math.Float64frombits(u)
			// Any spelling that parses to f must canonicalize to want:
			// Go's own shortest form, and a 17-digit one.
			for _, in := range []string{
				strconv.FormatFloat(f, 'g', -1, 64),
				strconv.FormatFloat(f, 'e', 16, 64),
			} {
				got, err := idempotency.CanonicalJSON([]byte(in))
				if err != nil {
					t.Fatalf("CanonicalJSON(%s): %v", in, err)
				}
				if string(got) != tt.want {
					t.Errorf("CanonicalJSON(%s) = %s, want %s", in, got, tt.want)
				}
			}
		})
	}
}

func TestCanonicalJSONNumberSpellings(t *testing.T) {
	tests := []struct{ in, want string }{
		{"1", "1"},
		{"-1", "-1"},
		{"1.0", "1"},
		{"1E2", "100"},
		{"1e+2", "100"},
		{"100e-2", "1"},
		{"0.1", "0.1"},
		{"-0", "0"},
		{"-0.0e5", "0"},
		{"4.50", "4.5"},
		{"2e-3", "0.002"},
		{"1e-7", "1e-7"},
		{"0.000001", "0.000001"},
		{"123456789012345678901234", "1.2345678901234569e+23"},
		{"1e20", "100000000000000000000"},
		{"1e21", "1e+21"},
		{"1.5e300", "1.5e+300"},
		{"1e-400", "0"}, // underflows to zero, as in ECMAScript
		{"9007199254740993", "9007199254740992"},
	}
	for _, tt := range tests {
		got, err := idempotency.CanonicalJSON([]byte(tt.in))
		if err != nil {
			t.Errorf("CanonicalJSON(%s): %v", tt.in, err)
			continue
		}
		if string(got) != tt.want {
			t.Errorf("CanonicalJSON(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// TestCanonicalJSONRFCExamples checks the worked examples of RFC 8785
// section 3.2.2 (serialization) and 3.2.3 (member sorting).
func TestCanonicalJSONRFCExamples(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{
			name: "3.2.2 serialization",
			in: `{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}`,
			want: `{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}`,
		},
		{
			name: "3.2.3 sorting",
			in: `{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}`,
			want: "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u0080\":\"Control\",\"ö\":\"Latin Small Letter O With Diaeresis\"," +
				"\"€\":\"Euro Sign\",\"😀\":\"Emoji: Grinning Face\",\"\ufb33\":\"Hebrew Letter Dalet With Dagesh\"}",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := idempotency.CanonicalJSON([]byte(tt.in))
			if err != nil {
				t.Fatalf("CanonicalJSON: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("CanonicalJSON =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestCanonicalJSONStrings(t *testing.T) {
	tests := []struct{ in, want string }{
		{`"plain"`, `"plain"`},
		{`"\/"`, `"/"`},
		{`"<>&"`, `"<>&"`},                      // no HTML escaping
		{`"\u003c"`, `"<"`},                     // unescaped where not needed
		{`"é\u00e9"`, `"éé"`},                   // non-ASCII written as itself
		{`"\u001f\u007f"`, "\"\\u001f\u007f\""}, // DEL is not a control for JSON
		{`"\b\f\n\r\t"`, `"\b\f\n\r\t"`},
		{`"\u0008\u000C"`, `"\b\f"`},
		{`"\u0000"`, `"\u0000"`},
		{`"\u2028"`, "\"\u2028\""},
		{`"\uD834\uDD1E"`, `"𝄞"`},
	}
	for _, tt := range tests {
		got, err := idempotency.CanonicalJSON([]byte(tt.in))
		if err != nil {
			t.Errorf("CanonicalJSON(%s): %v", tt.in, err)
			continue
		}
		if string(got) != tt.want {
			t.Errorf("CanonicalJSON(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestCanonicalJSONOrderAndWhitespace(t *testing.T) {
	want := `{"a":{"x":[1,{"p":true,"q":null}],"y":"z"},"b":2.5,"c":[]}`
	inputs := []string{
		`{"a":{"x":[1,{"p":true,"q":null}],"y":"z"},"b":2.5,"c":[]}`,
		`{"c":[],"b":2.5,"a":{"y":"z","x":[1,{"q":null,"p":true}]}}`,
		"\n\t{ \"b\" : 25e-1 ,\r\n \"c\" : [ ] , \"a\" : { \"y\" : \"\\u007a\" , \"x\" : [ 1.0 , { \"q\" : null , \"p\" : true } ] } }  \n",
	}
	for _, in := range inputs {
		got, err := idempotency.CanonicalJSON([]byte(in))
		if err != nil {
			t.Errorf("CanonicalJSON(%q): %v", in, err)
			continue
		}
		if string(got) != want {
			t.Errorf("CanonicalJSON(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestCanonicalJSONRejects(t *testing.T) {
	tests := []struct{ name, in string }{
		{"empty", ``},
		{"space only", ` `},
		{"duplicate key", `{"a":1,"a":2}`},
		{"duplicate key after unescaping", `{"a":1,"\u0061":2}`},
		{"nested duplicate", `[{"x":{"k":1,"k":1}}]`},
		{"trailing comma object", `{"a":1,}`},
		{"trailing comma array", `[1,]`},
		{"trailing text", `{} x`},
		{"two values", `1 2`},
		{"single quotes", `{'a':1}`},
		{"unquoted key", `{a:1}`},
		{"leading zero", `01`},
		{"plus sign", `+1`},
		{"bare dot", `1.`},
		{"leading dot", `.5`},
		{"empty exponent", `1e`},
		{"hex", `0x10`},
		{"NaN", `NaN`},
		{"Infinity", `Infinity`},
		{"overflow", `1e400`},
		{"negative overflow", `-1e309`},
		{"raw control in string", "\"a\x01b\""},
		{"raw newline in string", "\"a\nb\""},
		{"bad escape", `"\x"`},
		{"short unicode escape", `"\u12"`},
		{"lone high surrogate", `"\ud800"`},
		{"lone low surrogate", `"\udc00"`},
		{"high surrogate then letter", `"\ud800\u0041"`},
		{"invalid UTF-8", "\"\xff\""},
		{"unterminated string", `"abc`},
		{"unterminated object", `{"a":1`},
		{"unterminated array", `[1`},
		{"truncated literal", `tru`},
		{"capital literal", `True`},
		{"byte order mark", "\ufeff{}"},
		{"too deep", strings.Repeat("[", 10001) + strings.Repeat("]", 10001)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := idempotency.CanonicalJSON([]byte(tt.in))
			if err == nil {
				t.Errorf("CanonicalJSON(%q) = %s, want an error", tt.in, got)
			}
		})
	}
}

func TestCanonicalJSONDeepButAllowed(t *testing.T) {
	in := strings.Repeat("[", 10000) + strings.Repeat("]", 10000)
	got, err := idempotency.CanonicalJSON([]byte(in))
	if err != nil {
		t.Fatalf("CanonicalJSON(10000 nested arrays): %v", err)
	}
	if string(got) != in {
		t.Errorf("CanonicalJSON(10000 nested arrays) changed the input")
	}
}

func FuzzCanonicalJSON(f *testing.F) {
	for _, s := range []string{
		`{"b":1,"a":[true,false,null,"x\u0001"]}`,
		`{"\u20ac":1,"\ud83d\ude00":2,"\ufb33":3}`,
		`[1e21,1e-7,-0,333333333.33333329]`,
		`"\uD834\uDD1E"`,
		` { } `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := idempotency.CanonicalJSON(in)
		if err != nil {
			return
		}
		if !json.Valid(in) {
			t.Fatalf("CanonicalJSON accepted %q, which encoding/json rejects", in)
		}
		again, err := idempotency.CanonicalJSON(out)
		if err != nil {
			t.Fatalf("CanonicalJSON(%q) = %q, which does not canonicalize: %v", in, out, err)
		}
		if !bytes.Equal(again, out) {
			t.Fatalf("not idempotent: %q -> %q -> %q", in, out, again)
		}
		var a, b any
		if err := json.Unmarshal(in, &a); err != nil {
			t.Fatalf("unmarshal input: %v", err)
		}
		if err := json.Unmarshal(out, &b); err != nil {
			t.Fatalf("unmarshal output %q: %v", out, err)
		}
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("CanonicalJSON(%q) = %q: different data", in, out)
		}
	})
}

// Integers up to 15 digits take a fast path that copies their text; it must
// agree with the general path (through a double and ECMAScript's format).
func TestCanonicalJSONIntegerFastPath(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"0", "0"}, {"-0", "0"}, {"7", "7"}, {"-7", "-7"},
		{"123456789012345", "123456789012345"}, {"-123456789012345", "-123456789012345"},
		{"1234567890123456", "1234567890123456"},   // 16 digits: general path, still exact
		{"12345678901234567", "12345678901234568"}, // 17 digits: rounded to the double
		{"100000000000000000000", "100000000000000000000"},
		{"1000000000000000000000", "1e+21"},
		{"[1,-0,20]", "[1,0,20]"},
	} {
		got, err := idempotency.CanonicalJSON([]byte(tc.in))
		if err != nil || string(got) != tc.want {
			t.Errorf("CanonicalJSON(%s) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func TestAppendCanonicalJSON(t *testing.T) {
	dst := []byte("prefix:")
	got, err := idempotency.AppendCanonicalJSON(dst, []byte(`{"b":2, "a":1}`))
	if err != nil || string(got) != `prefix:{"a":1,"b":2}` {
		t.Fatalf("AppendCanonicalJSON = %q, %v", got, err)
	}
	got, err = idempotency.AppendCanonicalJSON(dst, []byte(`{"a":`))
	if err == nil || string(got) != "prefix:" {
		t.Fatalf("AppendCanonicalJSON on bad JSON = %q, %v; want dst unchanged and an error", got, err)
	}
}

func TestAppendCanonicalJSONAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector; run without -race")
	}
	buf := make([]byte, 0, 256)
	in := []byte(`{"name":"gear","amount":1000,"tags":["a","b"],"nested":{"z":1,"y":2}}`)
	if n := testing.AllocsPerRun(100, func() { buf, _ = idempotency.AppendCanonicalJSON(buf[:0], in) }); n != 0 {
		t.Errorf("AppendCanonicalJSON into a reused buffer: %v allocs, want 0", n)
	}
}
