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

// renewStore is an InMemoryStore whose Renew calls are answered by hook,
// with the call's number (from 1) and the store's own Renew to call or not.
type renewStore struct {
	*idempotency.InMemoryStore
	calls atomic.Int64
	hook  func(ctx context.Context, call int64, renew func() error) error
}

func (s *renewStore) Renew(ctx context.Context, tok idempotency.Token, lease time.Duration) error {
	return s.hook(ctx, s.calls.Add(1), func() error { return s.InMemoryStore.Renew(ctx, tok, lease) })
}

var errPartition = fmt.Errorf("renew: i/o timeout: %w", idempotency.ErrStoreUnavailable)

// hang is a Renew that never reaches the store: it returns only when its
// context ends.
func hang(ctx context.Context) error {
	<-ctx.Done()
	return fmt.Errorf("renew: %w: %w", idempotency.ErrStoreUnavailable, ctx.Err())
}

// waitFor is a command that runs for d unless its context ends first; it
// reports its context's cause (nil when it ran to the end) on cause.
func waitFor(d time.Duration, cause *error) idempotency.Func {
	return func(ctx context.Context) (idempotency.Response, error) {
		select {
		case <-ctx.Done():
			*cause = context.Cause(ctx)
		case <-time.After(d):
		}
		return idempotency.Response{Status: 200, Body: []byte("done")}, nil
	}
}

// A renewal that fails is retried soon, within what is left of the lease,
// so one bad attempt does not cost the claim.
func TestHeartbeatRetriesAFailedRenewal(t *testing.T) {
	for _, tc := range []struct {
		name string
		hook func(ctx context.Context, call int64, renew func() error) error
	}{
		{"one renewal hangs", func(ctx context.Context, call int64, renew func() error) error {
			if call == 1 {
				return hang(ctx)
			}
			return renew()
		}},
		{"two renewals fail", func(_ context.Context, call int64, renew func() error) error {
			if call <= 2 {
				return errPartition
			}
			return renew()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				s := &renewStore{InMemoryStore: idempotency.NewInMemoryStore(), hook: tc.hook}
				e := idempotency.NewEngine(s, idempotency.WithLease(3*time.Second))
				var cause error
				res, err := e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, waitFor(10*time.Second, &cause))
				if err != nil {
					t.Fatal(err)
				}
				if cause != nil {
					t.Errorf("command context ended with %v, want it to run its 10s", cause)
				}
				if !res.Recorded {
					t.Errorf("result = %+v, want recorded", res)
				}
				if n := s.calls.Load(); n < 3 {
					t.Errorf("Renew called %d times, want the failure retried", n)
				}
			})
		})
	}
}

// In a partition (every Renew fails or hangs) the holder stops by itself when
// its estimate of the lease runs out, rather than run on beside a replica
// that took the key over. The store then refuses its Complete.
func TestHeartbeatLeaseExpiresUnconfirmed(t *testing.T) {
	for _, tc := range []struct {
		name string
		hook func(ctx context.Context, call int64, renew func() error) error
	}{
		{"renewals fail", func(context.Context, int64, func() error) error { return errPartition }},
		{"renewals hang", func(ctx context.Context, _ int64, _ func() error) error { return hang(ctx) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const lease = 3 * time.Second
				s := &renewStore{InMemoryStore: idempotency.NewInMemoryStore(), hook: tc.hook}
				e := idempotency.NewEngine(s, idempotency.WithLease(lease))
				start := time.Now()
				var took time.Duration
				var takeover idempotency.ClaimStatus
				res, err := e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, func(ctx context.Context) (idempotency.Response, error) {
					select {
					case <-ctx.Done():
						took = time.Since(start)
						if cause := context.Cause(ctx); !errors.Is(cause, idempotency.ErrLeaseExpired) {
							t.Errorf("cause = %v, want ErrLeaseExpired", cause)
						}
					case <-time.After(10 * time.Second):
						t.Error("command ran 10s of a 3s lease that was never renewed")
					}
					cl, err := s.Begin(context.Background(), "k", "", idempotency.ClaimRequest{Owner: "replica", Lease: lease})
					if err != nil {
						t.Error(err)
					}
					takeover = cl.Status
					return idempotency.Response{Status: 200}, nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if took != 0 && took != lease {
					t.Errorf("command cancelled after %v, want when the unconfirmed %v lease ran out", took, lease)
				}
				if takeover != idempotency.ClaimAcquired {
					t.Errorf("another replica's Begin after the cancellation = %v, want acquired", takeover)
				}
				if res.Recorded || !errors.Is(res.RecordErr, idempotency.ErrLeaseLost) {
					t.Errorf("result = %+v, want not recorded with ErrLeaseLost", res)
				}
				if n := s.calls.Load(); n < 2 {
					t.Errorf("Renew called %d times, want retries", n)
				}
			})
		})
	}
}

// When only the renewals' answers are lost, the store still holds the claim
// after the engine's estimate ran out: the command is cancelled with
// ErrLeaseExpired all the same, and a response it returns is recorded.
func TestHeartbeatExpiredClaimStillHeldIsRecorded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &renewStore{InMemoryStore: idempotency.NewInMemoryStore()}
		s.hook = func(_ context.Context, _ int64, renew func() error) error {
			if err := renew(); err != nil {
				return err
			}
			return errPartition // renewed, but the answer never came back
		}
		e := idempotency.NewEngine(s, idempotency.WithLease(3*time.Second))
		var cause error
		res, err := e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, waitFor(10*time.Second, &cause))
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(cause, idempotency.ErrLeaseExpired) {
			t.Errorf("command context cause = %v, want ErrLeaseExpired", cause)
		}
		if !res.Recorded {
			t.Errorf("result = %+v, want recorded (the store still held the claim)", res)
		}
	})
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
		s.hook = func(ctx context.Context, call int64, renew func() error) error {
			if call == 1 {
				close(started)
				<-ctx.Done()
				renewErr = ctx.Err()
				return idempotency.ErrLeaseLost
			}
			return renew()
		}
		e := idempotency.NewEngine(s, idempotency.WithLease(3*time.Second))
		var runCtx context.Context
		var returned time.Time
		res, err := e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, func(ctx context.Context) (idempotency.Response, error) {
			runCtx = ctx
			<-started // a renewal is in flight
			returned = time.Now()
			return idempotency.Response{Status: 200, Body: []byte("ok")}, nil
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
	if _, err := e.Do(ctx, idempotency.Request{Key: "slow", Identity: "", Fingerprint: ""}, waitFor(1500*time.Millisecond, &cause)); err != nil || cause != nil {
		t.Fatalf("slow command: Do error %v, context cause %v", err, cause)
	}
	var c counter
	for i := range 10 {
		if _, err := e.Do(ctx, idempotency.Request{Key: fmt.Sprint("fast-", i), Identity: "", Fingerprint: ""}, c.fn(200, "x")); err != nil {
			t.Fatal(err)
		}
	}
	return weak.Make(e)
}
