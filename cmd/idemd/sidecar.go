package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemhttp"
)

// The sidecar (idemd -upstream URL) puts idemhttp's semantics in front of
// any HTTP API. A covered request (-methods, -paths) with an
// Idempotency-Key is claimed in the store, sent upstream at most once, and
// the upstream's answer recorded and replayed with the upstream's own
// headers. Everything else is proxied untouched.
//
// Upstream outcomes, and what a retry with the same key gets:
//
//	the request never reached the upstream     503 upstream-unavailable, key released: the retry sends it
//	(dial failed, no connection)
//	sent, then reset, timed out or cut off     502 (504 on a timeout) upstream-outcome-unknown, recorded:
//	before a whole answer came back            the retry gets it back, never a second send (-upstream-ambiguous=release: released)
//	the upstream answered 502 or 504           recorded and replayed, like the above (-upstream-ambiguous=release: released)
//	the upstream answered 500, 503, 408, 425, 429   not recorded, key released (the upstream said it failed)
//	any other answer up to the cap             recorded, replayed with its headers
//	an answer past the cap                     streamed through; a tombstone is recorded: the retry gets 410
//
// The request goes upstream at most once: Go's Transport re-sends a request
// on a reused connection that failed after it was written when it counts
// the request as replayable, and it does for any request with an
// Idempotency-Key header. The sidecar sends the key under a header name in
// lower case ("idempotency-key"), the same header on the wire, which the
// Transport does not see, and gives it the body to rewind only for the
// failures where nothing was written.

// recordedHeadersField carries, inside a record, the upstream's headers
// that idemhttp does not record itself; it never reaches a client.
const recordedHeadersField = "Idemd-Upstream-Headers"

// Response headers never replayed: connection-level (hop-by-hop) headers,
// cookies, credentials, and what is recomputed for each answer. idemhttp
// records Content-Type, Content-Encoding and Location itself.
var notReplayed = map[string]bool{
	"Set-Cookie": true, "Set-Cookie2": true, "Authorization": true,
	"Proxy-Authorization": true, "Proxy-Authenticate": true,
	"Content-Length": true, "Date": true, idemhttp.HeaderReplayed: true,
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Content-Type": true, "Content-Encoding": true, "Location": true,
	recordedHeadersField: true,
}

// Problem types of the sidecar's own answers.
const (
	problemUpstreamUnavailable = "https://github.com/idemkit/idempotency/problems/upstream-unavailable"
	problemOutcomeUnknown      = "https://github.com/idemkit/idempotency/problems/upstream-outcome-unknown"
)

// sidecarConfig is the sidecar part of config.
type sidecarConfig struct {
	upstream        string
	methods         []string
	paths           []string
	identity        string // "authorization" or "header:NAME"
	anonymous       bool
	requireKey      bool
	ambiguous       string // "record" or "release"
	upstreamTimeout time.Duration
	noReplay        []string // more response headers never replayed
	maxResponse     int
}

func (c *sidecarConfig) validate() error {
	u, err := url.Parse(c.upstream)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("-upstream %q: want an http:// or https:// URL", c.upstream)
	}
	for _, m := range c.methods {
		switch m {
		case "":
			return errors.New("-methods: empty method")
		case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
			// Go's Transport re-sends these on its own; they need no key.
			return fmt.Errorf("-methods %s: a safe method cannot be covered", m)
		}
	}
	for _, p := range c.paths {
		if !strings.HasPrefix(p, "/") {
			return fmt.Errorf("-paths %q: a path prefix starts with /", p)
		}
	}
	if c.identity != "authorization" && (!strings.HasPrefix(c.identity, "header:") || len(c.identity) == len("header:")) {
		return fmt.Errorf("-identity %q: want authorization or header:NAME", c.identity)
	}
	if c.ambiguous != "record" && c.ambiguous != "release" {
		return fmt.Errorf("-upstream-ambiguous %q: want record or release", c.ambiguous)
	}
	if c.upstreamTimeout <= 0 {
		return fmt.Errorf("-upstream-timeout %v: must be positive", c.upstreamTimeout)
	}
	return nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// sidecar is the handler of idemd -upstream.
