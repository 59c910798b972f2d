package idempotency

import (
	"context"
	"encoding/json"
	"time"
)

// DefaultMaxEntries is the default LRU cap for an in-memory store.
const DefaultMaxEntries = 10000

// DefaultTTL is how long a response is kept when it is stored without a TTL.
const DefaultTTL = 24 * time.Hour

// Cached is one cached command response.
type Cached struct {
	// Status is the HTTP status the original handler returned.
	Status int
	// WireBody is the JSON envelope the original handler produced, ready to
	// write back verbatim.
	WireBody json.RawMessage
	// StoredAt is when this entry landed in the store. A store sets it to its
	// own clock when it is zero.
	StoredAt time.Time
	// TTL is how long the entry is considered fresh. A store replaces a zero or
	// negative TTL with its default (DefaultTTL unless configured).
	TTL time.Duration

	// Header holds the response headers recorded for replay (an adapter's
	// allow-list; never Set-Cookie or Authorization). Nil when none.
	// It has the shape of net/http.Header without importing it.
	Header map[string][]string
	// Fingerprint identifies the request that produced this response (see
	// Fingerprint). A later request with the same key and identity but another
	// non-empty fingerprint is a mismatch. Empty means "not checked".
	Fingerprint string
	// Tombstone reports that the command ran but its response was not kept
	// (it was larger than the recording cap). Replaying a tombstone yields
	// ErrResponseNotRecorded; the command is never run again for this key.
	Tombstone bool
}

// Expired reports whether c is past its TTL relative to now. An entry whose
// TTL is zero or negative never expires by this test (stores give such entries
// their default TTL when they are stored).
func (c Cached) Expired(now time.Time) bool {
	if c.TTL <= 0 {
		return false
	}
	return !now.Before(c.StoredAt.Add(c.TTL))
}

// size is what a record counts against a byte cap: its body and header bytes.
func (c *Cached) size() int64 {
	n := len(c.WireBody)
	if len(c.Header) == 0 {
		return int64(n)
	}
	for k, vs := range c.Header {
		n += len(k)
		for _, v := range vs {
			n += len(v)
		}
	}
	return int64(n)
}

// Store deduplicates command invocations by (key, identity) tuple. Lookup
// returns a cached envelope if one is present and unexpired; the dispatcher
// writes back the cached envelope verbatim when found. Implementations MUST be
// safe for concurrent use.
//
// The pair (key, identity) is one record: ("a:b", "c") and ("a", "b:c") are
// different records, and a record is only ever returned to the identity that
// stored it.
//
// Lookup then Store is not atomic: two retries racing each other can both miss
// and both run the command. Stores that also implement ClaimStore close that
// gap; the Engine uses the claim protocol whenever the store offers it and
// otherwise deduplicates within the process only.
type Store interface {
	// Lookup returns the unexpired response recorded for (key, identity).
	// A miss, an expired entry, a claim still in flight and a store failure
	// all return (nil, false). The returned value may be shared with the
	// store and other callers: treat it as read-only.
	Lookup(ctx context.Context, key, identity string) (*Cached, bool)
	// Store records c for (key, identity), replacing whatever was there
	// (including a claim in flight). A zero StoredAt is set to the store's
	// clock and a zero TTL to the store's default.
	Store(ctx context.Context, key, identity string, c Cached) error
}

// CheckedStore is a Store whose lookups can say they failed. Store's own
// Lookup cannot: a failure looks like a miss, so over a plain Store the
// Engine runs the command during an outage (it fails open) and records
// nothing if Store fails too. Over a CheckedStore it fails closed: a lookup
// that fails is a *StoreError (503 in the adapters) and the command does
// not run.
//
// What a plain Store, checked or not, can promise with the Engine:
// duplicates within one process run once (an in-process claim); duplicates
// on several processes sharing the store can each run the command, since
// Lookup then Store is not atomic. A ClaimStore promises the latter too.
type CheckedStore interface {
	Store
	// CheckedLookup is Lookup with the failure reported: (nil, false, err)
	// when the store could not answer. A miss, an expired entry and a claim
	// in flight are (nil, false, nil).
	CheckedLookup(ctx context.Context, key, identity string) (*Cached, bool, error)
}

// Peeker is implemented by stores whose lookups are cheap: answered from
// process memory, with no I/O and no allocation (InMemoryStore). The Engine
// then serves replays with Peek before it asks Begin for a claim. Peek must
// give the answer Begin's replay would: only completed, unexpired records,
// counted as a use where the store tracks use (LRU). A type that embeds an
// *InMemoryStore is a Peeker too; a wrapper whose replays must go through
// its own Begin (one that counts or fails calls) overrides Peek.
type Peeker interface {
	Peek(ctx context.Context, key, identity string) (*Cached, bool)
}
