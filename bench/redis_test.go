package bench

import (
	"context"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
	"github.com/idemkit/idempotency/redisstore"
)

// redisPreload is how many completed records the read benchmarks cycle through.
const redisPreload = 1000

// redisFixture is one Redis server seen by every contender: redisstore and raw
// go-redis through the same client, rueidis through its own.
type redisFixture struct {
	client  *redis.Client
	rue     rueidis.Client
	store   *redisstore.Store
	prefix  string
	keys    []string // idempotency keys of completed records
	rawKeys []string // raw keys holding the same body
	body    []byte
}

func newRedisFixture(b *testing.B) *redisFixture {
	b.Helper()
	opt := redisOptions(b)
	f := &redisFixture{client: redis.NewClient(opt), body: benchBody()}
	b.Cleanup(func() { f.client.Close() })
	rue, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{opt.Addr}, SelectDB: opt.DB, DisableCache: true})
	if err != nil {
		b.Fatalf("rueidis: %v", err)
	}
	b.Cleanup(rue.Close)
	f.rue = rue
	f.prefix = newPrefix(b, f.client)
	f.store = redisstore.New(f.client, redisstore.WithPrefix(f.prefix+"store:"))
	ctx := context.Background()
	f.keys = benchKeys("rkey", redisPreload)
	f.rawKeys = make([]string, redisPreload)
	pipe := f.client.Pipeline()
	for i, k := range f.keys {
		if err := f.store.Store(ctx, k, "alice", idempotency.Cached{Status: 201, WireBody: f.body, TTL: time.Hour, Fingerprint: "fp"}); err != nil {
			b.Fatal(err)
		}
		name := driver.RecordKey(nil, k, "alice")
		f.rawKeys[i] = f.prefix + "raw:{" + hex.EncodeToString(name[:]) + "}"
		pipe.Set(ctx, f.rawKeys[i], f.body, time.Hour)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.Fatal(err)
	}
	return f
}

// getScript is the smallest script, to price EVALSHA against GET.
const getScript = "return redis.call('GET', KEYS[1])"

// BenchmarkRedis compares redisstore with raw commands on the same server and
// client (PoolSize 64): a replaying Begin against GET, Begin then Complete
// on a fresh key against SET NX PX, at 1 and 64 callers; and the same raw
// commands through rueidis (auto-pipelining) for the client comparison.
func BenchmarkRedis(b *testing.B) {
	f := newRedisFixture(b)
	ctx := context.Background()
	goScript := redis.NewScript(getScript)
	rueScript := rueidis.NewLuaScript(getScript)
	var fresh atomic.Int64
	run := fmt.Sprintf("%d", time.Now().UnixNano())
	// A fresh key costs one allocation (its string), paid by the store's
	// contenders and the raw commands alike.
	keyPrefix := "fresh-" + run + "-"
	freshKey := func() string {
		var b [64]byte
		return string(strconv.AppendInt(append(b[:0], keyPrefix...), fresh.Add(1), 10))
	}
	freshRaw := func() string {
		name := driver.RecordKey(nil, freshKey(), "alice")
		return f.prefix + "raw:{" + hex.EncodeToString(name[:]) + "}"
	}
	claim := idempotency.ClaimRequest{Fingerprint: "fp", Owner: "bench-owner", Lease: time.Minute}
	ops := []struct {
		name string
		op   func(i int64) error
	}{
		{"op=Replay/impl=redisstore", func(i int64) error {
			cl, err := f.store.Begin(ctx, f.keys[i%redisPreload], "alice", claim)
			if err == nil && cl.Status != idempotency.ClaimReplay {
				err = fmt.Errorf("Begin on a completed key: %v", cl.Status)
			}
			return err
		}},
		{"op=Replay/impl=raw-GET", func(i int64) error {
			return f.client.Get(ctx, f.rawKeys[i%redisPreload]).Err()
		}},
		{"op=Replay/impl=raw-EVALSHA-GET", func(i int64) error {
			return goScript.Run(ctx, f.client, []string{f.rawKeys[i%redisPreload]}).Err()
		}},
		{"op=Replay/impl=rueidis-GET", func(i int64) error {
			return f.rue.Do(ctx, f.rue.B().Get().Key(f.rawKeys[i%redisPreload]).Build()).Error()
		}},
		{"op=Replay/impl=rueidis-EVALSHA-GET", func(i int64) error {
			return rueScript.Exec(ctx, f.rue, []string{f.rawKeys[i%redisPreload]}, nil).Error()
		}},
		{"op=Claim/impl=redisstore-begin+complete", func(int64) error {
			cl, err := f.store.Begin(ctx, freshKey(), "alice", claim)
			if err != nil {
				return err
			}
			if cl.Status != idempotency.ClaimAcquired {
				return fmt.Errorf("Begin on a fresh key: %v", cl.Status)
			}
			return f.store.Complete(ctx, cl.Token, idempotency.Cached{Status: 201, WireBody: f.body, TTL: time.Hour})
		}},
		{"op=Claim/impl=raw-SETNX", func(int64) error {
			return f.client.SetArgs(ctx, freshRaw(), f.body, redis.SetArgs{Mode: "NX", TTL: time.Hour + time.Millisecond}).Err()
		}},
		{"op=Claim/impl=rueidis-SETNX", func(int64) error {
			return f.rue.Do(ctx, f.rue.B().Set().Key(freshRaw()).Value(rueidis.BinaryString(f.body)).Nx().PxMilliseconds(3600001).Build()).Error()
		}},
	}
	for _, par := range []int{1, 64} {
		for _, o := range ops {
			b.Run(fmt.Sprintf("%s/par=%d", o.name, par), func(b *testing.B) { atParallel(b, par, o.op) })
		}
	}
}