type sidecar struct {
	cfg    sidecarConfig
	log    *slog.Logger
	idem   http.Handler           // idemhttp over recorded
	pass   *httputil.ReverseProxy // requests not covered
	rec    *httputil.ReverseProxy // covered requests, under a claim
	conns  *connTracker
	skip   map[string]bool // response headers not replayed
	bufs   sync.Pool       // *bytes.Buffer, response bodies read ahead
	copies httputil.BufferPool

	notSent, ambiguous atomic.Uint64 // upstream failures, for logs and tests
}

// newSidecar returns the sidecar over engine. The engine's record policy
// must be s.record (see sidecarRecordPolicy).
func newSidecar(cfg sidecarConfig, log *slog.Logger, newEngine func(record func(idempotency.Response) bool) *idempotency.Engine) *sidecar {
	target, _ := url.Parse(cfg.upstream) // validated
	s := &sidecar{cfg: cfg, log: log, conns: newConnTracker(), copies: newCopyPool()}
	s.skip = make(map[string]bool, len(notReplayed)+len(cfg.noReplay))
	for k := range notReplayed {
		s.skip[k] = true
	}
	for _, k := range cfg.noReplay {
		s.skip[http.CanonicalHeaderKey(k)] = true
	}
	transport := &http.Transport{
		Proxy:                 nil, // the upstream is dialled directly
		DialContext:           s.conns.dial(&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}),
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: cfg.upstreamTimeout,
		ExpectContinueTimeout: time.Second,
		// HTTP/1.1 only: ForceAttemptHTTP2 stays false. (HTTP/2 re-sends
		// only requests the server refused unprocessed.)
	}
	rewrite := func(pr *httputil.ProxyRequest) {
		pr.SetURL(target)
		pr.SetXForwarded()
		hideKey(pr.Out.Header)
	}
	errLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	s.pass = &httputil.ReverseProxy{Rewrite: rewrite, Transport: transport, BufferPool: s.copies, ErrorLog: errLog,
		ErrorHandler: s.passError}
	s.rec = &httputil.ReverseProxy{Rewrite: rewrite, Transport: transport, BufferPool: s.copies, ErrorLog: errLog,
		ModifyResponse: s.readAhead, ErrorHandler: s.upstreamFailed}
	engine := newEngine(s.record)
	s.cfg.maxResponse = engine.MaxResponseBytes()
	opts := []idemhttp.Option{
		idemhttp.WithMethods(cfg.methods...),
		idemhttp.WithHeaders(recordedHeadersField),
		idemhttp.WithRequired(cfg.requireKey),
		idemhttp.WithAnonymous(cfg.anonymous),
	}
	if name, ok := strings.CutPrefix(cfg.identity, "header:"); ok {
		opts = append(opts, idemhttp.WithIdentity(headerIdentity(name)))
	}
	s.idem = idemhttp.New(engine, opts...)(http.HandlerFunc(s.recorded))
	return s
}

// record is the sidecar's record policy: idempotency.DefaultRecordPolicy,
// except that the ambiguous answers (502, 504: the sidecar's own "outcome
// unknown", or the upstream's) are recorded unless -upstream-ambiguous=release.
func (s *sidecar) record(r idempotency.Response) bool {
	if r.Status == http.StatusBadGateway || r.Status == http.StatusGatewayTimeout {
		return s.cfg.ambiguous == "record"
	}
	return idempotency.DefaultRecordPolicy(r)
}

// hideKey renames the idempotency key headers to lower case: the same
// header on the wire, but not one net/http's Transport sees, so it never
// counts the request as safe to send again (Request.isReplayable).
func hideKey(h http.Header) {
	for _, name := range [...]string{"Idempotency-Key", "X-Idempotency-Key"} {
		if vs, ok := h[name]; ok {
			delete(h, name)
			h[strings.ToLower(name)] = vs
		}
	}
}

