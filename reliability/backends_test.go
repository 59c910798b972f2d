package reliability

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/pgstore"
	"github.com/idemkit/idempotency/redisstore"
)

const (
	defaultRedisURL    = "redis://127.0.0.1:6379/0"
	defaultPostgresURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
)

// fixture is one isolated namespace of one store backend: a store on it,
// and the means to open more stores on the same namespace (through a proxy,
// in another process) and to read the backend directly.
type fixture struct {
	name  string
	store idempotency.ClaimStore

	// target is the backend server's host:port; "" for the in-memory store.
	target string
	// via opens another store on the same namespace whose client dials addr
	// (a Proxy in front of target) with short network timeouts.
	via func(tb testing.TB, addr string) idempotency.ClaimStore
	// replica opens another store on the same namespace with a client of
	// its own, as another replica of a service would; the in-memory
	// fixture returns its one store.
	replica func(tb testing.TB) idempotency.ClaimStore
	// env describes the namespace to a helper process (see helper_test.go).
	env []string

	rdb    *redis.Client // Redis only: a direct client
	prefix string        // Redis only
	pool   *pgxpool.Pool // PostgreSQL only: a direct pool
	schema string        // PostgreSQL only
}

type fixtureConfig struct {
	secret []byte
	mem    []idempotency.Option
}

type fixtureOption func(*fixtureConfig)

// withSecret names records by HMAC keyed by secret.
func withSecret(secret []byte) fixtureOption {
	return func(c *fixtureConfig) { c.secret = secret }
}

// withMemory passes options to the in-memory store.
func withMemory(opts ...idempotency.Option) fixtureOption {
	return func(c *fixtureConfig) { c.mem = append(c.mem, opts...) }
}

type backendKind int

const (
	memoryBackend backendKind = iota
	redisBackend
	postgresBackend
)

var backendNames = map[backendKind]string{memoryBackend: "memory", redisBackend: "redis", postgresBackend: "postgres"}

// forEachBackend runs fn as a subtest for each backend in kinds (all three
// when kinds is empty), each with a fresh fixture.
func forEachBackend(t *testing.T, fn func(t *testing.T, f *fixture), kinds ...backendKind) {
	t.Helper()
	if len(kinds) == 0 {
		kinds = []backendKind{memoryBackend, redisBackend, postgresBackend}
	}
	for _, k := range kinds {
		t.Run(backendNames[k], func(t *testing.T) {
			fn(t, newFixture(t, k))
		})
	}
}

func newFixture(tb testing.TB, k backendKind, opts ...fixtureOption) *fixture {
	tb.Helper()
	var cfg fixtureConfig
	for _, o := range opts {
		o(&cfg)
	}
	switch k {
	case redisBackend:
		return redisFixture(tb, cfg)
	case postgresBackend:
		return postgresFixture(tb, cfg)
	}
	st := idempotency.NewInMemoryStore(cfg.mem...)
	return &fixture{name: "memory", store: st, replica: func(testing.TB) idempotency.ClaimStore { return st },
		env: []string{"RELIABILITY_BACKEND=memory"}} // a helper process's store is a fresh one of its own
}

// unreachable skips tb, or fails it when IDEMPOTENCY_REQUIRE_BACKENDS=1.
func unreachable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...) + "\n(start Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432, " +
		"or set IDEMPOTENCY_REDIS_URL / IDEMPOTENCY_POSTGRES_URL, to run this test; " +
		"IDEMPOTENCY_REQUIRE_BACKENDS=1 turns this skip into a failure)"
	if os.Getenv("IDEMPOTENCY_REQUIRE_BACKENDS") == "1" {
		tb.Fatal(msg)
	}
	tb.Skip(msg)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// redisOptions returns the test server's options, skipping tb when it does
// not answer.
func redisOptions(tb testing.TB) *redis.Options {
	tb.Helper()
	url := envOr("IDEMPOTENCY_REDIS_URL", defaultRedisURL)
	opt, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatalf("IDEMPOTENCY_REDIS_URL %q: %v", url, err)
	}
	probe := redis.NewClient(&redis.Options{Addr: opt.Addr, Username: opt.Username, Password: opt.Password,
		DB: opt.DB, TLSConfig: opt.TLSConfig, DialTimeout: time.Second, MaxRetries: -1})
	defer probe.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := probe.Ping(ctx).Err(); err != nil {
		unreachable(tb, "Redis at %s does not answer: %v", url, err)
	}
	return opt
}

// faultyRedisOptions are the options of a client that reaches the server
// through addr and gives up quickly when the network misbehaves.
func faultyRedisOptions(opt *redis.Options, addr string) *redis.Options {
	o := *opt
	o.Addr = addr
	o.DialTimeout = 300 * time.Millisecond
	o.ReadTimeout = 300 * time.Millisecond
	o.WriteTimeout = 300 * time.Millisecond
	o.MaxRetries = 1
	return &o
}

