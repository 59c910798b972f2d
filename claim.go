package idempotency

import (
	"context"
	"time"
)

// ClaimStore is a Store that implements the claim protocol: it decides
// atomically, in one step, whether a request with a key runs, replays, waits or
// is refused. Every built-in store implements it; storetest checks each
// contract stated here.
//
// A record moves through these states:
//
//	absent ──Begin──▶ in flight (owner, fence, lease) ──Complete──▶ completed ──TTL──▶ absent
//	                     │  ▲ Renew                   ──Release───▶ absent
//	                     └──┘ lease runs out: the next Begin takes the key over
//
// Every transition out of "in flight" is a compare-and-set on the token, so a
// holder whose lease ran out (and whose key may have been taken over) can
// neither complete nor release it.
//
// A ClaimStore bounds each call in time itself (a network store has a
// timeout), since the Engine records responses and releases claims with a
// context that the caller's cancellation does not reach: a client that hangs
// up must not keep its command's response from being recorded.
type ClaimStore interface {
	Store

	// Begin atomically claims (key, identity) or reports why it cannot:
	//
	//   - no record, or an in-flight record whose lease has run out:
	//     ClaimAcquired, with a new Token whose Fence is greater than any fence
	//     this store handed out before for the same (key, identity);
	//   - an in-flight record owned by req.Owner with a live lease (the caller's
	//     own claim, retried after its reply was lost): ClaimAcquired with the
	//     same Token as before;
	//   - a completed, unexpired record: ClaimReplay with the record, or
	//     ClaimMismatch when both fingerprints are non-empty and differ;
	//   - an in-flight record with a live lease owned by someone else:
	//     ClaimInFlight (RetryAfter is the lease's remaining time, when known),
	//     or ClaimMismatch when both fingerprints are non-empty and differ
	//     (a TxStore, whose claims other connections cannot see before they
	//     commit, may answer ClaimInFlight instead: the mismatch shows once
	//     the record is committed).
	//
	// A mismatch never alters the stored record. Begin returns ErrInvalidKey
	// for a key that fails ValidateKey, ErrInvalidArgument for an empty owner
	// or a lease that is not positive, ErrStoreFull when the record cannot be
	// created without evicting a claim whose lease is live, and an error wrapping
	// ErrStoreUnavailable when the backend cannot be reached; in every error
	// case nothing was claimed.
	Begin(ctx context.Context, key, identity string, req ClaimRequest) (Claim, error)

	// Complete records c as the response of the claim held by tok and makes
	// the record completed (replayed until c.TTL, or the store's default TTL,
	// runs out). It succeeds only while tok still holds the claim with a live
	// lease; otherwise it returns ErrLeaseLost and changes nothing. It is
	// idempotent: repeated with the same token after it succeeded (a reply
	// lost on the network), it returns nil and changes nothing. A store with
	// a byte cap returns ErrTooLarge for a response it cannot hold, leaving the
	// claim in flight.
	Complete(ctx context.Context, tok Token, c Cached) error

	// Release gives the claim held by tok up without a response, so the next
	// Begin acquires the key. It returns ErrLeaseLost, changing nothing, when
	// tok no longer holds the claim. Either way, once Release returns, tok
	// holds nothing: a store whose client retries a Release after its reply
	// was lost may answer the retry with ErrLeaseLost although the first
	// attempt released the claim.
	Release(ctx context.Context, tok Token) error

	// Renew extends the lease of the claim held by tok to lease from now. It
	// returns ErrLeaseLost when tok no longer holds the claim with a live lease.
	Renew(ctx context.Context, tok Token, lease time.Duration) error
}

// ClaimRequest is what Begin needs besides the key and identity.
type ClaimRequest struct {
	// Fingerprint identifies the request's payload; see Fingerprint.
	// Empty disables the mismatch check for this request.
	Fingerprint string
	// Owner is a random id chosen by the caller for this execution (see
	// NewOwner). A Begin retried with the same Owner is recognised as the
	// caller's own claim.
	Owner string
	// Lease is how long the claim lives without a Renew.
	Lease time.Duration
}

// ClaimStatus is the outcome of Begin.
type ClaimStatus uint8

const (
	// ClaimAcquired: the caller holds the key and runs the command.
	ClaimAcquired ClaimStatus = iota + 1
	// ClaimReplay: a completed response exists; Claim.Record holds it.
	ClaimReplay
	// ClaimInFlight: another execution holds a live lease on the key.
	ClaimInFlight
	// ClaimMismatch: the key was used with a different request fingerprint.
	ClaimMismatch
)

func (s ClaimStatus) String() string {
	switch s {
	case ClaimAcquired:
		return "acquired"
	case ClaimReplay:
		return "replay"
	case ClaimInFlight:
		return "in flight"
	case ClaimMismatch:
		return "mismatch"
	}
	return "invalid"
}

// Claim is the answer of Begin.
type Claim struct {
	Status ClaimStatus
	// Token identifies the claim when Status is ClaimAcquired.
	Token Token
	// Record is the completed response when Status is ClaimReplay. It may be
	// shared with the store: treat it as read-only.
	Record *Cached
	// RetryAfter is, for ClaimInFlight, how long the holder's lease still
	// runs; zero when the store does not know.
	RetryAfter time.Duration
}

// Token identifies one claim: the record, the owner that claimed it and the
// fencing number the store handed out. Pass Fence to downstream systems that
// can reject writes from a stale holder.
type Token struct {
	Key      string
	Identity string
	Owner    string
	Fence    uint64
}

// TxStore is a ClaimStore whose claims are database transactions: each
// command it claims runs inside a transaction the store opened for it, and
// Complete writes the record in that transaction and commits it, so that
// what the command wrote through the transaction commits with its record,
// atomically, or not at all (pgstore's transactional store is one; its
// documentation says how a command reaches the transaction). The Engine
// changes three things for such a store:
//
//   - A Complete that fails means nothing of the execution persisted (or,
//     for an error wrapping ErrStoreUnavailable, that the store could not
//     learn whether its commit happened): Do returns a *StoreError (Op
//     "commit"), never the command's response, since its effects may not
//     exist.
//   - Release rolls the command's writes back, so a response the record
//     policy refuses (a 5xx) leaves no effect behind, just as an error does.
//   - After a failed run (fn's error, a refused response, a failed
//     Complete) the Engine asks Again whether to run the command once more
//     under the same claim, as it must after a serialization failure.
//
// A TxStore's fn may therefore run more than once in one Do, each time in
// a fresh transaction, and only the last run's writes can commit.
type TxStore interface {
	ClaimStore
	// Again is called after a run of the command holding tok failed: with
	// fn's error, with nil when the record policy refused its response, or
	// with Complete's error. It returns true when the failure was a conflict
	// that another run can resolve (a serialization failure or a deadlock)
	// and the store has rolled the run back and opened a fresh transaction
	// under the same claim; the Engine then runs fn again. runs is how many
	// times fn has run in this Do. When it returns false the Engine goes on
	// as without it (it releases the claim after fn's failure, and ends the
	// execution after Complete's).
	Again(ctx context.Context, tok Token, err error, runs int) bool
}
