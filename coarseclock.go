package idempotency

import (
	"sync"
	"sync/atomic"
	"time"
)

// coarseTick is how often the coarse clock is refreshed while in use, and so
// about how late (plus scheduling delay) a record's expiry can be seen on the
// read path.
const coarseTick = time.Millisecond

// coarseIdleTicks is how many ticks without a reader stop the refreshing.
const coarseIdleTicks = 100

// coarseClock serves the read-hot path: reading it is an atomic load instead
// of a call to time.Now, which costs tens of nanoseconds on common virtual
// machines. While readers use it, a timer made by time.AfterFunc refreshes it
// every coarseTick: each time it fires, the runtime runs tick in a goroutine
// of its own, which re-arms the timer. After coarseIdleTicks ticks with no
// reader tick does not re-arm it, so an idle store has no timer pending and no
// goroutine running, and needs no Close; the next reader starts it again. Its
// time lags the real clock by at most a tick plus scheduling delay, so expiry
// is seen that much late, never early.
type coarseClock struct {
	nanos  atomic.Int64 // unix nanoseconds at the last refresh
	active atomic.Bool  // the timer is armed and refreshing nanos
	used   atomic.Bool  // a reader came since the last tick

	mu   sync.Mutex // guards t, idle and the transitions of active
	t    *time.Timer
	idle int
}

// now returns the coarse time in unix nanoseconds.
func (c *coarseClock) now() int64 {
	if c.active.Load() {
		if !c.used.Load() { // write only once per tick: no cache-line ping-pong
			c.used.Store(true)
		}
		return c.nanos.Load()
	}
	return c.start()
}

func (c *coarseClock) start() int64 {
	n := time.Now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active.Load() {
		return n
	}
	c.nanos.Store(n)
	c.idle = 0
	c.active.Store(true)
	if c.t == nil {
		c.t = time.AfterFunc(coarseTick, c.tick)
	} else {
		c.t.Reset(coarseTick)
	}
	return n
}

func (c *coarseClock) tick() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nanos.Store(time.Now().UnixNano())
	if c.used.Swap(false) {
		c.idle = 0
	} else if c.idle++; c.idle >= coarseIdleTicks {
		c.active.Store(false)
		return
	}
	c.t.Reset(coarseTick)
}
