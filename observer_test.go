package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idemkit/idempotency"
)

// recorder is an Observer that keeps what it is told.
type recorder struct {
	mu     sync.Mutex
	starts []idempotency.Request
	done   []idempotency.Execution
	calls  []idempotency.StoreCall
	lost   []error
}

type ctxMark struct{}

func (r *recorder) observer() *idempotency.Observer {
	return &idempotency.Observer{
		Start: func(ctx context.Context, req idempotency.Request) context.Context {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.starts = append(r.starts, req)
			return context.WithValue(ctx, ctxMark{}, req.Key)
		},
		Done: func(ctx context.Context, x idempotency.Execution) {
			r.mu.Lock()
			defer r.mu.Unlock()
			if ctx.Value(ctxMark{}) != x.Request.Key {
				x.Err = fmt.Errorf("Done did not get Start's context (%v)", x.Err)
			}
			r.done = append(r.done, x)
		},
		StoreCall: func(ctx context.Context, c idempotency.StoreCall) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.calls = append(r.calls, c)
		},
		LeaseLost: func(ctx context.Context, tok idempotency.Token, cause error) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.lost = append(r.lost, cause)
		},
	}
}

func (r *recorder) last(t *testing.T) idempotency.Execution {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.done) == 0 {
		t.Fatal("Done was not called")
	}
	return r.done[len(r.done)-1]
}

func (r *recorder) ops() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ops []string
	for _, c := range r.calls {
		ops = append(ops, c.Op)
	}
	r.calls = nil
	return ops
}

// failComplete is a store whose Complete always fails: a response that
// cannot be recorded.
type failComplete struct{ *idempotency.InMemoryStore }

var errCompleteDown = fmt.Errorf("complete: %w", idempotency.ErrLeaseLost)

func (failComplete) Complete(context.Context, idempotency.Token, idempotency.Cached) error {
	return errCompleteDown
}

func TestObserverOutcomes(t *testing.T) {
	ctx := context.Background()
	var rec recorder
	e := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithObserver(rec.observer()))
	var c counter
	boom := errors.New("boom")
	failing := func(context.Context) (idempotency.Response, error) { return idempotency.Response{}, boom }
	for _, tc := range []struct {
		name    string
		req     idempotency.Request
		fn      idempotency.Func
		want    idempotency.Outcome
		wantErr error
		ops     []string
	}{
		{"executed", idempotency.Request{Key: "k", Identity: "a", Fingerprint: "fp"}, c.fn(201, "x"), idempotency.OutcomeExecuted, nil, []string{"begin", "complete"}},
		{"replayed", idempotency.Request{Key: "k", Identity: "a", Fingerprint: "fp"}, c.fn(201, "x"), idempotency.OutcomeReplayed, nil, nil}, // Peek: no store call
		{"mismatch", idempotency.Request{Key: "k", Identity: "a", Fingerprint: "other"}, c.fn(201, "x"), idempotency.OutcomeMismatch, idempotency.ErrMismatch, []string{"begin"}},
		{"unrecorded", idempotency.Request{Key: "r", Identity: "a"}, c.fn(429, "slow down"), idempotency.OutcomeUnrecorded, nil, []string{"begin", "release"}},
		{"failed", idempotency.Request{Key: "f", Identity: "a"}, failing, idempotency.OutcomeFailed, boom, []string{"begin", "release"}},
		{"invalid key", idempotency.Request{Key: "", Identity: "a"}, c.fn(201, "x"), idempotency.OutcomeInvalidKey, idempotency.ErrInvalidKey, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.Do(ctx, tc.req, tc.fn)
			x := rec.last(t)
			if x.Outcome != tc.want || !errors.Is(x.Err, tc.wantErr) || (tc.wantErr == nil) != (x.Err == nil) {
				t.Errorf("Execution = %v / %v, want %v / %v", x.Outcome, x.Err, tc.want, tc.wantErr)
			}
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("Do = %v, want %v", err, tc.wantErr)
			}
			if x.Request != tc.req || x.Duration <= 0 || x.Start.IsZero() {
				t.Errorf("Execution = %+v: want the request, a start and a duration", x)
			}
			if got := rec.ops(); !slices.Equal(got, tc.ops) {
				t.Errorf("store calls = %v, want %v", got, tc.ops)
			}
		})
	}
	if x := rec.done[0]; x.Fence == 0 {
		t.Errorf("executed: Fence = 0, want the claim's")
	}

	t.Run("record failed", func(t *testing.T) {
		var rec recorder
		e := idempotency.NewEngine(failComplete{idempotency.NewInMemoryStore()}, idempotency.WithObserver(rec.observer()))
		res, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "a"}, c.fn(201, "x"))
		x := rec.last(t)
		if err != nil || x.Outcome != idempotency.OutcomeRecordFailed || !errors.Is(x.RecordErr, errCompleteDown) || !errors.Is(res.RecordErr, errCompleteDown) {
			t.Errorf("Execution = %v / %v (Do: %v), want record_failed with the store's error", x.Outcome, x.RecordErr, err)
		}
	})

	t.Run("store error", func(t *testing.T) {
		var rec recorder
		e := idempotency.NewEngine(&downStore{}, idempotency.WithObserver(rec.observer()))
		_, _ = e.Do(ctx, idempotency.Request{Key: "k", Identity: "a"}, c.fn(201, "x"))
		x := rec.last(t)
		if x.Outcome != idempotency.OutcomeStoreError || !errors.Is(x.Err, idempotency.ErrStoreUnavailable) {
			t.Errorf("Execution = %v / %v, want store_error", x.Outcome, x.Err)
		}
		if rec.calls[0].Op != "begin" || !errors.Is(rec.calls[0].Err, errDown) {
			t.Errorf("store call = %+v, want the failed begin", rec.calls[0])
		}
	})

	t.Run("panicked", func(t *testing.T) {
		var rec recorder
		e := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithObserver(rec.observer()))
		func() {
			defer func() { _ = recover() }()
			_, _ = e.Do(ctx, idempotency.Request{Key: "p", Identity: "a"}, func(context.Context) (idempotency.Response, error) { panic("oops") })
		}()
		if x := rec.last(t); x.Outcome != idempotency.OutcomePanicked {
			t.Errorf("Execution = %v, want panicked", x.Outcome)
		}
	})

	t.Run("cancelled", func(t *testing.T) {
		var rec recorder
		e := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithObserver(rec.observer()))
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, _ = e.Do(cctx, idempotency.Request{Key: "c", Identity: "a"}, c.fn(201, "x"))
		if x := rec.last(t); x.Outcome != idempotency.OutcomeCancelled {
			t.Errorf("Execution = %v, want cancelled", x.Outcome)
		}
	})
}

