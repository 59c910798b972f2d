package idempotency

import (
	"hash/maphash"
	"time"
)

// memEntry is one record of an InMemoryStore, kept small: 128 bytes, one
// allocation. A completed record has memDone set and sits in the LRU list;
// its response is spread over the fields below rather than held as a
// Cached, and the Cached that Lookup and Begin hand out is built on the
// first hand-out and kept in x (see handOut). An in-flight record has the
// claim's owner and fence in x and is in no list.
//
// A completed record keeps the owner and fence of the claim that completed
// it, so that a repeated Complete is recognised.
type memEntry struct {
	// The first cache line holds what a Lookup hit reads.
	key, identity string
	prev, next    *memEntry
	// until is, in unix nanoseconds, when a completed record expires or
	// when an in-flight claim's lease runs out.
	until int64
	x     *memExtra // claim state and the handed-out record; nil until needed

	at int64 // StoredAt in unix nanoseconds (TTL is until - at); in flight, when it was claimed
	// status is Cached.Status; a status that does not fit is kept exactly
	// in x.rec instead (see complete).
	status      int32
	flags       memFlags
	body        []byte
	header      map[string][]string
	fingerprint string // the claim's while in flight
}

// memExtra is what a record stored with Store and never handed out does
// without: the claim that made the record and the Cached handed out for it.
// The Cached rec points to is never written: a new response for the record
// drops it, and the next hand-out builds another.
type memExtra struct {
	owner string
	fence uint64
	rec   *Cached
}

// memShared is x and the record it hands out in one allocation, for a
// record that had no memExtra when it was first handed out.
type memShared struct {
	x   memExtra
	rec Cached
}

type memFlags uint8

const (
	memDone      memFlags = 1 << iota // completed: the response fields are set
	memTombstone                      // Cached.Tombstone
	memUTC                            // StoredAt is in UTC rather than Local
	memSharedX                        // x is part of a memShared
)

func (e *memEntry) done() bool { return e.flags&memDone != 0 }

// reset clears e for a new response or a new record, keeping its name and a
// memExtra of its own for reuse (one shared with a handed-out record goes).
func (e *memEntry) reset() {
	x := e.x
	if x != nil && e.flags&memSharedX == 0 {
		*x = memExtra{}
	} else {
		x = nil
	}
	*e = memEntry{key: e.key, identity: e.identity, x: x}
}

// complete makes e the completed record c, which expires at until (unix
// nanoseconds). e is unlinked and has no handed-out record.
func (e *memEntry) complete(c *Cached, until int64) {
	e.until, e.at = until, c.StoredAt.UnixNano()
	e.status = int32(c.Status)
	e.flags = memDone | e.flags&memSharedX
	if c.Tombstone {
		e.flags |= memTombstone
	}
	if c.StoredAt.Location() == time.UTC {
		e.flags |= memUTC
	}
	e.body, e.header, e.fingerprint = c.WireBody, c.Header, c.Fingerprint
	// The fields rebuild c exactly in all but odd cases (a status beyond
	// int32, a StoredAt with a monotonic reading or a zone other than UTC
	// and Local, or one outside the years 1678 to 2262): for those, the
	// record is built now and kept as it was given.
	if int(e.status) != c.Status || e.storedAt() != c.StoredAt || time.Duration(e.until-e.at) != c.TTL {
		e.keep(*c)
	}
}

// storedAt rebuilds StoredAt. Comparing it with == to the time given
// checks the representation, zone included, not just the instant.
func (e *memEntry) storedAt() time.Time {
	t := time.Unix(0, e.at)
	if e.flags&memUTC != 0 {
		t = t.UTC()
	}
	return t
}

func (e *memEntry) keep(c Cached) {
	if e.x == nil {
		e.x = new(memExtra)
	}
	e.x.rec = &c
}

