package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/idemkit/idempotency"
)

// config is idemd's configuration, from flags over environment variables.
type config struct {
	addr            string
	store           string
	ttl             time.Duration
	lease           time.Duration
	shutdownTimeout time.Duration
	storeTimeout    time.Duration // bounds each store call, and /readyz's probe up to maxProbeTimeout
	logFormat       string
	logLevel        slog.Level
	redisClient     string
	secret          string
	adminToken      string // "": no admin API
	adminAddr       string
	sidecar         sidecarConfig // sidecar.upstream != "": idemd -upstream

	// observer, if set, observes the engines too, beside the metrics:
	// OpenTelemetry's (otel.go), set by run.
	observer *idempotency.Observer
}

// defaultStoreTimeout is -store-timeout's default. A request on a store
// that cannot answer makes one call before it is answered 503 (its claim,
// Begin; on PostgreSQL that includes the wait for a connection), so a hung
// store is answered within 1.5s, inside the 2s that a client or a load
// balancer should have to wait. It is not shorter because a store that
// does answer may take over a second: on PostgreSQL, a storm of duplicates
// of one key queues for the pool and for the row its first request holds
// until it commits (1.3s seen on two busy cores).
const defaultStoreTimeout = 1500 * time.Millisecond

// usageHeader comes before the flags in -h.
const usageHeader = `Usage: idemd [flags]
       idemd -upstream URL [flags]   (sidecar mode, below)

idemd serves the dashboard command API: POST /v1/commands/{name} with
widgets.create, widgets.list and reports.generate, each keyed command run at
most once per Idempotency-Key and caller, every retry answered with the
recorded response.

Where the dashboard's widgets live depends on -store:
  postgres://…  in PostgreSQL, in the table idemd_widgets beside the records
                (same database and search_path), each widget committed in the
                transaction that records its command: replicas on the same
                database share one dashboard, and a restart or a crash neither
                loses a widget nor makes one twice.
  memory, redis://…
                in this process's memory: each replica has a dashboard of its
                own, and a restart empties it (the records of a redis:// store
                remain, so a retry replays a widget that is no longer listed).

idemd's own endpoints:
  GET /healthz  liveness: 200 while the process serves, whatever the store
  GET /readyz   readiness: 200 while the store answers a ping, else 503
                (a ping waits up to -store-timeout, 1s at most)
  GET /metrics  Prometheus metrics

Admin API, with -admin-token, on -admin-addr (a listener of its own), each
call with Authorization: Bearer <token>, each logged:
  GET    /admin/v1/records?key=K&identity=I   the record (or credential=C, the
                                            caller's Authorization value; or id=)
  DELETE /admin/v1/records?key=K&identity=I   purge it: a claim in flight is
                                            taken over, the next request runs
  GET    /admin/v1/claims?older-than=30s      claims in flight that long

Sidecar mode, idemd -upstream URL: the same semantics in front of any HTTP
API. Every request is proxied to URL; a covered one (-methods, -paths) with
an Idempotency-Key is sent upstream at most once per key and caller
(-identity), and its answer, with the upstream's own headers (not
hop-by-hop ones, Set-Cookie or credentials), is replayed to every retry.
  never reached the upstream (dial failed)   503, key released: a retry sends it
  sent, then reset, timed out or cut off      502 or 504 "upstream outcome unknown",
  before the whole answer; upstream 502, 504  recorded: retries get it back and
                                              nothing is sent twice
                                              (-upstream-ambiguous=release: released)
  upstream 500, 503, 408, 425, 429            passed on, key released: a retry sends it
  any other answer                            recorded and replayed
  an answer over 1 MiB                        streamed through; retries get 410
idemd's own endpoints move to /_idemd/healthz, /_idemd/readyz and
/_idemd/metrics. With postgres://, requests are not run in a transaction
(there is no dashboard).

OpenTelemetry: with OTEL_EXPORTER_OTLP_ENDPOINT (or its _TRACES_ or _METRICS_
form) set, traces and metrics are also exported over OTLP/HTTP; the other
OTEL_* variables apply (OTEL_SERVICE_NAME, default idemd; OTEL_METRIC_EXPORT_INTERVAL…).
Spans carry a digest of each key, never the key.

Flags (each also read from the environment variable in brackets):
`

