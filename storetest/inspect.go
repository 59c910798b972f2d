package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
)

// The cases of idempotency.Inspector, run for stores that implement it.

func (s *suite) runInspector(t *testing.T) {
	t.Run("Inspect", func(t *testing.T) {
		t.Run("RecordID", s.testRecordID)
		t.Run("States", s.testInspectStates)
		t.Run("Expired", s.testInspectExpired)
		t.Run("InvalidID", s.testInspectInvalidID)
		t.Run("PurgeCompleted", s.testPurgeCompleted)
		t.Run("PurgeIsTakeover", s.testPurgeInFlight)
		t.Run("PurgeAbsent", s.testPurgeAbsent)
		t.Run("Claims", s.testClaims)
		t.Run("StuckClaimFoundAndPurged", s.testStuckClaim)
	})
}

func (s *suite) inspector(t *testing.T) idempotency.Inspector {
	t.Helper()
	return s.newStore(t).(idempotency.Inspector)
}

// slack is how far a store's clock may be from this process's: none on the
// injected clock, a second for a server's.
func (s *suite) slack() time.Duration {
	if s.cfg.clock != nil {
		return 0
	}
	return time.Second
}

func (s *suite) now() time.Time {
	if s.cfg.clock != nil {
		return s.cfg.clock.Now()
	}
	return time.Now()
}

func mustInspect(t *testing.T, st idempotency.Inspector, id string) idempotency.RecordInfo {
	t.Helper()
	info, err := st.Inspect(context.Background(), id)
	if err != nil {
		t.Fatalf("Inspect(%q) = %v", id, err)
	}
	if info.ID != id {
		t.Errorf("Inspect(%q).ID = %q, want the ID asked for", id, info.ID)
	}
	return info
}

func wantState(t *testing.T, what string, info idempotency.RecordInfo, want idempotency.RecordState) {
	t.Helper()
	if info.State != want {
		t.Fatalf("%s: state = %v, want %v (%+v)", what, info.State, want, info)
	}
}

// within reports whether got is within slack of [lo, hi].
func within(got, lo, hi time.Time, slack time.Duration) bool {
	return !got.Before(lo.Add(-slack)) && !got.After(hi.Add(slack))
}

func (s *suite) testRecordID(t *testing.T) {
	st := s.inspector(t)
	ids := map[string]string{}
	for _, name := range [][2]string{{"k", "alice"}, {"k", "bob"}, {"a:b", "c"}, {"a", "b:c"}, {"a.b", "c"}, {"a", "b.c"}, {"k", ""}, {"ключ", "alice"}} {
		id := st.RecordID(name[0], name[1])
		if id == "" {
			t.Fatalf("RecordID(%q, %q) is empty", name[0], name[1])
		}
		for _, r := range id {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' || r == ':') {
				t.Fatalf("RecordID(%q, %q) = %q holds %q, not safe in a URL", name[0], name[1], id, r)
			}
		}
		if again := st.RecordID(name[0], name[1]); again != id {
			t.Fatalf("RecordID(%q, %q) = %q, then %q", name[0], name[1], id, again)
		}
		if prev, dup := ids[id]; dup {
			t.Fatalf("RecordID(%q, %q) = %q, the ID of %s too", name[0], name[1], id, prev)
		}
		ids[id] = name[0] + "/" + name[1]
	}
}

