// Package storetest is the conformance suite every idempotency.Store must
// pass. A backend runs it with one call:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(tb testing.TB) idempotency.Store { return newIsolatedStore(tb) })
//	}
//
// The factory returns a fresh, empty store that sees no other test's data.
// Stores that implement idempotency.ClaimStore are also checked against every
// transition of the claim protocol, lease expiry, stale tokens and concurrent
// claims, and those that implement idempotency.Inspector against inspection
// and purge; the cases are the contracts written on idempotency.Store,
// idempotency.ClaimStore and idempotency.Inspector.
//
// Time: a store that takes an injected clock is run with WithClock, and the
// suite advances the clock instead of waiting. Other stores (those that read
// their server's clock) are run in real time, with leases and TTLs of a few
// hundred milliseconds and real waits for them to run out.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
)

// Option configures Run.
type Option func(*config)

type config struct {
	clock    *Clock
	replicas func(tb testing.TB, n int) []idempotency.Store
}

// WithClock tells the suite that the stores built by the factory read c as
// their clock, so lease and TTL expiry is tested by advancing c. Without it
// the suite waits in real time.
func WithClock(c *Clock) Option { return func(cfg *config) { cfg.clock = c } }

// WithReplicas enables the multi-replica cases: newReplicas returns n stores,
// each with its own client or connection pool, that share one isolated
// namespace, as n replicas of a service sharing one backend would.
func WithReplicas(newReplicas func(tb testing.TB, n int) []idempotency.Store) Option {
	return func(cfg *config) { cfg.replicas = newReplicas }
}

// suite holds what the cases share.
type suite struct {
	cfg      config
	newStore func(tb testing.TB) idempotency.Store
	lease    time.Duration // a lease long enough not to run out by itself during a case
	ttl      time.Duration
	margin   time.Duration // added to a wait so that expiry has surely happened
}

// Run runs the conformance suite against stores made by newStore.
func Run(t *testing.T, newStore func(tb testing.TB) idempotency.Store, opts ...Option) {
	s := &suite{newStore: newStore}
	for _, o := range opts {
		o(&s.cfg)
	}
	if s.cfg.clock != nil {
		s.lease, s.ttl, s.margin = 10*time.Second, time.Hour, time.Millisecond
	} else {
		// Wide enough that a loaded machine (a stalled goroutine, a slow
		// server) does not turn a wait into a flake.
		s.lease, s.ttl, s.margin = time.Second, 1200*time.Millisecond, 300*time.Millisecond
	}

	t.Run("Seed", func(t *testing.T) {
		t.Run("RoundTrip", s.testRoundTrip)
		t.Run("Miss", s.testMiss)
		t.Run("Overwrite", s.testOverwrite)
		t.Run("IdentityScoping", s.testIdentityScoping)
		t.Run("NoKeyIdentityAmbiguity", s.testNoAmbiguity)
		t.Run("DefaultsFilled", s.testDefaultsFilled)
		t.Run("TTLExpiry", s.testTTLExpiry)
		t.Run("InvalidKey", s.testStoreInvalidKey)
		t.Run("ConcurrentUse", s.testConcurrentUse)
	})
	if _, ok := newStore(t).(idempotency.ClaimStore); !ok {
		t.Logf("store does not implement idempotency.ClaimStore: protocol cases skipped")
		return
	}
	t.Run("Claim", func(t *testing.T) {
		t.Run("Acquire", s.testAcquire)
		t.Run("InFlight", s.testInFlight)
		t.Run("SameOwnerReacquires", s.testSameOwner)
		t.Run("CompleteThenReplay", s.testCompleteReplay)
		t.Run("CompleteIsIdempotent", s.testCompleteIdempotent)
		t.Run("TombstoneAndHeaders", s.testTombstone)
		t.Run("Mismatch", s.testMismatch)
		t.Run("EmptyFingerprintNeverMismatches", s.testEmptyFingerprint)
		t.Run("Release", s.testRelease)
		t.Run("StaleTokens", s.testStaleTokens)
		t.Run("LeaseExpiryTakeover", s.testLeaseExpiry)
		t.Run("Renew", s.testRenew)
		t.Run("FenceMonotonicAcrossExpiry", s.testFenceAcrossExpiry)
		t.Run("CompletedRecordExpires", s.testCompletedExpires)
		t.Run("InvalidArguments", s.testBeginInvalid)
		t.Run("IdentityScoping", s.testClaimIdentity)
		t.Run("ConcurrentBegin", s.testConcurrentBegin)
		t.Run("EngineExactlyOnce", s.testEngineExactlyOnce)
		t.Run("EngineWaitersGetFirstResponse", s.testEngineWait)
	})
	if _, ok := newStore(t).(idempotency.Inspector); ok {
		s.runInspector(t)
	} else {
		t.Logf("store does not implement idempotency.Inspector: inspection cases skipped")
	}
	if s.cfg.replicas != nil {
		t.Run("Replicas", func(t *testing.T) {
			t.Run("ExactlyOnceAcrossReplicas", s.testReplicasExactlyOnce)
			t.Run("CrashedHolderBlocksOnlyUntilLeaseEnds", s.testReplicasCrashedHolder)
		})
	}
}

