package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/storetest"
)

func TestInMemoryStoreConformance(t *testing.T) {
	clock := storetest.NewClock()
	storetest.Run(t, func(testing.TB) idempotency.Store {
		return idempotency.NewInMemoryStore(idempotency.WithClock(clock.Now))
	}, storetest.WithClock(clock), storetest.WithReplicas(func(_ testing.TB, n int) []idempotency.Store {
		// In-process "replicas" share one store: the engines are separate.
		s := idempotency.NewInMemoryStore(idempotency.WithClock(clock.Now))
		out := make([]idempotency.Store, n)
		for i := range out {
			out[i] = s
		}
		return out
	}))
}

func TestInMemoryStoreConformanceRealClock(t *testing.T) {
	if testing.Short() {
		t.Skip("real-time conformance run skipped in -short mode")
	}
	storetest.Run(t, func(testing.TB) idempotency.Store { return idempotency.NewInMemoryStore() })
}

func cached(body string) idempotency.Cached {
	return idempotency.Cached{Status: 200, WireBody: []byte(body)}
}

func TestInMemoryLRUOrder(t *testing.T) {
	ctx := context.Background()
	s := idempotency.NewInMemoryStore(idempotency.WithMaxEntries(3))
	for _, k := range []string{"a", "b", "c"} {
		if err := s.Store(ctx, k, "", cached(k)); err != nil {
			t.Fatal(err)
		}
	}
	// Lookup counts as a use: "a" becomes the most recent, so "b" goes first.
	if _, ok := s.Lookup(ctx, "a", ""); !ok {
		t.Fatal("Lookup(a) missed")
	}
	if err := s.Store(ctx, "d", "", cached("d")); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true} {
		if _, ok := s.Lookup(ctx, k, ""); ok != want {
			t.Errorf("after evicting one: Lookup(%s) hit = %v, want %v", k, ok, want)
		}
	}
	if got := s.Len(); got != 3 {
		t.Errorf("Len = %d, want exactly the cap 3", got)
	}
}

func TestInMemoryReplayCountsAsUse(t *testing.T) {
	ctx := context.Background()
	s := idempotency.NewInMemoryStore(idempotency.WithMaxEntries(2))
	_ = s.Store(ctx, "a", "", cached("a"))
	_ = s.Store(ctx, "b", "", cached("b"))
	cl, err := s.Begin(ctx, "a", "", idempotency.ClaimRequest{Owner: "o", Lease: time.Second})
	if err != nil || cl.Status != idempotency.ClaimReplay {
		t.Fatalf("Begin(a) = (%v, %v), want replay", cl.Status, err)
	}
	_ = s.Store(ctx, "c", "", cached("c"))
	if _, ok := s.Lookup(ctx, "b", ""); ok {
		t.Error("b survived; the replayed a should have been kept instead")
	}
	if _, ok := s.Lookup(ctx, "a", ""); !ok {
		t.Error("a was evicted although a replay had just used it")
	}
}

func TestInMemoryExactCapUnderChurn(t *testing.T) {
	ctx := context.Background()
	const maxEntries = 50
	s := idempotency.NewInMemoryStore(idempotency.WithMaxEntries(maxEntries))
	for i := range 1000 {
		if err := s.Store(ctx, fmt.Sprint("k", i), "", cached("x")); err != nil {
			t.Fatal(err)
		}
		if got := s.Len(); got > maxEntries {
			t.Fatalf("after %d stores Len = %d, over the cap %d", i+1, got, maxEntries)
		}
	}
	// Exactly the most recent 50 remain.
	for i := range 1000 {
		_, ok := s.Lookup(ctx, fmt.Sprint("k", i), "")
		if want := i >= 1000-maxEntries; ok != want {
			t.Fatalf("Lookup(k%d) hit = %v, want %v", i, ok, want)
		}
	}
}

