package dispatcher

import (
	"net/http"
	"strings"
	"testing"
)

func TestHeaderKey(t *testing.T) {
	tests := []struct {
		name    string
		values  []string
		want    string
		wantBad bool
	}{
		{"absent", nil, "", false},
		{"quoted", []string{`"k1"`}, "k1", false},
		{"bare", []string{" k1 "}, "k1", false},
		{"escapes", []string{`"a\"b\\c"`}, `a"b\c`, false},
		{"malformed", []string{`"k1`}, `"k1`, true},
		{"parameters", []string{`"k1";p=1`}, `"k1";p=1`, true},
		{"empty", []string{""}, "", true},
		{"empty quoted", []string{`""`}, `""`, true},
		{"non-ASCII quoted", []string{"\"caf\u00e9\""}, "\"caf\u00e9\"", true},
		{"300 bytes", []string{strings.Repeat("k", 300)}, strings.Repeat("k", 300), true},
		{"two headers", []string{"a", "b"}, "a, b", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tt.values {
				h.Add("Idempotency-Key", v)
			}
			got, bad := headerKey(h)
			if got != tt.want || bad != tt.wantBad {
				t.Errorf("headerKey(%q) = %q, %v; want %q, %v", tt.values, got, bad, tt.want, tt.wantBad)
			}
		})
	}
}