// countingHook counts the commands go-redis sends, pipelines included.
type countingHook struct{ n atomic.Int64 }

func (h *countingHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *countingHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}
func (h *countingHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

// TestRedisRoundTrips checks the issue's "exactly one round trip per replay
// and per claim": once the scripts are cached on the server, each step sends
// exactly one command.
func TestRedisRoundTrips(t *testing.T) {
	opt := redisOptions(t)
	c := redis.NewClient(opt)
	defer c.Close()
	prefix := newPrefix(t, c)
	hook := &countingHook{}
	c.AddHook(hook)
	s := redisstore.New(c, redisstore.WithPrefix(prefix))
	ctx := context.Background()
	req := idempotency.ClaimRequest{Fingerprint: "fp", Owner: "o", Lease: time.Minute}
	resp := idempotency.Cached{Status: 201, WireBody: []byte(`{"ok":true}`)}
	// Warm the script cache: the first run of each script may add an EVAL.
	cl, err := s.Begin(ctx, "warm", "alice", req)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Complete(ctx, cl.Token, resp); err != nil {
		t.Fatal(err)
	}
	s.Lookup(ctx, "warm", "alice")
	steps := []struct {
		name string
		op   func() error
	}{
		{"claim (Begin on a fresh key)", func() error {
			cl, err = s.Begin(ctx, "k", "alice", req)
			return err
		}},
		{"Complete", func() error { return s.Complete(ctx, cl.Token, resp) }},
		{"replay (Begin on a completed key)", func() error {
			got, err := s.Begin(ctx, "k", "alice", req)
			if err == nil && got.Status != idempotency.ClaimReplay {
				err = fmt.Errorf("status %v, want replay", got.Status)
			}
			return err
		}},
		{"Lookup", func() error {
			if _, ok := s.Lookup(ctx, "k", "alice"); !ok {
				return fmt.Errorf("Lookup missed")
			}
			return nil
		}},
	}
	for _, st := range steps {
		before := hook.n.Load()
		if err := st.op(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := hook.n.Load() - before; got != 1 {
			t.Errorf("%s sent %d commands, want 1", st.name, got)
		}
	}
}