// handOut returns the completed record as a Cached shared with callers:
// built on the first call, the same one on every later call until a new
// response replaces the record.
func (e *memEntry) handOut() *Cached {
	if e.x != nil && e.x.rec != nil {
		return e.x.rec
	}
	return e.build()
}

// handedOut returns the Cached handed out for e, or nil. Only a completed
// record has one, so a hit needs no other field than until.
func (e *memEntry) handedOut() *Cached {
	if e.x == nil {
		return nil
	}
	return e.x.rec
}

// cached rebuilds the completed record from e's fields.
func (e *memEntry) cached() Cached {
	return Cached{
		Status:      int(e.status),
		WireBody:    e.body,
		StoredAt:    e.storedAt(),
		TTL:         time.Duration(e.until - e.at),
		Header:      e.header,
		Fingerprint: e.fingerprint,
		Tombstone:   e.flags&memTombstone != 0,
	}
}

func (e *memEntry) build() *Cached {
	c := e.cached()
	if e.x != nil {
		e.x.rec = &c
		return &c
	}
	p := &memShared{rec: c}
	p.x.rec = &p.rec
	e.x = &p.x
	e.flags |= memSharedX
	return &p.rec
}

// size is what a completed record counts against the byte cap.
func (e *memEntry) size() int64 {
	if len(e.header) == 0 {
		return int64(len(e.body))
	}
	c := Cached{WireBody: e.body, Header: e.header}
	return c.size()
}

func (e *memEntry) token() Token {
	return Token{Key: e.key, Identity: e.identity, Owner: e.x.owner, Fence: e.x.fence}
}

// completedBy reports whether the claim tok completed e.
func (e *memEntry) completedBy(tok Token) bool {
	var owner string
	var fence uint64
	if e.x != nil {
		owner, fence = e.x.owner, e.x.fence
	}
	return owner == tok.Owner && fence == tok.Fence
}

// hash is the key of a record in s.records. The hash of a struct chains
// its fields, so ("ab", "c") and ("a", "bc") hash apart.
func (s *InMemoryStore) hash(key, identity string) uint64 {
	return maphash.Comparable(s.seed, recordName{key, identity}) & s.hashMask
}

// find returns the record named (key, identity), whose hash is h, or nil.
func (s *InMemoryStore) find(h uint64, key, identity string) *memEntry {
	if e := s.records[h]; e != nil && e.key == key && e.identity == identity {
		return e
	}
	if len(s.collided) == 0 {
		return nil
	}
	return s.collided[recordName{key, identity}]
}

// findSlot is find for a caller that may insert the record next: it also
// reports whether the hash slot h is free.
func (s *InMemoryStore) findSlot(h uint64, key, identity string) (e *memEntry, free bool) {
	e = s.records[h]
	if e != nil && e.key == key && e.identity == identity {
		return e, false
	}
	free = e == nil
	if len(s.collided) == 0 {
		return nil, free
	}
	return s.collided[recordName{key, identity}], free
}

// insert adds a record named (key, identity), whose hash is h and which
// find does not know, in spare (reset) or a new entry, and returns it. free
// is findSlot's report; eviction since then can only have freed the slot.
func (s *InMemoryStore) insert(h uint64, free bool, key, identity string, spare *memEntry) *memEntry {
	e := spare
	if e == nil {
		e = new(memEntry)
	} else {
		e.reset()
	}
	e.key, e.identity = key, identity
	if free || s.records[h] == nil {
		s.records[h] = e
		return e
	}
	if s.collided == nil {
		s.collided = make(map[recordName]*memEntry)
	}
	s.collided[recordName{key, identity}] = e
	return e
}

// forget takes e, whose hash is h, out of the maps.
func (s *InMemoryStore) forget(e *memEntry, h uint64) {
	if len(s.collided) == 0 || s.records[h] == e {
		delete(s.records, h)
		return
	}
	delete(s.collided, recordName{e.key, e.identity})
}

// count is the number of records, completed and in flight.
func (s *InMemoryStore) count() int { return len(s.records) + len(s.collided) }