// headerIdentity tells callers apart by a digest of the named request
// header (an API key, a tenant id): the value itself never reaches the store.
func headerIdentity(name string) func(*http.Request) string {
	name = http.CanonicalHeaderKey(name)
	return func(r *http.Request) string {
		vs := r.Header[name]
		if len(vs) == 0 || (len(vs) == 1 && vs[0] == "") {
			return ""
		}
		h := sha256.New()
		io.WriteString(h, "idemd/header/v1\x00")
		io.WriteString(h, name)
		for _, v := range vs {
			io.WriteString(h, "\x00"+strconv.Itoa(len(v))+":"+v)
		}
		return hex.EncodeToString(h.Sum(nil))
	}
}

func (s *sidecar) covers(path string) bool {
	for _, p := range s.cfg.paths {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}

// ServeHTTP implements http.Handler.
func (s *sidecar) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.covers(r.URL.Path) {
		s.pass.ServeHTTP(w, r)
		return
	}
	rw := &replayWriter{ResponseWriter: w, skip: s.skip}
	s.idem.ServeHTTP(rw, r)
	if rw.abort {
		// The upstream's answer broke off past the cap, after part of it
		// went to the client (and a tombstone was recorded): cut the
		// connection so the client sees it was not whole.
		panic(http.ErrAbortHandler)
	}
}

// recorded is the handler idemhttp runs: for a keyed request, under the
// claim, with the request detached from the client.
func (s *sidecar) recorded(w http.ResponseWriter, r *http.Request) {
	rw := findReplayWriter(w)
	if rw != nil {
		rw.fresh = true
	}
	if len(r.Header[idemhttp.HeaderKey]) == 0 { // not claimed: idemhttp passed it through
		s.pass.ServeHTTP(w, r)
		return
	}
	call := &upstreamCall{Context: r.Context()}
	call.trace = httptrace.ClientTrace{GetConn: call.getConn, GotConn: call.gotConn}
	out := r.WithContext(httptrace.WithClientTrace(call, &call.trace))
	// idemhttp read the body whole (it fingerprinted it): keep it in memory
	// so the Transport can send it again when nothing was written. Not in a
	// pooled buffer: the Transport may still be reading a body after
	// RoundTrip returns (it closes it when done).
	if r.ContentLength != 0 {
		var b []byte
		var err error
		if r.ContentLength > 0 {
			b = make([]byte, r.ContentLength)
			_, err = io.ReadFull(r.Body, b)
		} else {
			b, err = io.ReadAll(r.Body)
		}
		if err != nil {
			s.upstreamFailed(w, out, err) // cannot happen: the body is in memory
			return
		}
		out.ContentLength = int64(len(b))
		out.Body = &memBody{Reader: *bytes.NewReader(b)}
		out.GetBody = func() (io.ReadCloser, error) { return &memBody{Reader: *bytes.NewReader(b)}, nil }
	}
	defer func() {
		if call.ahead != nil {
			s.bufs.Put(call.ahead)
		}
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			// The answer broke off while it streamed past the cap: the
			// command ran, a tombstone is recorded; ServeHTTP cuts the client.
			s.ambiguous.Add(1)
			s.log.Warn("upstream answer broke off past the cap", "path", r.URL.Path)
			if rw != nil {
				rw.abort = true
			}
		}
	}()
	s.rec.ServeHTTP(w, out)
}

func (s *sidecar) getBuf() *bytes.Buffer {
	if b, _ := s.bufs.Get().(*bytes.Buffer); b != nil {
		b.Reset()
		return b
	}
	return new(bytes.Buffer)
}

