package idempotency

import (
	"context"
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"time"
)

// InMemoryStore is a process-local Store with TTL and LRU eviction. Safe for concurrent use.
//
// It implements ClaimStore. It holds at most MaxEntries records, completed
// and in flight together; when it is full, the least recently used completed
// record is evicted (Lookup and a replaying Begin count as a use). A claim
// whose lease is live is never evicted. When only claims are left, those
// whose lease has run out are dropped to make room, as if taken over (their
// holders' Complete, Renew and Release answer ErrLeaseLost), and Begin and
// Store return ErrStoreFull only when live claims fill the store. Expired
// records are dropped when they are next touched or when eviction reaches
// them.
//
// The store needs no Close. Without WithClock, Lookup and Store read a
// coarse clock that a timer (time.AfterFunc) refreshes every millisecond
// while they are called; each tick runs in a goroutine of its own, and after
// 100 ticks with no call the timer is not re-armed, so an idle store has no
// timer pending and no goroutine running. With WithClock there is no timer.
//
// On 64-bit platforms a record takes about 150 bytes besides its key, body
// and headers, 185 when it was made through Begin and Complete; the first
// Lookup or replaying Begin that returns it adds about 130 bytes, for the
// Cached it returns from then on.
type InMemoryStore struct {
	mu sync.Mutex
	// records holds each record under the hash of its name. The rare record
	// whose hash slot is taken by another name lives in collided instead.
	records  map[uint64]*memEntry
	collided map[recordName]*memEntry
	lru      memEntry // sentinel of the circular list of completed records, most recent first
	bytes    int64    // body and header bytes of completed records
	fence    uint64   // last fence handed out; fences are global, so monotonic per key too
	// leaseFloor is at most the lease expiry (unix nanoseconds) of every
	// claim in flight: until a store full of claims reaches it, no lease has
	// run out (see reclaim).
	leaseFloor int64

	seed     maphash.Seed
	hashMask uint64 // all ones; tests narrow it to force collisions

	maxEntries int
	maxBytes   int64
	defaultTTL time.Duration
	now        func() time.Time
	coarse     *coarseClock // for Lookup; nil when a clock is injected
}

// Option configures an InMemoryStore.
type Option func(*InMemoryStore)

// WithMaxEntries caps the number of cached entries; oldest are evicted first.
// The cap counts claims in flight too; one whose lease has run out is dropped
// when only claims are left. n <= 0 keeps DefaultMaxEntries.
func WithMaxEntries(n int) Option {
	return func(s *InMemoryStore) {
		if n > 0 {
			s.maxEntries = n
		}
	}
}

// WithMaxBytes caps the body and header bytes held by completed records;
// least recently used records are evicted to stay under it, and a single
// response larger than n is refused with ErrTooLarge. n <= 0 keeps the
// default: no byte cap.
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
// time.Now (with a coarse, timer-refreshed copy of it for Lookup and Store).
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
		records:    make(map[uint64]*memEntry),
		seed:       maphash.MakeSeed(),
		hashMask:   ^uint64(0),
		maxEntries: DefaultMaxEntries,
		defaultTTL: DefaultTTL,
		leaseFloor: math.MaxInt64,
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

// Len reports how many records the store holds, completed and in flight,
// counting expired records not yet dropped.
func (s *InMemoryStore) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count()
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
	h := s.hash(key, identity)
	s.mu.Lock()
	e := s.find(h, key, identity)
	if e == nil {
		s.mu.Unlock()
		return nil, false
	}
	rec := e.handedOut()
	if rec == nil && !e.done() {
		s.mu.Unlock()
		return nil, false
	}
	if now >= e.until {
		s.remove(e, h)
		s.mu.Unlock()
		return nil, false
	}
	s.touch(e)
	if rec == nil {
		rec = e.build()
	}
	s.mu.Unlock()
	return rec, true
}

// Store implements Store. It returns ErrInvalidKey for a key that fails
// ValidateKey, ErrTooLarge for a response over the byte cap, and ErrStoreFull
// when claims with live leases fill the store.
func (s *InMemoryStore) Store(_ context.Context, key, identity string, c Cached) error {
	if err := ValidateKey(key); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	c, until := s.normalize(c, s.storeTime())
	if size := c.size(); s.maxBytes > 0 && size > s.maxBytes {
		return fmt.Errorf("store: %w: %d bytes, cap %d", ErrTooLarge, size, s.maxBytes)
	}
	h := s.hash(key, identity)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, free := s.findSlot(h, key, identity)
	if e != nil { // overwrite in place: a record handed out is a copy
		s.unlink(e)
		e.reset()
	} else {
		spare, ok := s.makeRoom()
		if !ok {
			return fmt.Errorf("store: %w: %d claims in flight", ErrStoreFull, s.count())
		}
		e = s.insert(h, free, key, identity, spare)
	}
	e.complete(&c, until)
	s.insertCompleted(e)
	return nil
}

