package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/idemkit/idempotency"
)

// counter is an effect ledger: how many times the command really ran.
type counter struct{ n atomic.Int64 }

func (c *counter) fn(status int, body string) idempotency.Func {
	return func(context.Context) (idempotency.Response, error) {
		c.n.Add(1)
		return idempotency.Response{Status: status, Body: []byte(body)}, nil
	}
}

// seedOnly hides the claim protocol of a store, as a seed-era Store would.
type seedOnly struct{ s idempotency.Store }

func (s seedOnly) Lookup(ctx context.Context, k, id string) (*idempotency.Cached, bool) {
	return s.s.Lookup(ctx, k, id)
}
func (s seedOnly) Store(ctx context.Context, k, id string, c idempotency.Cached) error {
	return s.s.Store(ctx, k, id, c)
}

func stores() map[string]func() idempotency.Store {
	return map[string]func() idempotency.Store{
		"claim": func() idempotency.Store { return idempotency.NewInMemoryStore() },
		"seed":  func() idempotency.Store { return seedOnly{idempotency.NewInMemoryStore()} },
	}
}

func TestDoReplays(t *testing.T) {
	for name, newStore := range stores() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			e := idempotency.NewEngine(newStore())
			var c counter
			first, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "alice", Fingerprint: "fp"}, c.fn(201, "created"))
			if err != nil || first.Replayed || !first.Recorded || string(first.Response.Body) != "created" {
				t.Fatalf("first Do = (%+v, %v), want an executed, recorded response", first, err)
			}
			second, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "alice", Fingerprint: "fp"}, c.fn(201, "again"))
			if err != nil || !second.Replayed || string(second.Response.Body) != "created" || second.Response.Status != 201 {
				t.Fatalf("second Do = (%+v, %v), want a replay of the first", second, err)
			}
			if got := c.n.Load(); got != 1 {
				t.Fatalf("command ran %d times, want 1", got)
			}
			// Another identity is another record.
			if res, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "bob", Fingerprint: "fp"}, c.fn(201, "bob")); err != nil || res.Replayed {
				t.Fatalf("Do for bob = (%+v, %v), want an execution", res, err)
			}
			if _, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "alice", Fingerprint: "other"}, c.fn(201, "x")); !errors.Is(err, idempotency.ErrMismatch) {
				t.Fatalf("Do with another fingerprint = %v, want ErrMismatch", err)
			}
		})
	}
}

func TestDoRecordPolicy(t *testing.T) {
	for name, newStore := range stores() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			e := idempotency.NewEngine(newStore())
			var c counter
			for i := range 2 { // 5xx is not recorded: each retry runs
				res, err := e.Do(ctx, idempotency.Request{Key: "k5", Identity: "", Fingerprint: ""}, c.fn(503, "busy"))
				if err != nil || res.Replayed || res.Recorded {
					t.Fatalf("Do %d with 503 = (%+v, %v), want executed and not recorded", i, res, err)
				}
			}
			if got := c.n.Load(); got != 2 {
				t.Fatalf("5xx command ran %d times over 2 calls, want 2", got)
			}
			for range 2 { // 4xx is the handler's validation: recorded
				if _, err := e.Do(ctx, idempotency.Request{Key: "k4", Identity: "", Fingerprint: ""}, c.fn(422, "invalid")); err != nil {
					t.Fatal(err)
				}
			}
			if got := c.n.Load(); got != 3 {
				t.Fatalf("4xx command ran %d times, want once", got-2)
			}
			// A custom policy.
			e2 := idempotency.NewEngine(newStore(), idempotency.WithRecordPolicy(func(r idempotency.Response) bool { return r.Status < 400 }))
			for range 2 {
				_, _ = e2.Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, c.fn(404, "nope"))
			}
			if got := c.n.Load(); got != 5 {
				t.Fatalf("with a 2xx/3xx-only policy, a 404 ran %d times over 2 calls, want 2", got-3)
			}
		})
	}
}