func (s *suite) testInspectStates(t *testing.T) {
	st := s.inspector(t)
	ctx := context.Background()
	wantState(t, "never used", mustInspect(t, st, st.RecordID("k", "alice")), idempotency.RecordAbsent)

	before := s.now()
	tok := s.acquire(t, st, "k", "owner-1")
	after := s.now()
	id := st.RecordID("k", "alice")
	info := mustInspect(t, st, id)
	wantState(t, "claimed", info, idempotency.RecordInFlight)
	if info.Owner != "owner-1" || info.Fence != tok.Fence {
		t.Errorf("in flight: owner %q fence %d, want owner-1 and the token's fence %d", info.Owner, info.Fence, tok.Fence)
	}
	if !within(info.ClaimedAt, before, after, s.slack()) {
		t.Errorf("in flight: claimed at %v, want between %v and %v", info.ClaimedAt, before, after)
	}
	if info.LeaseLeft <= 0 || info.LeaseLeft > s.lease+s.slack() {
		t.Errorf("in flight: lease left %v, want in (0, %v]", info.LeaseLeft, s.lease)
	}
	if info.Status != 0 || info.Size != 0 || !info.StoredAt.IsZero() {
		t.Errorf("in flight: %+v has fields of a completed record", info)
	}
	if other := mustInspect(t, st, st.RecordID("k", "bob")); other.State != idempotency.RecordAbsent {
		t.Errorf("another identity's record = %+v, want absent", other)
	}

	c := idempotency.Cached{Status: 201, WireBody: []byte(`{"ok":true}`), Header: map[string][]string{"Etag": {`"v1"`}}, TTL: s.ttl}
	before = s.now()
	mustComplete(t, st, tok, c)
	after = s.now()
	info = mustInspect(t, st, id)
	wantState(t, "completed", info, idempotency.RecordCompleted)
	if want := int64(len(c.WireBody) + len("Etag") + len(`"v1"`)); info.Status != 201 || info.Size != want {
		t.Errorf("completed: status %d size %d, want 201 and %d (body and header bytes)", info.Status, info.Size, want)
	}
	if !within(info.StoredAt, before, after, s.slack()) {
		t.Errorf("completed: stored at %v, want between %v and %v", info.StoredAt, before, after)
	}
	if got := info.ExpiresAt.Sub(info.StoredAt); got < s.ttl-time.Millisecond || got > s.ttl+time.Millisecond {
		t.Errorf("completed: expires %v after it was stored, want the TTL %v", got, s.ttl)
	}
	if info.Fingerprint != "fp" {
		t.Errorf("completed: fingerprint %q, want the claim's %q", info.Fingerprint, "fp")
	}

	tomb := s.acquire(t, st, "t", "owner-1")
	mustComplete(t, st, tomb, idempotency.Cached{Status: 200, Tombstone: true, TTL: s.ttl})
	info = mustInspect(t, st, st.RecordID("t", "alice"))
	wantState(t, "tombstone", info, idempotency.RecordTombstone)
	if info.ExpiresAt.IsZero() || info.StoredAt.IsZero() {
		t.Errorf("tombstone: %+v, want when it was stored and when it expires", info)
	}

	rel := s.acquire(t, st, "r", "owner-1")
	if err := st.Release(ctx, rel); err != nil {
		t.Fatal(err)
	}
	wantState(t, "released", mustInspect(t, st, st.RecordID("r", "alice")), idempotency.RecordAbsent)

	// A record written by Store, outside the protocol.
	mustStore(t, st, "seed", "alice", idempotency.Cached{Status: 200, WireBody: []byte("seeded"), TTL: s.ttl})
	info = mustInspect(t, st, st.RecordID("seed", "alice"))
	wantState(t, "stored", info, idempotency.RecordCompleted)
	if info.Status != 200 || info.Size != int64(len("seeded")) {
		t.Errorf("stored: %+v, want status 200, size 6", info)
	}
}

func (s *suite) testInspectExpired(t *testing.T) {
	st := s.inspector(t)
	s.acquire(t, st, "claim", "owner-1")
	tok := s.acquire(t, st, "done", "owner-1")
	mustComplete(t, st, tok, idempotency.Cached{Status: 200, WireBody: []byte("x"), TTL: s.lease / 2})
	s.wait(s.lease + s.margin)
	wantState(t, "claim past its lease", mustInspect(t, st, st.RecordID("claim", "alice")), idempotency.RecordAbsent)
	wantState(t, "record past its TTL", mustInspect(t, st, st.RecordID("done", "alice")), idempotency.RecordAbsent)
	claims, err := st.Claims(context.Background(), 0, 0)
	if err != nil || len(claims) != 0 {
		t.Fatalf("Claims after every lease ran out = %+v, %v; want none", claims, err)
	}
}

