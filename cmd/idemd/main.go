// Command idemd serves the dashboard command API: JSON commands
// posted to /v1/commands/{name} with an Idempotency-Key header, each run at
// most once per key and caller, with every retry answered by the recorded
// response. With -upstream URL it is a sidecar instead: the same semantics
// in front of any HTTP API (see Sidecar mode below).
//
// Usage:
//
//	idemd [flags]
//	idemd -upstream URL [flags]
//
// Flags (each may also come from the environment variable named in brackets;
// a flag wins over its variable):
//
//	-addr address           listen address [IDEMD_ADDR] (default 127.0.0.1:8080;
//	                        port 0 picks a free port: the "listening" log line says which)
//	-store spec             where keys and responses live [IDEMD_STORE] (default memory):
//	                        memory, redis://… (or rediss://), or postgres://… (the
//	                        tables are created at start; search_path picks their schema;
//	                        pool_max_conns, default 32, bounds the commands running at once)
//	-ttl duration           how long responses are replayed [IDEMD_TTL] (default 24h)
//	-lease duration         how long a claim lives without a heartbeat [IDEMD_LEASE] (default 30s)
//	-shutdown-timeout d     how long SIGINT/SIGTERM waits for running commands before
//	                        cancelling them and releasing their keys [IDEMD_SHUTDOWN_TIMEOUT] (default 20s)
//	-store-timeout d        how long one call to a redis:// or postgres:// store may take,
//	                        retries and the wait for a pooled connection included, before
//	                        the request gets 503 store_unavailable [IDEMD_STORE_TIMEOUT]
//	                        (default 1.5s; must be positive). Step timeouts in the URL
//	                        (dial_timeout, read_timeout, write_timeout, pool_timeout;
//	                        connect_timeout) apply within it
//	-log-format text|json   log format on standard output [IDEMD_LOG_FORMAT] (default text)
//	-redis-client name      client library for a redis:// store: go-redis, or rueidis
//	                        (auto-pipelining; faster with many concurrent requests)
//	                        [IDEMD_REDIS_CLIENT] (default go-redis)
//	-log-level level        least level logged: debug, info (a line per command and the
//	                        "listening" line), warn or error [IDEMD_LOG_LEVEL] (default info)
//	-admin-token token      turns the admin API on (below); at least 16 bytes [IDEMD_ADMIN_TOKEN]
//	                        (prefer the variable: a flag shows in ps)
//	-admin-addr address     the admin API's own listener [IDEMD_ADMIN_ADDR] (default 127.0.0.1:8081)
//
// Sidecar flags (idemd -upstream URL):
//
//	-upstream URL           proxy every request to URL (http:// or https://, HTTP/1.1) [IDEMD_UPSTREAM]
//	-methods list           methods covered, comma-separated [IDEMD_METHODS] (default POST,PATCH;
//	                        GET, HEAD, OPTIONS and TRACE cannot be)
//	-paths list             path prefixes covered, comma-separated [IDEMD_PATHS] (default /)
//	-identity source        what tells callers apart: authorization (a digest of the
//	                        Authorization header) or header:NAME [IDEMD_IDENTITY] (default authorization)
//	-anonymous              keyed requests without an identity share one key space
//	                        (default: refused with 400) [IDEMD_ANONYMOUS]
//	-require-key            a covered request without a key gets 400 (default: passes through) [IDEMD_REQUIRE_KEY]
//	-upstream-ambiguous m   record (default) or release an answer of unknown outcome [IDEMD_UPSTREAM_AMBIGUOUS]
//	-upstream-timeout d     wait for the upstream's answer once sent [IDEMD_UPSTREAM_TIMEOUT] (default 1m)
//	-no-replay-headers list upstream response headers never replayed, beyond hop-by-hop,
//	                        Set-Cookie and credentials [IDEMD_NO_REPLAY_HEADERS]
//
// # Sidecar mode
//
// With -upstream, idemd serves no commands of its own: it is a reverse
// proxy (net/http/httputil) that puts the idemhttp semantics in front of
// any HTTP API. Requests not covered pass through untouched. A covered
// request with an Idempotency-Key is claimed in the store (-store, shared by
// replicas), sent upstream at most once, and the upstream's answer recorded
// with its headers — ETag, Cache-Control, its own X- headers — except the
// hop-by-hop ones, Set-Cookie and credentials; every retry with the same key
// and caller gets it back with Idempotent-Replayed: true.
//
// Outcomes of the upstream exchange:
//
//	never reached the upstream (dial failed)   503 upstream-unavailable, Retry-After: 1; the key
//	                                           is released, so a retry sends the request
//	sent, then reset, timed out (-upstream-timeout)   502 (504 on a timeout) upstream-outcome-unknown,
//	or cut off before the whole answer         recorded: every retry gets it back and the request
//	                                           is never sent again (check the upstream, then
//	                                           use a new key); -upstream-ambiguous=release
//	                                           releases the key instead, for an upstream that
//	                                           deduplicates by the key itself
//	the upstream's own 502 or 504              recorded likewise (released with release)
//	the upstream's 500, 503, 408, 425, 429     passed on; the key is released
//	any other answer up to 1 MiB               recorded and replayed
//	a larger answer                            streamed through; a tombstone is recorded,
//	                                           so a retry gets 410 and nothing is sent again
//
// The upstream sees the key as idempotency-key: Go's http.Transport sends a
// request again by itself, when a reused connection fails after the request
// was written, if it has an Idempotency-Key header; under that spelling it
// does not, so the upstream never sees one client request twice. A covered
// answer is read whole (up to the cap) before any of it is sent, so that
// an upstream that breaks off mid-answer is recorded as "outcome unknown",
// never as a truncated answer. The sidecar does not authenticate: a replay
// goes to whoever presents the same credential (the identity is its
// digest), without the upstream checking it again, until -ttl. idemd's own
// endpoints are /_idemd/healthz, /_idemd/readyz and /_idemd/metrics. A
// shutdown that runs out of -shutdown-timeout cuts the upstream exchanges
// still running, each recorded as "outcome unknown". With a postgres://
// store the requests are not run in transactions (a rerun would send them
// twice).
//
// # Admin API
//
// With -admin-token set, idemd serves an admin API on -admin-addr, a
// listener of its own (loopback by default), for looking at and repairing
// keys. Every call needs "Authorization: Bearer <token>" (compared in
// constant time) and is logged ("admin call", with method, path, query,
// remote address and status):
//
//	GET    /admin/v1/records?key=K&identity=I   the record of key K for caller I: absent, in_flight
//	                                            (owner, fence, claimed_at, age_ms, lease_left_ms),
//	                                            completed (status, size, stored_at, expires_at) or tombstone
//	DELETE /admin/v1/records?key=K&identity=I   purge it; a claim in flight is taken over: its
//	                                            holder can no longer record a response, and the
//	                                            next request with the key runs the command
//	GET    /admin/v1/claims?older-than=30s      the claims in flight at least that long, oldest
//	                                            first (limit=N, default 100)
//
// The caller is given as identity=, the identity as stored (anonymous, or
// bearer: and a digest), or as credential=, the Authorization header's
// value (in sidecar mode, the value of the -identity header), from which
// idemd derives the identity as for a request. A record may also be named
// by id=, as /admin/v1/claims lists it: the Redis and PostgreSQL stores
// keep only digests of keys and identities, so the claims they list carry
// an id and no key.
//
// SIGINT or SIGTERM shuts down gracefully: idemd stops accepting, lets
// running commands finish for up to -shutdown-timeout, then cancels the rest,
// whose keys are released so that their retries run again. A second signal
// kills it at once.
//
// IDEMD_SECRET, when set, keys the HMAC that names records in a shared store
// (every replica must use the same value).
//
// # OpenTelemetry
//
// When OTEL_EXPORTER_OTLP_ENDPOINT is set (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
// OTEL_EXPORTER_OTLP_METRICS_ENDPOINT for one signal), idemd exports traces
// and metrics over OTLP/HTTP (http/protobuf; package idemotel): a span per
// execution with child spans for its store calls, and the idempotency.*
// metrics, beside the Prometheus ones. OTEL_BSP_SCHEDULE_DELAY and
// OTEL_METRIC_EXPORT_INTERVAL (milliseconds) set how often they are sent,
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES the resource (service.name
// defaults to idemd), and the exporters read their other OTEL_EXPORTER_OTLP_*
// variables (headers, timeout, compression). A request's W3C traceparent
// header makes its execution's span part of the caller's trace. Spans carry no key or identity,
// only their digest, keyed with IDEMD_SECRET or else with a secret random
// per process. What is left is sent on exit. OTEL_SDK_DISABLED=true turns
// it all off.
//
// Commands: widgets.create {"name":s} → 201 data.id; widgets.list {} → 200
// data.widgets and data.count (needs no key); reports.generate {"ms":n} →
// waits n ms (0..10000), then 200 data.report_id.
//
// Other endpoints (under /_idemd/ in sidecar mode):
//
//	GET /healthz   liveness: 200 while the process serves, whether or not the
//	               store answers; 503 once shutdown has begun
//	GET /readyz    readiness: 200 while the store answers a ping (PING,
//	               SELECT 1; memory: always), else 503 store_unavailable, within
//	               -store-timeout or 1s, whichever is less; one ping serves
//	               the probes of 250ms; 503 once shutdown has begun
//	GET /metrics   Prometheus text; idemd_store_up is the last ping's result
//
// For Kubernetes, /healthz is the livenessProbe and /readyz the
// readinessProbe: an outage of the store takes the replicas out of
// service without restarting them.
//
// The widgets form one dashboard shared by all callers. With a postgres://
// store it lives in PostgreSQL, in the table idemd_widgets next to the
// records: every keyed command runs in a transaction (pgstore's
// transactional store) in which widgets.create inserts its widget and the
// command's record is written and committed, so a widget exists exactly
// when its record does. Replicas on the same database share the dashboard,
// and a restart or a crash at any instant neither loses a widget nor makes
// one twice. Each running command holds a connection of the pool until it
// commits. With the memory and Redis stores the dashboard lives in this
// process's memory: each replica has its own, and a restart empties it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal starts the graceful shutdown, a second one
	// kills the process at once.
	context.AfterFunc(ctx, stop)
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "idemd:", err)
		os.Exit(1)
	}
}