func TestDoErrorReleases(t *testing.T) {
	for name, newStore := range stores() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			e := idempotency.NewEngine(newStore())
			boom := errors.New("boom")
			_, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: "fp"}, func(context.Context) (idempotency.Response, error) {
				return idempotency.Response{}, boom
			})
			if err != boom {
				t.Fatalf("Do = %v, want the handler's own error, unwrapped", err)
			}
			var c counter
			if res, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: "fp"}, c.fn(200, "ok")); err != nil || res.Replayed || c.n.Load() != 1 {
				t.Fatalf("retry after an error = (%+v, %v), ran %d; want an execution", res, err, c.n.Load())
			}
		})
	}
}

func TestDoPanicReleasesAndRepanics(t *testing.T) {
	for name, newStore := range stores() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			e := idempotency.NewEngine(newStore())
			func() {
				defer func() {
					if r := recover(); r != "handler bug" {
						t.Fatalf("recovered %v, want the handler's panic value", r)
					}
				}()
				_, _ = e.Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, func(context.Context) (idempotency.Response, error) { panic("handler bug") })
				t.Fatal("Do returned after the handler panicked")
			}()
			var c counter
			if _, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, c.fn(200, "ok")); err != nil || c.n.Load() != 1 {
				t.Fatalf("retry after a panic = %v, ran %d; want one execution", err, c.n.Load())
			}
		})
	}
}

func TestDoInFlightFailsFast(t *testing.T) {
	for name, newStore := range stores() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			e := idempotency.NewEngine(newStore(), idempotency.WithLease(time.Minute))
			in, out := make(chan struct{}), make(chan struct{})
			done := make(chan error)
			go func() {
				_, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: "fp"}, func(context.Context) (idempotency.Response, error) {
					close(in)
					<-out
					return idempotency.Response{Status: 200, Body: []byte("first")}, nil
				})
				done <- err
			}()
			<-in
			var c counter
			_, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: "fp"}, c.fn(200, "dup"))
			if !errors.Is(err, idempotency.ErrInFlight) || c.n.Load() != 0 {
				t.Fatalf("duplicate while in flight = %v (ran %d), want ErrInFlight without running", err, c.n.Load())
			}
			if _, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: "changed"}, c.fn(200, "dup")); !errors.Is(err, idempotency.ErrMismatch) {
				t.Errorf("other payload while in flight = %v, want ErrMismatch", err)
			}
			close(out)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			res, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: "fp"}, c.fn(200, "dup"))
			if err != nil || !res.Replayed || string(res.Response.Body) != "first" {
				t.Fatalf("after completion = (%+v, %v), want replay of first", res, err)
			}
		})
	}
}

func TestDoWaitGetsFirstResponse(t *testing.T) {
	for name, newStore := range stores() {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := context.Background()
				e := idempotency.NewEngine(newStore(), idempotency.WithWait(true))
				in := make(chan struct{})
				var c counter
				var wg sync.WaitGroup
				wg.Go(func() {
					_, _ = e.Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: "fp"}, func(context.Context) (idempotency.Response, error) {
						c.n.Add(1)
						close(in)
						time.Sleep(5 * time.Second) // fake time: the command takes a while
						return idempotency.Response{Status: 201, Body: []byte("first")}, nil
					})
				})
				<-in
				results := make([]idempotency.Result, 5)
				errs := make([]error, 5)
				for i := range results {
					wg.Go(func() {
						results[i], errs[i] = e.Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: "fp"}, c.fn(200, "dup"))
					})
				}
				wg.Wait()
				for i := range results {
					if errs[i] != nil || !results[i].Replayed || string(results[i].Response.Body) != "first" {
						t.Errorf("waiter %d = (%+v, %v), want the first response", i, results[i], errs[i])
					}
				}
				if got := c.n.Load(); got != 1 {
					t.Errorf("ran %d times, want 1", got)
				}
			})
		})
	}
}

func TestDoWaitBoundedByContext(t *testing.T) {
	for name, newStore := range stores() {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := idempotency.NewEngine(newStore(), idempotency.WithWait(true))
				in, out := make(chan struct{}), make(chan struct{})
				go func() {
					_, _ = e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, func(context.Context) (idempotency.Response, error) {
						close(in)
						<-out
						return idempotency.Response{Status: 200}, nil
					})
				}()
				<-in
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				start := time.Now()
				_, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, func(context.Context) (idempotency.Response, error) {
					t.Error("the waiter ran the command")
					return idempotency.Response{}, nil
				})
				if !errors.Is(err, idempotency.ErrInFlight) || !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("waiter past its deadline = %v, want ErrInFlight and DeadlineExceeded", err)
				}
				if waited := time.Since(start); waited != 2*time.Second {
					t.Errorf("waited %v, want exactly the 2s deadline", waited)
				}
				close(out)
				synctest.Wait()
			})
		})
	}
}

func TestDoWaitRunsAfterRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithWait(true))
		in, out := make(chan struct{}), make(chan struct{})
		go func() {
			_, _ = e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, func(context.Context) (idempotency.Response, error) {
				close(in)
				<-out
				return idempotency.Response{}, errors.New("retryable failure")
			})
		}()
		<-in
		var c counter
		done := make(chan idempotency.Result)
		go func() {
			res, err := e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, c.fn(200, "second try"))
			if err != nil {
				t.Errorf("waiter = %v", err)
			}
			done <- res
		}()
		synctest.Wait() // the waiter is parked
		close(out)
		res := <-done
		if res.Replayed || string(res.Response.Body) != "second try" || c.n.Load() != 1 {
			t.Fatalf("waiter after the holder failed = %+v (ran %d), want it to run the command", res, c.n.Load())
		}
	})
}

func TestDoHeartbeatKeepsLongCommandsClaimed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		s := idempotency.NewInMemoryStore()
		e := idempotency.NewEngine(s, idempotency.WithLease(3*time.Second))
		in, out := make(chan struct{}), make(chan struct{})
		var fnErr error
		go func() {
			_, _ = e.Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, func(ctx context.Context) (idempotency.Response, error) {
				close(in)
				<-out
				fnErr = context.Cause(ctx)
				return idempotency.Response{Status: 200, Body: []byte("slow")}, nil
			})
		}()
		<-in
		time.Sleep(10 * time.Second) // more than three leases
		cl, err := s.Begin(ctx, "k", "", idempotency.ClaimRequest{Owner: "other", Lease: time.Second})
		if err != nil || cl.Status != idempotency.ClaimInFlight {
			t.Fatalf("Begin after 10s of a 3s lease with heartbeats = (%v, %v), want in flight", cl.Status, err)
		}
		close(out)
		synctest.Wait()
		if fnErr != nil {
			t.Errorf("command context ended: %v", fnErr)
		}
		if _, ok := s.Lookup(ctx, "k", ""); !ok {
			t.Error("the long command's response was not recorded")
		}
	})
}

// loseLease is a store whose Renew always reports the claim lost.
type loseLease struct{ *idempotency.InMemoryStore }

func (loseLease) Renew(context.Context, idempotency.Token, time.Duration) error {
	return idempotency.ErrLeaseLost
}

func TestDoLeaseLostCancelsCommand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := idempotency.NewEngine(loseLease{idempotency.NewInMemoryStore()}, idempotency.WithLease(3*time.Second))
		res, err := e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, func(ctx context.Context) (idempotency.Response, error) {
			<-ctx.Done()
			if cause := context.Cause(ctx); !errors.Is(cause, idempotency.ErrLeaseLost) {
				t.Errorf("cause = %v, want ErrLeaseLost", cause)
			}
			time.Sleep(3 * time.Second) // a handler that ignores the cancellation for a while
			return idempotency.Response{Status: 200}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if res.Recorded || !errors.Is(res.RecordErr, idempotency.ErrLeaseLost) {
			t.Fatalf("result = %+v, want not recorded with ErrLeaseLost", res)
		}
	})
}

func TestDoClientGoneStillRecords(t *testing.T) {
	for name, newStore := range stores() {
		t.Run(name, func(t *testing.T) {
			s := newStore()
			e := idempotency.NewEngine(s)
			ctx, cancel := context.WithCancel(context.Background())
			res, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, func(context.Context) (idempotency.Response, error) {
				cancel() // the client hangs up while the command runs
				return idempotency.Response{Status: 201, Body: []byte("done anyway")}, nil
			})
			if err != nil || !res.Recorded {
				t.Fatalf("Do = (%+v, %v), want recorded", res, err)
			}
			if got, ok := s.Lookup(context.Background(), "k", ""); !ok || string(got.WireBody) != "done anyway" {
				t.Fatalf("Lookup = (%v, %v), want the recorded response", got, ok)
			}
		})
	}
}

