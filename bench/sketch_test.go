package bench

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"
)

// The sketches are not idemkit code: they are the smallest caches with
// InMemoryStore's job on the read path (records named by (key, identity),
// TTL, a bound with eviction), built the way BENCHMARKS.md's profile findings
// suggest, to measure what those suggestions would buy before anyone changes
// the store. They have no claim protocol, no byte cap and no validation.
//
//   - sketch-hash-lru: exact LRU like InMemoryStore, one mutex, but the map
//     is keyed by a 64-bit hash of (key, identity) and the entry is small and
//     holds the record inline; expiry read from a coarse clock.
//   - sketch-hash-clock: the same map under a RWMutex, with CLOCK (second
//     chance) eviction: a hit takes the read lock and sets a bit, so hits do
//     not contend on a list. Approximate LRU.

var sketchSeed = maphash.MakeSeed()

// sketchHash hashes (key, identity) for the map; entries compare both
// strings, so a collision costs a miss, never a wrong answer.
func sketchHash(key, identity string) uint64 {
	return maphash.String(sketchSeed, key) ^ maphash.String(sketchSeed, identity)*0x9E3779B97F4A7C15
}

// sketchClock is a coarse clock, refreshed every millisecond while the
// benchmark runs (like InMemoryStore's, without its idle stop).
type sketchClock struct {
	now  atomic.Int64
	once sync.Once
}

var coarse sketchClock

func (c *sketchClock) read() int64 {
	c.once.Do(func() {
		c.now.Store(time.Now().UnixNano())
		go func() {
			for range time.Tick(time.Millisecond) {
				c.now.Store(time.Now().UnixNano())
			}
		}()
	})
	return c.now.Load()
}

type sketchEntry struct {
	prev, next    *sketchEntry
	hash          uint64
	key, identity string
	expires       int64
	status        int
	body          []byte
	ref           atomic.Bool // sketch-hash-clock only
	slot          int         // sketch-hash-clock only: index in the ring
}

type sketchLRU struct {
	mu  sync.Mutex
	m   map[uint64]*sketchEntry
	lru sketchEntry // sentinel, most recent first
	max int
}

func newSketchLRU(n int) *sketchLRU {
	c := &sketchLRU{m: make(map[uint64]*sketchEntry), max: n}
	c.lru.prev, c.lru.next = &c.lru, &c.lru
	return c
}

func (c *sketchLRU) get(key string) bool {
	h, now := sketchHash(key, "alice"), coarse.read()
	c.mu.Lock()
	e := c.m[h]
	if e == nil || e.key != key || e.identity != "alice" || now >= e.expires {
		c.mu.Unlock()
		return false
	}
	if c.lru.next != e {
		e.prev.next, e.next.prev = e.next, e.prev
		e.prev, e.next = &c.lru, c.lru.next
		c.lru.next.prev = e
		c.lru.next = e
	}
	c.mu.Unlock()
	return true
}

func (c *sketchLRU) set(key string, body []byte) {
	h := sketchHash(key, "alice")
	e := &sketchEntry{hash: h, key: key, identity: "alice", expires: coarse.read() + int64(cacheTTL), status: 201, body: body}
	c.mu.Lock()
	if old := c.m[h]; old != nil {
		old.prev.next, old.next.prev = old.next, old.prev
	} else if len(c.m) >= c.max {
		v := c.lru.prev
		v.prev.next, v.next.prev = v.next, v.prev
		delete(c.m, v.hash)
	}
	c.m[h] = e
	e.prev, e.next = &c.lru, c.lru.next
	c.lru.next.prev = e
	c.lru.next = e
	c.mu.Unlock()
}

type sketchCLOCK struct {
	mu   sync.RWMutex
	m    map[uint64]*sketchEntry
	ring []*sketchEntry
	hand int
	max  int
}

func newSketchCLOCK(n int) *sketchCLOCK {
	return &sketchCLOCK{m: make(map[uint64]*sketchEntry), ring: make([]*sketchEntry, 0, n), max: n}
}

func (c *sketchCLOCK) get(key string) bool {
	h, now := sketchHash(key, "alice"), coarse.read()
	c.mu.RLock()
	e := c.m[h]
	c.mu.RUnlock()
	if e == nil || e.key != key || e.identity != "alice" || now >= e.expires {
		return false
	}
	if !e.ref.Load() { // write only when it changes: no cache-line ping-pong
		e.ref.Store(true)
	}
	return true
}

func (c *sketchCLOCK) set(key string, body []byte) {
	h := sketchHash(key, "alice")
	e := &sketchEntry{hash: h, key: key, identity: "alice", expires: coarse.read() + int64(cacheTTL), status: 201, body: body}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old := c.m[h]; old != nil {
		c.m[h] = e
		e.slot = old.slot
		c.ring[e.slot] = e
		return
	}
	c.m[h] = e
	if len(c.ring) < c.max {
		e.slot = len(c.ring)
		c.ring = append(c.ring, e)
		return
	}
	for { // second chance
		v := c.ring[c.hand]
		if v.ref.Load() {
			v.ref.Store(false)
			c.hand = (c.hand + 1) % len(c.ring)
			continue
		}
		delete(c.m, v.hash)
		e.slot = c.hand
		c.ring[c.hand] = e
		c.hand = (c.hand + 1) % len(c.ring)
		return
	}
}