func TestObserversJoin(t *testing.T) {
	var a, b recorder
	e := idempotency.NewEngine(idempotency.NewInMemoryStore(),
		idempotency.WithObserver(a.observer()), idempotency.WithObserver(nil), idempotency.WithObserver(b.observer()))
	var c counter
	_, _ = e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "a"}, c.fn(200, "x"))
	if len(a.done) != 1 || len(b.done) != 1 || len(a.calls) != 2 || len(b.calls) != 2 {
		t.Errorf("observers told: a %d/%d, b %d/%d; want each 1 execution and 2 store calls",
			len(a.done), len(a.calls), len(b.done), len(b.calls))
	}
}

func TestOutcomeNames(t *testing.T) {
	seen := map[string]bool{}
	for _, o := range idempotency.Outcomes() {
		name := o.String()
		if name == "invalid" || seen[name] {
			t.Errorf("Outcome %d has name %q (repeated or missing)", o, name)
		}
		seen[name] = true
	}
	if len(seen) != 12 {
		t.Errorf("%d outcomes, want 12", len(seen))
	}
	if got := idempotency.Outcome(0).String(); got != "invalid" {
		t.Errorf("Outcome(0) = %q, want invalid", got)
	}
}

func TestDefaultRecordPolicy(t *testing.T) {
	for status, want := range map[int]bool{
		200: true, 201: true, 204: true, 302: true, 400: true, 404: true, 409: true, 422: true,
		408: false, 425: false, 429: false, 500: false, 502: false, 503: false, 504: false,
	} {
		if got := idempotency.DefaultRecordPolicy(idempotency.Response{Status: status}); got != want {
			t.Errorf("DefaultRecordPolicy(%d) = %v, want %v", status, got, want)
		}
	}
	// Through the engine: a rate-limited answer is not replayed, the retry runs.
	for name, newStore := range stores() {
		t.Run(name, func(t *testing.T) {
			e := idempotency.NewEngine(newStore())
			var c counter
			for _, status := range []int{429, 408, 425, 201} {
				res, err := e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "a"}, c.fn(status, "x"))
				if err != nil || res.Replayed || res.Recorded != (status == 201) {
					t.Fatalf("status %d: (%+v, %v), want it run, recorded only if 201", status, res, err)
				}
			}
			if c.n.Load() != 4 {
				t.Errorf("ran %d times, want 4 (each try-again-later answer released the key)", c.n.Load())
			}
		})
	}
}