func TestDoOversizeResponseTombstone(t *testing.T) {
	for name, newStore := range stores() {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			e := idempotency.NewEngine(newStore(), idempotency.WithMaxResponseBytes(10))
			var c counter
			big := strings.Repeat("x", 11)
			res, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, c.fn(200, big))
			if err != nil || string(res.Response.Body) != big || !res.Recorded {
				t.Fatalf("first Do = (%+v, %v), want the full response and a recorded tombstone", res, err)
			}
			res, err = e.Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, c.fn(200, big))
			if !errors.Is(err, idempotency.ErrResponseNotRecorded) || !res.Replayed || !res.Response.Streamed {
				t.Fatalf("retry = (%+v, %v), want ErrResponseNotRecorded on a replayed tombstone", res, err)
			}
			if got := c.n.Load(); got != 1 {
				t.Fatalf("ran %d times, want 1", got)
			}
		})
	}
}

func TestDoStoreByteCapFallsBackToTombstone(t *testing.T) {
	ctx := context.Background()
	e := idempotency.NewEngine(idempotency.NewInMemoryStore(idempotency.WithMaxBytes(5)))
	var c counter
	if _, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, c.fn(200, "longer than five")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, c.fn(200, "x")); !errors.Is(err, idempotency.ErrResponseNotRecorded) {
		t.Fatalf("retry = %v, want ErrResponseNotRecorded", err)
	}
	if c.n.Load() != 1 {
		t.Fatalf("ran %d times, want 1", c.n.Load())
	}
}

// downStore fails every call, like a backend that cannot be reached.
type downStore struct{ idempotency.InMemoryStore }

var errDown = errors.New("dial tcp 127.0.0.1:1: connection refused")

func (*downStore) Begin(context.Context, string, string, idempotency.ClaimRequest) (idempotency.Claim, error) {
	return idempotency.Claim{}, errDown
}

// Peek hides the embedded store's: every answer comes from Begin.
func (*downStore) Peek(context.Context, string, string) (*idempotency.Cached, bool) {
	return nil, false
}

func TestDoStoreDownFailsClosed(t *testing.T) {
	e := idempotency.NewEngine(&downStore{})
	var c counter
	_, err := e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, c.fn(200, "x"))
	var se *idempotency.StoreError
	if !errors.Is(err, idempotency.ErrStoreUnavailable) || !errors.As(err, &se) || se.Op != "begin" || !errors.Is(err, errDown) {
		t.Fatalf("Do on a dead store = %v, want a begin StoreError wrapping the cause", err)
	}
	if c.n.Load() != 0 {
		t.Fatal("the command ran although the store could not claim the key")
	}
}

func TestDoStoreFullIsUnavailable(t *testing.T) {
	ctx := context.Background()
	s := idempotency.NewInMemoryStore(idempotency.WithMaxEntries(1))
	if _, err := s.Begin(ctx, "held", "", idempotency.ClaimRequest{Owner: "o", Lease: time.Minute}); err != nil {
		t.Fatal(err)
	}
	_, err := idempotency.NewEngine(s).Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, (&counter{}).fn(200, "x"))
	if !errors.Is(err, idempotency.ErrStoreFull) || !errors.Is(err, idempotency.ErrStoreUnavailable) {
		t.Fatalf("Do on a full store = %v, want ErrStoreFull matching ErrStoreUnavailable", err)
	}
}

func TestDoInvalidKey(t *testing.T) {
	e := idempotency.NewEngine(idempotency.NewInMemoryStore())
	for _, key := range []string{"", strings.Repeat("k", 256), "tab\there", "\u0085"} {
		var c counter
		if _, err := e.Do(context.Background(), idempotency.Request{Key: key, Identity: "", Fingerprint: ""}, c.fn(200, "x")); !errors.Is(err, idempotency.ErrInvalidKey) || c.n.Load() != 0 {
			t.Errorf("Do(%q) = %v (ran %d), want ErrInvalidKey without running", key, err, c.n.Load())
		}
	}
}

