package idemhttp

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"slices"

	"github.com/idemkit/idempotency"
)

// New returns middleware that makes the wrapped handler idempotent on e, in
// the shape routers use (func(next http.Handler) http.Handler):
//
//	engine := idempotency.NewEngine(store, idempotency.WithDetachedRun(true))
//	mux.Handle("POST /payments", idemhttp.New(engine)(payments))
//	r.Use(idemhttp.New(engine, idemhttp.WithRequired(true))) // chi
//
// The engine holds what is not about HTTP — the store, the lease, waiting
// for a duplicate, the record policy, the largest response recorded, the
// observer — and may be shared by several middlewares (per-route options)
// and other adapters. The middleware detaches a started handler from its
// client either way (a client that hangs up does not stop it half-way); an
// engine made WithDetachedRun(true) does so without watching the request's
// context, which is cheaper. New panics if e is nil.
func New(e *idempotency.Engine, opts ...Option) func(http.Handler) http.Handler {
	if e == nil {
		panic("idemhttp: New with a nil engine")
	}
	c := config{
		methods:     []string{http.MethodPost, http.MethodPatch},
		identity:    DefaultIdentity,
		fingerprint: DefaultFingerprint,
		maxBody:     DefaultMaxBodyBytes,
		onError:     WriteError,
	}
	for _, o := range opts {
		o(&c)
	}
	m := &middleware{config: c, engine: e, rec: newRecording(allowedHeaders(c.headers))}
	return func(next http.Handler) http.Handler {
		return &handler{m: m, next: next}
	}
}

type middleware struct {
	config
	engine *idempotency.Engine
	rec    *recording // the recorded headers
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
	ex := &exchange{next: h.next, req: r, reruns: m.engine.Reruns()}
	body, perr := readBody(r, m.maxBody, ex.scratch[:])
	if perr != nil {
		m.onError(w, r, perr)
		return
	}
	ex.body = body
	identity := m.identity(r)
	if identity == "" && !m.anonymous {
		m.onError(w, r, errIdentityMissing())
		return
	}
	fingerprint := m.fingerprint(r, body)

	ex.rw.init(w, m.engine.MaxResponseBytes(), m.rec) // larger responses stream through
	var ctx context.Context = r.Context()
	if !m.engine.RunsDetached() { // else the engine detaches a started command itself
		ex.ctx.init(r.Context())
		defer ex.ctx.release()
		ctx = &ex.ctx
	}
	res, err := m.engine.Do(ctx, idempotency.Request{Key: key, Identity: identity, Fingerprint: fingerprint}, ex.run)
	switch {
	case err != nil:
		m.onError(w, r, classify(err))
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

	reruns  bool        // the engine may run the handler again (see again)
	runs    int         // the handler's runs so far, when reruns
	header0 http.Header // the response headers before the first run, when reruns

	scratch [smallBody]byte // holds a small request body
}

// smallBody is the largest request body read without an allocation of its
// own. Many JSON commands are this small; a larger array made the
// exchange slower to allocate than the buffer it saves (measured at 512).
const smallBody = 128

// run is the command the engine runs: the handler, with the request detached
// from the client (runCtx) and its body rewound.
func (ex *exchange) run(runCtx context.Context) (idempotency.Response, error) {
	if ex.ctx.inUse() { // an engine not made WithDetachedRun: the run context detaches the command
		if err := ex.ctx.start(); err != nil {
			return idempotency.Response{}, err // the client left before anything ran
		}
	}
	if ex.reruns {
		if err := ex.again(); err != nil {
			return idempotency.Response{}, err
		}
	}
	ex.next.ServeHTTP(&ex.rw, ex.rd.attach(ex.req.WithContext(runCtx), ex.body))
	return ex.rw.result(), nil
}

// errSent is what a run of the handler after the first returns when the
// first run's response already went to the client (it flushed, streamed
// past the cap or hijacked the connection): it cannot be taken back.
var errSent = errors.New("idemhttp: the handler cannot run again: its first run's response was already sent")

// again prepares a run over an engine that may run the handler more than
// once (a TxStore, after a serialization failure): the first run keeps a
// copy of the response headers outer middleware set, a later one puts
// them back and empties the recorder.
func (ex *exchange) again() error {
	ex.runs++
	h := ex.rw.w.Header()
	if ex.runs == 1 {
		if len(h) > 0 {
			ex.header0 = h.Clone()
		}
		return nil
	}
	if ex.rw.committed || ex.rw.hijacked {
		return errSent
	}
	clear(h)
	maps.Copy(h, ex.header0)
	ex.rw.reset()
	return nil
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