// wait lets d pass: on the fake clock, or for real.
func (s *suite) wait(d time.Duration) {
	if s.cfg.clock != nil {
		s.cfg.clock.Advance(d)
		return
	}
	time.Sleep(d)
}

func (s *suite) claimStore(t *testing.T) idempotency.ClaimStore {
	t.Helper()
	return s.newStore(t).(idempotency.ClaimStore)
}

func response(body string) idempotency.Cached {
	return idempotency.Cached{Status: 201, WireBody: []byte(body)}
}

func mustStore(t *testing.T, st idempotency.Store, key, identity string, c idempotency.Cached) {
	t.Helper()
	if err := st.Store(context.Background(), key, identity, c); err != nil {
		t.Fatalf("Store(%q, %q) = %v, want nil", key, identity, err)
	}
}

func wantHit(t *testing.T, st idempotency.Store, key, identity, body string) *idempotency.Cached {
	t.Helper()
	got, ok := st.Lookup(context.Background(), key, identity)
	if !ok || got == nil {
		t.Fatalf("Lookup(%q, %q) missed, want body %q", key, identity, body)
	}
	if string(got.WireBody) != body {
		t.Fatalf("Lookup(%q, %q) body = %q, want %q", key, identity, got.WireBody, body)
	}
	return got
}

func wantMiss(t *testing.T, st idempotency.Store, key, identity string) {
	t.Helper()
	if got, ok := st.Lookup(context.Background(), key, identity); ok || got != nil {
		t.Fatalf("Lookup(%q, %q) = (%v, %v), want a miss", key, identity, got, ok)
	}
}

func (s *suite) testRoundTrip(t *testing.T) {
	st := s.newStore(t)
	in := idempotency.Cached{
		Status:   422,
		WireBody: []byte(`{"ok":false,"error":{"code":"x","message":"ü \u2028 \\ \""}}`),
		TTL:      s.ttl,
		Header:   map[string][]string{"Content-Type": {"application/json"}, "X-Multi": {"a", "b"}},
	}
	mustStore(t, st, "k1", "alice", in)
	got := wantHit(t, st, "k1", "alice", string(in.WireBody))
	if got.Status != in.Status {
		t.Errorf("Status = %d, want %d", got.Status, in.Status)
	}
	if !maps.EqualFunc(got.Header, in.Header, slices.Equal) {
		t.Errorf("Header = %v, want %v", got.Header, in.Header)
	}
	if got.TTL != in.TTL {
		t.Errorf("TTL = %v, want %v", got.TTL, in.TTL)
	}
	// A binary-safe body: every byte value survives.
	bin := make([]byte, 256)
	for i := range bin {
		bin[i] = byte(i)
	}
	mustStore(t, st, "k2", "alice", idempotency.Cached{Status: 200, WireBody: bin})
	if got := wantHit(t, st, "k2", "alice", string(bin)); !bytes.Equal(got.WireBody, bin) {
		t.Errorf("binary body changed")
	}
}

func (s *suite) testMiss(t *testing.T) {
	st := s.newStore(t)
	wantMiss(t, st, "never-stored", "alice")
	wantMiss(t, st, "never-stored", "")
}

func (s *suite) testOverwrite(t *testing.T) {
	st := s.newStore(t)
	mustStore(t, st, "k", "alice", response("first"))
	mustStore(t, st, "k", "alice", response("second"))
	wantHit(t, st, "k", "alice", "second")
}

