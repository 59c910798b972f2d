package redisstore

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
	"github.com/idemkit/idempotency/storetest"
	"github.com/redis/go-redis/v9"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	redisOptions(t) // skip at once when there is no server
	storetest.Run(t, newStore, storetest.WithReplicas(newReplicas))
}

func BenchmarkStore(b *testing.B) {
	redisOptions(b)
	storetest.Benchmark(b, newStore)
}

// TestUnavailable: a Store whose server cannot be reached fails every step
// with an error matching ErrStoreUnavailable, on its own and soon (not by
// running into the caller's deadline), and claims nothing.
func TestUnavailable(t *testing.T) {
	// A client configured to fail fast: short dial timeout, few retries.
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond,
		DialerRetries: 1, DialerRetryTimeout: 10 * time.Millisecond, MaxRetries: 1})
	t.Cleanup(func() { c.Close() })
	st := New(c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok := idempotency.Token{Key: "k", Identity: "alice", Owner: "o", Fence: 1}
	steps := []struct {
		name string
		run  func() error
	}{
		{"Begin", func() error {
			cl, err := st.Begin(ctx, "k", "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Second})
			if err == nil {
				t.Errorf("Begin = %+v, want an error", cl)
			}
			return err
		}},
		{"Complete", func() error { return st.Complete(ctx, tok, idempotency.Cached{Status: 200}) }},
		{"Release", func() error { return st.Release(ctx, tok) }},
		{"Renew", func() error { return st.Renew(ctx, tok, time.Second) }},
		{"Store", func() error { return st.Store(ctx, "k", "alice", idempotency.Cached{Status: 200}) }},
		{"Inspect", func() error { _, err := st.Inspect(ctx, st.RecordID("k", "alice")); return err }},
		{"Purge", func() error { _, err := st.Purge(ctx, st.RecordID("k", "alice")); return err }},
		{"Claims", func() error { _, err := st.Claims(ctx, 0, 0); return err }},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			err := step.run()
			if !errors.Is(err, idempotency.ErrStoreUnavailable) {
				t.Fatalf("%s = %v, want an error matching ErrStoreUnavailable", step.name, err)
			}
			if errors.Is(err, idempotency.ErrLeaseLost) {
				t.Errorf("%s = %v, also matches ErrLeaseLost", step.name, err)
			}
			if ctx.Err() != nil {
				t.Fatalf("%s failed only when the test's 10s deadline ran out: %v", step.name, err)
			}
		})
	}
	if got, ok := st.Lookup(ctx, "k", "alice"); ok || got != nil {
		t.Errorf("Lookup = (%v, %v), want a miss", got, ok)
	}
	// Fail closed: the Engine does not run the command.
	ran := false
	_, err := idempotency.NewEngine(st).Do(ctx, idempotency.Request{Key: "k", Identity: "alice", Fingerprint: "fp"}, func(context.Context) (idempotency.Response, error) {
		ran = true
		return idempotency.Response{Status: 200}, nil
	})
	if !errors.Is(err, idempotency.ErrStoreUnavailable) || ran {
		t.Errorf("Engine.Do = %v, command ran: %v; want ErrStoreUnavailable and no run", err, ran)
	}
}

