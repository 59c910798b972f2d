package idemclient

import (
	"context"
	"net/http"
	"strings"
	"time"
)

// Option configures a Transport in New.
type Option func(*Transport)

// WithBase sets the transport that sends each attempt. Default:
// http.DefaultTransport.
func WithBase(rt http.RoundTripper) Option {
	return func(t *Transport) { t.base = rt }
}

// WithMaxAttempts sets how many times one request is sent at most, the
// first attempt included; n < 1 is taken as 1 (no retries). Default 5.
func WithMaxAttempts(n int) Option {
	return func(t *Transport) { t.maxAttempts = max(n, 1) }
}

// WithBackoff sets the exponential backoff: the wait before the second
// attempt is about base, doubling for each attempt after, never more than
// maxDelay (each wait is jittered to a random point in its upper half).
// Default 100ms and 5s.
func WithBackoff(base, maxDelay time.Duration) Option {
	return func(t *Transport) {
		t.baseDelay = max(base, 0)
		t.maxDelay = max(maxDelay, t.baseDelay)
	}
}

// WithMaxRetryAfter caps the wait a response's Retry-After can ask for: a
// longer one is waited for only this long. Default 30s.
func WithMaxRetryAfter(d time.Duration) Option {
	return func(t *Transport) { t.maxRetryAfter = max(d, 0) }
}

// WithAttemptTimeout bounds each attempt until its response headers
// arrive; an attempt that takes longer is abandoned and counts as a
// timeout, which is retried. The response body, once there, is not bound
// by it. Zero, the default, sets no bound of its own (the request's
// context and the base transport's timeouts still apply). It runs on the
// runtime's timers, not on WithClock's clock.
func WithAttemptTimeout(d time.Duration) Option {
	return func(t *Transport) { t.attemptTimeout = max(d, 0) }
}

// WithMethods sets the methods the Transport keys and retries; others pass
// through untouched. Default POST and PATCH.
func WithMethods(methods ...string) Option {
	return func(t *Transport) {
		t.methods = make(map[string]bool, len(methods))
		for _, m := range methods {
			t.methods[strings.ToUpper(m)] = true
		}
	}
}

// WithKeyFunc sets how a key is made for a request that has none. Default
// NewKey (a random UUID).
func WithKeyFunc(f func() string) Option {
	return func(t *Transport) { t.newKey = f }
}

// WithClock sets the clock the Transport reads (to turn an HTTP-date
// Retry-After into a wait, and to see whether a wait would outlast the
// context's deadline) and the function it waits with between attempts,
// which must return early with the context's error when ctx is done. For
// tests; nil keeps the default: time.Now and a timer.
func WithClock(now func() time.Time, sleep func(ctx context.Context, d time.Duration) error) Option {
	return func(t *Transport) {
		if now != nil {
			t.now = now
		}
		if sleep != nil {
			t.sleep = sleep
		}
	}
}

// WithJitter sets the random source of the backoff: f(n) returns a number
// in [0, n), as math/rand/v2's Int64N does; it must be safe for concurrent
// use. Default rand.Int64N. For tests.
func WithJitter(f func(n int64) int64) Option {
	return func(t *Transport) { t.jitter = f }
}