func (s *suite) testIdentityScoping(t *testing.T) {
	st := s.newStore(t)
	mustStore(t, st, "k", "alice", response("alice's"))
	wantMiss(t, st, "k", "bob")
	wantMiss(t, st, "k", "")
	mustStore(t, st, "k", "bob", response("bob's"))
	wantHit(t, st, "k", "alice", "alice's")
	wantHit(t, st, "k", "bob", "bob's")
}

func (s *suite) testNoAmbiguity(t *testing.T) {
	st := s.newStore(t)
	pairs := [][2]string{
		{"a:b", "c"}, {"a", "b:c"}, {"a", ":b:c"}, {"a:", "b:c"},
		{"ab", ""}, {"a", "b"}, {"a|b", "c"}, {"a", "b|c"}, {"a", "b\x00c"},
	}
	for i, p := range pairs {
		mustStore(t, st, p[0], p[1], response(fmt.Sprint(i)))
	}
	for i, p := range pairs {
		wantHit(t, st, p[0], p[1], fmt.Sprint(i))
	}
}

func (s *suite) testDefaultsFilled(t *testing.T) {
	st := s.newStore(t)
	mustStore(t, st, "k", "alice", idempotency.Cached{Status: 200, WireBody: []byte("{}")})
	got := wantHit(t, st, "k", "alice", "{}")
	if got.StoredAt.IsZero() {
		t.Errorf("StoredAt is zero, want the store's clock")
	}
	if got.TTL <= 0 {
		t.Errorf("TTL = %v, want the store's positive default", got.TTL)
	}
}

func (s *suite) testTTLExpiry(t *testing.T) {
	st := s.newStore(t)
	c := response("short")
	c.TTL = s.ttl
	mustStore(t, st, "short", "alice", c)
	long := response("long")
	long.TTL = 100 * s.ttl
	mustStore(t, st, "long", "alice", long)
	wantHit(t, st, "short", "alice", "short")
	s.wait(s.ttl + s.margin)
	wantMiss(t, st, "short", "alice")
	wantHit(t, st, "long", "alice", "long")
}

func (s *suite) testStoreInvalidKey(t *testing.T) {
	st := s.newStore(t)
	for _, key := range []string{"", strings.Repeat("k", idempotency.MaxKeyLen+1), "a\nb", "a\x00b"} {
		err := st.Store(context.Background(), key, "alice", response("x"))
		if !errors.Is(err, idempotency.ErrInvalidKey) {
			t.Errorf("Store(%q) = %v, want ErrInvalidKey", key, err)
		}
	}
	// The longest valid key is accepted.
	mustStore(t, st, strings.Repeat("k", idempotency.MaxKeyLen), "alice", response("max"))
}

