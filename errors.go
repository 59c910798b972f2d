package idempotency

import "errors"

// Sentinel errors. Errors returned by this package and by the built-in stores
// wrap one of these with context; test for them with errors.Is.
var (
	// ErrInvalidKey: the idempotency key is empty, longer than MaxKeyLen
	// bytes, or contains control characters or invalid UTF-8.
	ErrInvalidKey = errors.New("idempotency: invalid key")
	// ErrInvalidArgument: a protocol call got an argument it cannot use
	// (an empty owner, a lease that is not positive).
	ErrInvalidArgument = errors.New("idempotency: invalid argument")
	// ErrInFlight: another execution with the same key and identity is still
	// running. HTTP adapters answer 409 Conflict.
	ErrInFlight = errors.New("idempotency: request with this key is in flight")
	// ErrMismatch: the key was already used, by the same identity, with a
	// different request. HTTP adapters answer 422 Unprocessable Content.
	ErrMismatch = errors.New("idempotency: key reused with a different request")
	// ErrLeaseLost: the token no longer holds its claim (the lease ran out,
	// the key was taken over, released or completed). A stale holder's
	// Complete, Release and Renew fail with it.
	ErrLeaseLost = errors.New("idempotency: claim lease lost")
	// ErrLeaseExpired: the engine could not confirm its claim's lease with
	// the store (renewals failed) until its own estimate of the lease ran
	// out, so another execution may already have taken the key over. A
	// command's context is cancelled with this cause; it is distinct from
	// ErrLeaseLost, which the store itself said.
	ErrLeaseExpired = errors.New("idempotency: claim lease ran out unconfirmed")
	// ErrStoreMisconfigured: the store is reachable but cannot work as
	// configured (a table or schema that does not exist, missing
	// privileges, an invalid name). Retrying does not help, so errors
	// wrapping it do not match ErrStoreUnavailable; HTTP adapters answer 500.
	ErrStoreMisconfigured = errors.New("idempotency: store misconfigured")
	// ErrStoreUnavailable: the store could not be reached or failed. The
	// command is not run (fail closed). HTTP adapters answer 503.
	ErrStoreUnavailable = errors.New("idempotency: store unavailable")
	// ErrStoreFull: the store cannot take a new record without evicting a
	// claim whose lease is live, which it never does (claims whose lease ran
	// out are reclaimed first). Errors wrapping it also match
	// ErrStoreUnavailable when they come out of Engine.Do.
	ErrStoreFull = errors.New("idempotency: store full")
	// ErrTooLarge: a response is larger than the store's byte cap.
	ErrTooLarge = errors.New("idempotency: response too large to store")
	// ErrResponseNotRecorded: the command already ran for this key, but its
	// response was too large to record; it will not run again.
	ErrResponseNotRecorded = errors.New("idempotency: command already ran; its response was too large to record")
)

// StoreError is a failure of the store during Engine.Do, with the protocol
// step that failed. It matches ErrStoreUnavailable with errors.Is (unless it
// wraps ErrStoreMisconfigured), and also whatever error it wraps.
type StoreError struct {
	Op  string // "begin", "lookup", "complete", "commit" (a TxStore's Complete), "release", "renew", "store"
	Err error
}

func (e *StoreError) Error() string { return "idempotency: store " + e.Op + ": " + e.Err.Error() }

// Unwrap returns the store's own error.
func (e *StoreError) Unwrap() error { return e.Err }

// Is reports that a StoreError is an ErrStoreUnavailable, unless the store
// said it is misconfigured (which a retry cannot mend).
func (e *StoreError) Is(target error) bool {
	return target == ErrStoreUnavailable && !errors.Is(e.Err, ErrStoreMisconfigured)
}
