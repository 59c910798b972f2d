package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/url"
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

	maxResponse int // the engine's cap: longer answers are streamed, not recorded

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
	rec := *s.pass // the same exchange, with the answer read ahead and failures told apart
	rec.ModifyResponse, rec.ErrorHandler = s.readAhead, s.upstreamFailed
	s.rec = &rec
	engine := newEngine(s.record)
	s.maxResponse = engine.MaxResponseBytes()
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
		// One message, hashed in one call: on the stack for the usual short
		// header, so a request costs only the hex string.
		msg := make([]byte, 0, 256)
		msg = append(msg, "idemd/header/v1\x00"...)
		msg = append(msg, name...)
		for _, v := range vs {
			msg = append(msg, 0)
			msg = strconv.AppendInt(msg, int64(len(v)), 10)
			msg = append(msg, ':')
			msg = append(msg, v...)
		}
		sum := sha256.Sum256(msg)
		var hx [2 * sha256.Size]byte
		hex.Encode(hx[:], sum[:])
		return string(hx[:])
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
	// idemhttp read the body whole (it fingerprinted it) and hands it on with
	// its length set (0 for none): keep a copy in memory so the Transport can
	// send it again when nothing was written. Not in a pooled buffer: the
	// Transport may still be reading a body after RoundTrip returns (it
	// closes it when done).
	if r.ContentLength > 0 {
		b := make([]byte, r.ContentLength)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			s.upstreamFailed(w, out, err) // cannot happen: the body is in memory
			return
		}
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
	limit := int64(s.maxResponse)
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
