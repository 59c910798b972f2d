// Package idemgrpc makes unary gRPC methods idempotent: a call carrying an
// idempotency key runs its handler at most once per (key, caller), and a
// retry of it gets the first call's answer back instead of running the
// command again. It is an adapter over idempotency.Engine, which runs the
// claim protocol on the store and tells its observer about every call,
// exactly as it does for the HTTP middleware.
//
// On the server, UnaryServerInterceptor goes after authentication:
//
//	engine := idempotency.NewEngine(store, idempotency.WithDetachedRun(true))
//	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(
//		auth,
//		idemgrpc.UnaryServerInterceptor(engine),
//	))
//
// On the client, UnaryClientInterceptor gives each call without a key a
// fresh one, the same on every attempt of grpc-go's own retries, and a
// service config retry policy retries what the table below says can be
// retried:
//
//	cc, err := grpc.NewClient(target,
//		grpc.WithUnaryInterceptor(idemgrpc.UnaryClientInterceptor()),
//		grpc.WithDefaultServiceConfig(`{"methodConfig":[{
//			"name":[{"service":"shop.Orders"}],
//			"retryPolicy":{"maxAttempts":5,"initialBackoff":"0.1s","maxBackoff":"1s",
//				"backoffMultiplier":2,"retryableStatusCodes":["ABORTED","UNAVAILABLE"]}}]}`),
//	)
//
// # The call
//
// The key is the "idempotency-key" metadata (MetadataKey); WithKey and
// RequestField read it from a request field instead, such as AIP-155's
// request_id. The caller is DefaultIdentity, a SHA-256 digest of the
// "authorization" metadata (the raw credential never reaches the store),
// unless WithIdentity says otherwise (HMACIdentity keys the digest with a
// secret); a keyed call whose caller is unknown is refused unless
// WithAnonymous allows it. The fingerprint, DefaultFingerprint, digests the full method name and the deterministic
// protocol buffer encoding of the request, so the same key with another
// method or another message is refused.
//
// A replay returns the recorded response message, decoded into the
// handler's own message type (named in the record, found among the types
// the handlers answered with or in the global registry; a record whose type
// is in neither is answered with INTERNAL), so that its deterministic
// encoding is byte for byte the recorded one; its header
// metadata has "idempotent-replayed: true" (see Replayed). A recorded error
// is replayed as the same status, message and details. Header and trailer
// metadata the handler set are not recorded.
//
// # Outcomes and their codes
//
// The interceptor's own refusals carry a google.rpc.ErrorInfo detail with
// ErrorDomain and one of the Reason constants, and are sent trailers-only
// (no header metadata before them): grpc-go's retry policy retries only
// such an answer, and ABORTED and UNAVAILABLE are meant to be retried.
//
//	outcome                                           code                 retry?  reason
//	first call with the key                           the handler's        -       -
//	retry of a recorded call (same key, caller,       the recorded answer, -       -
//	  method, request)                                  idempotent-replayed
//	the same key while the first call runs            ABORTED              yes     IDEMPOTENCY_KEY_IN_FLIGHT
//	the store failed before the handler ran           UNAVAILABLE          yes     IDEMPOTENCY_STORE_UNAVAILABLE
//	the store is misconfigured                        INTERNAL             no      IDEMPOTENCY_STORE_MISCONFIGURED
//	the key reused with another method or request     FAILED_PRECONDITION  no      IDEMPOTENCY_KEY_REUSED
//	the call ran, its response was too large to       FAILED_PRECONDITION  no      IDEMPOTENCY_RESPONSE_NOT_RECORDED
//	  record (engine's WithMaxResponseBytes)
//	no key, WithRequired                              INVALID_ARGUMENT     no      IDEMPOTENCY_KEY_MISSING
//	no key, not required                              the handler runs, nothing is recorded
//	key invalid (empty, over 255 bytes, control       INVALID_ARGUMENT     no      IDEMPOTENCY_KEY_INVALID
//	  characters, two values)
//	keyed call without credentials                    UNAUTHENTICATED      no      IDEMPOTENCY_IDENTITY_MISSING
//	the request cannot be encoded (not a message)     INVALID_ARGUMENT     no      IDEMPOTENCY_REQUEST_UNREADABLE
//	the client left before the handler started        CANCELLED or DEADLINE_EXCEEDED
//	the same key from another caller                  independent: never another caller's answer
//
// "retry?" is what the service config above does. A duplicate that finds
// the first call in flight is retried with grpc-go's backoff, at most
// maxAttempts times (grpc-go caps it at 5): choose initialBackoff and
// maxBackoff so the attempts outlast a typical call, or make the engine
// WithWait(true), so that a duplicate waits for the first call's answer
// (bounded by its deadline) instead of being refused.
//
// What the handler answers is recorded, or released so that a retry runs
// the handler again (DefaultRecordCode; WithRecordCode changes it):
//
//	recorded and replayed   OK, INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED,
//	                        UNAUTHENTICATED, FAILED_PRECONDITION, OUT_OF_RANGE
//	released                CANCELLED, UNKNOWN (and errors that are not a status), DEADLINE_EXCEEDED,
//	                        RESOURCE_EXHAUSTED, ABORTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
//	                        DATA_LOSS; a panic (which goes on)
//
// A handler that answers a released code after its effect has happened
// will run again on the retry: return such a code only when nothing
// happened, or make the effect itself idempotent (the engine's fence,
// idempotency.TokenFromContext, is there for that).
//
// In the record, Status is the gRPC code (0 to 16) and Body the
// deterministic encoding of the response message (for an error, of its
// google.rpc.Status). The engine's record policy sees those responses;
// idempotency.DefaultRecordPolicy, made for HTTP statuses, records every
// one of them, which is right because the interceptor has already released
// the codes its own table refuses. A policy that refuses one answers it
// without recording it, and releases the key.
//
// # What it does not do
//
// Streaming methods are not intercepted: the package has no stream
// interceptor, so streams pass through untouched, with or without a key.
// A handler that has started is detached from its client: a client that
// hangs up, or whose deadline passes, does not stop it, and its answer is
// recorded for the retry (its context still ends when the engine loses the
// claim, while the client is there); an engine made WithDetachedRun(true)
// does that itself, more cheaply, and its handlers still see a claim lost
// after their client left: use one. Keys are only as good as the store's guarantee: see the
// idempotency package for what a lease can and cannot promise.
package idemgrpc
