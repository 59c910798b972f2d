package idempotency_test

import (
	"context"
	"errors"
	"testing"

	"github.com/idemkit/idempotency"
)

type ctxKey struct{}

// With WithDetachedRun, a command that has started runs to its end and is
// recorded even when the caller's context ends; it keeps the caller's values.
func TestDoDetachedRunOutlivesCaller(t *testing.T) {
	s := idempotency.NewInMemoryStore()
	e := idempotency.NewEngine(s, idempotency.WithDetachedRun(true))
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
	var sawDone, sawValue, sawToken bool
	res, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "id", Fingerprint: "fp"}, func(run context.Context) (idempotency.Response, error) {
		cancel() // the caller leaves mid-command
		sawDone = run.Err() != nil
		sawValue = run.Value(ctxKey{}) == "v"
		_, sawToken = idempotency.TokenFromContext(run)
		if _, ok := run.Deadline(); ok {
			t.Error("a detached command has a deadline")
		}
		return idempotency.Response{Status: 201, Body: []byte(`{}`)}, nil
	})
	if err != nil || !res.Recorded {
		t.Fatalf("Do = (%+v, %v), want recorded", res, err)
	}
	if sawDone || !sawValue || !sawToken {
		t.Errorf("command context: ended %v (want false), value %v, token %v (want true)", sawDone, sawValue, sawToken)
	}
	if _, ok := s.Lookup(context.Background(), "k", "id"); !ok {
		t.Error("response not recorded")
	}

	// Without the option, the command's context ends with the caller's.
	e = idempotency.NewEngine(idempotency.NewInMemoryStore())
	ctx, cancel = context.WithCancel(context.Background())
	_, _ = e.Do(ctx, idempotency.Request{Key: "k", Identity: "id", Fingerprint: "fp"}, func(run context.Context) (idempotency.Response, error) {
		cancel()
		if run.Err() == nil {
			t.Error("an attached command's context did not end with the caller's")
		}
		return idempotency.Response{Status: 201}, nil
	})
}

// cancelOnBegin ends the caller's context while its claim is being made.
type cancelOnBegin struct {
	*idempotency.InMemoryStore
	cancel context.CancelFunc
}

func (s cancelOnBegin) Begin(ctx context.Context, key, identity string, req idempotency.ClaimRequest) (idempotency.Claim, error) {
	s.cancel()
	return s.InMemoryStore.Begin(ctx, key, identity, req)
}

// A caller that left before its claim was acquired runs nothing, and the
// claim is released at once.
func TestDoDetachedRunCallerGoneBeforeStart(t *testing.T) {
	mem := idempotency.NewInMemoryStore()
	ctx, cancel := context.WithCancel(context.Background())
	e := idempotency.NewEngine(cancelOnBegin{mem, cancel}, idempotency.WithDetachedRun(true))
	var c counter
	_, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "id", Fingerprint: "fp"}, c.fn(201, `{}`))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Do = %v, want context.Canceled", err)
	}
	if c.n.Load() != 0 {
		t.Fatalf("the command ran %d times, want 0", c.n.Load())
	}
	cl, err := mem.Begin(context.Background(), "k", "id", idempotency.ClaimRequest{Owner: "other", Lease: idempotency.DefaultLease})
	if err != nil || cl.Status != idempotency.ClaimAcquired {
		t.Fatalf("Begin after the abandoned claim = (%v, %v), want acquired", cl.Status, err)
	}
}

// A replay from an InMemoryStore takes no claim request: no owner id, no
// allocation at all.
func TestEngineReplayAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector; run without -race")
	}
	e := idempotency.NewEngine(idempotency.NewInMemoryStore())
	var c counter
	ctx := context.Background()
	if _, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "id", Fingerprint: "fp"}, c.fn(201, `{}`)); err != nil {
		t.Fatal(err)
	}
	n := testing.AllocsPerRun(100, func() {
		if res, err := e.Do(ctx, idempotency.Request{Key: "k", Identity: "id", Fingerprint: "fp"}, c.fn(201, `{}`)); err != nil || !res.Replayed {
			t.Fatalf("Do = (%+v, %v), want a replay", res, err)
		}
	})
	if n != 0 {
		t.Errorf("Engine.Do replay: %v allocations, want 0", n)
	}
	if c.n.Load() != 1 {
		t.Errorf("the command ran %d times, want 1", c.n.Load())
	}
}