func (s *suite) testConcurrentUse(t *testing.T) {
	st := s.newStore(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8*20)
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				key := fmt.Sprintf("k%d-%d", g, i)
				if err := st.Store(context.Background(), key, "alice", response(key)); err != nil {
					errs <- err
					continue
				}
				if got, ok := st.Lookup(context.Background(), key, "alice"); !ok || string(got.WireBody) != key {
					errs <- fmt.Errorf("Lookup(%q) = (%v, %v) after Store", key, got, ok)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// --- claim protocol ---

func (s *suite) begin(t *testing.T, st idempotency.ClaimStore, key, identity, owner, fp string) idempotency.Claim {
	t.Helper()
	cl, err := st.Begin(context.Background(), key, identity, idempotency.ClaimRequest{Fingerprint: fp, Owner: owner, Lease: s.lease})
	if err != nil {
		t.Fatalf("Begin(%q, %q, owner %q) = %v", key, identity, owner, err)
	}
	return cl
}

func (s *suite) acquire(t *testing.T, st idempotency.ClaimStore, key, owner string) idempotency.Token {
	t.Helper()
	cl := s.begin(t, st, key, "alice", owner, "fp")
	if cl.Status != idempotency.ClaimAcquired {
		t.Fatalf("Begin(%q) status = %v, want acquired", key, cl.Status)
	}
	return cl.Token
}

func wantStatus(t *testing.T, cl idempotency.Claim, want idempotency.ClaimStatus) {
	t.Helper()
	if cl.Status != want {
		t.Fatalf("Begin status = %v, want %v", cl.Status, want)
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s = %v, want %v", what, err, want)
	}
}

func mustComplete(t *testing.T, st idempotency.ClaimStore, tok idempotency.Token, c idempotency.Cached) {
	t.Helper()
	if err := st.Complete(context.Background(), tok, c); err != nil {
		t.Fatalf("Complete(%+v) = %v, want nil", tok, err)
	}
}

func (s *suite) testAcquire(t *testing.T) {
	st := s.claimStore(t)
	cl := s.begin(t, st, "k", "alice", "owner-1", "fp")
	wantStatus(t, cl, idempotency.ClaimAcquired)
	tok := cl.Token
	if tok.Key != "k" || tok.Identity != "alice" || tok.Owner != "owner-1" || tok.Fence == 0 {
		t.Errorf("Token = %+v, want key k, identity alice, owner owner-1, a non-zero fence", tok)
	}
	if cl.Record != nil {
		t.Errorf("acquired claim carries a record: %+v", cl.Record)
	}
	// A claim in flight is not a response.
	wantMiss(t, st, "k", "alice")
}

func (s *suite) testInFlight(t *testing.T) {
	st := s.claimStore(t)
	s.acquire(t, st, "k", "owner-1")
	cl := s.begin(t, st, "k", "alice", "owner-2", "fp")
	wantStatus(t, cl, idempotency.ClaimInFlight)
	if cl.RetryAfter < 0 || cl.RetryAfter > s.lease {
		t.Errorf("RetryAfter = %v, want within [0, %v]", cl.RetryAfter, s.lease)
	}
}

func (s *suite) testSameOwner(t *testing.T) {
	st := s.claimStore(t)
	tok := s.acquire(t, st, "k", "owner-1")
	again := s.begin(t, st, "k", "alice", "owner-1", "fp")
	wantStatus(t, again, idempotency.ClaimAcquired)
	if again.Token != tok {
		t.Fatalf("re-Begin by the same owner: token %+v, want the original %+v", again.Token, tok)
	}
	mustComplete(t, st, tok, response("done"))
	wantHit(t, st, "k", "alice", "done")
}

func (s *suite) testCompleteReplay(t *testing.T) {
	st := s.claimStore(t)
	tok := s.acquire(t, st, "k", "owner-1")
	want := idempotency.Cached{Status: 201, WireBody: []byte(`{"ok":true,"data":{"id":7}}`), TTL: s.ttl,
		Header: map[string][]string{"Location": {"/widgets/7"}}}
	mustComplete(t, st, tok, want)
	for _, owner := range []string{"owner-2", "owner-1"} {
		cl := s.begin(t, st, "k", "alice", owner, "fp")
		wantStatus(t, cl, idempotency.ClaimReplay)
		if cl.Record == nil || cl.Record.Status != 201 || string(cl.Record.WireBody) != string(want.WireBody) ||
			!maps.EqualFunc(cl.Record.Header, want.Header, slices.Equal) {
			t.Fatalf("replayed record = %+v, want %+v", cl.Record, want)
		}
		if cl.Record.Fingerprint != "fp" {
			t.Errorf("replayed record fingerprint = %q, want the claim's %q", cl.Record.Fingerprint, "fp")
		}
	}
	wantHit(t, st, "k", "alice", string(want.WireBody))
}

func (s *suite) testCompleteIdempotent(t *testing.T) {
	st := s.claimStore(t)
	tok := s.acquire(t, st, "k", "owner-1")
	mustComplete(t, st, tok, response("first"))
	// The same token again (its first reply lost): nil, nothing changes.
	mustComplete(t, st, tok, response("second"))
	wantHit(t, st, "k", "alice", "first")
}

func (s *suite) testTombstone(t *testing.T) {
	st := s.claimStore(t)
	tok := s.acquire(t, st, "k", "owner-1")
	mustComplete(t, st, tok, idempotency.Cached{Status: 200, Tombstone: true})
	cl := s.begin(t, st, "k", "alice", "owner-2", "fp")
	wantStatus(t, cl, idempotency.ClaimReplay)
	if !cl.Record.Tombstone || cl.Record.Status != 200 {
		t.Fatalf("replayed record = %+v, want a tombstone with status 200", cl.Record)
	}
	tok2 := s.acquire(t, st, "h", "owner-1")
	mustComplete(t, st, tok2, idempotency.Cached{Status: 200, WireBody: []byte("x")})
	if got := wantHit(t, st, "h", "alice", "x"); got.Tombstone || len(got.Header) != 0 {
		t.Fatalf("record = %+v, want no tombstone and no headers", got)
	}
}

func (s *suite) testMismatch(t *testing.T) {
	st := s.claimStore(t)
	// In flight: another payload is a mismatch, not "in flight".
	tok := s.acquire(t, st, "k", "owner-1")
	if _, invisible := st.(idempotency.TxStore); invisible {
		// Its claim is an uncommitted transaction: "in flight" is all
		// another caller may learn of it (see ClaimStore.Begin).
		if cl := s.begin(t, st, "k", "alice", "owner-2", "other"); cl.Status != idempotency.ClaimMismatch {
			wantStatus(t, cl, idempotency.ClaimInFlight)
		}
	} else {
		wantStatus(t, s.begin(t, st, "k", "alice", "owner-2", "other"), idempotency.ClaimMismatch)
	}
	// The mismatch altered nothing: the holder still completes.
	mustComplete(t, st, tok, response("original"))
	wantStatus(t, s.begin(t, st, "k", "alice", "owner-3", "other"), idempotency.ClaimMismatch)
	got := wantHit(t, st, "k", "alice", "original")
	if got.Fingerprint != "fp" {
		t.Errorf("fingerprint after mismatches = %q, want %q", got.Fingerprint, "fp")
	}
	wantStatus(t, s.begin(t, st, "k", "alice", "owner-4", "fp"), idempotency.ClaimReplay)
	// Another identity with the other payload is independent.
	wantStatus(t, s.begin(t, st, "k", "bob", "owner-5", "other"), idempotency.ClaimAcquired)
}

func (s *suite) testEmptyFingerprint(t *testing.T) {
	st := s.claimStore(t)
	cl := s.begin(t, st, "k", "alice", "owner-1", "")
	wantStatus(t, cl, idempotency.ClaimAcquired)
	wantStatus(t, s.begin(t, st, "k", "alice", "owner-2", "fp"), idempotency.ClaimInFlight)
	mustComplete(t, st, cl.Token, response("x"))
	wantStatus(t, s.begin(t, st, "k", "alice", "owner-3", "any"), idempotency.ClaimReplay)
	wantStatus(t, s.begin(t, st, "k", "alice", "owner-3", ""), idempotency.ClaimReplay)
}

func (s *suite) testRelease(t *testing.T) {
	st := s.claimStore(t)
	ctx := context.Background()
	tok := s.acquire(t, st, "k", "owner-1")
	if err := st.Release(ctx, tok); err != nil {
		t.Fatalf("Release = %v, want nil", err)
	}
	wantMiss(t, st, "k", "alice")
	wantErr(t, "second Release", st.Release(ctx, tok), idempotency.ErrLeaseLost)
	wantErr(t, "Complete after Release", st.Complete(ctx, tok, response("late")), idempotency.ErrLeaseLost)
	// After a release, another payload is welcome: the key carries nothing.
	cl := s.begin(t, st, "k", "alice", "owner-2", "another")
	wantStatus(t, cl, idempotency.ClaimAcquired)
	if cl.Token.Fence <= tok.Fence {
		t.Errorf("fence after release = %d, want > %d", cl.Token.Fence, tok.Fence)
	}
	// A completed record is not released.
	mustComplete(t, st, cl.Token, response("kept"))
	wantErr(t, "Release of a completed record", st.Release(ctx, cl.Token), idempotency.ErrLeaseLost)
	wantHit(t, st, "k", "alice", "kept")
}

func (s *suite) testStaleTokens(t *testing.T) {
	st := s.claimStore(t)
	ctx := context.Background()
	tok := s.acquire(t, st, "k", "owner-1")
	forged := []idempotency.Token{
		{Key: tok.Key, Identity: tok.Identity, Owner: "intruder", Fence: tok.Fence},
		{Key: tok.Key, Identity: tok.Identity, Owner: tok.Owner, Fence: tok.Fence + 1},
		{Key: tok.Key, Identity: "bob", Owner: tok.Owner, Fence: tok.Fence},
		{Key: "other", Identity: tok.Identity, Owner: tok.Owner, Fence: tok.Fence},
	}
	for _, f := range forged {
		wantErr(t, fmt.Sprintf("Complete(%+v)", f), st.Complete(ctx, f, response("forged")), idempotency.ErrLeaseLost)
		wantErr(t, fmt.Sprintf("Renew(%+v)", f), st.Renew(ctx, f, s.lease), idempotency.ErrLeaseLost)
		wantErr(t, fmt.Sprintf("Release(%+v)", f), st.Release(ctx, f), idempotency.ErrLeaseLost)
	}
	mustComplete(t, st, tok, response("real"))
	wantHit(t, st, "k", "alice", "real")
}

func (s *suite) testLeaseExpiry(t *testing.T) {
	st := s.claimStore(t)
	ctx := context.Background()
	old := s.acquire(t, st, "k", "owner-1")
	s.wait(s.lease + s.margin)
	// The crashed holder no longer blocks the key.
	cl := s.begin(t, st, "k", "alice", "owner-2", "fp")
	wantStatus(t, cl, idempotency.ClaimAcquired)
	if cl.Token.Fence <= old.Fence {
		t.Fatalf("takeover fence = %d, want > %d", cl.Token.Fence, old.Fence)
	}
	// The stale holder is refused on every path.
	wantErr(t, "stale Complete", st.Complete(ctx, old, response("stale")), idempotency.ErrLeaseLost)
	wantErr(t, "stale Renew", st.Renew(ctx, old, s.lease), idempotency.ErrLeaseLost)
	wantErr(t, "stale Release", st.Release(ctx, old), idempotency.ErrLeaseLost)
	mustComplete(t, st, cl.Token, response("new holder"))
	wantHit(t, st, "k", "alice", "new holder")

	// An expired claim with nobody taking over can no longer be completed
	// either: its lease is what made it the holder.
	lone := s.acquire(t, st, "lone", "owner-1")
	s.wait(s.lease + s.margin)
	wantErr(t, "Complete after the lease ran out", st.Complete(ctx, lone, response("late")), idempotency.ErrLeaseLost)
	wantErr(t, "Renew after the lease ran out", st.Renew(ctx, lone, s.lease), idempotency.ErrLeaseLost)
	// The same owner coming back after expiry gets a new claim, not the old one.
	again := s.begin(t, st, "lone", "alice", "owner-1", "fp")
	wantStatus(t, again, idempotency.ClaimAcquired)
	if again.Token.Fence <= lone.Fence {
		t.Errorf("re-claim after expiry fence = %d, want > %d", again.Token.Fence, lone.Fence)
	}
}

func (s *suite) testRenew(t *testing.T) {
	st := s.claimStore(t)
	ctx := context.Background()
	tok := s.acquire(t, st, "k", "owner-1")
	// Renew twice, each time before the lease runs out; at the end, more
	// than one original lease has passed and the claim still holds.
	for range 2 {
		s.wait(s.lease * 5 / 8)
		if err := st.Renew(ctx, tok, s.lease); err != nil {
			t.Fatalf("Renew = %v, want nil", err)
		}
	}
	s.wait(s.lease / 4)
	wantStatus(t, s.begin(t, st, "k", "alice", "owner-2", "fp"), idempotency.ClaimInFlight)
	mustComplete(t, st, tok, response("renewed"))
	wantErr(t, "Renew after Complete", st.Renew(ctx, tok, s.lease), idempotency.ErrLeaseLost)
	if err := st.Renew(ctx, tok, 0); err == nil {
		t.Errorf("Renew with a zero lease = nil, want an error")
	}
}

func (s *suite) testFenceAcrossExpiry(t *testing.T) {
	st := s.claimStore(t)
	tok := s.acquire(t, st, "k", "owner-1")
	c := response("short")
	c.TTL = s.ttl
	mustComplete(t, st, tok, c)
	s.wait(s.ttl + s.margin)
	wantMiss(t, st, "k", "alice")
	next := s.acquire(t, st, "k", "owner-2")
	if next.Fence <= tok.Fence {
		t.Fatalf("fence after the record expired = %d, want > %d", next.Fence, tok.Fence)
	}
}

func (s *suite) testCompletedExpires(t *testing.T) {
	st := s.claimStore(t)
	tok := s.acquire(t, st, "k", "owner-1")
	c := response("short")
	c.TTL = s.ttl
	mustComplete(t, st, tok, c)
	wantStatus(t, s.begin(t, st, "k", "alice", "owner-2", "fp"), idempotency.ClaimReplay)
	s.wait(s.ttl + s.margin)
	// Expired: a new execution, and a new payload is no mismatch.
	wantStatus(t, s.begin(t, st, "k", "alice", "owner-3", "other"), idempotency.ClaimAcquired)
}

func (s *suite) testBeginInvalid(t *testing.T) {
	st := s.claimStore(t)
	ctx := context.Background()
	cases := []struct {
		name string
		key  string
		req  idempotency.ClaimRequest
		want error
	}{
		{"empty key", "", idempotency.ClaimRequest{Owner: "o", Lease: s.lease}, idempotency.ErrInvalidKey},
		{"long key", strings.Repeat("k", 300), idempotency.ClaimRequest{Owner: "o", Lease: s.lease}, idempotency.ErrInvalidKey},
		{"control character", "a\rb", idempotency.ClaimRequest{Owner: "o", Lease: s.lease}, idempotency.ErrInvalidKey},
		{"empty owner", "k", idempotency.ClaimRequest{Lease: s.lease}, idempotency.ErrInvalidArgument},
		{"zero lease", "k", idempotency.ClaimRequest{Owner: "o"}, idempotency.ErrInvalidArgument},
		{"negative lease", "k", idempotency.ClaimRequest{Owner: "o", Lease: -time.Second}, idempotency.ErrInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := st.Begin(ctx, tc.key, "alice", tc.req)
			wantErr(t, "Begin", err, tc.want)
		})
	}
	// Nothing was claimed by the refused calls.
	wantStatus(t, s.begin(t, st, "k", "alice", "owner-1", "fp"), idempotency.ClaimAcquired)
}

func (s *suite) testClaimIdentity(t *testing.T) {
	st := s.claimStore(t)
	a := s.begin(t, st, "k", "alice", "owner-1", "fp")
	b := s.begin(t, st, "k", "bob", "owner-2", "fp")
	wantStatus(t, a, idempotency.ClaimAcquired)
	wantStatus(t, b, idempotency.ClaimAcquired)
	mustComplete(t, st, a.Token, response("alice's"))
	wantStatus(t, s.begin(t, st, "k", "bob", "owner-3", "fp"), idempotency.ClaimInFlight)
	mustComplete(t, st, b.Token, response("bob's"))
	wantHit(t, st, "k", "alice", "alice's")
	wantHit(t, st, "k", "bob", "bob's")
}

func (s *suite) testConcurrentBegin(t *testing.T) {
	const n = 64
	st := s.claimStore(t)
	start := make(chan struct{})
	claims := make([]idempotency.Claim, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			claims[i], errs[i] = st.Begin(context.Background(), "race", "alice",
				idempotency.ClaimRequest{Fingerprint: "fp", Owner: fmt.Sprintf("owner-%d", i), Lease: s.lease})
		})
	}
	close(start)
	wg.Wait()
	acquired, inFlight := 0, 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("Begin %d = %v", i, errs[i])
		}
		switch claims[i].Status {
		case idempotency.ClaimAcquired:
			acquired++
		case idempotency.ClaimInFlight:
			inFlight++
		default:
			t.Errorf("Begin %d status = %v", i, claims[i].Status)
		}
	}
	if acquired != 1 || inFlight != n-1 {
		t.Fatalf("%d goroutines racing: %d acquired, %d in flight; want 1 and %d", n, acquired, inFlight, n-1)
	}
}

