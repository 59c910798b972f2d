package idempotency

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// InMemoryStore is a process-local Store with TTL and LRU eviction. Safe for concurrent use.
//
// It implements ClaimStore. It holds at most MaxEntries records, completed
// and in flight together; when it is full, the least recently used completed
// record is evicted (Lookup and a replaying Begin count as a use). Claims in
// flight are never evicted: when only they are left, Begin and Store return
// ErrStoreFull. Expired records are dropped when they are next touched or when
// eviction reaches them; the store starts no goroutine and needs no Close.
type InMemoryStore struct {
	mu      sync.Mutex
	records map[recordName]*memEntry
	lru     memEntry // sentinel of the circular list of completed records, most recent first
	bytes   int64    // body and header bytes of completed records
	fence   uint64   // last fence handed out; fences are global, so monotonic per key too

	maxEntries int
	maxBytes   int64
	defaultTTL time.Duration
	now        func() time.Time
	coarse     *coarseClock // for Lookup; nil when a clock is injected
}

// Option configures an InMemoryStore.
type Option func(*InMemoryStore)

// WithMaxEntries caps the number of cached entries; oldest are evicted first.
// The cap counts claims in flight too. n <= 0 keeps DefaultMaxEntries.
func WithMaxEntries(n int) Option {
	return func(s *InMemoryStore) {
		if n > 0 {
			s.maxEntries = n
		}
	}
}

// WithMaxBytes caps the body and header bytes held by completed records;
// least recently used records are evicted to stay under it, and a single
// response larger than n is refused with ErrTooLarge. n <= 0 means no byte
// cap, the default.
func WithMaxBytes(n int64) Option {
	return func(s *InMemoryStore) {
		if n > 0 {
			s.maxBytes = n
		}
	}
}

// WithDefaultTTL sets the TTL given to records stored without one.
// d <= 0 keeps DefaultTTL (24h).
func WithDefaultTTL(d time.Duration) Option {
	return func(s *InMemoryStore) {
		if d > 0 {
			s.defaultTTL = d
		}
	}
}

// WithClock replaces time.Now as the store's clock, for tests. nil keeps
// time.Now (with a coarse, timer-refreshed copy of it for Lookup).
func WithClock(now func() time.Time) Option {
	return func(s *InMemoryStore) {
		if now != nil {
			s.now = now
		}
	}
}

// NewInMemoryStore returns an in-memory Store with the given options.
func NewInMemoryStore(opts ...Option) *InMemoryStore {
	s := &InMemoryStore{
		records:    make(map[recordName]*memEntry),
		maxEntries: DefaultMaxEntries,
		defaultTTL: DefaultTTL,
	}
	for _, o := range opts {
		o(s)
	}
	if s.now == nil {
		s.now, s.coarse = time.Now, new(coarseClock)
	}
	s.lru.prev, s.lru.next = &s.lru, &s.lru
	return s
}

type recordName struct{ key, identity string }

// memEntry is one record. A completed record has done set, its response in
// rec and sits in the LRU list; it keeps the owner and fence of the claim
// that completed it, so that a repeated Complete is recognised. An in-flight
// record has the claim fields set and is in no list.
//
// Once Lookup or Begin has handed out &rec, the entry is shared: its rec is
// never written again, and it is never reused for another record. Until
// then, Store may overwrite it in place and eviction may recycle it, which
// spares an allocation.
type memEntry struct {
	name       recordName
	prev, next *memEntry

	done   bool
	shared bool
	rec    Cached // in flight: only rec.Fingerprint, the claim's
	// until is, in unix nanoseconds, when a completed record expires or
	// when an in-flight claim's lease runs out.
	until int64
	owner string
	fence uint64
}

// Len reports how many records the store holds, completed and in flight,
// counting expired records not yet dropped.
func (s *InMemoryStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.records)
}

// Bytes reports the body and header bytes held by completed records.
func (s *InMemoryStore) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bytes
}

// Lookup implements Store. Without WithClock it reads a coarse clock (see
// coarseClock), so it may see an expiry up to about a millisecond late.
func (s *InMemoryStore) Lookup(_ context.Context, key, identity string) (*Cached, bool) {
	var now int64
	if s.coarse != nil {
		now = s.coarse.now()
	} else {
		now = s.now().UnixNano()
	}
	s.mu.Lock()
	e := s.records[recordName{key, identity}]
	if e == nil || !e.done {
		s.mu.Unlock()
		return nil, false
	}
	if now >= e.until {
		s.remove(e)
		s.mu.Unlock()
		return nil, false
	}
	s.touch(e)
	e.shared = true
	s.mu.Unlock()
	return &e.rec, true
}

