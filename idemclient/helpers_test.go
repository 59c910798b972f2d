package idemclient

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// waits records the waits a Transport asks for, without waiting.
type waits struct {
	mu sync.Mutex
	d  []time.Duration
}

func (w *waits) sleep(ctx context.Context, d time.Duration) error {
	w.mu.Lock()
	w.d = append(w.d, d)
	w.mu.Unlock()
	return ctx.Err()
}

func (w *waits) got() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Duration(nil), w.d...)
}

// maxJitter makes every backoff its upper bound.
func maxJitter(n int64) int64 { return n - 1 }

// attempt is what a scripted server saw of one attempt.
type attempt struct {
	key  string
	body string
}

// scripted is an http.RoundTripper that answers attempt i with
// answers[i] (the last one again after the script ends) and records what
// each attempt carried. An answer with a nil response is err.
type scripted struct {
	t       *testing.T
	answers []answer

	mu   sync.Mutex
	seen []attempt
}

type answer struct {
	status int
	header http.Header
	err    error
	body   *trackedBody
}

func (s *scripted) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	s.mu.Lock()
	i := min(len(s.seen), len(s.answers)-1)
	s.seen = append(s.seen, attempt{key: req.Header.Get(HeaderKey), body: string(body)})
	s.mu.Unlock()
	a := s.answers[i]
	if a.err != nil {
		return nil, a.err
	}
	h := a.header.Clone()
	if h == nil {
		h = make(http.Header)
	}
	b := a.body
	if b == nil {
		b = &trackedBody{Reader: strings.NewReader(http.StatusText(a.status))}
	}
	return &http.Response{StatusCode: a.status, Header: h, Body: b, Request: req}, nil
}

func (s *scripted) attempts() []attempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]attempt(nil), s.seen...)
}

// trackedBody is a response body that knows whether it was closed.
type trackedBody struct {
	io.Reader
	mu     sync.Mutex
	closed bool
}

func (b *trackedBody) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

func (b *trackedBody) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

func post(t *testing.T, ctx context.Context, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://example.test/v1/commands/widgets.create", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func hdr(kv ...string) http.Header {
	h := make(http.Header)
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}