// runStorm runs n concurrent Do calls for one key spread over engines, with
// a handler that counts its executions, and checks the exactly-once outcome.
func runStorm(t *testing.T, engines []*idempotency.Engine, n int, wait bool) {
	t.Helper()
	var ledger atomic.Int64
	start := make(chan struct{})
	release := make(chan struct{})
	type outcome struct {
		res idempotency.Result
		err error
	}
	out := make([]outcome, n)
	var wg sync.WaitGroup
	var entered sync.Once
	firstIn := make(chan struct{})
	returned := make(chan struct{}, n)
	for i := range n {
		wg.Go(func() {
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := engines[i%len(engines)].Do(ctx, idempotency.Request{Key: "storm", Identity: "alice", Fingerprint: "fp"}, func(context.Context) (idempotency.Response, error) {
				entered.Do(func() { close(firstIn) })
				if ledger.Add(1) == 1 {
					<-release // hold the claim until every duplicate has tried
				}
				return idempotency.Response{Status: 201, Body: []byte("the one")}, nil
			})
			out[i] = outcome{res, err}
			returned <- struct{}{}
		})
	}
	close(start)
	<-firstIn
	if !wait {
		// Fail-fast duplicates return while the holder is parked, so
		// every one of them meets the claim in flight.
		for range n - 1 {
			<-returned
		}
	}
	close(release)
	wg.Wait()
	if got := ledger.Load(); got != 1 {
		t.Fatalf("handler ran %d times for one key, want exactly 1", got)
	}
	executed := 0
	for i, o := range out {
		switch {
		case o.err == nil && !o.res.Replayed:
			executed++
			if !o.res.Recorded {
				t.Errorf("call %d: executed but not recorded: %v", i, o.res.RecordErr)
			}
			fallthrough
		case o.err == nil:
			if string(o.res.Response.Body) != "the one" {
				t.Errorf("call %d: body %q, want %q", i, o.res.Response.Body, "the one")
			}
		case errors.Is(o.err, idempotency.ErrInFlight) && !wait:
		default:
			t.Errorf("call %d: error %v", i, o.err)
		}
	}
	if executed != 1 {
		t.Errorf("%d calls report an execution, want 1", executed)
	}
}