func (s *suite) testInspectInvalidID(t *testing.T) {
	st := s.inspector(t)
	for _, id := range []string{"", "not an id", "\x00"} {
		if _, err := st.Inspect(context.Background(), id); !errors.Is(err, idempotency.ErrInvalidArgument) {
			t.Errorf("Inspect(%q) = %v, want ErrInvalidArgument", id, err)
		}
		if _, err := st.Purge(context.Background(), id); !errors.Is(err, idempotency.ErrInvalidArgument) {
			t.Errorf("Purge(%q) = %v, want ErrInvalidArgument", id, err)
		}
	}
}

func (s *suite) testPurgeCompleted(t *testing.T) {
	st := s.inspector(t)
	ctx := context.Background()
	tok := s.acquire(t, st, "k", "owner-1")
	mustComplete(t, st, tok, response("buggy"))
	id := st.RecordID("k", "alice")
	was, err := st.Purge(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, "purged record", was, idempotency.RecordCompleted)
	if was.ID != id || was.Status != 201 {
		t.Errorf("Purge returned %+v, want the record it deleted", was)
	}
	wantState(t, "after purge", mustInspect(t, st, id), idempotency.RecordAbsent)
	mustComplete(t, st, s.claimAfterPurge(t, st, tok, "fp2"), response("fixed"))
	wantHit(t, st, "k", "alice", "fixed")
}

func (s *suite) testPurgeInFlight(t *testing.T) {
	st := s.inspector(t)
	ctx := context.Background()
	old := s.acquire(t, st, "k", "owner-1")
	id := st.RecordID("k", "alice")
	was, err := st.Purge(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, "purged claim", was, idempotency.RecordInFlight)
	if was.Owner != "owner-1" || was.Fence != old.Fence {
		t.Errorf("Purge returned %+v, want owner-1's claim, fence %d", was, old.Fence)
	}
	// The purge took the claim over: its holder can do nothing with it.
	wantErr(t, "purged holder's Renew", st.Renew(ctx, old, s.lease), idempotency.ErrLeaseLost)
	wantErr(t, "purged holder's Complete", st.Complete(ctx, old, response("stale")), idempotency.ErrLeaseLost)
	wantErr(t, "purged holder's Release", st.Release(ctx, old), idempotency.ErrLeaseLost)
	mustComplete(t, st, s.claimAfterPurge(t, st, old, "fp"), response("new holder"))
	wantErr(t, "purged holder's Complete after the new one", st.Complete(ctx, old, response("stale")), idempotency.ErrLeaseLost)
	wantHit(t, st, "k", "alice", "new holder")
}

// claimAfterPurge checks that the purged record of ("k", "alice") is gone
// and that owner-2's claim of it, with fingerprint fp, is acquired with a
// fence greater than purged's; it returns owner-2's token.
func (s *suite) claimAfterPurge(t *testing.T, st idempotency.Inspector, purged idempotency.Token, fp string) idempotency.Token {
	t.Helper()
	wantMiss(t, st, "k", "alice")
	cl := s.begin(t, st, "k", "alice", "owner-2", fp)
	wantStatus(t, cl, idempotency.ClaimAcquired)
	if cl.Token.Fence <= purged.Fence {
		t.Fatalf("fence after purge = %d, want > %d", cl.Token.Fence, purged.Fence)
	}
	return cl.Token
}