// TestKeyLayout: a record is one key, prefix + "{" + hex(RecordKey) + "}",
// and neither the key nor the value holds the raw key or identity.
func TestKeyLayout(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	const key, identity = "order-4711-raw-key", "user-alice-raw-identity"
	for _, secret := range [][]byte{nil, []byte("s3cret")} {
		prefix := newPrefix(t, c)
		st := New(c, WithPrefix(prefix), WithSecret(secret))
		cl, err := st.Begin(ctx, key, identity, idempotency.ClaimRequest{Owner: "o", Fingerprint: "fp", Lease: time.Minute})
		if err != nil || cl.Status != idempotency.ClaimAcquired {
			t.Fatalf("Begin = (%+v, %v), want acquired", cl, err)
		}
		if err := st.Complete(ctx, cl.Token, idempotency.Cached{Status: 201, WireBody: []byte("{}")}); err != nil {
			t.Fatalf("Complete = %v", err)
		}
		keys, err := c.Keys(ctx, prefix+"*").Result()
		if err != nil {
			t.Fatal(err)
		}
		sum := driver.RecordKey(secret, key, identity)
		want := prefix + "{" + hex.EncodeToString(sum[:]) + "}"
		if len(keys) != 1 || keys[0] != want {
			t.Fatalf("keys under the prefix = %q, want [%q]", keys, want)
		}
		if !regexp.MustCompile(`^[^{}]*\{[0-9a-f]{64}\}$`).MatchString(keys[0]) {
			t.Errorf("key %q has not exactly one hash tag", keys[0])
		}
		v, err := c.Get(ctx, keys[0]).Bytes()
		if err != nil {
			t.Fatal(err)
		}
		for _, raw := range []string{key, identity} {
			if bytes.Contains(v, []byte(raw)) || bytes.Contains([]byte(keys[0]), []byte(raw)) {
				t.Errorf("raw %q reached Redis", raw)
			}
		}
	}
	// Different secrets name the record differently.
	a, b := New(c, WithSecret([]byte("a"))), New(c, WithSecret([]byte("b")))
	if a.recordKey(key, identity) == b.recordKey(key, identity) {
		t.Errorf("two secrets give the same record key")
	}
	if got := New(c).recordKey(key, identity); got[:len(DefaultPrefix)] != DefaultPrefix {
		t.Errorf("default record key %q lacks the prefix %q", got, DefaultPrefix)
	}
}

// TestExpiryInRedis: Redis itself expires records: a claim after its lease,
// a completed record after its TTL.
func TestExpiryInRedis(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	st := New(c, WithPrefix(newPrefix(t, c)), WithDefaultTTL(time.Hour))
	cases := []struct {
		name    string
		lease   time.Duration
		ttl     time.Duration // 0: complete with no TTL, so the store's default
		wantTTL time.Duration
	}{
		{"in flight", 30 * time.Second, -1, 30 * time.Second},
		{"completed with a TTL", time.Minute, 10 * time.Minute, 10 * time.Minute},
		{"completed with the default TTL", time.Minute, 0, time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cl, err := st.Begin(ctx, tc.name, "alice", idempotency.ClaimRequest{Owner: "o", Lease: tc.lease})
			if err != nil || cl.Status != idempotency.ClaimAcquired {
				t.Fatalf("Begin = (%+v, %v), want acquired", cl, err)
			}
			if tc.ttl >= 0 {
				if err := st.Complete(ctx, cl.Token, idempotency.Cached{Status: 200, TTL: tc.ttl}); err != nil {
					t.Fatalf("Complete = %v", err)
				}
			}
			got, err := c.PTTL(ctx, st.recordKey(tc.name, "alice")).Result()
			if err != nil {
				t.Fatal(err)
			}
			// PXAT is rounded up to the next millisecond.
			if got < tc.wantTTL-5*time.Second || got > tc.wantTTL+2*time.Millisecond {
				t.Errorf("PTTL = %v, want about %v", got, tc.wantTTL)
			}
		})
	}
}

