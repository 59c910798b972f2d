// Package idempotency makes retried commands safe: a command sent with an
// idempotency key runs once, its response is recorded, and every retry with
// the same key from the same caller gets that response back, byte for byte,
// without running the command again — also when retries race each other,
// when replicas share a store, and when a process dies mid-command.
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
// # The engine
//
// Engine.Do runs a command at most once per (key, identity):
//
//	e := idempotency.NewEngine(store, idempotency.WithLease(30*time.Second))
//	res, err := e.Do(ctx, Request{Key: key, Identity: identity, Fingerprint: fingerprint}, func(ctx context.Context) (idempotency.Cached, error) {
//		return idempotency.Cached{Status: 201, WireBody: body}, nil
//	})
//
// Its errors say what an adapter answers: ErrInvalidKey (400), ErrMismatch
// (422), ErrInFlight (409; or, with WithWait, the duplicate waits for the
// first execution's response), ErrStoreUnavailable (503, and the command did
// not run). A command's own error or panic releases the key and comes back
// unchanged. Responses with status 500 and above are not recorded by default
// (WithRecordPolicy), so a retry runs again; responses larger than
// WithMaxResponseBytes are answered but recorded as a tombstone, so a retry
// gets ErrResponseNotRecorded and the command never runs twice.
//
// The HTTP middleware (idemhttp) and the command dispatcher (dispatcher) are
// thin adapters over the engine.
//
// # Keys and identities
//
// Keys are 1 to 255 bytes of UTF-8 without control characters
// (ValidateKey); the HTTP adapters further take printable ASCII only, as the
// Idempotency-Key header's structured-field string allows. The identity is
// the caller, derived by the adapter from its credentials; records of
// different identities are independent, and (key, identity) pairs are encoded
// without ambiguity. Shared stores file records under RecordKey, a keyed hash
// of the pair, so raw keys and credentials never reach them.
//
// This package imports only the standard library.
package idempotency
