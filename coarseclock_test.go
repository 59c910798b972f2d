package idempotency

import (
	"context"
	"testing"
	"testing/synctest"
	"time"
)

func TestCoarseClockFollowsAndStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c coarseClock
		start := time.Now().UnixNano()
		if got := c.now(); got != start {
			t.Fatalf("first read = %d, want the real time %d", got, start)
		}
		time.Sleep(50 * time.Millisecond)
		got := c.now()
		if lag := time.Now().UnixNano() - got; lag < 0 || lag > int64(coarseTick) {
			t.Fatalf("coarse time lags by %v, want within one tick (%v)", time.Duration(lag), coarseTick)
		}
		// Idle long enough: the refreshing stops, and nothing is left running.
		time.Sleep(2 * coarseIdleTicks * coarseTick)
		if c.active.Load() {
			t.Fatal("coarse clock still refreshing after being idle")
		}
		// The next read restarts it at the real time.
		if got, want := c.now(), time.Now().UnixNano(); got != want {
			t.Fatalf("read after idle = %d, want %d", got, want)
		}
		if !c.active.Load() {
			t.Fatal("coarse clock did not restart")
		}
	})
}

func TestLookupSeesExpiryWithCoarseClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		s := NewInMemoryStore()
		if err := s.Store(ctx, "k", "", Cached{Status: 200, TTL: time.Second}); err != nil {
			t.Fatal(err)
		}
		if _, ok := s.Lookup(ctx, "k", ""); !ok {
			t.Fatal("fresh entry missed")
		}
		time.Sleep(time.Second - 2*coarseTick)
		if _, ok := s.Lookup(ctx, "k", ""); !ok {
			t.Fatal("entry missed before its TTL ran out")
		}
		time.Sleep(2*coarseTick + coarseTick)
		if _, ok := s.Lookup(ctx, "k", ""); ok {
			t.Fatal("entry still served a tick after its TTL ran out")
		}
	})
}
