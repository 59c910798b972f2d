package idempotency_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"testing/synctest"
	"time"
	"weak"

	"github.com/idemkit/idempotency"
)

// waitFor is a command that runs for d unless its context ends first; it
// reports its context's cause (nil when it ran to the end) on cause.
func waitFor(d time.Duration, cause *error) idempotency.Func {
	return func(ctx context.Context) (idempotency.Cached, error) {
		select {
		case <-ctx.Done():
			*cause = context.Cause(ctx)
		case <-time.After(d):
		}
		return idempotency.Cached{Status: 200, WireBody: []byte("done")}, nil
	}
}

// An engine whose executions have all returned holds no timer or goroutine
// that keeps it (and its store) reachable: it is collected without waiting
// for a renewal's interval.
func TestHeartbeatIdleEngineIsCollected(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := useEngine(t)
		synctest.Wait() // the renewals' goroutines have ended
		for i := 0; i < 3 && w.Value() != nil; i++ {
			runtime.GC()
		}
		if w.Value() != nil {
			t.Error("an engine with no execution running is still reachable")
		}
	})
}

// useEngine runs fast commands and one that renews its lease on a new
// engine, and returns a weak pointer to the engine.
func useEngine(t *testing.T) weak.Pointer[idempotency.Engine] {
	t.Helper()
	e := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithLease(3*time.Second))
	ctx := context.Background()
	var cause error
	if _, err := e.Do(ctx, "slow", "", "", waitFor(1500*time.Millisecond, &cause)); err != nil || cause != nil {
		t.Fatalf("slow command: Do error %v, context cause %v", err, cause)
	}
	var c counter
	for i := range 10 {
		if _, err := e.Do(ctx, fmt.Sprint("fast-", i), "", "", c.fn(200, "x")); err != nil {
			t.Fatal(err)
		}
	}
	return weak.Make(e)
}
