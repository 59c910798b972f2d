package dispatcher

import (
	"net/http"
	"testing"
	"time"
)

func TestParseKey(t *testing.T) {
	tests := []struct {
		in      string
		want    string
		wantErr bool
	}{
		{in: "abc", want: "abc"},
		{in: "  abc\t", want: "abc"},
		{in: `"abc"`, want: "abc"},
		{in: ` "a b" `, want: "a b"},
		{in: `"a\"b\\c"`, want: `a"b\c`},
		{in: `""`, want: ""}, // parses; ValidateKey refuses it later
		{in: `8e03978e-40d5-43e8-bc93-6894a57f9324`, want: `8e03978e-40d5-43e8-bc93-6894a57f9324`},
		{in: `a"b`, want: `a"b`}, // bare, leniently
		{in: "", wantErr: true},
		{in: "   ", wantErr: true},
		{in: `"abc`, wantErr: true},
		{in: `"abc";p=1`, wantErr: true},
		{in: `"abc" x`, wantErr: true},
		{in: `"a\nb"`, wantErr: true}, // only \" and \\ escapes
		{in: `"a\`, wantErr: true},
		{in: "\"caf\u00e9\"", wantErr: true}, // sf-strings are ASCII
		{in: "\"a\x7fb\"", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseKey(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseKey(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestHeaderKey(t *testing.T) {
	tests := []struct {
		name    string
		values  []string
		want    string
		wantBad bool
	}{
		{"absent", nil, "", false},
		{"quoted", []string{`"k1"`}, "k1", false},
		{"malformed", []string{`"k1`}, `"k1`, true},
		{"empty quoted", []string{`""`}, `""`, true},
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

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "1"},
		{time.Millisecond, "1"},
		{time.Second, "1"},
		{time.Second + time.Nanosecond, "2"},
		{29*time.Second + 500*time.Millisecond, "30"},
	}
	for _, tt := range tests {
		if got := retryAfter(tt.in); got != tt.want {
			t.Errorf("retryAfter(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