// Store implements Store. It returns ErrInvalidKey for a key that fails
// ValidateKey, ErrTooLarge for a response over the byte cap, and ErrStoreFull
// when only claims in flight could be evicted to make room.
func (s *InMemoryStore) Store(_ context.Context, key, identity string, c Cached) error {
	if err := ValidateKey(key); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	c, until := s.normalize(c, s.storeTime())
	if size := c.size(); s.maxBytes > 0 && size > s.maxBytes {
		return fmt.Errorf("store: %w: %d bytes, cap %d", ErrTooLarge, size, s.maxBytes)
	}
	name := recordName{key, identity}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.records[name]
	switch {
	case e != nil && e.done && !e.shared: // overwrite in place
		s.unlink(e)
	case e != nil: // shared or in flight: a new entry takes its map slot
		s.unlink(e)
		e = new(memEntry)
		s.records[name] = e
	default:
		spare, ok := s.makeRoom()
		if !ok {
			return fmt.Errorf("store: %w: %d claims in flight", ErrStoreFull, len(s.records))
		}
		if e = spare; e == nil {
			e = new(memEntry)
		}
		s.records[name] = e
	}
	*e = memEntry{name: name, done: true, rec: c, until: until}
	s.insertCompleted(e)
	return nil
}

// Begin implements ClaimStore.
func (s *InMemoryStore) Begin(_ context.Context, key, identity string, req ClaimRequest) (Claim, error) {
	if err := ValidateBegin(key, req); err != nil {
		return Claim{}, err
	}
	now := s.now().UnixNano()
	name := recordName{key, identity}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.records[name]
	if e != nil && e.done {
		if now < e.until {
			if mismatch(e.rec.Fingerprint, req.Fingerprint) {
				return Claim{Status: ClaimMismatch}, nil
			}
			s.touch(e)
			e.shared = true
			return Claim{Status: ClaimReplay, Record: &e.rec}, nil
		}
		s.remove(e)
		e = nil
	}
	if e != nil && now < e.until { // a live claim
		switch {
		case mismatch(e.rec.Fingerprint, req.Fingerprint):
			return Claim{Status: ClaimMismatch}, nil
		case e.owner == req.Owner:
			return Claim{Status: ClaimAcquired, Token: e.token()}, nil
		}
		return Claim{Status: ClaimInFlight, RetryAfter: time.Duration(e.until - now)}, nil
	}
	if e == nil {
		spare, ok := s.makeRoom()
		if !ok {
			return Claim{}, fmt.Errorf("begin: %w: %d claims in flight", ErrStoreFull, len(s.records))
		}
		if e = spare; e == nil {
			e = new(memEntry)
		}
		*e = memEntry{name: name}
		s.records[name] = e
	}
	// A new claim, or a takeover of one whose lease ran out.
	s.fence++
	e.owner, e.fence, e.rec.Fingerprint = req.Owner, s.fence, req.Fingerprint
	e.until = now + int64(req.Lease)
	return Claim{Status: ClaimAcquired, Token: e.token()}, nil
}

// Complete implements ClaimStore.
func (s *InMemoryStore) Complete(_ context.Context, tok Token, c Cached) error {
	now := s.now()
	c, until := s.normalize(c, now)
	size := c.size()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.held(tok, now.UnixNano())
	if e == nil {
		if d := s.records[recordName{tok.Key, tok.Identity}]; d != nil && d.done && d.owner == tok.Owner && d.fence == tok.Fence {
			return nil // completed already by this token
		}
		return fmt.Errorf("complete: %w", ErrLeaseLost)
	}
	if s.maxBytes > 0 && size > s.maxBytes {
		return fmt.Errorf("complete: %w: %d bytes, cap %d", ErrTooLarge, size, s.maxBytes)
	}
	if c.Fingerprint == "" {
		c.Fingerprint = e.rec.Fingerprint
	}
	// An in-flight entry was never handed out: it becomes the record.
	e.done, e.rec, e.until = true, c, until
	s.insertCompleted(e)
	return nil
}

