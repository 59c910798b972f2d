package idempotency

import (
	"context"
	"errors"
	"time"
)

// Inspector is a ClaimStore that lets an operator look at one record, delete
// one, and find the claims that have been in flight for too long: what an
// admin tool needs to answer "why does order-42 answer 409?" and to fix it.
// idemd's admin API is built on it. Every built-in store implements it, and
// storetest checks each contract stated here.
//
// Records are named by an ID, which RecordID computes from the key and the
// identity. Stores that keep only a digest of the key and the identity (the
// Redis and PostgreSQL stores) cannot list them; Claims lists their IDs,
// which Inspect and Purge take back.
type Inspector interface {
	ClaimStore

	// RecordID returns the ID of the record of (key, identity): a string of
	// ASCII letters, digits and the characters '-', '_', '.' and ':', safe
	// in a URL unescaped. It does not validate key.
	RecordID(key, identity string) string

	// Inspect describes the record named id as it is now. A record that
	// does not exist, has expired or was released is RecordAbsent, without
	// an error. It returns ErrInvalidArgument for an id this store never
	// makes, and an error wrapping ErrStoreUnavailable when the backend
	// cannot be reached.
	Inspect(ctx context.Context, id string) (RecordInfo, error)

	// Purge deletes the record named id, whatever its state, and returns
	// what it was just before (RecordAbsent when there was nothing to
	// delete). The next Begin of its key acquires it, with a fence greater
	// than any handed out before. Purging a claim in flight takes it over:
	// from then on the holder's Complete, Release and Renew return
	// ErrLeaseLost and change nothing. Errors are Inspect's.
	Purge(ctx context.Context, id string) (RecordInfo, error)

	// Claims lists the claims in flight, with a live lease, that were made
	// at least olderThan ago, oldest first; at most limit of them when limit
	// is positive. A claim that a store cannot date is listed, with a zero
	// ClaimedAt, whatever olderThan is.
	Claims(ctx context.Context, olderThan time.Duration, limit int) ([]RecordInfo, error)
}

// RecordState is what a record is, as Inspect sees it.
type RecordState uint8

// Record states.
const (
	// RecordAbsent: no record; the next Begin acquires the key.
	RecordAbsent RecordState = iota
	// RecordInFlight: a claim with a live lease holds the key.
	RecordInFlight
	// RecordCompleted: a response is recorded and replayed until ExpiresAt.
	RecordCompleted
	// RecordTombstone: the command ran but its response was too large to
	// keep; until ExpiresAt the key answers ErrResponseNotRecorded.
	RecordTombstone
)

var recordStateNames = [...]string{
	RecordAbsent:    "absent",
	RecordInFlight:  "in_flight",
	RecordCompleted: "completed",
	RecordTombstone: "tombstone",
}

// String returns the state's snake_case name: "absent", "in_flight",
// "completed" or "tombstone".
func (s RecordState) String() string {
	if int(s) < len(recordStateNames) {
		return recordStateNames[s]
	}
	return "invalid"
}

// MarshalText implements encoding.TextMarshaler with String.
func (s RecordState) MarshalText() ([]byte, error) {
	if int(s) >= len(recordStateNames) {
		return nil, errors.New("idempotency: invalid RecordState")
	}
	return []byte(s.String()), nil
}

// RecordInfo describes a record: what Inspect, Purge and Claims return.
// Fields that do not apply to State are zero.
type RecordInfo struct {
	// ID names the record (Inspector.RecordID).
	ID    string
	State RecordState
	// Key and Identity are the record's, when the store keeps them (an
	// InMemoryStore does); empty otherwise.
	Key, Identity string

	// Fence is the fencing number of the claim that made the record (in
	// flight; completed through a claim). Zero when the store does not know
	// it.
	Fence uint64
	// Owner is the claim's ClaimRequest.Owner (in flight); empty when the
	// store does not know it.
	Owner string
	// ClaimedAt is when the claim was made (in flight), by the store's
	// clock; zero when the store does not know it.
	ClaimedAt time.Time
	// LeaseLeft is how long the claim lives without another Renew (in
	// flight); zero when the store does not know it.
	LeaseLeft time.Duration

	// Status is the recorded response's status (completed).
	Status int
	// Size is the recorded response's size in bytes, its body and header
	// names and values (completed).
	Size int64
	// StoredAt is when the response was recorded (completed, tombstone);
	// ExpiresAt when it stops being replayed.
	StoredAt, ExpiresAt time.Time
	// Fingerprint is the request fingerprint the record was made with;
	// empty when none was checked.
	Fingerprint string
}

// InfoOf describes the completed record c as Inspect does: State
// RecordCompleted or RecordTombstone, with Status, Size, StoredAt,
// ExpiresAt (StoredAt plus TTL) and Fingerprint filled in. Stores that
// implement Inspector use it, so that they all measure Size alike.
func InfoOf(id string, c *Cached) RecordInfo {
	info := RecordInfo{ID: id, State: RecordCompleted, StoredAt: c.StoredAt, ExpiresAt: c.StoredAt.Add(c.TTL), Fingerprint: c.Fingerprint}
	if c.Tombstone {
		info.State = RecordTombstone
		return info
	}
	info.Status, info.Size = c.Status, c.size()
	return info
}
