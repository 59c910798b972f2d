package idemhttp

import (
	"context"
	"errors"
	"net/http"
	"slices"

	"github.com/idemkit/idempotency"
)

// New returns middleware that makes the wrapped handler idempotent over
// store, in the shape routers use (func(next http.Handler) http.Handler):
//
//	mux.Handle("POST /payments", idemhttp.New(store)(payments))
//	r.Use(idemhttp.New(store, idemhttp.WithRequired(true))) // chi
//
// All requests through one returned func share one idempotency.Engine (or
// the WithEngine one). New panics if store is nil and WithEngine is not
// given.
func New(store idempotency.Store, opts ...Option) func(http.Handler) http.Handler {
	c := config{
		methods:     []string{http.MethodPost, http.MethodPatch},
		identity:    DefaultIdentity,
		fingerprint: DefaultFingerprint,
		maxBody:     DefaultMaxBodyBytes,
		maxResponse: DefaultMaxResponseBytes,
		onError:     WriteError,
	}
	for _, o := range opts {
		o(&c)
	}
	detached := c.engine == nil
	if c.engine == nil {
		if store == nil {
			panic("idemhttp: New with a nil store and no WithEngine")
		}
		c.engine = idempotency.NewEngine(store, append(slices.Clip(c.engineOpts),
			idempotency.WithMaxResponseBytes(c.maxResponse), idempotency.WithDetachedRun(true))...)
	}
	m := &middleware{config: c, rec: newRecording(allowedHeaders(c.headers)), detached: detached}
	return func(next http.Handler) http.Handler {
		return &handler{m: m, next: next}
	}
}

type middleware struct {
	config
	rec *recording // the recorded headers
	// detached: the engine is the middleware's own, made WithDetachedRun, so
	// it detaches a started command from the request itself (otherwise a
	// runContext does).
	detached bool
}

type handler struct {
	m    *middleware
	next http.Handler
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := h.m
	if !slices.Contains(m.methods, r.Method) {
		h.next.ServeHTTP(w, r)
		return
	}
	key, err := ParseKey(r.Header[HeaderKey]) // HeaderKey is canonical: what Values would read
	switch {
	case errors.Is(err, ErrKeyMissing):
		if !m.required {
			h.next.ServeHTTP(w, r)
			return
		}
		m.onError(w, r, errKeyMissing())
		return
	case err != nil:
		m.onError(w, r, errKeyInvalid(err))
		return
	}
	ex := &exchange{next: h.next, req: r}
	body, perr := readBody(r, m.maxBody, ex.scratch[:])
	if perr != nil {
		m.onError(w, r, perr)
		return
	}
	ex.body = body
	identity, fingerprint := m.identity(r), m.fingerprint(r, body)

	ex.rw.init(w, m.maxResponse, m.rec)
	var ctx context.Context = r.Context()
	if !m.detached {
		ex.ctx.init(r.Context())
		defer ex.ctx.release()
		ctx = &ex.ctx
	}
	res, err := m.engine.Do(ctx, key, identity, fingerprint, ex.run)
	switch {
	case err != nil:
		m.onError(w, r, classify(err, res))
	case res.Replayed:
		writeRecorded(w, &res.Response)
	default:
		ex.rw.finish()
	}
}

// exchange is one keyed request's state, in one allocation: the context the
// engine runs with, the recorder the handler writes to, and the reader of
// the body it reads again.
type exchange struct {
	ctx  runContext
	rw   recorder
	rd   bodyReader
	next http.Handler
	req  *http.Request
	body []byte

	scratch [smallBody]byte // holds a small request body
}

// smallBody is the largest request body read without an allocation of its
// own. Many JSON commands are this small; a larger array made the
// exchange slower to allocate than the buffer it saves (measured at 512).
const smallBody = 128

// run is the command the engine runs: the handler, with the request detached
// from the client (runCtx) and its body rewound.
func (ex *exchange) run(runCtx context.Context) (idempotency.Cached, error) {
	if ex.ctx.inUse() { // a user's engine: the run context detaches the command
		if err := ex.ctx.start(); err != nil {
			return idempotency.Cached{}, err // the client left before anything ran
		}
	}
	ex.next.ServeHTTP(&ex.rw, ex.rd.attach(ex.req.WithContext(runCtx), ex.body))
	return ex.rw.result(), nil
}

// Headers recorded whatever the options, and headers never recorded.
var (
	alwaysRecorded = []string{"Content-Type", "Content-Encoding", "Location"}
	neverRecorded  = map[string]bool{
		"Set-Cookie": true, "Set-Cookie2": true, "Authorization": true,
		"Proxy-Authenticate": true, "Proxy-Authorization": true,
		"Content-Length": true, "Date": true, HeaderReplayed: true,
		// hop-by-hop (RFC 9110 section 7.6.1)
		"Connection": true, "Proxy-Connection": true, "Keep-Alive": true,
		"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	}
)

// allowedHeaders returns the canonical names of the headers to record.
func allowedHeaders(extra []string) []string {
	allow := slices.Clone(alwaysRecorded)
	for _, name := range extra {
		name = http.CanonicalHeaderKey(name)
		if name != "" && !neverRecorded[name] && !slices.Contains(allow, name) {
			allow = append(allow, name)
		}
	}
	return allow
}