// Begin implements ClaimStore.
func (s *InMemoryStore) Begin(_ context.Context, key, identity string, req ClaimRequest) (Claim, error) {
	if err := validateBegin(key, req); err != nil {
		return Claim{}, err
	}
	now := s.now().UnixNano()
	h := s.hash(key, identity)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, free := s.findSlot(h, key, identity)
	var spare *memEntry
	if e != nil && e.done() {
		if now < e.until {
			if mismatch(e.fingerprint, req.Fingerprint) {
				return Claim{Status: ClaimMismatch}, nil
			}
			s.touch(e)
			return Claim{Status: ClaimReplay, Record: e.handOut()}, nil
		}
		s.remove(e, h)
		spare, e, free = e, nil, s.records[h] == nil
	}
	if e != nil && now < e.until { // a live claim
		switch {
		case mismatch(e.fingerprint, req.Fingerprint):
			return Claim{Status: ClaimMismatch}, nil
		case e.x.owner == req.Owner:
			return Claim{Status: ClaimAcquired, Token: e.token()}, nil
		}
		return Claim{Status: ClaimInFlight, RetryAfter: time.Duration(e.until - now)}, nil
	}
	if e == nil {
		if spare == nil {
			var ok bool
			if spare, ok = s.makeRoom(); !ok {
				return Claim{}, fmt.Errorf("begin: %w: %d claims in flight", ErrStoreFull, s.count())
			}
		}
		e = s.insert(h, free, key, identity, spare)
		if e.x == nil {
			e.x = new(memExtra)
		}
	}
	// A new claim, or a takeover of one whose lease ran out.
	s.fence++
	e.x.owner, e.x.fence, e.fingerprint = req.Owner, s.fence, req.Fingerprint
	e.at, e.until = now, now+int64(req.Lease) // at: when it was claimed
	s.leaseFloor = min(s.leaseFloor, e.until)
	return Claim{Status: ClaimAcquired, Token: e.token()}, nil
}

// Complete implements ClaimStore.
func (s *InMemoryStore) Complete(_ context.Context, tok Token, c Cached) error {
	now := s.now().Round(0) // StoredAt keeps no monotonic reading, as after Store
	c, until := s.normalize(c, now)
	size := c.size()
	h := s.hash(tok.Key, tok.Identity)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.held(h, tok, now.UnixNano())
	if e == nil {
		if d := s.find(h, tok.Key, tok.Identity); d != nil && d.done() && d.completedBy(tok) {
			return nil // completed already by this token
		}
		return fmt.Errorf("complete: %w", ErrLeaseLost)
	}
	if s.maxBytes > 0 && size > s.maxBytes {
		return fmt.Errorf("complete: %w: %d bytes, cap %d", ErrTooLarge, size, s.maxBytes)
	}
	if c.Fingerprint == "" {
		c.Fingerprint = e.fingerprint
	}
	// An in-flight entry was never handed out: it becomes the record, and
	// keeps the claim's owner and fence so that a repeated Complete is
	// recognised.
	e.complete(&c, until)
	s.insertCompleted(e)
	return nil
}

// Release implements ClaimStore.
func (s *InMemoryStore) Release(_ context.Context, tok Token) error {
	now := s.now().UnixNano()
	h := s.hash(tok.Key, tok.Identity)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.held(h, tok, now)
	if e == nil {
		return fmt.Errorf("release: %w", ErrLeaseLost)
	}
	s.remove(e, h)
	return nil
}

// Renew implements ClaimStore.
func (s *InMemoryStore) Renew(_ context.Context, tok Token, lease time.Duration) error {
	if lease <= 0 {
		return fmt.Errorf("renew: %w: lease %v is not positive", ErrInvalidArgument, lease)
	}
	now := s.now().UnixNano()
	h := s.hash(tok.Key, tok.Identity)
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.held(h, tok, now)
	if e == nil {
		return fmt.Errorf("renew: %w", ErrLeaseLost)
	}
	e.until = now + int64(lease)
	s.leaseFloor = min(s.leaseFloor, e.until)
	return nil
}

// storeTime is the clock for StoredAt of a seed Store: the coarse clock when
// the store has one, so that it agrees with Lookup's.
func (s *InMemoryStore) storeTime() time.Time {
	if s.coarse != nil {
		return time.Unix(0, s.coarse.now())
	}
	return s.now().Round(0)
}