// parseConfig reads the flags in args, taking each default from its
// environment variable when that is set. -h prints the usage to out and
// returns flag.ErrHelp.
func parseConfig(args []string, getenv func(string) string, out io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("idemd", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHeader)
		fs.PrintDefaults()
	}
	var errs []error
	str := func(p *string, name, env, def, usage string) {
		if v := getenv(env); v != "" {
			def = v
		}
		fs.StringVar(p, name, def, usage+" ["+env+"]")
	}
	dur := func(p *time.Duration, name, env string, def time.Duration, usage string) {
		if v := getenv(env); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
			def = d
		}
		fs.DurationVar(p, name, def, usage+" ["+env+"]")
	}
	str(&cfg.addr, "addr", "IDEMD_ADDR", "127.0.0.1:8080", "listen address (port 0: any free port)")
	str(&cfg.store, "store", "IDEMD_STORE", "memory",
		"store: memory, redis://… or postgres://… (search_path picks the schema of its tables, pool_max_conns the pool's size, default 32: one connection per running command); the dashboard lives in PostgreSQL with postgres://…, in memory otherwise")
	dur(&cfg.ttl, "ttl", "IDEMD_TTL", 24*time.Hour, "how long responses are replayed")
	dur(&cfg.lease, "lease", "IDEMD_LEASE", 30*time.Second, "how long a claim lives without a heartbeat")
	dur(&cfg.shutdownTimeout, "shutdown-timeout", "IDEMD_SHUTDOWN_TIMEOUT", 20*time.Second,
		"how long shutdown waits for running commands before cancelling them")
	dur(&cfg.storeTimeout, "store-timeout", "IDEMD_STORE_TIMEOUT", defaultStoreTimeout,
		"how long one call to a redis:// or postgres:// store may take, retries included, before the request gets 503 store_unavailable; also the longest wait for a free PostgreSQL connection")
	str(&cfg.logFormat, "log-format", "IDEMD_LOG_FORMAT", "text", "log format: text or json")
	str(&cfg.redisClient, "redis-client", "IDEMD_REDIS_CLIENT", "go-redis",
		"client library for a redis:// store: go-redis, or rueidis (auto-pipelining: faster with many concurrent requests)")
	str(&cfg.sidecar.upstream, "upstream", "IDEMD_UPSTREAM", "",
		"sidecar mode: proxy every request to this http:// or https:// URL, covered requests (-methods, -paths) with an Idempotency-Key sent at most once and their answers replayed; no dashboard")
	var methods, paths, noReplay string
	str(&methods, "methods", "IDEMD_METHODS", "POST,PATCH", "sidecar: comma-separated methods covered (not GET, HEAD, OPTIONS, TRACE)")
	str(&paths, "paths", "IDEMD_PATHS", "/", "sidecar: comma-separated path prefixes covered")
	str(&cfg.sidecar.identity, "identity", "IDEMD_IDENTITY", "authorization",
		"sidecar: what tells callers apart: authorization (a digest of the Authorization header) or header:NAME (a digest of that header)")
	boolean := func(p *bool, name, env string, usage string) {
		def := false
		if v := getenv(env); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
			def = b
		}
		fs.BoolVar(p, name, def, usage+" ["+env+"]")
	}
	boolean(&cfg.sidecar.anonymous, "anonymous", "IDEMD_ANONYMOUS",
		"sidecar: let keyed requests without an identity through, all sharing one key space (else 400)")
	boolean(&cfg.sidecar.requireKey, "require-key", "IDEMD_REQUIRE_KEY", "sidecar: answer 400 to a covered request without an Idempotency-Key (else it passes through)")
	str(&cfg.sidecar.ambiguous, "upstream-ambiguous", "IDEMD_UPSTREAM_AMBIGUOUS", "record",
		"sidecar: an answer of unknown outcome (sent, then reset or timed out; the upstream's 502 or 504): record (retries get it back; never sent twice) or release (the retry sends it again: only for an upstream that is idempotent itself)")
	dur(&cfg.sidecar.upstreamTimeout, "upstream-timeout", "IDEMD_UPSTREAM_TIMEOUT", time.Minute,
		"sidecar: how long to wait for the upstream's answer once the request is sent (then 504, outcome unknown)")
	str(&noReplay, "no-replay-headers", "IDEMD_NO_REPLAY_HEADERS", "",
		"sidecar: comma-separated upstream response headers never replayed, beyond hop-by-hop, Set-Cookie and credentials")
	str(&cfg.adminToken, "admin-token", "IDEMD_ADMIN_TOKEN", "",
		"turns the admin API on (inspect and purge records, list stuck claims), on -admin-addr; callers send Authorization: Bearer <token>; at least 16 bytes (prefer the variable: flags show in ps)")
	str(&cfg.adminAddr, "admin-addr", "IDEMD_ADMIN_ADDR", "127.0.0.1:8081", "listen address of the admin API (with -admin-token)")
	var level string
	str(&level, "log-level", "IDEMD_LOG_LEVEL", "info", "least level logged: debug, info (a line per command), warn or error")
	cfg.secret = getenv("IDEMD_SECRET")
	if len(errs) > 0 {
		return config{}, errs[0]
	}
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	cfg.sidecar.methods, cfg.sidecar.paths, cfg.sidecar.noReplay = splitList(strings.ToUpper(methods)), splitList(paths), splitList(noReplay)
	if cfg.sidecar.upstream != "" {
		if err := cfg.sidecar.validate(); err != nil {
			return config{}, err
		}
	}
	switch {
	case fs.NArg() > 0:
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	case cfg.ttl <= 0:
		return config{}, fmt.Errorf("-ttl %v: must be positive", cfg.ttl)
	case cfg.lease <= 0:
		return config{}, fmt.Errorf("-lease %v: must be positive", cfg.lease)
	case cfg.shutdownTimeout < 0:
		return config{}, fmt.Errorf("-shutdown-timeout %v: must not be negative", cfg.shutdownTimeout)
	case cfg.storeTimeout <= 0:
		return config{}, fmt.Errorf("-store-timeout %v: must be positive", cfg.storeTimeout)
	case cfg.logFormat != "text" && cfg.logFormat != "json":
		return config{}, fmt.Errorf("-log-format %q: want text or json", cfg.logFormat)
	case cfg.redisClient != "go-redis" && cfg.redisClient != "rueidis":
		return config{}, fmt.Errorf("-redis-client %q: want go-redis or rueidis", cfg.redisClient)
	case cfg.adminToken != "" && len(cfg.adminToken) < minAdminToken:
		return config{}, fmt.Errorf("-admin-token: %d bytes; want at least %d (a random one: openssl rand -hex 32)", len(cfg.adminToken), minAdminToken)
	case cfg.adminToken != "" && cfg.adminAddr == cfg.addr && !strings.HasSuffix(cfg.addr, ":0"):
		return config{}, fmt.Errorf("-admin-addr %s: the admin API needs a listener of its own, not -addr's", cfg.adminAddr)
	case cfg.logLevel.UnmarshalText([]byte(level)) != nil:
		return config{}, fmt.Errorf("-log-level %q: want debug, info, warn or error", level)
	}
	return cfg, nil
}