func TestInMemoryInFlightNeverEvicted(t *testing.T) {
	ctx := context.Background()
	s := idempotency.NewInMemoryStore(idempotency.WithMaxEntries(2))
	req := idempotency.ClaimRequest{Owner: "o", Lease: time.Minute}
	a, err := s.Begin(ctx, "a", "", req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Begin(ctx, "b", "", req); err != nil {
		t.Fatal(err)
	}
	_, err = s.Begin(ctx, "c", "", req)
	if !errors.Is(err, idempotency.ErrStoreFull) {
		t.Fatalf("Begin on a store full of claims = %v, want ErrStoreFull", err)
	}
	if err := s.Store(ctx, "c", "", cached("c")); !errors.Is(err, idempotency.ErrStoreFull) {
		t.Fatalf("Store on a store full of claims = %v, want ErrStoreFull", err)
	}
	// Both claims are intact and complete normally.
	if err := s.Complete(ctx, a.Token, cached("a")); err != nil {
		t.Fatalf("Complete(a) = %v", err)
	}
	// Now a completed record exists and can make room.
	if _, err := s.Begin(ctx, "c", "", req); err != nil {
		t.Fatalf("Begin(c) after a completion = %v, want room by evicting a", err)
	}
	if _, ok := s.Lookup(ctx, "a", ""); ok {
		t.Error("completed a should have been evicted for c")
	}
}

func TestInMemoryByteCap(t *testing.T) {
	ctx := context.Background()
	s := idempotency.NewInMemoryStore(idempotency.WithMaxBytes(100))
	for i := range 5 {
		if err := s.Store(ctx, fmt.Sprint("k", i), "", cached(strings.Repeat("x", 30))); err != nil {
			t.Fatal(err)
		}
		if b := s.Bytes(); b > 100 {
			t.Fatalf("Bytes = %d, over the cap 100", b)
		}
	}
	if got := s.Len(); got != 3 {
		t.Errorf("Len = %d, want 3 records of 30 bytes under a 100-byte cap", got)
	}
	err := s.Store(ctx, "big", "", cached(strings.Repeat("x", 101)))
	if !errors.Is(err, idempotency.ErrTooLarge) {
		t.Fatalf("Store of 101 bytes under a 100-byte cap = %v, want ErrTooLarge", err)
	}
	// Headers count too.
	c := cached("")
	c.Header = map[string][]string{"X": {strings.Repeat("h", 200)}}
	if err := s.Store(ctx, "hdr", "", c); !errors.Is(err, idempotency.ErrTooLarge) {
		t.Fatalf("Store with 200 header bytes = %v, want ErrTooLarge", err)
	}
	// A too-large Complete leaves the claim in flight.
	cl, _ := s.Begin(ctx, "claimed", "", idempotency.ClaimRequest{Owner: "o", Lease: time.Minute})
	if err := s.Complete(ctx, cl.Token, cached(strings.Repeat("x", 500))); !errors.Is(err, idempotency.ErrTooLarge) {
		t.Fatalf("Complete too large = %v, want ErrTooLarge", err)
	}
	if err := s.Complete(ctx, cl.Token, idempotency.Cached{Status: 200, Tombstone: true}); err != nil {
		t.Fatalf("Complete with a tombstone after ErrTooLarge = %v", err)
	}
}

func TestInMemoryDefaultTTL(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	for _, tc := range []struct {
		opt  idempotency.Option
		want time.Duration
	}{
		{nil, idempotency.DefaultTTL},
		{idempotency.WithDefaultTTL(time.Minute), time.Minute},
		{idempotency.WithDefaultTTL(-1), idempotency.DefaultTTL},
	} {
		opts := []idempotency.Option{idempotency.WithClock(clock.Now)}
		if tc.opt != nil {
			opts = append(opts, tc.opt)
		}
		s := idempotency.NewInMemoryStore(opts...)
		_ = s.Store(ctx, "k", "", cached("x"))
		got, ok := s.Lookup(ctx, "k", "")
		if !ok || got.TTL != tc.want || !got.StoredAt.Equal(clock.Now()) {
			t.Errorf("stored entry = %+v, want TTL %v and StoredAt %v", got, tc.want, clock.Now())
		}
	}
}

func TestWithMaxEntriesNonPositive(t *testing.T) {
	ctx := context.Background()
	for _, n := range []int{0, -5} {
		s := idempotency.NewInMemoryStore(idempotency.WithMaxEntries(n))
		for i := range 20 {
			if err := s.Store(ctx, fmt.Sprint(i), "", cached("x")); err != nil {
				t.Fatalf("WithMaxEntries(%d): Store = %v", n, err)
			}
		}
		if got := s.Len(); got != 20 {
			t.Errorf("WithMaxEntries(%d): Len = %d, want 20 (DefaultMaxEntries applies)", n, got)
		}
	}
}

func TestCachedExpired(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	c := idempotency.Cached{StoredAt: at, TTL: time.Minute}
	for _, tc := range []struct {
		now  time.Time
		want bool
	}{
		{at, false},
		{at.Add(time.Minute - 1), false},
		{at.Add(time.Minute), true},
		{at.Add(time.Hour), true},
	} {
		if got := c.Expired(tc.now); got != tc.want {
			t.Errorf("Expired(StoredAt+%v) = %v, want %v", tc.now.Sub(at), got, tc.want)
		}
	}
	if (idempotency.Cached{StoredAt: at}).Expired(at.Add(1000 * time.Hour)) {
		t.Error("an entry without a TTL expired")
	}
}

func BenchmarkInMemoryStore(b *testing.B) {
	storetest.Benchmark(b, func(testing.TB) idempotency.Store { return idempotency.NewInMemoryStore() })
}

// A record handed out by Lookup is never changed under its reader, although
// Store overwrites the entry in place and eviction recycles it.
func TestInMemoryHandedOutRecordsStayPut(t *testing.T) {
	ctx := context.Background()
	s := idempotency.NewInMemoryStore(idempotency.WithMaxEntries(2))
	_ = s.Store(ctx, "a", "", cached("first"))
	got, ok := s.Lookup(ctx, "a", "")
	if !ok {
		t.Fatal("Lookup(a) missed")
	}
	_ = s.Store(ctx, "a", "", cached("second")) // overwrite
	_ = s.Store(ctx, "b", "", cached("b"))
	_ = s.Store(ctx, "c", "", cached("c")) // evicts a
	_ = s.Store(ctx, "d", "", cached("d"))
	if string(got.WireBody) != "first" || got.Status != 200 {
		t.Fatalf("the record Lookup returned changed to %+v", got)
	}
	cl, _ := s.Begin(ctx, "d", "", idempotency.ClaimRequest{Owner: "o", Lease: time.Second})
	replayed := cl.Record
	for i := range 10 {
		_ = s.Store(ctx, fmt.Sprint("e", i), "", cached(fmt.Sprint("e", i)))
	}
	if string(replayed.WireBody) != "d" {
		t.Fatalf("the record Begin replayed changed to %+v", replayed)
	}
}

func TestInMemoryStoreAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector; run without -race")
	}
	ctx := context.Background()
	s := idempotency.NewInMemoryStore(idempotency.WithMaxEntries(100))
	c := cached("body")
	keys := make([]string, 300)
	for i := range keys {
		keys[i] = fmt.Sprint("key-", i)
	}
	for _, k := range keys[:100] {
		_ = s.Store(ctx, k, "", c)
	}
	if n := testing.AllocsPerRun(100, func() { _ = s.Store(ctx, keys[7], "", c) }); n != 0 {
		t.Errorf("Store overwriting a record never looked up: %v allocs, want 0", n)
	}
	i := 100
	if n := testing.AllocsPerRun(100, func() { _ = s.Store(ctx, keys[100+i%200], "", c); i++ }); n > 0 {
		t.Errorf("Store evicting a record never looked up: %v allocs, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { s.Lookup(ctx, keys[150], "") }); n != 0 {
		t.Errorf("Lookup hit: %v allocs, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { _ = s.Store(ctx, keys[150], "", c) }); n != 0 {
		t.Errorf("Store overwriting a record looked up: %v allocs, want 0", n)
	}
	// The claim path: Begin and Complete of new keys in a full store reuse
	// the entries they evict.
	req := idempotency.ClaimRequest{Owner: "o", Lease: time.Minute}
	claimed := make([]string, 300)
	for j := range claimed {
		claimed[j] = fmt.Sprint("claimed-", j)
	}
	claim := func() {
		cl, err := s.Begin(ctx, claimed[i%len(claimed)], "", req)
		if err != nil || cl.Status != idempotency.ClaimAcquired {
			t.Fatalf("Begin = (%v, %v), want acquired", cl.Status, err)
		}
		if err := s.Complete(ctx, cl.Token, c); err != nil {
			t.Fatal(err)
		}
		i++
	}
	for range 300 {
		claim()
	}
	if n := testing.AllocsPerRun(100, claim); n > 0 {
		t.Errorf("Begin and Complete evicting records never looked up: %v allocs, want 0", n)
	}
}

// A record comes back exactly as it was stored, StoredAt's zone and
// monotonic reading included, however unusual its fields.
func TestInMemoryRecordRoundTrip(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	for name, c := range map[string]idempotency.Cached{
		"utc":        {Status: 201, WireBody: []byte("x"), StoredAt: at, TTL: time.Hour, Fingerprint: "fp"},
		"local":      {Status: 200, StoredAt: at.Local(), TTL: time.Minute, Header: map[string][]string{"A": {"b"}}},
		"zone":       {Status: 200, StoredAt: at.In(time.FixedZone("X", 3600)), TTL: time.Hour},
		"monotonic":  {Status: 200, StoredAt: time.Now(), TTL: time.Hour},
		"tombstone":  {Status: 500, StoredAt: at, TTL: time.Hour, Tombstone: true},
		"big status": {Status: 1 << 40, StoredAt: at, TTL: time.Hour},
		"long ttl":   {Status: 200, StoredAt: at, TTL: math.MaxInt64},
		"far future": {Status: 200, StoredAt: at.AddDate(300, 0, 0), TTL: time.Hour},
	} {
		s := idempotency.NewInMemoryStore(idempotency.WithClock(func() time.Time { return at }))
		if err := s.Store(ctx, "k", "i", c); err != nil {
			t.Fatalf("%s: Store = %v", name, err)
		}
		got, ok := s.Lookup(ctx, "k", "i")
		if !ok {
			t.Errorf("%s: Lookup missed", name)
			continue
		}
		if got.StoredAt != c.StoredAt || got.Status != c.Status || got.TTL != c.TTL || got.Tombstone != c.Tombstone ||
			got.Fingerprint != c.Fingerprint || string(got.WireBody) != string(c.WireBody) || len(got.Header) != len(c.Header) {
			t.Errorf("%s: Lookup = %+v, want %+v", name, *got, c)
		}
		cl, err := s.Begin(ctx, "k", "i", idempotency.ClaimRequest{Owner: "o", Lease: time.Second})
		if err != nil || cl.Record != got {
			t.Errorf("%s: Begin = (%+v, %v), want a replay of the record Lookup returned", name, cl, err)
		}
	}
}

// A claim whose lease has run out holds no room: a full store reclaims it
// rather than answer ErrStoreFull, whether the next record comes through
// Begin or Store, with or without a byte cap besides the entry cap.
func TestInMemoryExpiredClaimFreesRoom(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		opts []idempotency.Option
	}{
		{"entries", []idempotency.Option{idempotency.WithMaxEntries(1)}},
		{"entries with a byte cap", []idempotency.Option{idempotency.WithMaxEntries(1), idempotency.WithMaxBytes(16)}},
	} {
		for _, op := range []string{"Begin", "Store"} {
			t.Run(tc.name+"/"+op, func(t *testing.T) {
				clock := storetest.NewClock()
				s := idempotency.NewInMemoryStore(append(tc.opts, idempotency.WithClock(clock.Now))...)
				if _, err := s.Begin(ctx, "a", "", idempotency.ClaimRequest{Owner: "o1", Lease: time.Millisecond}); err != nil {
					t.Fatal(err)
				}
				clock.Advance(time.Hour)
				switch op {
				case "Begin":
					cl, err := s.Begin(ctx, "b", "", idempotency.ClaimRequest{Owner: "o2", Lease: time.Minute})
					if err != nil || cl.Status != idempotency.ClaimAcquired {
						t.Fatalf("Begin(b) an hour after a's 1ms lease ran out = (%v, %v), want acquired", cl.Status, err)
					}
				case "Store":
					if err := s.Store(ctx, "b", "", cached("b")); err != nil {
						t.Fatalf("Store(b) an hour after a's 1ms lease ran out = %v, want nil", err)
					}
					if _, ok := s.Lookup(ctx, "b", ""); !ok {
						t.Fatal("Lookup(b) missed after Store")
					}
				}
				if got := s.Len(); got != 1 {
					t.Errorf("Len = %d, want 1 (b alone)", got)
				}
			})
		}
	}
}