// held returns the in-flight entry that tok holds with a live lease, or nil.
func (s *InMemoryStore) held(h uint64, tok Token, now int64) *memEntry {
	e := s.find(h, tok.Key, tok.Identity)
	if e == nil || e.done() || e.x.owner != tok.Owner || e.x.fence != tok.Fence || now >= e.until {
		return nil
	}
	return e
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
	until := c.StoredAt.Add(c.TTL)
	switch { // past the range of unix nanoseconds, UnixNano wraps around
	case until.After(maxUnixNano):
		return c, math.MaxInt64
	case until.Before(minUnixNano):
		return c, math.MinInt64
	}
	return c, until.UnixNano()
}

var maxUnixNano, minUnixNano = time.Unix(0, math.MaxInt64), time.Unix(0, math.MinInt64)

// insertCompleted links e, a completed record already in the map, as the
// most recent record and evicts down to the byte cap.
func (s *InMemoryStore) insertCompleted(e *memEntry) {
	s.pushFront(e)
	s.bytes += e.size()
	for s.maxBytes > 0 && s.bytes > s.maxBytes && s.lru.prev != e {
		v := s.lru.prev
		s.remove(v, s.hash(v.key, v.identity))
	}
}

// makeRoom evicts least recently used completed records until one more
// record fits under the entry cap, and returns an evicted entry for reuse
// (or nil). With no completed record left it reclaims expired claims, and
// reports false when claims with live leases alone fill the store.
func (s *InMemoryStore) makeRoom() (spare *memEntry, ok bool) {
	for s.count() >= s.maxEntries {
		victim := s.lru.prev
		if victim == &s.lru {
			if spare = s.reclaim(); spare == nil {
				return nil, false
			}
			continue
		}
		s.remove(victim, s.hash(victim.key, victim.identity))
		spare = victim
	}
	return spare, true
}

// reclaim drops every claim whose lease has run out from a store that only
// claims fill, and returns one of them for reuse, or nil if none had.
//
// Claims are in no list: leases differ per claim and Renew extends them, so
// no order that is cheap to keep is one of expiry. Instead the hot paths keep
// leaseFloor, a lower bound on every lease expiry (one min per Begin and
// Renew), and only a store about to refuse a record looks further. Every
// record is then a claim (no completed one was left to evict). While the
// clock is short of the floor no lease has run out, and reclaim returns at
// once; otherwise it walks the maps, drops the expired claims and sets the
// floor to the earliest live expiry. So a walk that drops nothing comes only
// after the claim that set the floor was renewed or ended, and no sooner than
// its old expiry: under the Engine, which renews a claim every third of its
// lease, about once per two thirds of the shortest lease at most. A walk
// costs a pass over the claims (at most MaxEntries), paid only on the way to
// ErrStoreFull; a store kept full by claims that run out one at a time pays
// one per record it takes.
//
// A dropped claim is like one taken over: its holder's token matches no
// record, and the global fence keeps any later claim's fence greater.
func (s *InMemoryStore) reclaim() (spare *memEntry) {
	now := s.now().UnixNano()
	if now < s.leaseFloor {
		return nil
	}
	floor := int64(math.MaxInt64)
	spare = reclaimFrom(s, s.records, now, &floor)
	if e := reclaimFrom(s, s.collided, now, &floor); e != nil {
		spare = e
	}
	s.leaseFloor = floor
	return spare
}

// reclaimFrom is reclaim's walk over one of the store's maps: it drops the
// entries of m that ran out by now, returns one of them (nil if none), and
// lowers floor to the expiry of each live claim it keeps.
func reclaimFrom[K comparable](s *InMemoryStore, m map[K]*memEntry, now int64, floor *int64) (spare *memEntry) {
	for k, e := range m {
		if now >= e.until {
			delete(m, k)
			s.unlink(e)
			spare = e
		} else if !e.done() {
			*floor = min(*floor, e.until)
		}
	}
	return spare
}

// remove takes e, whose name hashes to h, out of the store.
func (s *InMemoryStore) remove(e *memEntry, h uint64) {
	s.forget(e, h)
	s.unlink(e)
}

// unlink takes a completed e out of the LRU list and the byte count.
func (s *InMemoryStore) unlink(e *memEntry) {
	if e.done() {
		e.prev.next, e.next.prev = e.next, e.prev
		e.prev, e.next = nil, nil
		s.bytes -= e.size()
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

// validateBegin checks Begin's arguments as every ClaimStore must (the same
// rule as driver.ValidateBegin, which imports this package).
func validateBegin(key string, req ClaimRequest) error {
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

// Peek implements Peeker: it is Lookup, which answers from memory without
// allocating. Like Lookup, it may replay a record up to about a millisecond
// past its expiry (see coarseClock).
func (s *InMemoryStore) Peek(ctx context.Context, key, identity string) (*Cached, bool) {
	return s.Lookup(ctx, key, identity)
}

var (
	_ ClaimStore = (*InMemoryStore)(nil)
	_ Peeker     = (*InMemoryStore)(nil)
	_ Inspector  = (*InMemoryStore)(nil)
)