func newLogger(format string, level slog.Level, out io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(out, opts))
	}
	return slog.New(slog.NewTextHandler(out, opts))
}

// run is idemd: it serves until ctx ends, then shuts down gracefully. Logs go
// to stdout; the line "listening" gives the bound address.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	cfg, err := parseConfig(args, getenv, stdout)
	if err != nil {
		return err
	}
	log := newLogger(cfg.logFormat, cfg.logLevel, stdout)
	store, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer store.close()
	tel, err := newTelemetry(ctx, cfg, getenv, storeKind(cfg.store))
	if err != nil {
		return err
	}
	defer tel.close(ctx, log)
	cfg.observer = tel.engineObserver()
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return err
	}
	s := newServer(cfg, store.store, store.dash, log)
	s.ready.ping = store.ping
	s.handler = tel.propagate(s.handler)
	if cfg.adminToken != "" {
		stop, err := startAdmin(ctx, cfg, s, log)
		if err != nil {
			ln.Close()
			return err
		}
		defer stop()
	}
	if cfg.sidecar.upstream != "" {
		log.Info("listening", "addr", ln.Addr().String(), "store", store.name, "upstream", cfg.sidecar.upstream,
			"methods", cfg.sidecar.methods, "paths", cfg.sidecar.paths, "identity", cfg.sidecar.identity,
			"upstream_ambiguous", cfg.sidecar.ambiguous, "ttl", cfg.ttl, "lease", cfg.lease)
		return s.serve(ctx, ln)
	}
	log.Info("listening", "addr", ln.Addr().String(), "store", store.name, "dashboard", store.dash.where(),
		"ttl", cfg.ttl, "lease", cfg.lease)
	return s.serve(ctx, ln)
}
