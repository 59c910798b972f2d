package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/pgstore"
	"github.com/idemkit/idempotency/redisstore"
	"github.com/idemkit/idempotency/redisstore/rueidisstore"
)

// openedStore is the store -store names, with the dashboard that goes with
// it and what closes them.
type openedStore struct {
	store idempotency.Store
	dash  dashboard
	name  string // for logs: the spec without credentials
	close func()
}

// Where the dashboard lives (dashboard.where), as the "listening" log line says.
const (
	dashInMemory   = "memory"
	dashInPostgres = "postgres"
)

// defaultPGMaxConns is the size of the pool of a postgres:// store whose
// URL does not set pool_max_conns. Each running command holds a connection
// of its own, from its claim to its commit, and a claim, a widgets.list or
// the reaper takes one more for a moment; a command that finds none free
// waits for one up to the store's timeout (5s), then gets 503.
const defaultPGMaxConns = 32

// startupTimeout bounds connecting to a shared store and creating its schema.
const startupTimeout = 30 * time.Second

// openStore opens the store cfg.store names: "memory", or a URL whose
// scheme picks the backend. Shared stores have their schema created here.
func openStore(ctx context.Context, cfg config, log *slog.Logger) (openedStore, error) {
	if cfg.store == "memory" {
		return openedStore{
			store: idempotency.NewInMemoryStore(idempotency.WithDefaultTTL(cfg.ttl)),
			dash:  &memDashboard{},
			name:  "memory",
			close: func() {},
		}, nil
	}
	u, err := url.Parse(cfg.store)
	if err != nil {
		return openedStore{}, fmt.Errorf("-store: not memory nor a URL: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, startupTimeout)
	defer cancel()
	switch strings.ToLower(u.Scheme) {
	case "postgres", "postgresql":
		return openPostgres(ctx, cfg, u, log)
	case "redis", "rediss", "unix":
		if cfg.redisClient == "rueidis" {
			return openRueidis(cfg, u.Redacted())
		}
		return openRedis(ctx, cfg, u.Redacted())
	}
	return openedStore{}, fmt.Errorf("-store %s: unsupported; want memory, redis://… or postgres://…", u.Redacted())
}

func openRedis(ctx context.Context, cfg config, name string) (openedStore, error) {
	opts, err := redis.ParseURL(cfg.store)
	if err != nil {
		return openedStore{}, fmt.Errorf("-store %s: %w", name, err)
	}
	client := redis.NewClient(opts)
	// Fail at start, not on the first command, when Redis is unreachable.
	if err := client.Ping(ctx).Err(); err != nil {
		client.Close()
		return openedStore{}, fmt.Errorf("-store %s: %w", name, err)
	}
	s := redisstore.New(client, redisstore.WithDefaultTTL(cfg.ttl), redisstore.WithSecret([]byte(cfg.secret)))
	return openedStore{store: s, dash: &memDashboard{}, name: name, close: func() { client.Close() }}, nil
}

func openRueidis(cfg config, name string) (openedStore, error) {
	opts, err := rueidis.ParseURL(cfg.store)
	if err != nil {
		return openedStore{}, fmt.Errorf("-store %s: %w", name, err)
	}
	client, err := rueidis.NewClient(opts) // connects, so an unreachable Redis fails here
	if err != nil {
		return openedStore{}, fmt.Errorf("-store %s: %w", name, err)
	}
	s := rueidisstore.New(client, rueidisstore.WithDefaultTTL(cfg.ttl), rueidisstore.WithSecret([]byte(cfg.secret)))
	return openedStore{store: s, dash: &memDashboard{}, name: name + " (rueidis)", close: client.Close}, nil
}

// openPostgres opens a postgres:// store: pgstore's transactional view,
// so that every command runs in a transaction that commits with its
// record, and the dashboard in the same database. The start-up migration
// creates pgstore's objects and the dashboard's table.
func openPostgres(ctx context.Context, cfg config, u *url.URL, log *slog.Logger) (openedStore, error) {
	name := u.Redacted()
	pcfg, err := pgxpool.ParseConfig(cfg.store)
	if err != nil {
		return openedStore{}, fmt.Errorf("-store %s: %w", name, err)
	}
	if !u.Query().Has("pool_max_conns") {
		pcfg.MaxConns = defaultPGMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return openedStore{}, fmt.Errorf("-store %s: %w", name, err)
	}
	s, err := pgstore.New(pool,
		pgstore.WithDefaultTTL(cfg.ttl),
		pgstore.WithSecret([]byte(cfg.secret)),
		pgstore.WithReaper(time.Minute, 0),
		pgstore.WithReaperErrorHandler(func(err error) {
			log.Warn("deleting expired records failed", "err", err)
		}),
	)
	if err != nil {
		pool.Close()
		return openedStore{}, fmt.Errorf("-store %s: %w", name, err)
	}
	fail := func(err error) (openedStore, error) {
		s.Close()
		pool.Close()
		return openedStore{}, fmt.Errorf("-store %s: creating the schema: %w", name, err)
	}
	if cfg.sidecar.upstream != "" {
		// The sidecar's command is a request to the upstream: it must never
		// run twice, so not in a transaction that a serialization failure
		// would run again. There is no dashboard.
		if err := s.Migrate(ctx); err != nil {
			return fail(err)
		}
		return openedStore{store: s, dash: &memDashboard{}, name: name,
			close: func() { s.Close(); pool.Close() }}, nil
	}
	if err := s.MigrateWith(ctx, migrateDashboard); err != nil {
		return fail(err)
	}
	return openedStore{
		store: s.Transactional(),
		dash:  &pgDashboard{pool: pool},
		name:  name,
		close: func() {
			s.Close()
			pool.Close()
		},
	}, nil
}
