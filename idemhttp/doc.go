// Package idemhttp is net/http middleware that makes unsafe requests safe to
// retry, with the semantics of the IETF Idempotency-Key header draft (and
// Stripe's choices where the draft leaves them open).
//
// A client sends a POST or PATCH with an Idempotency-Key header. The first
// request with a key runs the handler and records its response; a retry
// with the same key from the same caller gets the recorded response back,
// byte for byte, without running the handler again — also when the retries
// race each other, and, with a shared store, across replicas. The middleware
// is a thin adapter over idempotency.Engine, which claims the key atomically
// in the store before the handler runs.
//
//	store := idempotency.NewInMemoryStore() // or a Redis or PostgreSQL store
//	engine := idempotency.NewEngine(store, idempotency.WithDetachedRun(true))
//	mux := http.NewServeMux()
//	mux.Handle("POST /payments", idemhttp.New(engine)(payments))
//	http.ListenAndServe(addr, authenticate(mux))
//
// The engine holds every setting that is not about HTTP: the store, the
// lease, waiting for a duplicate (idempotency.WithWait), what is recorded
// (idempotency.WithRecordPolicy), the largest response recorded
// (idempotency.WithMaxResponseBytes) and the observer that sees every
// execution; the middleware's own options are about requests.
//
// New returns a func(http.Handler) http.Handler, so it plugs into chi
// (r.Use), gorilla/mux (r.Use) and the standard mux (by wrapping handlers)
// alike, and works with ServeMux patterns: r.PathValue keeps working in the
// wrapped handler.
//
// # Semantics
//
//	situation                                        answer
//	first request with key K                         the handler runs; its response is recorded
//	retry: same K, caller and request, completed     recorded status, headers and body verbatim,
//	                                                 plus "Idempotent-Replayed: true"
//	same K while the first is still running          409 with Retry-After: 1 (a polling hint);
//	                                                 with the engine's WithWait, the first's
//	                                                 response instead
//	same K and caller, different request             422 (method, path, query or body differ)
//	key required (WithRequired) but missing          400
//	key malformed: empty, over 255 bytes, control    400
//	  characters, two header lines, a list
//	same K, different caller (identity)              independent: never another caller's response
//	key but no identity (no Authorization header,    400; unless WithAnonymous, when all such
//	  or WithIdentity returned "")                     callers share one key space
//	body over WithMaxBodyBytes                       413, before anything is claimed or run
//	store failure                                    503 with Retry-After; the handler does not run
//	store misconfigured (no table, no privileges)    500; the handler does not run
//	handler answers 5xx, 408, 425 or 429, or panics  not recorded; the key is released, a retry runs
//	handler answers 4xx (its own validation)         recorded and replayed, like any response
//	client disconnects mid-request                   the handler still completes; its response is
//	                                                 recorded for the retry
//	response over the engine's WithMaxResponseBytes  sent to the client; a tombstone is recorded,
//	                                                 so a retry gets 410 and the handler never
//	                                                 runs again for K
//	method not in WithMethods, or no key             passed straight through
//	  (when optional)
//
// The middleware's own answers are RFC 9457 problems (application/problem+json)
// with type, title, status and detail, for example:
//
//	HTTP/1.1 409 Conflict
//	Content-Type: application/problem+json
//	Retry-After: 1
//
//	{"type":"https://github.com/idemkit/idempotency/problems/idempotency-key-in-flight",
//	 "title":"A request with this Idempotency-Key is being processed","status":409,"detail":"…"}
//
// Their types end in idempotency-key-missing, idempotency-key-invalid,
// idempotency-identity-missing (400),
// idempotency-key-in-flight (409), response-not-recorded (410),
// request-body-too-large (413), idempotency-key-reused (422), internal
// (500), store-unavailable and request-cancelled (503). The text of an
// internal failure never reaches the client; WithErrorHandler sees it (in
// Error.Err) to log it, or to answer in another format.
//
// # Keys, callers and requests
//
// The key is read with ParseKey: a structured-field string ("abc") or,
// leniently, bare (abc); both are the same key. Records are kept per caller:
// the identity defaults to a digest of the Authorization header (a raw
// credential never reaches the store), and WithIdentity can take it from
// what authentication put in the context, or from a session cookie
// (CookieIdentity). A keyed request whose caller cannot be told apart (no
// Authorization header, or WithIdentity returned "") is refused with 400:
// otherwise every such caller would share one key space, and in an
// application that authenticates with a session cookie two users sending
// "order-1" would get each other's response. WithAnonymous(true) allows
// those requests where one shared key space is what is meant.
// The request fingerprint (DefaultFingerprint) covers the method, path,
// query and body; JSON bodies are compared in their exact-value canonical
// form (canonicaljson.Canonical), so re-encoding a payload with other white
// space, member order, string escapes or number spelling is not a different
// request, while numbers that differ in any digit always are.
//
// # Placement
//
// Put the middleware after authentication and authorization: a replay is
// then authorized like any request, and the identity can come from the
// authenticated principal. Put it before (inside) anything that must run
// only once per command. Outer middleware (logging, compression, CORS) sees
// replays as ordinary responses.
//
// # Per-route settings
//
// One middleware value has one configuration. To require the key on some
// routes and not others, or to use other limits, build one middleware per
// setting and wrap each route with the one it needs:
//
//	required := idemhttp.New(engine, idemhttp.WithRequired(true))
//	optional := idemhttp.New(engine)
//	mux.Handle("POST /payments", required(payments))
//	mux.Handle("POST /notes", optional(notes))
//
// With a ClaimStore (every built-in store), engines sharing a store are
// safe together; with a plain idempotency.Store, share one engine between
// the middlewares, since such a store deduplicates within one engine only.
// Settings that belong to the engine (lease, waiting, record policy) differ
// per route by giving those routes an engine of their own.
//
// # What the handler sees
//
// The handler gets the request body in full (the middleware read it to
// fingerprint it) and a context that keeps the request's values but is not
// cancelled when the client leaves: the command completes and is recorded.
// That context is cancelled only if the claim's lease is lost (cause
// idempotency.ErrLeaseLost) or could not be confirmed in time (cause
// idempotency.ErrLeaseExpired), and carries the claim's token
// (idempotency.TokenFromContext), whose Fence can be passed to downstream
// systems that reject writes from a stale holder.
//
// The response is buffered until the handler returns, then sent. Recorded
// are the status, the body and the headers Content-Type, Content-Encoding,
// Location and those listed with WithHeaders — never Set-Cookie,
// Authorization or hop-by-hop headers; the first response still carries all
// of them.
//
// A handler may stream: Flush (or http.ResponseController.Flush) sends what
// it wrote so far and passes the rest through as it is written. A streamed
// response is still recorded whole if it fits the engine's
// WithMaxResponseBytes (a
// replay sends it in one piece); otherwise a tombstone is recorded, as for
// any oversized response. A handler that hijacks the connection leaves a
// tombstone too. Writing to the writer returned by Unwrap bypasses the
// recording. Write errors of a departed client are not reported to the
// handler, which therefore must not rely on them (nor on its context) to
// stop an endless stream: do not put such handlers behind this middleware.
//
// If the handler panics, the key is released and the panic goes on to the
// server (net/http logs it and drops the connection), or to a recovery
// middleware placed outside this one; a retry runs the handler again.
package idemhttp
