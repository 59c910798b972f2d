// Package idemgin is gin middleware that makes unsafe requests safe to
// retry, with the semantics of package idemhttp (the IETF Idempotency-Key
// header draft) on the same idempotency.Engine:
//
//	engine := idempotency.NewEngine(store, idempotency.WithDetachedRun(true))
//	r := gin.New()
//	r.Use(gin.Recovery(), authenticate)
//	r.POST("/payments", idemgin.New(engine), createPayment)
//
// The first POST or PATCH with a key runs the handlers after the
// middleware and records their response; a retry with the same key from
// the same caller gets it back byte for byte, with "Idempotent-Replayed:
// true", and the handlers do not run. A duplicate while the first is
// running gets 409 with Retry-After; the key reused for another request,
// 422; a keyed request without an identity (by default, without an
// Authorization header), 400. A 5xx, 408, 425 or 429 answer (the engine's
// default record policy) or a panic is not recorded: the key is released
// and a retry runs again. Set-Cookie is sent with the first response and
// never replayed. The middleware's own answers are RFC 9457
// problems. The options are idemhttp's (idemhttp.WithRequired,
// idemhttp.WithIdentity, …), and the full table of outcomes is in
// idemhttp's documentation.
//
// idemgin is a thin adapter: New runs the rest of the gin chain as the
// http.Handler of idemhttp.New, with c.Writer recording and c.Request
// carrying the request body again. An engine that may run a command twice
// (a transactional store) cannot rerun a gin chain: wrap the handler with
// idemhttp under gin.WrapH instead (see New).
//
// Routers built on net/http middleware (chi, gorilla/mux, and echo through
// echo.WrapMiddleware) use idemhttp directly; this module's tests and
// examples run it under each of them.
package idemgin
