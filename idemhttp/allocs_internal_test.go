package idemhttp

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/idemkit/idempotency"
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

func TestIdentityMemoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	req := httptest.NewRequest("POST", "/", nil)
	req.Header.Set("Authorization", "Bearer the same token every time")
	first := DefaultIdentity(req)
	if n := testing.AllocsPerRun(100, func() {
		if DefaultIdentity(req) != first {
			t.Fatal("identity changed")
		}
	}); n != 0 {
		t.Errorf("DefaultIdentity of a credential seen just before: %v allocations, want 0", n)
	}
}

// TestMiddlewareAllocs bounds what the middleware allocates beyond the
// handler it wraps (issue 5: a replay adds at most 4).
func TestMiddlewareAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		w.Write([]byte(`{"id":"w1"}`))
	})
	const body = `{"name":"gear","size":{"w":2,"h":3}}`
	serve := func(h http.Handler, key string) {
		req := httptest.NewRequest("POST", "/widgets", nil)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer t")
		req.Header.Set(HeaderKey, key)
		req.Body, req.ContentLength = nopBody{strings.NewReader(body)}, int64(len(body))
		w := &nopWriter{h: http.Header{}}
		h.ServeHTTP(w, req)
	}
	// A full store, as in steady state: a new claim reuses an evicted entry.
	mw := New(idempotency.NewEngine(idempotency.NewInMemoryStore(idempotency.WithMaxEntries(100)), idempotency.WithDetachedRun(true)), WithAnonymous(true))(handler)
	serve(mw, "k")
	bare := testing.AllocsPerRun(200, func() { serve(handler, "k") })
	replay := testing.AllocsPerRun(200, func() { serve(mw, "k") })
	keys := make([]string, 300)
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
	}
	i := 0
	for _, k := range keys[100:] {
		serve(mw, k)
	}
	fresh := testing.AllocsPerRun(200, func() { serve(mw, keys[i%len(keys)]); i++ })
	t.Logf("allocations: bare %v, replay %v, fresh %v", bare, replay, fresh)
	if got := replay - bare; got > 4 {
		t.Errorf("a replay adds %v allocations, want at most 4", got)
	}
	if got := fresh - bare; got > maxFreshAllocs {
		t.Errorf("a fresh request adds %v allocations, want at most %d", got, maxFreshAllocs)
	}
}

// maxFreshAllocs is what a fresh request adds (issue 5: at most 8): the
// exchange, the fingerprint, the owner id, the heartbeat, the command's
// cancelable context and its cancel func, the command's request, and the
// recorded body. The claim's entry is an evicted one, reused.
const maxFreshAllocs = 8
