package idemhttp

import (
	"net/http"
)

// Defaults of the middleware.
const (
	// DefaultMaxBodyBytes is the largest request body read: a larger one is
	// refused with 413 before anything is claimed.
	DefaultMaxBodyBytes = 1 << 20
)

// Option configures the middleware returned by New.
type Option func(*config)

type config struct {
	required    bool
	methods     []string
	identity    func(*http.Request) string
	fingerprint func(*http.Request, []byte) string
	anonymous   bool
	maxBody     int64
	headers     []string
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
// put in the context by authentication middleware, for example), or "" when
// the request carries no credential: such a request is refused unless
// WithAnonymous allows it. nil keeps the default, DefaultIdentity: a digest
// of the Authorization header. An application whose callers authenticate
// with a session cookie uses CookieIdentity (or its own session's user id):
//
//	idemhttp.New(engine, idemhttp.WithIdentity(idemhttp.CookieIdentity("session_id")))
func WithIdentity(identity func(r *http.Request) string) Option {
	return func(c *config) {
		if identity != nil {
			c.identity = identity
		}
	}
}

// WithAnonymous lets keyed requests without an identity (the identity
// function returned "") through, all of them sharing ONE key space: two
// callers who send the same key get each other's response. Use it only
// where that is true of the application — one trusted client, or keys that
// are random per request and never guessed — and never in front of an
// application whose users authenticate in a way the identity function does
// not see (a session cookie, a client certificate). Off by default: such a
// request is answered 400 (idempotency-identity-missing) and not run, so a
// middleware that cannot tell callers apart fails loudly instead of mixing
// their responses up.
func WithAnonymous(allow bool) Option {
	return func(c *config) { c.anonymous = allow }
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
