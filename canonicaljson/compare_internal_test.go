package canonicaljson

import (
	"slices"
	"testing"
	"unicode/utf16"
	"unicode/utf8"
)

// compareUTF16 has a byte-wise fast path; it must order every pair of
// strings as their UTF-16 code units do.
func FuzzCompareUTF16(f *testing.F) {
	for _, p := range [][2]string{
		{"a", "b"}, {"ab", "a"}, {"", "x"}, {"\u20ac", "\U0001F600"}, {"\ufb33", "\U0001F600"},
		{"x\u00e9", "x\u00e8"}, {"same", "same"}, {"a\U0001F600", "a\uffff"}, {"ab\u0100", "ab~"},
	} {
		f.Add(p[0], p[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if !utf8.ValidString(a) || !utf8.ValidString(b) {
			return
		}
		want := slices.Compare(utf16.Encode([]rune(a)), utf16.Encode([]rune(b)))
		got := compareUTF16([]byte(a), []byte(b))
		if sign(got) != want {
			t.Fatalf("compareUTF16(%q, %q) = %d, want the sign of %d", a, b, got, want)
		}
	})
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}