// TestFenceAheadOfClock: when a record's fence is ahead of the server's
// clock (many takeovers within a microsecond, or a clock stepped back), the
// record outlives a Release and its TTL, so the next fence still grows.
func TestFenceAheadOfClock(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	st := New(c, WithPrefix(newPrefix(t, c)))
	rk := st.recordKey("k", "alice")
	begin := func(owner string) idempotency.Token { t.Helper(); return acquire(t, st, "k", owner) }
	tok := fenceAhead(t, c, st, begin("owner-1"))
	if err := st.Release(ctx, tok); err != nil {
		t.Fatalf("Release = %v", err)
	}
	if n, err := c.Exists(ctx, rk).Result(); err != nil || n != 1 {
		t.Fatalf("released record with a fence ahead of the clock: EXISTS = (%d, %v), want it kept", n, err)
	}
	next := begin("owner-2")
	if next.Fence != tok.Fence+1 {
		t.Fatalf("fence after Release = %d, want %d", next.Fence, tok.Fence+1)
	}
	// A completed record past its TTL is not replayed, but its fence stays.
	if err := st.Complete(ctx, next, idempotency.Cached{Status: 200, TTL: 50 * time.Millisecond}); err != nil {
		t.Fatalf("Complete = %v", err)
	}
	time.Sleep(100 * time.Millisecond) // real time: the server's clock decides
	if got, ok := st.Lookup(ctx, "k", "alice"); ok {
		t.Fatalf("Lookup after the TTL = %+v, want a miss", got)
	}
	if last := begin("owner-3"); last.Fence != next.Fence+1 {
		t.Fatalf("fence after the TTL = %d, want %d", last.Fence, next.Fence+1)
	}
}

