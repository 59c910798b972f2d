package canonicaljson_test

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strconv"
	"testing"

	"github.com/idemkit/idempotency/canonicaljson"
)

// TestRFC8785Numbers checks the number serialization table of RFC 8785
// appendix B (IEEE 754 bit patterns and their canonical text).
func TestRFC8785Numbers(t *testing.T) {
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
				got, err := canonicaljson.RFC8785([]byte(in))
				if err != nil {
					t.Fatalf("RFC8785(%s): %v", in, err)
				}
				if string(got) != tt.want {
					t.Errorf("RFC8785(%s) = %s, want %s", in, got, tt.want)
				}
			}
		})
	}
}

func TestRFC8785NumberSpellings(t *testing.T) {
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
		got, err := canonicaljson.RFC8785([]byte(tt.in))
		if err != nil {
			t.Errorf("RFC8785(%s): %v", tt.in, err)
			continue
		}
		if string(got) != tt.want {
			t.Errorf("RFC8785(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// TestRFC8785Examples checks the worked examples of RFC 8785
// section 3.2.2 (serialization) and 3.2.3 (member sorting).
func TestRFC8785Examples(t *testing.T) {
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
			got, err := canonicaljson.RFC8785([]byte(tt.in))
			if err != nil {
				t.Fatalf("RFC8785: %v", err)
			}
			if string(got) != tt.want {
				t.Errorf("RFC8785 =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestRFC8785OrderAndWhitespace(t *testing.T) {
	want := `{"a":{"x":[1,{"p":true,"q":null}],"y":"z"},"b":2.5,"c":[]}`
	inputs := []string{
		`{"a":{"x":[1,{"p":true,"q":null}],"y":"z"},"b":2.5,"c":[]}`,
		`{"c":[],"b":2.5,"a":{"y":"z","x":[1,{"q":null,"p":true}]}}`,
		"\n\t{ \"b\" : 25e-1 ,\r\n \"c\" : [ ] , \"a\" : { \"y\" : \"\\u007a\" , \"x\" : [ 1.0 , { \"q\" : null , \"p\" : true } ] } }  \n",
	}
	for _, in := range inputs {
		got, err := canonicaljson.RFC8785([]byte(in))
		if err != nil {
			t.Errorf("RFC8785(%q): %v", in, err)
			continue
		}
		if string(got) != want {
			t.Errorf("RFC8785(%q) = %s, want %s", in, got, want)
		}
	}
}

func FuzzRFC8785(f *testing.F) {
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
		out, err := canonicaljson.RFC8785(in)
		if err != nil {
			return
		}
		if !json.Valid(in) {
			t.Fatalf("RFC8785 accepted %q, which encoding/json rejects", in)
		}
		again, err := canonicaljson.RFC8785(out)
		if err != nil {
			t.Fatalf("RFC8785(%q) = %q, which does not canonicalize: %v", in, out, err)
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
			t.Fatalf("RFC8785(%q) = %q: different data", in, out)
		}
	})
}

// Integers up to 15 digits take a fast path that copies their text; it must
// agree with the general path (through a double and ECMAScript's format).
func TestRFC8785IntegerFastPath(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"0", "0"}, {"-0", "0"}, {"7", "7"}, {"-7", "-7"},
		{"123456789012345", "123456789012345"}, {"-123456789012345", "-123456789012345"},
		{"1234567890123456", "1234567890123456"},   // 16 digits: general path, still exact
		{"12345678901234567", "12345678901234568"}, // 17 digits: rounded to the double
		{"100000000000000000000", "100000000000000000000"},
		{"1000000000000000000000", "1e+21"},
		{"[1,-0,20]", "[1,0,20]"},
	} {
		got, err := canonicaljson.RFC8785([]byte(tc.in))
		if err != nil || string(got) != tc.want {
			t.Errorf("RFC8785(%s) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}
