package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/maypok86/otter/v2"

	"github.com/idemkit/idempotency"
)

// The in-memory comparison: 10k entries, 40-byte keys, 256-byte bodies,
// one-hour TTL, every implementation behind the same small interface so the
// call overhead is the same for all.
const (
	cacheEntries = 10_000
	cacheTTL     = time.Hour
)

// cache is what each contender does: a lookup that must hit, and a write.
type cache interface {
	get(key string) bool
	set(key string, body []byte)
}

// idemkit's InMemoryStore, keyed by (key, identity).
type idemkitCache struct{ s *idempotency.InMemoryStore }

func (c idemkitCache) get(key string) bool {
	_, ok := c.s.Lookup(context.Background(), key, "alice")
	return ok
}

func (c idemkitCache) set(key string, body []byte) {
	if err := c.s.Store(context.Background(), key, "alice", idempotency.Cached{Status: 201, WireBody: body, TTL: cacheTTL}); err != nil {
		panic(err)
	}
}

// value is what the peers store: a response, like idempotency.Cached.
type value struct {
	status int
	body   []byte
}

type otterCache struct{ c *otter.Cache[string, *value] }

func (c otterCache) get(key string) bool {
	_, ok := c.c.GetIfPresent(key)
	return ok
}

func (c otterCache) set(key string, body []byte) { c.c.Set(key, &value{201, body}) }

type lruCache struct {
	c *expirable.LRU[string, *value]
}

func (c lruCache) get(key string) bool {
	_, ok := c.c.Get(key)
	return ok
}

func (c lruCache) set(key string, body []byte) { c.c.Add(key, &value{201, body}) }

// mapEntry is a response with its expiry, for the plain maps.
type mapEntry struct {
	value
	expires time.Time
}

// rwMap is a map under a sync.RWMutex with a time.Now expiry check: no LRU,
// no size bound. The floor for "a locked map lookup plus a clock read".
type rwMap struct {
	mu sync.RWMutex
	m  map[string]*mapEntry
}

func (c *rwMap) get(key string) bool {
	c.mu.RLock()
	e := c.m[key]
	c.mu.RUnlock()
	return e != nil && time.Now().Before(e.expires)
}

func (c *rwMap) set(key string, body []byte) {
	e := &mapEntry{value{201, body}, time.Now().Add(cacheTTL)}
	c.mu.Lock()
	c.m[key] = e
	c.mu.Unlock()
}

// muMap is the same under a sync.Mutex.
type muMap struct {
	mu sync.Mutex
	m  map[string]*mapEntry
}

func (c *muMap) get(key string) bool {
	c.mu.Lock()
	e := c.m[key]
	c.mu.Unlock()
	return e != nil && time.Now().Before(e.expires)
}

func (c *muMap) set(key string, body []byte) {
	e := &mapEntry{value{201, body}, time.Now().Add(cacheTTL)}
	c.mu.Lock()
	c.m[key] = e
	c.mu.Unlock()
}

// contender names an implementation; bounded ones evict.
type contender struct {
	name    string
	bounded bool
	make    func(capacity int) cache
}

var contenders = []contender{
	{"idemkit", true, func(n int) cache {
		return idemkitCache{idempotency.NewInMemoryStore(idempotency.WithMaxEntries(n))}
	}},
	{"otter", true, func(n int) cache {
		return otterCache{otter.Must(&otter.Options[string, *value]{
			MaximumSize:      n,
			ExpiryCalculator: otter.ExpiryWriting[string, *value](cacheTTL),
		})}
	}},
	{"lru-expirable", true, func(n int) cache {
		return lruCache{expirable.NewLRU[string, *value](n, nil, cacheTTL)}
	}},
	{"sketch-hash-lru", true, func(n int) cache { return newSketchLRU(n) }},
	{"sketch-hash-clock", true, func(n int) cache { return newSketchCLOCK(n) }},
	{"map-rwmutex", false, func(int) cache { return &rwMap{m: map[string]*mapEntry{}} }},
	{"map-mutex", false, func(int) cache { return &muMap{m: map[string]*mapEntry{}} }},
}

// benchKeys returns n distinct 40-byte keys.
func benchKeys(prefix string, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s-%0*d", prefix, 39-len(prefix), i)
	}
	return keys
}

func benchBody() []byte {
	body := make([]byte, 256)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	return body
}

// parallel runs op from every goroutine of b.RunParallel (GOMAXPROCS of
// them: -cpu 1,2 gives 1 and 2), each walking keys from its own start.
func parallel(b *testing.B, n int, op func(i int)) {
	var start atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(start.Add(7919)) % n
		for pb.Next() {
			op(i)
			if i++; i == n {
				i = 0
			}
		}
	})
}

// BenchmarkCache compares InMemoryStore with otter, the expirable LRU and
// locked maps: lookups that hit, overwrites, a 90/10 mix, and (bounded
// caches only) inserts of new keys into a full cache, which evict.
func BenchmarkCache(b *testing.B) {
	keys := benchKeys("key", cacheEntries)
	body := benchBody()
	full := func(c contender) cache {
		cc := c.make(cacheEntries)
		for _, k := range keys {
			cc.set(k, body)
		}
		return cc
	}
	for _, c := range contenders {
		b.Run("op=LookupHit/impl="+c.name, func(b *testing.B) {
			cc := full(c)
			parallel(b, len(keys), func(i int) {
				if !cc.get(keys[i]) {
					panic("lookup missed")
				}
			})
		})
	}
	for _, c := range contenders {
		b.Run("op=Store/impl="+c.name, func(b *testing.B) {
			cc := full(c)
			parallel(b, len(keys), func(i int) { cc.set(keys[i], body) })
		})
	}
	for _, c := range contenders {
		b.Run("op=Mix90-10/impl="+c.name, func(b *testing.B) {
			cc := full(c)
			parallel(b, len(keys), func(i int) {
				if i%10 == 0 {
					cc.set(keys[i], body)
				} else {
					cc.get(keys[i])
				}
			})
		})
	}
	// 100k keys cycled through a 10k cache: every insert is of a key
	// evicted long ago, so every insert evicts.
	fresh := benchKeys("new", 10*cacheEntries)
	for _, c := range contenders {
		if !c.bounded {
			continue
		}
		b.Run("op=InsertEvict/impl="+c.name, func(b *testing.B) {
			cc := full(c)
			parallel(b, len(fresh), func(i int) { cc.set(fresh[i], body) })
		})
	}
}

// BenchmarkClock is the cost of reading the clock, the reference for the
// lookup-hit target.
func BenchmarkClock(b *testing.B) {
	var sink int64
	b.Run("time.Now", func(b *testing.B) {
		for b.Loop() {
			sink += time.Now().UnixNano()
		}
	})
	_ = sink
}