// Release implements ClaimStore.
func (s *InMemoryStore) Release(_ context.Context, tok Token) error {
	now := s.now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.held(tok, now)
	if e == nil {
		return fmt.Errorf("release: %w", ErrLeaseLost)
	}
	delete(s.records, e.name)
	return nil
}

// Renew implements ClaimStore.
func (s *InMemoryStore) Renew(_ context.Context, tok Token, lease time.Duration) error {
	if lease <= 0 {
		return fmt.Errorf("renew: %w: lease %v is not positive", ErrInvalidArgument, lease)
	}
	now := s.now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.held(tok, now)
	if e == nil {
		return fmt.Errorf("renew: %w", ErrLeaseLost)
	}
	e.until = now + int64(lease)
	return nil
}

// storeTime is the clock for StoredAt of a seed Store: the coarse clock when
// the store has one, so that it agrees with Lookup's.
func (s *InMemoryStore) storeTime() time.Time {
	if s.coarse != nil {
		return time.Unix(0, s.coarse.now())
	}
	return s.now()
}

// held returns the in-flight entry that tok holds with a live lease, or nil.
func (s *InMemoryStore) held(tok Token, now int64) *memEntry {
	e := s.records[recordName{tok.Key, tok.Identity}]
	if e == nil || e.done || e.owner != tok.Owner || e.fence != tok.Fence || now >= e.until {
		return nil
	}
	return e
}

func (e *memEntry) token() Token {
	return Token{Key: e.name.key, Identity: e.name.identity, Owner: e.owner, Fence: e.fence}
}

// normalize fills a zero StoredAt with now and a TTL that is not positive
// with the default, and returns c with its expiry in unix nanoseconds.
func (s *InMemoryStore) normalize(c Cached, now time.Time) (Cached, int64) {
	if c.StoredAt.IsZero() {
		c.StoredAt = now
	}
	if c.TTL <= 0 {
		c.TTL = s.defaultTTL
	}
	return c, c.StoredAt.Add(c.TTL).UnixNano()
}

// insertCompleted links e, a completed record already in the map, as the
// most recent record and evicts down to the byte cap.
func (s *InMemoryStore) insertCompleted(e *memEntry) {
	s.pushFront(e)
	s.bytes += e.rec.size()
	for s.maxBytes > 0 && s.bytes > s.maxBytes && s.lru.prev != e {
		s.remove(s.lru.prev)
	}
}

// makeRoom evicts least recently used completed records until one more
// record fits under the entry cap, and returns an evicted entry that was
// never shared, for reuse (or nil). It reports false when claims in flight
// alone fill the store.
func (s *InMemoryStore) makeRoom() (spare *memEntry, ok bool) {
	for len(s.records) >= s.maxEntries {
		victim := s.lru.prev
		if victim == &s.lru {
			return nil, false
		}
		s.remove(victim)
		if !victim.shared {
			spare = victim
		}
	}
	return spare, true
}

func (s *InMemoryStore) remove(e *memEntry) {
	delete(s.records, e.name)
	s.unlink(e)
}

// unlink takes a completed e out of the LRU list and the byte count.
func (s *InMemoryStore) unlink(e *memEntry) {
	if e.done {
		e.prev.next, e.next.prev = e.next, e.prev
		e.prev, e.next = nil, nil
		s.bytes -= e.rec.size()
	}
}

func (s *InMemoryStore) pushFront(e *memEntry) {
	e.prev, e.next = &s.lru, s.lru.next
	s.lru.next.prev = e
	s.lru.next = e
}

func (s *InMemoryStore) touch(e *memEntry) {
	if s.lru.next == e {
		return
	}
	e.prev.next, e.next.prev = e.next, e.prev
	s.pushFront(e)
}

// ValidateBegin checks Begin's arguments as every ClaimStore must: the key
// passes ValidateKey, the owner is not empty and the lease is positive.
// Stores call it first so that they all refuse the same input the same way.
func ValidateBegin(key string, req ClaimRequest) error {
	if err := ValidateKey(key); err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if req.Owner == "" {
		return fmt.Errorf("begin: %w: empty owner", ErrInvalidArgument)
	}
	if req.Lease <= 0 {
		return fmt.Errorf("begin: %w: lease %v is not positive", ErrInvalidArgument, req.Lease)
	}
	return nil
}

// mismatch reports whether two request fingerprints are both known and differ.
func mismatch(stored, req string) bool {
	return stored != "" && req != "" && stored != req
}

var _ ClaimStore = (*InMemoryStore)(nil)