func (s *suite) testPurgeAbsent(t *testing.T) {
	st := s.inspector(t)
	id := st.RecordID("never", "alice")
	was, err := st.Purge(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	wantState(t, "purge of nothing", was, idempotency.RecordAbsent)
	cl := s.begin(t, st, "never", "alice", "owner-1", "fp")
	wantStatus(t, cl, idempotency.ClaimAcquired)
	mustComplete(t, st, cl.Token, response("x"))
}

func (s *suite) testClaims(t *testing.T) {
	st := s.inspector(t)
	ctx := context.Background()
	list := func(olderThan time.Duration, limit int) []idempotency.RecordInfo {
		t.Helper()
		claims, err := st.Claims(ctx, olderThan, limit)
		if err != nil {
			t.Fatalf("Claims(%v, %d) = %v", olderThan, limit, err)
		}
		return claims
	}
	if got := list(0, 0); len(got) != 0 {
		t.Fatalf("Claims of an empty store = %+v", got)
	}
	gap := s.lease / 2
	a := s.acquire(t, st, "a", "owner-a")
	done := s.acquire(t, st, "done", "owner-1")
	mustComplete(t, st, done, response("x"))
	rel := s.acquire(t, st, "rel", "owner-1")
	if err := st.Release(ctx, rel); err != nil {
		t.Fatal(err)
	}
	s.wait(gap)
	bAt := time.Now()
	b := s.acquire(t, st, "b", "owner-b")

	all := list(0, 0)
	if len(all) != 2 || all[0].ID != st.RecordID("a", "alice") || all[1].ID != st.RecordID("b", "alice") {
		t.Fatalf("Claims(0) = %+v, want a's claim then b's, oldest first (and no completed or released record)", all)
	}
	for i, tok := range []idempotency.Token{a, b} {
		if c := all[i]; c.State != idempotency.RecordInFlight || c.Owner != tok.Owner || c.Fence != tok.Fence || c.LeaseLeft <= 0 {
			t.Errorf("Claims(0)[%d] = %+v, want %s's claim in flight, fence %d", i, c, tok.Owner, tok.Fence)
		}
	}
	if !all[0].ClaimedAt.Before(all[1].ClaimedAt) {
		t.Errorf("claimed at %v then %v, want a before b", all[0].ClaimedAt, all[1].ClaimedAt)
	}
	if got := list(0, 1); len(got) != 1 || got[0].ID != all[0].ID {
		t.Errorf("Claims(0, limit 1) = %+v, want a's claim alone", got)
	}
	old := list(gap/2, 0)
	if len(old) == 0 || old[0].ID != all[0].ID {
		t.Fatalf("Claims(%v) = %+v, want a's claim first", gap/2, old)
	}
	// b is listed too only if this machine stalled that long since it claimed.
	if len(old) > 1 && time.Since(bAt) < gap/2-s.slack() {
		t.Errorf("Claims(%v) = %+v lists b's claim, made %v ago", gap/2, old, time.Since(bAt))
	}
	if got := list(time.Hour, 0); len(got) != 0 {
		t.Errorf("Claims(1h) = %+v, want none", got)
	}
	for _, tok := range []idempotency.Token{a, b} {
		if err := st.Release(ctx, tok); err != nil {
			t.Fatal(err)
		}
	}
	if got := list(0, 0); len(got) != 0 {
		t.Errorf("Claims after both were released = %+v", got)
	}
}

// testStuckClaim is the operator's case: a claim held too long is found in
// Claims, purged by the ID listed, and its holder refused afterwards.
func (s *suite) testStuckClaim(t *testing.T) {
	st := s.inspector(t)
	ctx := context.Background()
	stuck := s.acquire(t, st, "order-42", "owner-stuck")
	s.wait(s.lease / 2)
	// The holder is alive: it keeps renewing.
	if err := st.Renew(ctx, stuck, s.lease); err != nil {
		t.Fatal(err)
	}
	claims, err := st.Claims(ctx, s.lease/4, 0)
	if err != nil || len(claims) != 1 || claims[0].Owner != "owner-stuck" {
		t.Fatalf("Claims = %+v, %v; want the stuck claim", claims, err)
	}
	if got := s.begin(t, st, "order-42", "alice", "owner-retry", "fp"); got.Status != idempotency.ClaimInFlight {
		t.Fatalf("retry before the purge: %v, want in flight", got.Status)
	}
	if _, err := st.Purge(ctx, claims[0].ID); err != nil {
		t.Fatal(err)
	}
	cl := s.begin(t, st, "order-42", "alice", "owner-retry", "fp")
	wantStatus(t, cl, idempotency.ClaimAcquired)
	mustComplete(t, st, cl.Token, response("retried"))
	wantErr(t, "stuck holder's Renew", st.Renew(ctx, stuck, s.lease), idempotency.ErrLeaseLost)
	wantErr(t, "stuck holder's Complete", st.Complete(ctx, stuck, response("late")), idempotency.ErrLeaseLost)
	wantHit(t, st, "order-42", "alice", "retried")
}
