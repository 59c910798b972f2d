package pgstore

import (
	"bytes"
	"maps"
	"slices"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	cases := []struct {
		name string
		h    map[string][]string
	}{
		{"nil", nil},
		{"one", map[string][]string{"Content-Type": {"application/json"}}},
		{"several", map[string][]string{"Location": {"/w/7"}, "X-Multi": {"a", "", "c"}, "": {"empty name"}}},
		{"no values", map[string][]string{"X-None": {}}},
		{"binary", map[string][]string{"X-Bin": {"\x00\xff\n"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := encodeHeader(tc.h)
			if err != nil {
				t.Fatal(err)
			}
			got, err := decodeHeader(b)
			if err != nil {
				t.Fatalf("decode(%x) = %v", b, err)
			}
			if !maps.EqualFunc(got, tc.h, slices.Equal) {
				t.Errorf("round trip = %q, want %q", got, tc.h)
			}
		})
	}
}

func TestHeaderEncodingIsDeterministic(t *testing.T) {
	h := map[string][]string{"A": {"1"}, "B": {"2"}, "C": {"3"}, "D": {"4"}}
	first, _ := encodeHeader(h)
	for range 20 {
		if b, _ := encodeHeader(h); !bytes.Equal(b, first) {
			t.Fatalf("encodings differ: %x and %x", b, first)
		}
	}
	if b, _ := encodeHeader(map[string][]string{}); b != nil {
		t.Errorf("empty header encodes as %x, want NULL", b)
	}
}

func TestHeaderCorrupt(t *testing.T) {
	good, _ := encodeHeader(map[string][]string{"Location": {"/w/7"}})
	cases := map[string][]byte{
		"truncated":      good[:len(good)-1],
		"trailing bytes": append(slices.Clone(good), 0),
		"huge count":     {0xff, 0xff, 0xff, 0xff, 0x0f},
		"bad varint":     {0x80},
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			if h, err := decodeHeader(b); err == nil {
				t.Errorf("decode(%x) = %q, want an error", b, h)
			}
		})
	}
}

func FuzzDecodeHeader(f *testing.F) {
	good, _ := encodeHeader(map[string][]string{"Location": {"/w/7"}, "X": {"a", "b"}})
	f.Add(good)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := decodeHeader(b)
		if err != nil || len(b) == 0 {
			return
		}
		// What decodes re-encodes to the same bytes (the encoding is canonical
		// for sorted, unique names).
		again, err := encodeHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		if h2, err := decodeHeader(again); err != nil || !maps.EqualFunc(h, h2, slices.Equal) {
			t.Fatalf("re-decode = (%q, %v), want %q", h2, err, h)
		}
	})
}
