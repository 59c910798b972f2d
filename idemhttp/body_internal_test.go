package idemhttp

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReadBody(t *testing.T) {
	const limit = 1000
	long := strings.Repeat("x", limit)
	tests := []struct {
		name       string
		body       io.Reader
		length     int64 // ContentLength; -1 unknown
		outer      int64 // an http.MaxBytesReader's limit, 0 for none
		want       string
		wantStatus int    // 0: no error
		scratch    []byte // the caller's space
	}{
		{"declared", strings.NewReader("hello"), 5, 0, "hello", 0, nil},
		{"unknown length, in small reads", iotest.OneByteReader(strings.NewReader(long[:700])), -1, 0, long[:700], 0, nil},
		{"exactly the limit", strings.NewReader(long), -1, 0, long, 0, nil},
		{"exactly the limit, declared", strings.NewReader(long), limit, 0, long, 0, nil},
		{"one byte over, unknown length", strings.NewReader(long + "y"), -1, 0, "", http.StatusRequestEntityTooLarge, nil},
		{"declared over the limit", strings.NewReader("short"), limit + 1, 0, "", http.StatusRequestEntityTooLarge, nil},
		{"longer than declared", strings.NewReader("hello world"), 5, 0, "hello world", 0, nil},
		{"outer MaxBytesReader", strings.NewReader(long), -1, 10, "", http.StatusRequestEntityTooLarge, nil},
		{"read error", iotest.ErrReader(errors.New("reset")), -1, 0, "", http.StatusBadRequest, nil},
		{"empty", strings.NewReader(""), -1, 0, "", 0, nil},
		{"in scratch, declared", strings.NewReader("hello"), 5, 0, "hello", 0, make([]byte, 8)},
		{"in scratch, unknown length", strings.NewReader(long[:300]), -1, 0, long[:300], 0, make([]byte, 512)},
		{"outgrows scratch", strings.NewReader(long), -1, 0, long, 0, make([]byte, 16)},
		{"over the limit, in scratch", strings.NewReader(long + "y"), -1, 0, "", http.StatusRequestEntityTooLarge, make([]byte, 2048)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/", nil)
			r.Body, r.ContentLength = io.NopCloser(tt.body), tt.length
			if tt.outer > 0 {
				r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, tt.outer)
			}
			got, perr := readBody(r, limit, tt.scratch)
			switch {
			case tt.wantStatus == 0 && perr != nil:
				t.Fatalf("readBody = %v, want %q", perr, tt.want)
			case tt.wantStatus != 0 && (perr == nil || perr.Status != tt.wantStatus):
				t.Fatalf("readBody = (%d bytes, %v), want status %d", len(got), perr, tt.wantStatus)
			case string(got) != tt.want:
				t.Errorf("readBody = %q, want %q", got, tt.want)
			}
			if tt.outer > 0 && !strings.Contains(perr.Detail, "10 bytes") {
				t.Errorf("detail %q does not name the outer limit", perr.Detail)
			}
		})
	}
}
