// Command idemd serves the dashboard command API: JSON commands
// posted to /v1/commands/{name} with an Idempotency-Key header, each run at
// most once per key and caller, with every retry answered by the recorded
// response.
//
// Usage:
//
//	idemd [flags]
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
//	-log-format text|json   log format on standard output [IDEMD_LOG_FORMAT] (default text)
//	-redis-client name      client library for a redis:// store: go-redis, or rueidis
//	                        (auto-pipelining; faster with many concurrent requests)
//	                        [IDEMD_REDIS_CLIENT] (default go-redis)
//	-log-level level        least level logged: debug, info (a line per command and the
//	                        "listening" line), warn or error [IDEMD_LOG_LEVEL] (default info)
//
// SIGINT or SIGTERM shuts down gracefully: idemd stops accepting, lets
// running commands finish for up to -shutdown-timeout, then cancels the rest,
// whose keys are released so that their retries run again. A second signal
// kills it at once.
//
// IDEMD_SECRET, when set, keys the HMAC that names records in a shared store
// (every replica must use the same value).
//
// Commands: widgets.create {"name":s} → 201 data.id; widgets.list {} → 200
// data.widgets and data.count (needs no key); reports.generate {"ms":n} →
// waits n ms (0..10000), then 200 data.report_id. Other endpoints: GET
// /healthz, GET /metrics (Prometheus text).
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