// checkedDown is a plain store whose lookups report that it is down.
type checkedDown struct{ seedOnly }

func (checkedDown) CheckedLookup(context.Context, string, string) (*idempotency.Cached, bool, error) {
	return nil, false, errDown
}

func TestCheckedStoreFailsClosed(t *testing.T) {
	var c counter
	e := idempotency.NewEngine(checkedDown{seedOnly{idempotency.NewInMemoryStore()}})
	_, err := e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "a"}, c.fn(201, "x"))
	var se *idempotency.StoreError
	if !errors.Is(err, idempotency.ErrStoreUnavailable) || !errors.As(err, &se) || se.Op != "lookup" || !errors.Is(err, errDown) {
		t.Fatalf("Do over a failing CheckedStore = %v, want a lookup StoreError", err)
	}
	if c.n.Load() != 0 {
		t.Fatalf("the command ran %d times during the outage, want 0", c.n.Load())
	}
}

func TestCheckedStoreServes(t *testing.T) {
	// A CheckedStore that works deduplicates like any plain store.
	e := idempotency.NewEngine(checkedOK{seedOnly{idempotency.NewInMemoryStore()}})
	var c counter
	for range 3 {
		if _, err := e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "a"}, c.fn(201, "x")); err != nil {
			t.Fatal(err)
		}
	}
	if c.n.Load() != 1 {
		t.Fatalf("ran %d times, want 1", c.n.Load())
	}
}

type checkedOK struct{ seedOnly }

func (s checkedOK) CheckedLookup(ctx context.Context, k, id string) (*idempotency.Cached, bool, error) {
	c, ok := s.Lookup(ctx, k, id)
	return c, ok, nil
}

func TestStoreMisconfiguredIsNotUnavailable(t *testing.T) {
	err := &idempotency.StoreError{Op: "begin", Err: fmt.Errorf("no table: %w", idempotency.ErrStoreMisconfigured)}
	if errors.Is(err, idempotency.ErrStoreUnavailable) || !errors.Is(err, idempotency.ErrStoreMisconfigured) {
		t.Errorf("a misconfigured StoreError matches unavailable %v, misconfigured %v; want false, true",
			errors.Is(err, idempotency.ErrStoreUnavailable), errors.Is(err, idempotency.ErrStoreMisconfigured))
	}
	if !errors.Is(&idempotency.StoreError{Op: "begin", Err: errDown}, idempotency.ErrStoreUnavailable) {
		t.Error("an outage StoreError does not match ErrStoreUnavailable")
	}
}

// renewLost is a store whose renewals find the claim gone.
type renewLost struct{ *idempotency.InMemoryStore }

func (renewLost) Renew(context.Context, idempotency.Token, time.Duration) error {
	return idempotency.ErrLeaseLost
}

func TestObserverLeaseLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var rec recorder
		e := idempotency.NewEngine(renewLost{idempotency.NewInMemoryStore()},
			idempotency.WithLease(3*time.Second), idempotency.WithObserver(rec.observer()))
		_, err := e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "a"}, func(ctx context.Context) (idempotency.Response, error) {
			<-ctx.Done()
			return idempotency.Response{}, context.Cause(ctx)
		})
		if !errors.Is(err, idempotency.ErrLeaseLost) {
			t.Fatalf("Do = %v, want the command's ErrLeaseLost", err)
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if len(rec.lost) != 1 || !errors.Is(rec.lost[0], idempotency.ErrLeaseLost) {
			t.Errorf("LeaseLost told %v, want one ErrLeaseLost", rec.lost)
		}
		if x := rec.done[0]; x.Outcome != idempotency.OutcomeFailed || x.Fence == 0 {
			t.Errorf("Execution = %v (fence %d), want failed with the claim's fence", x.Outcome, x.Fence)
		}
	})
}