func (s *suite) testEngineExactlyOnce(t *testing.T) {
	st := s.newStore(t)
	runStorm(t, []*idempotency.Engine{idempotency.NewEngine(st, idempotency.WithLease(s.lease))}, 64, false)
}

func (s *suite) testEngineWait(t *testing.T) {
	st := s.newStore(t)
	runStorm(t, []*idempotency.Engine{idempotency.NewEngine(st, idempotency.WithLease(s.lease), idempotency.WithWait(true))}, 64, true)
}

func (s *suite) replicaEngines(t *testing.T, n int, opts ...idempotency.EngineOption) ([]idempotency.Store, []*idempotency.Engine) {
	t.Helper()
	stores := s.cfg.replicas(t, n)
	if len(stores) != n {
		t.Fatalf("WithReplicas factory returned %d stores, want %d", len(stores), n)
	}
	engines := make([]*idempotency.Engine, n)
	for i, st := range stores {
		engines[i] = idempotency.NewEngine(st, append([]idempotency.EngineOption{idempotency.WithLease(s.lease)}, opts...)...)
	}
	return stores, engines
}

func (s *suite) testReplicasExactlyOnce(t *testing.T) {
	_, engines := s.replicaEngines(t, 3)
	runStorm(t, engines, 300, false)
}