// TestCorruptRecord: a value that is not a record fails the step with
// ErrStoreUnavailable instead of being taken for a claim or a response.
func TestCorruptRecord(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	st := New(c, WithPrefix(newPrefix(t, c)))
	for _, v := range []string{"", "X", "C\x00", "garbage that is long enough to parse as a header but is not one"} {
		if err := c.Set(ctx, st.recordKey("k", "alice"), v, time.Minute).Err(); err != nil {
			t.Fatal(err)
		}
		_, err := st.Begin(ctx, "k", "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Minute})
		if !errors.Is(err, idempotency.ErrStoreUnavailable) {
			t.Errorf("Begin over %q = %v, want ErrStoreUnavailable", v, err)
		}
		if got, ok := st.Lookup(ctx, "k", "alice"); ok {
			t.Errorf("Lookup over %q = %+v, want a miss", v, got)
		}
	}
}

// TestStoredAtRoundTrip: a caller's StoredAt survives to the nanosecond; a
// zero one becomes the server's clock.
func TestStoredAtRoundTrip(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	st := New(c, WithPrefix(newPrefix(t, c)))
	at := time.Now().Add(-time.Minute).Round(0)
	if err := st.Store(ctx, "given", "alice", idempotency.Cached{Status: 200, StoredAt: at, TTL: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if got, ok := st.Lookup(ctx, "given", "alice"); !ok || !got.StoredAt.Equal(at) {
		t.Errorf("Lookup = (%+v, %v), want StoredAt %v", got, ok, at)
	}
	before := time.Now()
	if err := st.Store(ctx, "zero", "alice", idempotency.Cached{Status: 200}); err != nil {
		t.Fatal(err)
	}
	got, ok := st.Lookup(ctx, "zero", "alice")
	if !ok {
		t.Fatal("Lookup missed")
	}
	// The server's clock is not ours, but they should agree within a minute.
	if d := got.StoredAt.Sub(before); d < -time.Minute || d > time.Minute {
		t.Errorf("StoredAt = %v, want about %v", got.StoredAt, before)
	}
	// Stored already expired: a miss.
	old := idempotency.Cached{Status: 200, StoredAt: time.Now().Add(-2 * time.Hour), TTL: time.Hour}
	if err := st.Store(ctx, "old", "alice", old); err != nil {
		t.Fatal(err)
	}
	if got, ok := st.Lookup(ctx, "old", "alice"); ok {
		t.Errorf("Lookup of a record stored expired = %+v, want a miss", got)
	}
}

// TestOutOfMemory: a Redis at maxmemory with the noeviction policy refuses
// new claims with ErrStoreFull (which is also ErrStoreUnavailable), never
// evicting claims in flight, and still replays completed records.
func TestOutOfMemory(t *testing.T) {
	t.Parallel()
	addr := startRedis(t, t.TempDir(), freeClusterPorts(t, 1)[0], "--maxmemory", "4mb", "--maxmemory-policy", "noeviction")
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	st := New(c)
	ctx := context.Background()
	tok, err := st.Begin(ctx, "first", "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Complete(ctx, tok.Token, idempotency.Cached{Status: 200, WireBody: []byte("kept")}); err != nil {
		t.Fatal(err)
	}
	// Fill Redis with claims until it refuses one.
	for i := 0; ; i++ {
		if i == 100000 {
			t.Fatal("100000 claims held under a 4 MiB maxmemory")
		}
		_, err := st.Begin(ctx, fmt.Sprint("filler-", i), "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Minute})
		if err != nil {
			if !errors.Is(err, idempotency.ErrStoreFull) || !errors.Is(err, idempotency.ErrStoreUnavailable) {
				t.Fatalf("Begin over maxmemory = %v, want ErrStoreFull and ErrStoreUnavailable", err)
			}
			break
		}
	}
	if got, err := c.DBSize(ctx).Result(); err != nil || got < 1000 {
		t.Fatalf("DBSIZE = (%d, %v), want the claims to be kept", got, err)
	}
	cl, err := st.Begin(ctx, "first", "alice", idempotency.ClaimRequest{Owner: "o2", Lease: time.Minute})
	if err != nil || cl.Status != idempotency.ClaimReplay || string(cl.Record.WireBody) != "kept" {
		t.Fatalf("replaying Begin over maxmemory = (%+v, %v), want the recorded response", cl, err)
	}
	if got, ok := st.Lookup(ctx, "first", "alice"); !ok || string(got.WireBody) != "kept" {
		t.Fatalf("Lookup over maxmemory = (%+v, %v), want the recorded response", got, ok)
	}
}

// countHook counts the commands a client sends.
type countHook struct{ n atomic.Int64 }

func (h *countHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// TestOneRoundTrip: every step, a replaying Begin included, sends one
// command once the server has the scripts cached.
func TestOneRoundTrip(t *testing.T) {
	c := newClient(t)
	st := New(c, WithPrefix(newPrefix(t, c)))
	ctx := context.Background()
	req := idempotency.ClaimRequest{Owner: "o", Fingerprint: "fp", Lease: time.Minute}
	resp := idempotency.Cached{Status: 201, WireBody: []byte("{}")}
	var tok idempotency.Token
	steps := []struct {
		name string
		run  func() error
	}{
		{"Begin", func() error {
			cl, err := st.Begin(ctx, "k", "alice", req)
			tok = cl.Token
			return err
		}},
		{"Renew", func() error { return st.Renew(ctx, tok, time.Minute) }},
		{"Complete", func() error { return st.Complete(ctx, tok, resp) }},
		{"Begin replaying", func() error {
			cl, err := st.Begin(ctx, "k", "alice", req)
			if err == nil && cl.Status != idempotency.ClaimReplay {
				err = fmt.Errorf("status %v, want replay", cl.Status)
			}
			return err
		}},
		{"Lookup", func() error {
			if _, ok := st.Lookup(ctx, "k", "alice"); !ok {
				return errors.New("miss")
			}
			return nil
		}},
		{"Store", func() error { return st.Store(ctx, "s", "alice", resp) }},
		{"Begin to release", func() error {
			cl, err := st.Begin(ctx, "r", "alice", req)
			tok = cl.Token
			return err
		}},
		{"Release", func() error { return st.Release(ctx, tok) }},
	}
	for _, step := range steps { // load the scripts
		if err := step.run(); err != nil {
			t.Fatalf("%s = %v", step.name, err)
		}
	}
	if err := c.Del(ctx, st.recordKey("k", "alice"), st.recordKey("s", "alice")).Err(); err != nil {
		t.Fatal(err)
	}
	h := &countHook{}
	c.AddHook(h)
	for _, step := range steps {
		h.n.Store(0)
		if err := step.run(); err != nil {
			t.Fatalf("%s = %v", step.name, err)
		}
		if got := h.n.Load(); got != 1 {
			t.Errorf("%s sent %d commands, want 1", step.name, got)
		}
	}
}
