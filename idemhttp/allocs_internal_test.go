package idemhttp

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// Allocation tests: .ci/run runs every test named *Allocs once more
// without the race detector, under which they skip.

func TestDigestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	req := httptest.NewRequest("POST", "/widgets?x=1", nil)
	req.Header.Set("Authorization", "Bearer token")
	req.Header.Set("Content-Type", "text/plain")
	body := []byte("a body that is not JSON")
	if n := testing.AllocsPerRun(100, func() { DefaultIdentity(req) }); n > 1 {
		t.Errorf("DefaultIdentity: %v allocations, want at most 1 (the result)", n)
	}
	if n := testing.AllocsPerRun(100, func() { DefaultFingerprint(req, body) }); n > 1 {
		t.Errorf("DefaultFingerprint of a non-JSON body: %v allocations, want at most 1 (the result)", n)
	}
}

func TestReadBodyAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	const body = `{"name":"gear"}`
	n := testing.AllocsPerRun(100, func() {
		r := httptest.NewRequest("POST", "/", nil)
		r.Body, r.ContentLength = nopBody{strings.NewReader(body)}, int64(len(body))
		if _, perr := readBody(r, 1<<20, nil); perr != nil {
			t.Fatal(perr)
		}
	})
	// httptest.NewRequest's own allocations are counted too; measure them
	// alone and subtract.
	base := testing.AllocsPerRun(100, func() {
		r := httptest.NewRequest("POST", "/", nil)
		r.Body = nopBody{strings.NewReader(body)}
	})
	if got := n - base; got > 1 {
		t.Errorf("readBody of a declared body: %v allocations, want 1 (the buffer)", got)
	}
}

type nopBody struct{ *strings.Reader }

func (nopBody) Close() error { return nil }
