// Package idempotency makes retried commands safe: a command sent with an
// idempotency key runs once, its response is recorded, and every retry with
// the same key from the same caller gets that response back, byte for byte,
// without running the command again — also when retries race each other and
// when replicas share a store. A process that dies mid-command blocks its key
// only until its lease runs out; what that means for the command's effects
// is said exactly under "What is guaranteed" below.
//
// # The seed API
//
// Store, Cached, InMemoryStore, Option, WithMaxEntries and DefaultMaxEntries
// are the original API of this package and keep their meaning: a Store keyed
// by (key, identity) that returns recorded responses, and an in-memory store
// with TTL expiry and least-recently-used eviction.
//
// Lookup-then-Store alone is not enough: two retries arriving together both
// miss in Lookup and both run the command. So this package adds a claim
// protocol (ClaimStore) and one execution engine (Engine) that uses it.
//
// # The claim protocol
//
// Before running a command, the engine claims its key atomically with
// ClaimStore.Begin, which answers one of:
//
//   - ClaimAcquired: the caller runs the command, holding a Token with a
//     fencing number that grows with every new claim of the key;
//   - ClaimReplay: a response is recorded; it is returned as it is;
//   - ClaimInFlight: another execution holds a live lease on the key;
//   - ClaimMismatch: the key was used with a different request.
//
// The holder then calls Complete to record the response, or Release to give
// the key up without one (a failed or panicking command, so that a retry can
// run). A claim is a lease: the engine renews it while the command runs, and a
// holder that crashes blocks its key only until the lease runs out; after that,
// its late Complete is refused with ErrLeaseLost. Each claim carries a random
// owner id, so a Begin retried after its reply was lost finds the caller's own
// claim instead of a stranger's.
//
// InMemoryStore implements ClaimStore; so do the Redis (redisstore) and
// PostgreSQL (pgstore) backends, which let several replicas share the
// guarantee. The storetest package is the conformance suite every store
// passes.
//
// Every built-in store is also an Inspector, for an operator's tools
// (idemd's admin API): Inspect describes one record (absent, in flight
// with its owner, fence and lease, completed with its status and size, or
// a tombstone), Purge deletes one — a claim in flight is taken over, so
// its holder can no longer complete it — and Claims lists the claims in
// flight for longer than a given time.
//
// # The engine
//
// Engine.Do runs a command at most once per (key, identity):
//
//	e := idempotency.NewEngine(store, idempotency.WithLease(30*time.Second))
//	req := idempotency.Request{Key: key, Identity: caller, Fingerprint: fp}
//	res, err := e.Do(ctx, req, func(ctx context.Context) (idempotency.Response, error) {
//		return idempotency.Response{Status: 201, Body: body}, nil
//	})
//
// Its errors say what an adapter answers: ErrInvalidKey (400), ErrMismatch
// (422), ErrInFlight (409; or, with WithWait, the duplicate waits for the
// first execution's response), ErrStoreUnavailable (503, and the command did
// not run), ErrStoreMisconfigured (500: a store that cannot work as
// configured, which retrying does not mend). A command's own error or panic
// releases the key and comes back unchanged. By default (DefaultRecordPolicy)
// server errors and the "try again later" answers 408, 425 and 429 are not
// recorded, so a retry runs again; responses larger than WithMaxResponseBytes
// are answered but recorded as a tombstone, so a retry gets
// ErrResponseNotRecorded and the command never runs twice.
//
// An Observer (WithObserver) sees every execution's outcome, duration and
// fence, every store call, and every lease lost while a command runs;
// metrics, logs and traces are built on it. An Engine without one logs
// record errors and lost leases with slog.Default, so neither goes unseen.
//
// The HTTP middleware (idemhttp) and the command dispatcher (dispatcher) are
// thin adapters over the engine; they take an Engine, which holds every
// setting that is not about their transport.
//
// # What is guaranteed
//
// With a ClaimStore, at most one execution holds a live claim for a (key,
// identity) at any time, across every process sharing the store; a
// completed command's response is replayed, byte for byte, until its TTL
// runs out.
//
// That is not the same as "the command's effect happens once". A holder
// that loses its lease after its effect and before its response is
// recorded — a process killed at that instant, a store outage longer than
// the lease, a pause past the lease — leaves the retry to run the command
// again. The Engine narrows that window (it renews the lease while the
// command runs, retries a failed Complete, and cancels the command's
// context when its lease is lost or cannot be confirmed), but cannot close
// it. The fence does: every new claim of a key gets a larger fencing number
// (Token.Fence, from TokenFromContext), and a downstream that remembers the
// largest fence it accepted for a key and refuses smaller ones refuses the
// stale holder.
//
// Over a plain Store without the claim protocol, duplicates within one
// process run once; processes sharing the store can each run a command.
// A plain Store cannot say that a lookup failed (see CheckedStore).
//
// # Keys and identities
//
// Keys are 1 to 255 bytes of UTF-8 without control characters
// (ValidateKey); the HTTP adapters further take printable ASCII only, as the
// Idempotency-Key header's structured-field string allows. The identity is
// the caller, derived by the adapter from its credentials; records of
// different identities are independent, and (key, identity) pairs are encoded
// without ambiguity. Shared stores file records under driver.RecordKey, a
// keyed hash of the pair, so raw keys and credentials never reach them.
// Package driver holds what only store authors need.
//
// This package imports only the standard library.
package idempotency
