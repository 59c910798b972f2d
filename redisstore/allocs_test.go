//go:build !race

// The race detector changes allocation counts (sync.Pool drops items on
// purpose), so this test does not run under it.

package redisstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
)

// TestAllocs holds the "≤ 10 allocations per operation" for a
// replay and for a claim (Begin on a fresh key, then Complete), go-redis's
// own included: its pool allocates 3 times per command to check the
// connection, and each command allocates itself and its reply.
func TestAllocs(t *testing.T) {
	c := newClient(t)
	st := New(c, WithPrefix(newPrefix(t, c)))
	ctx := context.Background()
	req := idempotency.ClaimRequest{Owner: "o", Fingerprint: "fp", Lease: time.Minute}
	resp := idempotency.Cached{Status: 201, WireBody: make([]byte, 256), TTL: time.Hour}
	const runs = 50
	keys := make([]string, runs+1) // AllocsPerRun runs once more to warm up
	for i := range keys {
		keys[i] = fmt.Sprint("fresh-", i)
	}
	toks := make([]idempotency.Token, 0, len(keys))
	acquire := testing.AllocsPerRun(runs, func() {
		cl, err := st.Begin(ctx, keys[len(toks)], "alice", req)
		if err != nil || cl.Status != idempotency.ClaimAcquired {
			t.Fatalf("Begin = (%v, %v), want acquired", cl.Status, err)
		}
		toks = append(toks, cl.Token)
	})
	done := 0
	complete := testing.AllocsPerRun(runs, func() {
		if err := st.Complete(ctx, toks[done], resp); err != nil {
			t.Fatalf("Complete = %v", err)
		}
		done++
	})
	replay := testing.AllocsPerRun(runs, func() {
		cl, err := st.Begin(ctx, keys[0], "alice", req)
		if err != nil || cl.Status != idempotency.ClaimReplay {
			t.Fatalf("Begin = (%v, %v), want replay", cl.Status, err)
		}
	})
	t.Logf("allocations: Begin acquiring %v, Complete %v, Begin replaying %v", acquire, complete, replay)
	if acquire+complete > 10 {
		t.Errorf("Begin acquiring + Complete = %v + %v allocations, want ≤ 10", acquire, complete)
	}
	if replay > 10 {
		t.Errorf("Begin replaying = %v allocations, want ≤ 10", replay)
	}
}
