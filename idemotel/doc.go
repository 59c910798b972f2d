// Package idemotel reports what an idempotency.Engine does to OpenTelemetry:
// a span per execution, a child span per store call, and metrics. It is
// built on the engine's Observer, so it needs nothing from the adapters:
//
//	e := idempotency.NewEngine(store, idempotency.WithObserver(idemotel.NewObserver(
//		idemotel.WithStoreName("redis"),
//		idemotel.WithKeyDigest(secret),
//	)))
//
// The providers default to the global ones (otel.GetTracerProvider,
// otel.GetMeterProvider); WithTracerProvider and WithMeterProvider choose
// others.
//
// # Spans
//
// Each Do opens a span "idempotency.execute" (kind internal), a child of the
// span in the caller's context, and ends it when Do returns. Its attributes:
//
//	idempotency.outcome     the Outcome's String: executed, replayed, in_flight…
//	idempotency.replayed    whether a recorded response was returned
//	idempotency.fence       the claim's fencing number, when the command ran under one
//	idempotency.waited_ms   how long Do waited for another execution (WithWait), when it did
//	idempotency.store       the store's name, with WithStoreName
//	idempotency.key_digest  a keyed digest of the key and identity, with WithKeyDigest
//
// Its status is Error, with the error recorded, when the outcome is
// failed, panicked, record_failed or store_error; the other outcomes
// (a mismatch, a key in flight) are answers, not failures. A lease lost
// while the command runs is an event "idempotency.lease_lost" with its
// cause (lost: the store said so; expired: it could not be confirmed in
// time).
//
// Each store call is a child span "idempotency.store.<op>" (begin, complete,
// release, renew, lookup, store) spanning the call, with its error.
//
// The raw key and identity are never exported: an identity may derive from a
// credential, and a key may be guessable. Without WithKeyDigest spans carry
// nothing of them; with it, a truncated HMAC-SHA256 under the secret, which
// correlates the spans of one key and caller without revealing either.
// The errors recorded are the ones Do returned: a command's own error is
// exported as the command wrote it.
//
// # Metrics
//
//	idempotency.executions             counter {execution}, by idempotency.outcome
//	idempotency.execution.duration     histogram s, by idempotency.outcome
//	idempotency.store.call.duration    histogram s, by idempotency.store.op and error (bool)
//	idempotency.lease.losses           counter {loss}, by idempotency.lease.cause (lost, expired)
//	idempotency.record.errors          counter {error}: responses that could not be recorded
//	idempotency.wait.duration          histogram s: waits for another execution (WithWait)
//
// Every metric also carries idempotency.store when WithStoreName is given.
//
// The hooks run synchronously on the engine's hot path and from its
// heartbeat goroutines; they are safe for concurrent use, and with a
// non-recording span they set no attributes at all.
package idemotel
