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
	// ping asks the store for a cheap answer (PING, SELECT 1), for /readyz;
	// nil for a store in this process, which is always ready.
	ping  func(context.Context) error
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
// waits for one up to -store-timeout, then gets 503.
const defaultPGMaxConns = 32

// startupTimeout bounds connecting to a shared store and creating its schema.
const startupTimeout = 30 * time.Second

// openStore opens the store cfg.store names: "memory", or a URL whose
// scheme picks the backend. Shared stores have their schema created here.
func openStore(ctx context.Context, cfg config, log *slog.Logger) (openedStore, error) {
	if cfg.storeTimeout <= 0 { // a config not from parseConfig
		cfg.storeTimeout = defaultStoreTimeout
	}
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
			return openRueidis(cfg, u)
		}
		return openRedis(ctx, cfg, u)
	}
	return openedStore{}, fmt.Errorf("-store %s: unsupported; want memory, redis://… or postgres://…", u.Redacted())
}

// openRedis opens a redis:// store on go-redis. Each command, retries
// included, is bounded by -store-timeout (redisTimeout), and each of its
// steps too: dialing, waiting for a pooled connection, writing, reading.
// A step's timeout set in the URL (dial_timeout, pool_timeout,
// write_timeout, read_timeout) replaces -store-timeout for that step, under
// the same bound for the whole command.
func openRedis(ctx context.Context, cfg config, u *url.URL) (openedStore, error) {
	name := u.Redacted()
	opts, err := redis.ParseURL(cfg.store)
	if err != nil {
		return openedStore{}, fmt.Errorf("-store %s: %w", name, err)
	}
	q := u.Query()
	for _, t := range []struct {
		param string
		d     *time.Duration
	}{
		{"dial_timeout", &opts.DialTimeout},
		{"pool_timeout", &opts.PoolTimeout},
		{"write_timeout", &opts.WriteTimeout},
		{"read_timeout", &opts.ReadTimeout},
	} {
		if !q.Has(t.param) {
			*t.d = cfg.storeTimeout
		}
	}
	opts.ContextTimeoutEnabled = true // the bound's deadline reaches the socket
	client := redis.NewClient(opts)
	client.AddHook(redisTimeout(cfg.storeTimeout))
	// Fail at start, not on the first command, when Redis is unreachable.
	if err := client.Ping(ctx).Err(); err != nil {
		client.Close()
		return openedStore{}, fmt.Errorf("-store %s: %w", name, err)
	}
	s := redisstore.New(client, redisstore.WithDefaultTTL(cfg.ttl), redisstore.WithSecret([]byte(cfg.secret)))
	return openedStore{store: s, dash: &memDashboard{}, name: name,
		ping:  func(ctx context.Context) error { return client.Ping(ctx).Err() },
		close: func() { client.Close() }}, nil
}

// redisTimeout is a go-redis hook that bounds each command (and each
// pipeline), with the client's retries, to its duration. go-redis's own
// timeouts bound one attempt's steps, and it tries a command up to four
// times; redisstore has no bound of its own (it runs on the caller's
// context), and the engine's calls come with contexts that have none.
type redisTimeout time.Duration

func (redisTimeout) DialHook(next redis.DialHook) redis.DialHook { return next }

func (d redisTimeout) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		ctx, cancel := bound(ctx, time.Duration(d))
		defer cancel()
		return next(ctx, cmd)
	}
}

func (d redisTimeout) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		ctx, cancel := bound(ctx, time.Duration(d))
		defer cancel()
		return next(ctx, cmds)
	}
}

// bound limits ctx to d from now, unless it ends sooner anyway.
func bound(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if end, ok := ctx.Deadline(); ok && time.Until(end) <= d {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, d)
}

// openRueidis opens a redis:// store on rueidis. Each command is bounded
// by -store-timeout (rueidisTimeout); so are dialing and, as rueidis's
// ConnWriteTimeout, a connection's wait for its replies, unless the URL
// sets dial_timeout or write_timeout.
func openRueidis(cfg config, u *url.URL) (openedStore, error) {
	name := u.Redacted()
	opts, err := rueidis.ParseURL(cfg.store)
	if err != nil {
		return openedStore{}, fmt.Errorf("-store %s: %w", name, err)
	}
	q := u.Query()
	if !q.Has("dial_timeout") {
		opts.Dialer.Timeout = cfg.storeTimeout
	}
	if !q.Has("write_timeout") {
		opts.ConnWriteTimeout = cfg.storeTimeout
	}
	c, err := rueidis.NewClient(opts) // connects, so an unreachable Redis fails here
	if err != nil {
		return openedStore{}, fmt.Errorf("-store %s: %w", name, err)
	}
	client := rueidisTimeout{Client: c, d: cfg.storeTimeout}
	s := rueidisstore.New(client, rueidisstore.WithDefaultTTL(cfg.ttl), rueidisstore.WithSecret([]byte(cfg.secret)))
	return openedStore{store: s, dash: &memDashboard{}, name: name + " (rueidis)",
		ping:  func(ctx context.Context) error { return client.Do(ctx, client.B().Ping().Build()).Error() },
		close: c.Close}, nil
}

// rueidisTimeout bounds each command to d, as redisTimeout does for
// go-redis: rueidis honours a context's deadline, and rueidisstore passes
// the caller's, which from the engine has none.
type rueidisTimeout struct {
	rueidis.Client
	d time.Duration
}

func (c rueidisTimeout) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	ctx, cancel := bound(ctx, c.d)
	defer cancel()
	return c.Client.Do(ctx, cmd)
}

func (c rueidisTimeout) DoMulti(ctx context.Context, cmds ...rueidis.Completed) []rueidis.RedisResult {
	ctx, cancel := bound(ctx, c.d)
	defer cancel()
	return c.Client.DoMulti(ctx, cmds...)
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
		pgstore.WithTimeout(cfg.storeTimeout),
		pgstore.WithReaper(time.Minute, 0),
		pgstore.WithReaperErrorHandler(func(err error) {
			log.Warn("deleting expired records failed", "err", err)
		}),
	)
	if err != nil {
		pool.Close()
		return openedStore{}, fmt.Errorf("-store %s: %w", name, err)
	}
	ping := func(ctx context.Context) error {
		_, err := pool.Exec(ctx, "SELECT 1")
		return err
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
		return openedStore{store: s, dash: &memDashboard{}, name: name, ping: ping,
			close: func() { s.Close(); pool.Close() }}, nil
	}
	if err := s.MigrateWith(ctx, migrateDashboard); err != nil {
		return fail(err)
	}
	return openedStore{
		store: s.Transactional(),
		dash:  &pgDashboard{pool: pool, timeout: cfg.storeTimeout},
		name:  name,
		ping:  ping,
		close: func() {
			s.Close()
			pool.Close()
		},
	}, nil
}
