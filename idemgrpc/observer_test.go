package idemgrpc_test

import (
	"context"
	"sync"
	"testing"

	"github.com/idemkit/idempotency"
)

// TestObserver: every keyed call goes through the engine, so its observer
// sees each outcome.
func TestObserver(t *testing.T) {
	var mu sync.Mutex
	var outcomes []idempotency.Outcome
	f := newFixture(t, []idempotency.EngineOption{idempotency.WithObserver(&idempotency.Observer{
		Done: func(_ context.Context, x idempotency.Execution) {
			mu.Lock()
			outcomes = append(outcomes, x.Outcome)
			mu.Unlock()
		},
	})})
	ctx := keyed(t.Context(), "key-1", "Bearer alice")
	create(ctx, f.cc, "gear")
	create(ctx, f.cc, "gear")
	create(ctx, f.cc, "sprocket")
	mu.Lock()
	defer mu.Unlock()
	want := []idempotency.Outcome{idempotency.OutcomeExecuted, idempotency.OutcomeReplayed, idempotency.OutcomeMismatch}
	if !equal(outcomes, want) {
		t.Errorf("observer saw %v, want %v", outcomes, want)
	}
}
