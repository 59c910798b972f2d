package pgstore

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/storetest"
)

const defaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// testPool returns a pool on the test server, closed when tb ends. It
// skips tb when the server cannot be reached, or fails it when
// IDEMPOTENCY_REQUIRE_BACKENDS=1. configure, if any, adjust the pool's
// configuration.
func testPool(tb testing.TB, configure ...func(*pgxpool.Config)) *pgxpool.Pool {
	tb.Helper()
	url := os.Getenv("IDEMPOTENCY_POSTGRES_URL")
	if url == "" {
		url = defaultURL
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		tb.Fatalf("IDEMPOTENCY_POSTGRES_URL: %v", err)
	}
	cfg.ConnConfig.ConnectTimeout = 3 * time.Second
	for _, f := range configure {
		f(cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		if err = pool.Ping(ctx); err != nil {
			pool.Close()
		}
	}
	if err != nil {
		msg := fmt.Sprintf("PostgreSQL at %s:%d unreachable (%v); start it, or set IDEMPOTENCY_POSTGRES_URL "+
			"(default %s) to a server where the user may create schemas", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err, defaultURL)
		if os.Getenv("IDEMPOTENCY_REQUIRE_BACKENDS") == "1" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	tb.Cleanup(pool.Close)
	return pool
}

// testSchema creates a schema of its own for tb on pool and drops it, with
// everything in it, when tb ends (before pool closes).
func testSchema(tb testing.TB, pool *pgxpool.Pool) string {
	tb.Helper()
	schema := "idem_test_" + strings.ToLower(rand.Text())
	if _, err := pool.Exec(context.Background(), "CREATE SCHEMA "+schema); err != nil {
		tb.Fatalf("CREATE SCHEMA: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			tb.Errorf("DROP SCHEMA %s: %v", schema, err)
		}
	})
	return schema
}

// newUnmigrated returns a Store on pool, closed when tb ends, without
// running Migrate.
func newUnmigrated(tb testing.TB, pool *pgxpool.Pool, opts ...Option) *Store {
	tb.Helper()
	st, err := New(pool, opts...)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st
}

// newMigrated returns a Store on pool, with its table created, closed when
// tb ends.
func newMigrated(tb testing.TB, pool *pgxpool.Pool, opts ...Option) *Store {
	tb.Helper()
	st := newUnmigrated(tb, pool, opts...)
	if err := st.Migrate(context.Background()); err != nil {
		tb.Fatalf("Migrate: %v", err)
	}
	return st
}

// newStore is the storetest factory: a fresh store in a schema of its own.
func newStore(tb testing.TB) *Store {
	tb.Helper()
	pool := testPool(tb)
	return newMigrated(tb, pool, WithSchema(testSchema(tb, pool)))
}

// newReplicas returns n stores, each on its own pool, sharing one schema.
func newReplicas(tb testing.TB, n int) []idempotency.Store {
	tb.Helper()
	first := testPool(tb)
	schema := testSchema(tb, first)
	stores := make([]idempotency.Store, n)
	for i := range stores {
		pool := first
		if i > 0 {
			pool = testPool(tb)
		}
		stores[i] = newMigrated(tb, pool, WithSchema(schema))
	}
	return stores
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(tb testing.TB) idempotency.Store { return newStore(tb) },
		storetest.WithReplicas(newReplicas))
}

// At SERIALIZABLE, racing statements fail with 40001 instead of waiting;
// the store must turn those into protocol outcomes (retrying inside), so
// the whole suite still passes. The stores also use a secret.
func TestConformanceSerializable(t *testing.T) {
	if testing.Short() {
		t.Skip("repeats TestConformance at another isolation level")
	}
	serializable := func(tb testing.TB) *pgxpool.Pool {
		tb.Helper()
		return testPool(tb, func(cfg *pgxpool.Config) {
			cfg.ConnConfig.RuntimeParams["default_transaction_isolation"] = "serializable"
		})
	}
	secret := WithSecret([]byte("conformance secret"))
	storetest.Run(t, func(tb testing.TB) idempotency.Store {
		pool := serializable(tb)
		return newMigrated(tb, pool, WithSchema(testSchema(tb, pool)), secret)
	}, storetest.WithReplicas(func(tb testing.TB, n int) []idempotency.Store {
		first := serializable(tb)
		schema := testSchema(tb, first)
		stores := make([]idempotency.Store, n)
		for i := range stores {
			pool := first
			if i > 0 {
				pool = serializable(tb)
			}
			stores[i] = newMigrated(tb, pool, WithSchema(schema), secret)
		}
		return stores
	}))
}

func BenchmarkStore(b *testing.B) {
	storetest.Benchmark(b, func(tb testing.TB) idempotency.Store { return newStore(tb) })
}
