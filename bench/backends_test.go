package bench

import (
	"context"
	"crypto/rand"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

const (
	defaultRedisURL    = "redis://127.0.0.1:6379/0"
	defaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
)

// unreachable skips, or fails when IDEMPOTENCY_REQUIRE_BACKENDS=1.
func unreachable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	if os.Getenv("IDEMPOTENCY_REQUIRE_BACKENDS") == "1" {
		tb.Fatalf(format, args...)
	}
	tb.Skipf(format+" (IDEMPOTENCY_REQUIRE_BACKENDS=1 turns this skip into a failure)", args...)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// redisOptions returns the options every Redis contender shares: the
// server of IDEMPOTENCY_REDIS_URL and a pool big enough for 64 parallel
// callers.
func redisOptions(tb testing.TB) *redis.Options {
	tb.Helper()
	url := envOr("IDEMPOTENCY_REDIS_URL", defaultRedisURL)
	opt, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatalf("IDEMPOTENCY_REDIS_URL %q: %v", url, err)
	}
	opt.PoolSize = 64
	probe := redis.NewClient(opt)
	defer probe.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := probe.Ping(ctx).Err(); err != nil {
		unreachable(tb, "redis at %s does not answer: %v; start redis-server on 127.0.0.1:6379 or set IDEMPOTENCY_REDIS_URL", url, err)
	}
	return opt
}

// newPrefix returns a key prefix of its own, whose keys are deleted when tb ends.
func newPrefix(tb testing.TB, c *redis.Client) string {
	tb.Helper()
	prefix := "idembench:" + rand.Text()[:8] + ":"
	tb.Cleanup(func() {
		ctx := context.Background()
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			if keys = append(keys, iter.Val()); len(keys) == 500 {
				c.Unlink(ctx, keys...)
				keys = keys[:0]
			}
		}
		if len(keys) > 0 {
			c.Unlink(ctx, keys...)
		}
	})
	return prefix
}

// newPool returns a pool of maxConns connections to IDEMPOTENCY_POSTGRES_URL,
// closed when tb ends.
func newPool(tb testing.TB, maxConns int32) *pgxpool.Pool {
	tb.Helper()
	url := envOr("IDEMPOTENCY_POSTGRES_URL", defaultPostgresURL)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		tb.Fatalf("IDEMPOTENCY_POSTGRES_URL %q: %v", url, err)
	}
	cfg.MaxConns, cfg.MinConns = maxConns, maxConns
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		err = pool.Ping(ctx)
	}
	if err != nil {
		if pool != nil {
			pool.Close()
		}
		unreachable(tb, "postgres at %s does not answer: %v; start PostgreSQL on 127.0.0.1:5432 or set IDEMPOTENCY_POSTGRES_URL", url, err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// newSchema returns a schema name of its own, dropped when tb ends.
func newSchema(tb testing.TB, pool *pgxpool.Pool) string {
	tb.Helper()
	name := "idembench_" + strings.ToLower(rand.Text()[:10])
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, `DROP SCHEMA IF EXISTS "`+name+`" CASCADE`); err != nil {
			tb.Errorf("dropping schema %s: %v", name, err)
		}
	})
	return name
}

// atParallel runs op from exactly n goroutines (n/GOMAXPROCS per P, so run
// these with a -cpu that divides n), or, for n == 1, in a plain loop. op gets
// a number unique to the call.
func atParallel(b *testing.B, n int, op func(i int64) error) {
	var seq atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	if n == 1 {
		for b.Loop() {
			if err := op(seq.Add(1)); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	b.SetParallelism(max(1, n/runtimeProcs()))
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op(seq.Add(1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
