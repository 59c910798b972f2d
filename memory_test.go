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
