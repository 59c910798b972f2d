package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"weak"

	"github.com/idemkit/idempotency"
)

// renewStore is an InMemoryStore whose Renew calls go through hook first.
// hook gets the call's number (from 1) and answers it (handled) or lets it
// through to the store.
type renewStore struct {
	*idempotency.InMemoryStore
	calls atomic.Int64
	hook  func(ctx context.Context, call int64) (err error, handled bool)
}

func (s *renewStore) Renew(ctx context.Context, tok idempotency.Token, lease time.Duration) error {
	if err, handled := s.hook(ctx, s.calls.Add(1)); handled {
		return err
	}
	return s.InMemoryStore.Renew(ctx, tok, lease)
}

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

// A command that ends while a renewal is in flight returns at once: the
// renewal is abandoned (its context cancelled), is not queued again and
// cancels nothing, even when its late answer is ErrLeaseLost. (A stop that
// waited for the renewal on a mutex would hang this test rather than fail
// it: synctest's clock does not advance while a goroutine waits on a mutex.)
func TestHeartbeatStopDoesNotWaitForARenewal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		started := make(chan struct{})
		var renewErr error
		s := &renewStore{InMemoryStore: idempotency.NewInMemoryStore()}
		s.hook = func(ctx context.Context, call int64) (error, bool) {
			if call == 1 {
				close(started)
				<-ctx.Done()
				renewErr = ctx.Err()
				return idempotency.ErrLeaseLost, true
			}
			return nil, false
		}
		e := idempotency.NewEngine(s, idempotency.WithLease(3*time.Second))
		var runCtx context.Context
		var returned time.Time
		res, err := e.Do(context.Background(), "k", "", "", func(ctx context.Context) (idempotency.Cached, error) {
			runCtx = ctx
			<-started // a renewal is in flight
			returned = time.Now()
			return idempotency.Cached{Status: 200, WireBody: []byte("ok")}, nil
		})
		if err != nil || !res.Recorded {
			t.Fatalf("Do = (%+v, %v), want recorded", res, err)
		}
		if waited := time.Since(returned); waited != 0 {
			t.Errorf("Do returned %v after its command, want at once", waited)
		}
		synctest.Wait()
		if !errors.Is(renewErr, context.Canceled) {
			t.Errorf("the abandoned renewal's context ended with %v, want Canceled", renewErr)
		}
		time.Sleep(10 * time.Second) // several leases: no renewal may follow
		if n := s.calls.Load(); n != 1 {
			t.Errorf("Renew called %d times, want 1 (none after the command returned)", n)
		}
		if cause := context.Cause(runCtx); cause != context.Canceled {
			t.Errorf("command context cause = %v, want Canceled (the late ErrLeaseLost cancels nothing)", cause)
		}
	})
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