// A store full of claims whose leases are live refuses a new record and
// evicts none of them, whatever the order of their leases; once the
// shortest runs out, that one claim alone makes room.
func TestInMemoryLiveClaimsFillStore(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	s := idempotency.NewInMemoryStore(idempotency.WithMaxEntries(3), idempotency.WithClock(clock.Now))
	toks := map[string]idempotency.Token{}
	for _, c := range []struct {
		key   string
		lease time.Duration
	}{{"long", time.Hour}, {"renewed", 2 * time.Second}, {"short", 3 * time.Second}} {
		cl, err := s.Begin(ctx, c.key, "", idempotency.ClaimRequest{Owner: "o", Lease: c.lease})
		if err != nil || cl.Status != idempotency.ClaimAcquired {
			t.Fatalf("Begin(%s) = (%v, %v), want acquired", c.key, cl.Status, err)
		}
		toks[c.key] = cl.Token
	}
	full := func(when string) {
		t.Helper()
		if _, err := s.Begin(ctx, "new", "", idempotency.ClaimRequest{Owner: "o", Lease: time.Minute}); !errors.Is(err, idempotency.ErrStoreFull) {
			t.Fatalf("%s: Begin(new) = %v, want ErrStoreFull", when, err)
		}
		if err := s.Store(ctx, "new", "", cached("new")); !errors.Is(err, idempotency.ErrStoreFull) {
			t.Fatalf("%s: Store(new) = %v, want ErrStoreFull", when, err)
		}
		if got := s.Len(); got != 3 {
			t.Fatalf("%s: Len = %d, want the 3 claims", when, got)
		}
	}
	clock.Advance(time.Second)
	full("all leases live")
	// The claim that was to run out first is renewed before it does.
	if err := s.Renew(ctx, toks["renewed"], time.Hour); err != nil {
		t.Fatalf("Renew(renewed) = %v", err)
	}
	clock.Advance(1500 * time.Millisecond) // past renewed's first lease, short's still live
	full("after the earliest lease was renewed")
	clock.Advance(time.Second) // short's lease has run out
	if cl, err := s.Begin(ctx, "new", "", idempotency.ClaimRequest{Owner: "o", Lease: time.Minute}); err != nil || cl.Status != idempotency.ClaimAcquired {
		t.Fatalf("Begin(new) after short's lease ran out = (%v, %v), want acquired", cl.Status, err)
	}
	for _, k := range []string{"long", "renewed"} {
		if err := s.Complete(ctx, toks[k], cached(k)); err != nil {
			t.Errorf("Complete(%s), a live claim, = %v; it was evicted", k, err)
		}
	}
	if err := s.Complete(ctx, toks["short"], cached("short")); !errors.Is(err, idempotency.ErrLeaseLost) {
		t.Errorf("Complete(short) after its claim was reclaimed = %v, want ErrLeaseLost", err)
	}
}

