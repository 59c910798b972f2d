package idemhttp

import (
	"net/http"
	"time"

	"github.com/idemkit/idempotency"
)

// Defaults of the middleware.
const (
	// DefaultMaxBodyBytes is the largest request body read: a larger one is
	// refused with 413 before anything is claimed.
	DefaultMaxBodyBytes = 1 << 20
	// DefaultMaxResponseBytes is the largest response body recorded; a larger
	// one is sent to the client, and a tombstone is recorded.
	DefaultMaxResponseBytes = idempotency.DefaultMaxResponseBytes
)

// Option configures the middleware returned by New.
type Option func(*config)

type config struct {
	required    bool
	methods     []string
	identity    func(*http.Request) string
	fingerprint func(*http.Request, []byte) string
	maxBody     int64
	maxResponse int
	headers     []string
	engine      *idempotency.Engine
	engineOpts  []idempotency.EngineOption
	onError     func(http.ResponseWriter, *http.Request, *Error)
}

// WithRequired makes the Idempotency-Key header mandatory: a request with
// one of the methods the middleware applies to (WithMethods) and no key gets
// 400. By default the key is optional and a request without it passes
// straight through to the handler, with no deduplication. To require the
// key on some routes only, wrap those routes with a middleware built with
// WithRequired(true) and the others with one built without it.
func WithRequired(required bool) Option {
	return func(c *config) { c.required = required }
}

// WithMethods sets the request methods the middleware applies to; requests
// with other methods pass straight through, key or not. Methods are compared
// exactly ("POST", not "post"). The default is POST and PATCH; no methods
// keep the default.
func WithMethods(methods ...string) Option {
	return func(c *config) {
		if len(methods) > 0 {
			c.methods = append([]string(nil), methods...)
		}
	}
}

// WithIdentity sets how the caller is told apart: requests with the same
// key but different identities are independent, and a caller never gets
// another's response. Return a stable, non-secret id (a user or account id
// put in the context by authentication middleware, for example); "" is the
// anonymous caller. nil keeps the default, DefaultIdentity: a digest of the
// Authorization header.
func WithIdentity(identity func(r *http.Request) string) Option {
	return func(c *config) {
		if identity != nil {
			c.identity = identity
		}
	}
}

// WithFingerprint sets how a request is summarised to detect a key reused
// for a different request (answered 422). It gets the request and its whole
// body (which the handler still reads from r.Body). Returning "" disables
// the check for that request. nil keeps the default, DefaultFingerprint:
// method, path, query and a digest of the body (of its exact-value canonical
// form for JSON; see canonicaljson).
func WithFingerprint(fingerprint func(r *http.Request, body []byte) string) Option {
	return func(c *config) {
		if fingerprint != nil {
			c.fingerprint = fingerprint
		}
	}
}

// WithMaxBodyBytes caps the request body of a keyed request, which the
// middleware reads whole to fingerprint it. A longer body is refused with
// 413 before anything is claimed or run. n <= 0 keeps DefaultMaxBodyBytes
// (1 MiB). Requests without a key (or with another method) are not read and
// not limited.
func WithMaxBodyBytes(n int64) Option {
	return func(c *config) {
		if n > 0 {
			c.maxBody = n
		}
	}
}

// WithMaxResponseBytes caps the response body recorded for replay. A larger
// response is sent to the client in full (passed through once it outgrows
// the cap) while a tombstone is recorded: a retry gets 410 saying the
// response was too large to record, and the handler never runs again for
// that key. n <= 0 keeps DefaultMaxResponseBytes (1 MiB).
func WithMaxResponseBytes(n int) Option {
	return func(c *config) {
		if n > 0 {
			c.maxResponse = n
		}
	}
}

// WithHeaders adds response headers to record and replay. Content-Type,
// Content-Encoding and Location are always recorded. Set-Cookie,
// Authorization, Proxy-Authenticate, Content-Length, Date, the replay marker
// and hop-by-hop headers (Connection, Keep-Alive, Transfer-Encoding,
// Upgrade, Trailer, TE…) are never recorded, even when listed: a replay must
// not hand out another session's cookie or describe another connection.
// Headers not recorded are still sent with the first response.
func WithHeaders(names ...string) Option {
	return func(c *config) { c.headers = append(c.headers, names...) }
}

// WithTTL sets how long a recorded response is replayed. d <= 0 (the
// default) leaves it to the store, whose default is 24 hours. Ignored with
// WithEngine.
func WithTTL(d time.Duration) Option {
	return func(c *config) { c.engineOpts = append(c.engineOpts, idempotency.WithTTL(d)) }
}

// WithLease sets how long a claim lives without a heartbeat; the engine
// renews it while the handler runs, so it bounds how long a key stays
// blocked after a crash. d <= 0 keeps idempotency.DefaultLease (30s).
// Ignored with WithEngine.
func WithLease(d time.Duration) Option {
	return func(c *config) { c.engineOpts = append(c.engineOpts, idempotency.WithLease(d)) }
}

// WithWait makes a duplicate that arrives while the first request with its
// key is running wait for the first's response (and get it as a replay)
// instead of 409. The wait ends when the client's request context does;
// then the answer is 409. Off by default. Ignored with WithEngine.
func WithWait(wait bool) Option {
	return func(c *config) { c.engineOpts = append(c.engineOpts, idempotency.WithWait(wait)) }
}

// WithRecordPolicy decides which responses are recorded. Only Status,
// Header, WireBody and Tombstone (an oversized, streamed-over-the-cap or
// hijacked response) of its argument are set. A response it refuses is
// sent to the client and the key is released, so a retry runs the handler
// again. nil keeps idempotency.RecordNon5xx: everything but 5xx is recorded.
// Ignored with WithEngine.
func WithRecordPolicy(record func(idempotency.Cached) bool) Option {
	return func(c *config) { c.engineOpts = append(c.engineOpts, idempotency.WithRecordPolicy(record)) }
}

// WithEngine runs the middleware on e instead of on an engine of its own
// built over New's store (which may then be nil). Share one engine between
// middleware instances (per-route settings) and other adapters when the
// store is a plain idempotency.Store without the claim protocol: such a
// store deduplicates within one engine only. WithTTL, WithLease, WithWait
// and WithRecordPolicy are then ignored (configure e instead), and e's own
// response cap also applies. The middleware detaches a started command
// from its client either way; an engine made with
// idempotency.WithDetachedRun(true), as the middleware's own is, does so
// without watching the request's context. nil keeps the default.
func WithEngine(e *idempotency.Engine) Option {
	return func(c *config) { c.engine = e }
}

// WithErrorHandler replaces how the middleware answers the requests it
// refuses or cannot serve (see Error): to log them, or to answer in the
// application's own error format. nil keeps WriteError, which writes an RFC
// 9457 problem. The handler must not send e.Err's text to the client when
// it describes an internal failure.
func WithErrorHandler(h func(w http.ResponseWriter, r *http.Request, e *Error)) Option {
	return func(c *config) {
		if h != nil {
			c.onError = h
		}
	}
}