func (s *suite) testReplicasCrashedHolder(t *testing.T) {
	stores, engines := s.replicaEngines(t, 3)
	ctx := context.Background()
	// Replica 0 claims and dies: it never completes, releases or renews.
	dead, err := stores[0].(idempotency.ClaimStore).Begin(ctx, "crash", "alice",
		idempotency.ClaimRequest{Fingerprint: "fp", Owner: "dead-replica", Lease: s.lease})
	if err != nil || dead.Status != idempotency.ClaimAcquired {
		t.Fatalf("Begin = (%v, %v), want acquired", dead.Status, err)
	}
	var ledger atomic.Int64
	fn := func(context.Context) (idempotency.Response, error) {
		ledger.Add(1)
		return idempotency.Response{Status: 201, Body: []byte("retried")}, nil
	}
	for _, e := range engines[1:] {
		if _, err := e.Do(ctx, idempotency.Request{Key: "crash", Identity: "alice", Fingerprint: "fp"}, fn); !errors.Is(err, idempotency.ErrInFlight) {
			t.Fatalf("Do while the dead holder's lease runs = %v, want ErrInFlight", err)
		}
	}
	s.wait(s.lease + s.margin)
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			_, _ = engines[i%3].Do(ctx, idempotency.Request{Key: "crash", Identity: "alice", Fingerprint: "fp"}, fn)
		})
	}
	wg.Wait()
	if got := ledger.Load(); got != 1 {
		t.Fatalf("after the lease ended, the handler ran %d times, want exactly 1", got)
	}
	res, err := engines[0].Do(ctx, idempotency.Request{Key: "crash", Identity: "alice", Fingerprint: "fp"}, fn)
	if err != nil || !res.Replayed || string(res.Response.Body) != "retried" {
		t.Fatalf("Do after the retry = (%+v, %v), want a replay of %q", res, err, "retried")
	}
	wantErr(t, "the dead holder's late Complete",
		stores[0].(idempotency.ClaimStore).Complete(ctx, dead.Token, response("zombie")), idempotency.ErrLeaseLost)
}