// readAhead is the recording proxy's ModifyResponse: it reads an answer up
// to the cap before any of it is sent, so that an upstream that breaks off
// mid-body gives an "outcome unknown" answer instead of a truncated record,
// and packs the upstream's headers into one recorded field.
func (s *sidecar) readAhead(res *http.Response) error {
	call := callFrom(res.Request.Context())
	if call == nil || res.StatusCode == http.StatusSwitchingProtocols {
		return nil
	}
	limit := int64(s.cfg.maxResponse)
	if res.ContentLength <= limit && res.Body != nil && res.Body != http.NoBody {
		buf := s.getBuf()
		call.ahead = buf
		call.limited = io.LimitedReader{R: res.Body, N: limit + 1}
		if _, err := buf.ReadFrom(&call.limited); err != nil {
			return fmt.Errorf("reading the upstream's answer: %w", err)
		}
		if int64(buf.Len()) <= limit {
			res.Body.Close()
			res.Body = &memBody{Reader: *bytes.NewReader(buf.Bytes())}
			res.ContentLength = int64(buf.Len())
			res.TransferEncoding = nil
			res.Header["Content-Length"] = []string{strconv.Itoa(buf.Len())}
		} else {
			res.Body = &joinedBody{Reader: io.MultiReader(bytes.NewReader(buf.Bytes()), res.Body), c: res.Body}
		}
	}
	delete(res.Header, recordedHeadersField) // only the sidecar's own reaches a record
	if packed := s.pack(res.Header); packed != "" {
		res.Header[recordedHeadersField] = []string{packed}
	}
	return nil
}

// pack encodes the headers of h that are replayed and that idemhttp does not
// record itself: name=value pairs, query-escaped, joined by "&".
func (s *sidecar) pack(h http.Header) string {
	var b strings.Builder
	for name, vs := range h {
		if s.skip[name] {
			continue
		}
		for _, v := range vs {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(url.QueryEscape(name))
			b.WriteByte('=')
			b.WriteString(url.QueryEscape(v))
		}
	}
	return b.String()
}

// unpack sets the headers packed into v on h, but never one of skip.
func unpack(h http.Header, v string, skip map[string]bool) {
	set := make(map[string]bool)
	for pair := range strings.SplitSeq(v, "&") {
		k, val, _ := strings.Cut(pair, "=")
		name, err1 := url.QueryUnescape(k)
		value, err2 := url.QueryUnescape(val)
		if err1 != nil || err2 != nil || name == "" || skip[name] {
			continue
		}
		if !set[name] {
			set[name] = true
			h[name] = nil
		}
		h[name] = append(h[name], value)
	}
}

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

func writeProblem(w http.ResponseWriter, status int, typ, title, detail string, retry bool) {
	if retry {
		w.Header().Set("Retry-After", "1")
	}
	idemhttp.WriteError(w, nil, &idemhttp.Error{Status: status, Type: typ, Title: title, Detail: detail})
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

// replayWriter is the client's writer under idemhttp: on a replay it turns
// the recorded field back into the upstream's headers; on a first answer
// it drops the field.
type replayWriter struct {
	http.ResponseWriter
	skip  map[string]bool // headers never replayed
	fresh bool            // the handler ran: the headers are the upstream's own
	done  bool
	abort bool
}

func (w *replayWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.expand()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *replayWriter) Write(p []byte) (int, error) {
	w.expand()
	return w.ResponseWriter.Write(p)
}

func (w *replayWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *replayWriter) expand() {
	if w.done {
		return
	}
	w.done = true
	h := w.ResponseWriter.Header()
	vs, ok := h[recordedHeadersField]
	if !ok {
		return
	}
	delete(h, recordedHeadersField)
	if !w.fresh && len(vs) == 1 {
		unpack(h, vs[0], w.skip)
	}
}

// findReplayWriter finds the replayWriter under the writers idemhttp wraps it in.
func findReplayWriter(w http.ResponseWriter) *replayWriter {
	for w != nil {
		if rw, ok := w.(*replayWriter); ok {
			return rw
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil
		}
		w = u.Unwrap()
	}
	return nil
}

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
	conns := slices.Collect(func(yield func(*trackedConn) bool) {
		for c := range t.conns {
			if !yield(c) {
				return
			}
		}
	})
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
