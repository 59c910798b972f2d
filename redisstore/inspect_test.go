package redisstore

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
)

// TestClaimsUnderSharedPrefix: Claims lists the claims under its own prefix
// alone, glob characters in the prefix included, and passes over keys under
// it that are not records: other types, other names, other values.
func TestClaimsUnderSharedPrefix(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	base := newPrefix(t, c)
	st := New(c, WithPrefix(base+`t[1]*?\:`))
	// What the prefix would match as a glob, unescaped.
	other := New(c, WithPrefix(base+`t1x\:`))
	mine, err := st.Begin(ctx, "a", "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Begin(ctx, "b", "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Minute}); err != nil {
		t.Fatal(err)
	}
	hex := strings.Repeat("ab", 32)
	prefix := st.prefix
	for _, k := range []string{prefix + "plain", prefix + "{not-hex}", prefix + "{" + hex + "}x", prefix + "{" + strings.ToUpper(hex) + "}"} {
		if err := c.Set(ctx, k, "F"+strings.Repeat("\x00", 40), time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Set(ctx, prefix+"{"+strings.Repeat("cd", 32)+"}", "not a record", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.HSet(ctx, prefix+"{"+strings.Repeat("ef", 32)+"}", "f", "v").Err(); err != nil {
		t.Fatal(err)
	}
	claims, err := st.Claims(ctx, 0, 0)
	if err != nil {
		t.Fatalf("Claims = %v", err)
	}
	if len(claims) != 1 || claims[0].ID != st.RecordID("a", "alice") || claims[0].Fence != mine.Token.Fence {
		t.Fatalf("Claims = %+v, want the one claim of %q", claims, prefix)
	}
}

// TestPurgeFenceAheadOfClock: a purged record whose fence is ahead of the
// server's clock is kept, with no holder, until the clock passes the
// fence, so that the next claim still draws a greater fence; the purged
// holder can do nothing with its token.
func TestPurgeFenceAheadOfClock(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	st := New(c, WithPrefix(newPrefix(t, c)))
	rk, id := st.recordKey("k", "alice"), st.RecordID("k", "alice")
	begin := func(owner string) idempotency.Token { t.Helper(); return acquire(t, st, "k", owner) }
	tok := fenceAhead(t, c, st, begin("owner-1"))
	was, err := st.Purge(ctx, id)
	if err != nil || was.State != idempotency.RecordInFlight || was.Fence != tok.Fence {
		t.Fatalf("Purge = (%+v, %v), want the claim of fence %d", was, err, tok.Fence)
	}
	if ttl, err := c.PTTL(ctx, rk).Result(); err != nil || ttl < 59*time.Minute {
		t.Fatalf("purged record with a fence an hour ahead: PTTL = (%v, %v), want it kept about an hour", ttl, err)
	}
	if info, err := st.Inspect(ctx, id); err != nil || info.State != idempotency.RecordAbsent {
		t.Fatalf("Inspect after Purge = (%+v, %v), want absent", info, err)
	}
	for name, err := range map[string]error{
		"Complete": st.Complete(ctx, tok, idempotency.Cached{Status: 200}),
		"Renew":    st.Renew(ctx, tok, time.Minute),
		"Release":  st.Release(ctx, tok),
	} {
		if !errors.Is(err, idempotency.ErrLeaseLost) {
			t.Errorf("purged holder's %s = %v, want ErrLeaseLost", name, err)
		}
	}
	next := begin("owner-2")
	if next.Fence != tok.Fence+1 {
		t.Fatalf("fence after Purge = %d, want %d", next.Fence, tok.Fence+1)
	}
	// A completed record, purged the same way, is not completed again by
	// a repeat of the Complete that wrote it.
	if err := st.Complete(ctx, next, idempotency.Cached{Status: 200}); err != nil {
		t.Fatal(err)
	}
	if was, err := st.Purge(ctx, id); err != nil || was.State != idempotency.RecordCompleted || was.Fence != next.Fence {
		t.Fatalf("Purge = (%+v, %v), want the completed record of fence %d", was, err, next.Fence)
	}
	if err := st.Complete(ctx, next, idempotency.Cached{Status: 200}); !errors.Is(err, idempotency.ErrLeaseLost) {
		t.Errorf("Complete repeated after Purge = %v, want ErrLeaseLost", err)
	}
	if got, ok := st.Lookup(ctx, "k", "alice"); ok {
		t.Errorf("Lookup after Purge = %+v, want a miss", got)
	}
	if last := begin("owner-3"); last.Fence != next.Fence+1 {
		t.Fatalf("fence after the second Purge = %d, want %d", last.Fence, next.Fence+1)
	}
}