// The holder of a claim reclaimed to make room is refused as if the claim
// had been taken over, and a later claim of the same name gets a greater
// fence.
func TestInMemoryReclaimedClaimHolderRefused(t *testing.T) {
	ctx := context.Background()
	clock := storetest.NewClock()
	s := idempotency.NewInMemoryStore(idempotency.WithMaxEntries(1), idempotency.WithClock(clock.Now))
	a, err := s.Begin(ctx, "a", "i", idempotency.ClaimRequest{Owner: "o1", Lease: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Hour)
	b, err := s.Begin(ctx, "b", "i", idempotency.ClaimRequest{Owner: "o2", Lease: time.Minute})
	if err != nil || b.Status != idempotency.ClaimAcquired {
		t.Fatalf("Begin(b) = (%v, %v), want acquired", b.Status, err)
	}
	stale := func(when string) {
		t.Helper()
		for name, err := range map[string]error{
			"Complete": s.Complete(ctx, a.Token, cached("stale")),
			"Renew":    s.Renew(ctx, a.Token, time.Minute),
			"Release":  s.Release(ctx, a.Token),
		} {
			if !errors.Is(err, idempotency.ErrLeaseLost) {
				t.Errorf("%s: %s by the reclaimed holder = %v, want ErrLeaseLost", when, name, err)
			}
		}
	}
	stale("after the reclaim")
	if err := s.Release(ctx, b.Token); err != nil {
		t.Fatal(err)
	}
	// The same owner claims a again: a new claim, with a greater fence.
	again, err := s.Begin(ctx, "a", "i", idempotency.ClaimRequest{Owner: "o1", Lease: time.Minute})
	if err != nil || again.Status != idempotency.ClaimAcquired {
		t.Fatalf("Begin(a) again = (%v, %v), want acquired", again.Status, err)
	}
	if again.Token.Fence <= a.Token.Fence {
		t.Errorf("fence of the new claim = %d, want more than the reclaimed claim's %d", again.Token.Fence, a.Token.Fence)
	}
	stale("while a is claimed again")
	if err := s.Complete(ctx, again.Token, cached("a")); err != nil {
		t.Fatalf("Complete by the new holder = %v", err)
	}
	if err := s.Complete(ctx, a.Token, cached("stale")); !errors.Is(err, idempotency.ErrLeaseLost) {
		t.Errorf("Complete by the reclaimed holder after a was completed = %v, want ErrLeaseLost", err)
	}
	if got, ok := s.Lookup(ctx, "a", "i"); !ok || string(got.WireBody) != "a" {
		t.Errorf("Lookup(a) = (%v, %v), want the new holder's response", got, ok)
	}
}

// Reclaiming an expired claim reuses its entry: a full store in which one
// orphaned claim runs out before each new one still claims with no
// allocation.
func TestInMemoryReclaimAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts differ under the race detector; run without -race")
	}
	ctx := context.Background()
	clock := storetest.NewClock()
	const maxEntries = 100
	s := idempotency.NewInMemoryStore(idempotency.WithMaxEntries(maxEntries), idempotency.WithClock(clock.Now))
	keys := make([]string, 3*maxEntries)
	for i := range keys {
		keys[i] = fmt.Sprint("orphan-", i)
	}
	req := idempotency.ClaimRequest{Owner: "o", Lease: maxEntries * time.Millisecond}
	i := 0
	orphan := func() {
		clock.Advance(time.Millisecond) // the oldest claim's lease runs out
		cl, err := s.Begin(ctx, keys[i%len(keys)], "", req)
		if err != nil || cl.Status != idempotency.ClaimAcquired {
			t.Fatalf("Begin #%d = (%v, %v), want acquired", i, cl.Status, err)
		}
		i++
	}
	for range 2 * len(keys) {
		orphan()
	}
	if got := s.Len(); got != maxEntries {
		t.Fatalf("Len = %d, want the store full at %d", got, maxEntries)
	}
	if n := testing.AllocsPerRun(100, orphan); n > 0 {
		t.Errorf("Begin reclaiming an expired claim: %v allocs, want 0", n)
	}
}
