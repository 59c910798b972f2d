package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idemkit/idempotency/idemhttp"
)

// Problem types of the sidecar's own answers.
const (
	problemUpstreamUnavailable = "https://github.com/idemkit/idempotency/problems/upstream-unavailable"
	problemOutcomeUnknown      = "https://github.com/idemkit/idempotency/problems/upstream-outcome-unknown"
)

// upstreamFailed answers a covered request whose upstream exchange failed:
// 503 (released) when the request never reached the upstream, else the
// "outcome unknown" answer, which the record policy records.
func (s *sidecar) upstreamFailed(w http.ResponseWriter, r *http.Request, err error) {
	// Replayed with the answer, as the upstream's headers are.
	w.Header()[recordedHeadersField] = []string{"Cache-Control=no-store"}
	call := callFrom(r.Context())
	if call != nil && !call.connected.Load() {
		s.notSent.Add(1)
		s.log.Warn("upstream unreachable; the request was not sent", "path", r.URL.Path, "err", err)
		writeProblem(w, http.StatusServiceUnavailable, problemUpstreamUnavailable, "Upstream unavailable",
			"The upstream could not be reached, and the request was not sent to it. It is safe to retry.", true)
		return
	}
	s.ambiguous.Add(1)
	s.log.Warn("upstream outcome unknown; the answer is recorded", "path", r.URL.Path, "err", err)
	status, what := http.StatusBadGateway, "the connection failed before its whole answer came back"
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		status, what = http.StatusGatewayTimeout, "its answer did not come back in time"
	}
	detail := "The request was sent to the upstream, but " + what + ", so whether it took effect is unknown. "
	if s.cfg.ambiguous == "record" {
		detail += "This answer is recorded: a retry with this Idempotency-Key gets it again and is never sent upstream. Check the outcome with the upstream; use a new key to send the request again."
	} else {
		detail += "A retry with this Idempotency-Key sends the request again."
	}
	writeProblem(w, status, problemOutcomeUnknown, "Upstream outcome unknown", detail, false)
}

// passError answers a request not covered whose upstream exchange failed.
func (s *sidecar) passError(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Warn("upstream failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeProblem(w, http.StatusBadGateway, "about:blank", "Bad gateway", "The upstream failed to answer.", false)
}

// writeProblem writes the sidecar's own answer with idemhttp's problem
// writer; retry adds "Retry-After: 1".
func writeProblem(w http.ResponseWriter, status int, typ, title, detail string, retry bool) {
	e := &idemhttp.Error{Status: status, Type: typ, Title: title, Detail: detail}
	if retry {
		e.RetryAfter = time.Second
	}
	idemhttp.WriteError(w, nil, e)
}

// upstreamCall follows one covered request to the upstream: it is the
// request's context, so the proxy's hooks find it, and its trace tells a
// request that never reached the upstream from one that may have.
type upstreamCall struct {
	context.Context
	trace     httptrace.ClientTrace
	connected atomic.Bool   // the last attempt got a connection: bytes may have been written
	ahead     *bytes.Buffer // the answer read ahead, to give back to the pool
	limited   io.LimitedReader
}

type callKey struct{}

func (c *upstreamCall) Value(key any) any {
	if key == (callKey{}) {
		return c
	}
	return c.Context.Value(key)
}

func callFrom(ctx context.Context) *upstreamCall {
	c, _ := ctx.Value(callKey{}).(*upstreamCall)
	return c
}

// getConn starts an attempt (the Transport makes another only when
// nothing of the last was written); gotConn marks that it may write.
func (c *upstreamCall) getConn(string)                { c.connected.Store(false) }
func (c *upstreamCall) gotConn(httptrace.GotConnInfo) { c.connected.Store(true) }

// memBody is a request or response body in memory.
type memBody struct{ bytes.Reader }

func (*memBody) Close() error { return nil }

// joinedBody is an answer read ahead up to the cap, then the rest.
type joinedBody struct {
	io.Reader
	c io.Closer
}

func (b *joinedBody) Close() error { return b.c.Close() }

// connTracker keeps the upstream connections, so that a shutdown that
// runs out of time can cut the exchanges still running: their requests
// were sent, so each is answered "outcome unknown" and recorded, rather
// than left claimed until its lease runs out and then sent again.
type connTracker struct {
	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

func newConnTracker() *connTracker { return &connTracker{conns: make(map[*trackedConn]struct{})} }

func (t *connTracker) dial(d *net.Dialer) func(context.Context, string, string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{Conn: c, t: t}
		t.mu.Lock()
		t.conns[tc] = struct{}{}
		t.mu.Unlock()
		return tc, nil
	}
}

// closeAll closes every upstream connection.
func (t *connTracker) closeAll() {
	t.mu.Lock()
	conns := slices.Collect(maps.Keys(t.conns))
	t.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

type trackedConn struct {
	net.Conn
	t    *connTracker
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.t.mu.Lock()
		delete(c.t.conns, c)
		c.t.mu.Unlock()
	})
	return c.Conn.Close()
}

// copyPool is the proxies' pool of copy buffers.
type copyPool struct{ p sync.Pool }

func newCopyPool() *copyPool {
	return &copyPool{p: sync.Pool{New: func() any { return make([]byte, 32<<10) }}}
}

func (p *copyPool) Get() []byte  { return p.p.Get().([]byte) }
func (p *copyPool) Put(b []byte) { p.p.Put(b) } //nolint:staticcheck // a slice header per Put is cheaper than a copy