func TestDoTokenInContext(t *testing.T) {
	e := idempotency.NewEngine(idempotency.NewInMemoryStore())
	var seen idempotency.Token
	res, err := e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "alice", Fingerprint: ""}, func(ctx context.Context) (idempotency.Response, error) {
		seen, _ = idempotency.TokenFromContext(ctx)
		return idempotency.Response{Status: 200}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen.Key != "k" || seen.Identity != "alice" || seen.Fence == 0 || seen.Fence != res.Fence {
		t.Fatalf("token in context = %+v, result fence %d", seen, res.Fence)
	}
}

func TestDoSeedStoreExactlyOnceUnderRace(t *testing.T) {
	e := idempotency.NewEngine(seedOnly{idempotency.NewInMemoryStore()}, idempotency.WithWait(true))
	var c counter
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 64 {
		wg.Go(func() {
			<-start
			res, err := e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "", Fingerprint: "fp"}, c.fn(200, "once"))
			if err != nil || string(res.Response.Body) != "once" {
				t.Errorf("Do = (%+v, %v)", res, err)
			}
		})
	}
	close(start)
	wg.Wait()
	if got := c.n.Load(); got != 1 {
		t.Fatalf("seed store: command ran %d times under 64 racing calls, want 1", got)
	}
}

//go:noinline
func panickingHandler(context.Context) (idempotency.Response, error) { panic("deep bug") }

// The handler's panic keeps its own stack: the engine releases the key
// without recovering and re-raising, so the frame that panicked is still on
// the stack a recover sees.
func TestDoPanicKeepsStack(t *testing.T) {
	for name, newStore := range stores() {
		t.Run(name, func(t *testing.T) {
			var stack string
			func() {
				defer func() {
					if recover() != nil {
						stack = string(debug.Stack())
					}
				}()
				_, _ = idempotency.NewEngine(newStore()).Do(context.Background(), idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, panickingHandler)
			}()
			if !strings.Contains(stack, "panickingHandler") {
				t.Fatalf("stack at recover lacks the panicking frame:\n%s", stack)
			}
		})
	}
}

func TestDoCancelledBeforeStart(t *testing.T) {
	for name, newStore := range stores() {
		t.Run(name, func(t *testing.T) {
			s := newStore()
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			var c counter
			if _, err := idempotency.NewEngine(s).Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, c.fn(200, "x")); !errors.Is(err, context.Canceled) || c.n.Load() != 0 {
				t.Fatalf("Do with an ended context = %v (ran %d), want context.Canceled without running", err, c.n.Load())
			}
			if cs, ok := s.(idempotency.ClaimStore); ok {
				cl, err := cs.Begin(context.Background(), "k", "", idempotency.ClaimRequest{Owner: "o", Lease: time.Second})
				if err != nil || cl.Status != idempotency.ClaimAcquired {
					t.Fatalf("Begin after the cancelled Do = (%v, %v), want the key untouched", cl.Status, err)
				}
			}
		})
	}
}

// flakyComplete fails the first fails calls of Complete as an unreachable
// store would, then completes for real.
type flakyComplete struct {
	*idempotency.InMemoryStore
	fails int
	calls atomic.Int64
	err   error // what the failing calls return; ErrStoreUnavailable-wrapped by default
}

func (s *flakyComplete) Complete(ctx context.Context, tok idempotency.Token, c idempotency.Cached) error {
	if n := s.calls.Add(1); int(n) <= s.fails {
		if s.err != nil {
			return s.err
		}
		return fmt.Errorf("redis: i/o timeout: %w", idempotency.ErrStoreUnavailable)
	}
	return s.InMemoryStore.Complete(ctx, tok, c)
}

func TestDoRetriesCompleteWhileTheStoreFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &flakyComplete{InMemoryStore: idempotency.NewInMemoryStore(), fails: 5}
		e := idempotency.NewEngine(s, idempotency.WithLease(30*time.Second))
		var c counter
		res, err := e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, c.fn(201, "made"))
		if err != nil || !res.Recorded || res.RecordErr != nil {
			t.Fatalf("Do over a store failing 5 Completes = (%+v, %v), want recorded after retries", res, err)
		}
		if got := s.calls.Load(); got != 6 {
			t.Errorf("Complete called %d times, want 6", got)
		}
		res, err = e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, c.fn(201, "again"))
		if err != nil || !res.Replayed || string(res.Response.Body) != "made" || c.n.Load() != 1 {
			t.Fatalf("retry = (%+v, %v), ran %d; want a replay and one execution", res, err, c.n.Load())
		}
	})
}