func redisFixture(tb testing.TB, cfg fixtureConfig) *fixture {
	tb.Helper()
	opt := redisOptions(tb)
	rdb := redis.NewClient(opt)
	prefix := "idemrel:" + rand.Text() + ":"
	tb.Cleanup(func() {
		deleteRedisPrefix(tb, rdb, prefix)
		rdb.Close()
	})
	storeOpts := []redisstore.Option{redisstore.WithPrefix(prefix)}
	if cfg.secret != nil {
		storeOpts = append(storeOpts, redisstore.WithSecret(cfg.secret))
	}
	f := &fixture{
		name:   "redis",
		store:  redisstore.New(rdb, storeOpts...),
		target: opt.Addr,
		rdb:    rdb,
		prefix: prefix,
		env:    []string{"RELIABILITY_BACKEND=redis", "RELIABILITY_PREFIX=" + prefix},
	}
	f.via = func(tb testing.TB, addr string) idempotency.ClaimStore {
		c := redis.NewClient(faultyRedisOptions(opt, addr))
		tb.Cleanup(func() { c.Close() })
		return redisstore.New(c, storeOpts...)
	}
	f.replica = func(tb testing.TB) idempotency.ClaimStore {
		c := redis.NewClient(opt)
		tb.Cleanup(func() { c.Close() })
		return redisstore.New(c, storeOpts...)
	}
	return f
}

func deleteRedisPrefix(tb testing.TB, c *redis.Client, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys, err := redisKeys(ctx, c, prefix)
	if err == nil && len(keys) > 0 {
		err = c.Unlink(ctx, keys...).Err()
	}
	if err != nil {
		tb.Errorf("deleting Redis keys under %q: %v", prefix, err)
	}
}

func redisKeys(ctx context.Context, c *redis.Client, prefix string) ([]string, error) {
	var keys []string
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	return keys, iter.Err()
}

// postgresConfig returns the test server's pool configuration, skipping tb
// when it does not answer.
func postgresConfig(tb testing.TB) *pgxpool.Config {
	tb.Helper()
	url := envOr("IDEMPOTENCY_POSTGRES_URL", defaultPostgresURL)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		tb.Fatalf("IDEMPOTENCY_POSTGRES_URL: %v", err)
	}
	cfg.ConnConfig.ConnectTimeout = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg.Copy())
	if err == nil {
		err = pool.Ping(ctx)
		pool.Close()
	}
	if err != nil {
		unreachable(tb, "PostgreSQL at %s:%d does not answer: %v", cfg.ConnConfig.Host, cfg.ConnConfig.Port, err)
	}
	return cfg
}

func newPool(tb testing.TB, cfg *pgxpool.Config) *pgxpool.Pool {
	tb.Helper()
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("pgxpool: %v", err)
	}
	tb.Cleanup(pool.Close)
	return pool
}

func postgresFixture(tb testing.TB, cfg fixtureConfig) *fixture {
	tb.Helper()
	pcfg := postgresConfig(tb)
	pcfg.MaxConns = 16
	pool := newPool(tb, pcfg.Copy())
	schema := "idemrel_" + strings.ToLower(rand.Text())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	storeOpts := []pgstore.Option{pgstore.WithSchema(schema)}
	if cfg.secret != nil {
		storeOpts = append(storeOpts, pgstore.WithSecret(cfg.secret))
	}
	st, err := pgstore.New(pool, storeOpts...)
	if err != nil {
		tb.Fatalf("pgstore.New: %v", err)
	}
	tb.Cleanup(func() {
		_ = st.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
			tb.Errorf("DROP SCHEMA %s: %v", schema, err)
		}
	})
	if err := st.Migrate(ctx); err != nil {
		tb.Fatalf("Migrate: %v", err)
	}
	target := net.JoinHostPort(pcfg.ConnConfig.Host, strconv.Itoa(int(pcfg.ConnConfig.Port)))
	f := &fixture{
		name:   "postgres",
		store:  st,
		target: target,
		pool:   pool,
		schema: schema,
		env:    []string{"RELIABILITY_BACKEND=postgres", "RELIABILITY_SCHEMA=" + schema},
	}
	f.via = func(tb testing.TB, addr string) idempotency.ClaimStore {
		c := pcfg.Copy()
		host, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		c.ConnConfig.Host, c.ConnConfig.Port = host, uint16(p)
		// A PostgreSQL backend takes ~20 ms to start on a loaded two-core
		// machine, one after the other: a small pool reconnects quickly
		// once a fault ends, and a connection attempt is given time to
		// finish rather than abandoned and retried (a storm of attempts
		// that keeps the server from recovering).
		c.ConnConfig.ConnectTimeout = 2 * time.Second
		c.MaxConns = 8
		c.ConnConfig.Fallbacks = nil
		// pgstore bounds every call (WithTimeout, 5s by default); shorter
		// than the test's stalls here, as go-redis's read timeout is for Redis.
		opts := append(slices.Clone(storeOpts), pgstore.WithTimeout(500*time.Millisecond))
		s, err := pgstore.New(newPool(tb, c), opts...)
		if err != nil {
			tb.Fatalf("pgstore.New: %v", err)
		}
		tb.Cleanup(func() { _ = s.Close() })
		return s
	}
	f.replica = func(tb testing.TB) idempotency.ClaimStore {
		c := pcfg.Copy()
		c.MaxConns = 8
		s, err := pgstore.New(newPool(tb, c), storeOpts...)
		if err != nil {
			tb.Fatalf("pgstore.New: %v", err)
		}
		tb.Cleanup(func() { _ = s.Close() })
		return s
	}
	return f
}

// proxied returns a Proxy in front of f's server, closed when tb ends, and
// a store on f's namespace that reaches the server through it.
func (f *fixture) proxied(tb testing.TB) (*Proxy, idempotency.ClaimStore) {
	tb.Helper()
	if f.target == "" {
		tb.Fatalf("%s has no server to proxy", f.name)
	}
	p, err := NewProxy(f.target)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p, f.via(tb, p.Addr())
}