func TestDoGivesUpCompletingWhenTheLeaseEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &flakyComplete{InMemoryStore: idempotency.NewInMemoryStore(), fails: 1 << 30}
		e := idempotency.NewEngine(s, idempotency.WithLease(6*time.Second))
		start := time.Now()
		res, err := e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, (&counter{}).fn(200, "x"))
		if err != nil || res.Recorded || !errors.Is(res.RecordErr, idempotency.ErrStoreUnavailable) {
			t.Fatalf("Do = (%+v, %v), want the response, not recorded, with a store error", res, err)
		}
		// Renew works on this store, so the heartbeat keeps the claim: the
		// engine still gives up after one lease length of failures.
		if took := time.Since(start); took > 6*time.Second || took < 5*time.Second {
			t.Errorf("gave up after %v, want within the 6s lease and not long before", took)
		}
		if n := s.calls.Load(); n < 5 {
			t.Errorf("Complete tried %d times, want retries with backoff", n)
		}
	})
}

func TestDoDoesNotRetryALostLease(t *testing.T) {
	s := &flakyComplete{InMemoryStore: idempotency.NewInMemoryStore(), fails: 1 << 30, err: idempotency.ErrLeaseLost}
	res, err := idempotency.NewEngine(s).Do(context.Background(), idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, (&counter{}).fn(200, "x"))
	if err != nil || res.Recorded || !errors.Is(res.RecordErr, idempotency.ErrLeaseLost) {
		t.Fatalf("Do = (%+v, %v), want not recorded with ErrLeaseLost", res, err)
	}
	if got := s.calls.Load(); got != 1 {
		t.Errorf("Complete called %d times after ErrLeaseLost, want 1", got)
	}
}

// slowBegin answers Begin only after the lease it was asked for, while late is set.
type slowBegin struct {
	*idempotency.InMemoryStore
	late *atomic.Bool
}

func (s slowBegin) Peek(context.Context, string, string) (*idempotency.Cached, bool) {
	return nil, false
}

func (s slowBegin) Begin(ctx context.Context, key, identity string, req idempotency.ClaimRequest) (idempotency.Claim, error) {
	cl, err := s.InMemoryStore.Begin(ctx, key, identity, req)
	if s.late.Load() {
		time.Sleep(req.Lease) // in the bubble: the clock moves, nothing waits
	}
	return cl, err
}

// A claim whose Begin answered after its lease ran out may be someone
// else's by then: the command does not start, the claim is released and
// Do fails like a store failure (503 in the adapters).
func TestDoLateClaimDoesNotRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var late atomic.Bool
		late.Store(true)
		st := slowBegin{idempotency.NewInMemoryStore(idempotency.WithClock(time.Now)), &late}
		e := idempotency.NewEngine(st, idempotency.WithLease(time.Second))
		ran := 0
		fn := func(context.Context) (idempotency.Response, error) {
			ran++
			return idempotency.Response{Status: 201}, nil
		}
		_, err := e.Do(context.Background(), idempotency.Request{Key: "k"}, fn)
		var se *idempotency.StoreError
		if !errors.As(err, &se) || se.Op != "begin" || !errors.Is(err, idempotency.ErrLeaseExpired) || !errors.Is(err, idempotency.ErrStoreUnavailable) {
			t.Fatalf("Do = %v; want a begin StoreError wrapping ErrLeaseExpired", err)
		}
		if ran != 0 {
			t.Fatalf("the command ran %d times after a late claim", ran)
		}
		late.Store(false)
		if res, err := e.Do(context.Background(), idempotency.Request{Key: "k"}, fn); err != nil || res.Replayed || ran != 1 {
			t.Fatalf("retry = %+v, %v (ran %d); want a fresh run: the late claim was released", res, err, ran)
		}
	})
}
