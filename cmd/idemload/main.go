// Command idemload drives an idemd (any store) over HTTP and checks that every
// command ran exactly once.
//
// Usage:
//
//	idemload [flags]
//
// Flags:
//
//	-url URL              idemd's base URL; loopback addresses only
//	                      (default http://127.0.0.1:8080)
//	-workers n            concurrent workers, each with its own keep-alive
//	                      connection (default 8)
//	-duration d           how long to send requests (default 10s)
//	-requests n           send exactly n requests instead of running for -duration
//	-dup f                fraction (0..1) of requests that reuse a key already
//	                      used (default 0.1)
//	-keys n               duplicates reuse one of the n most recently issued
//	                      keys (default 1000; a small window makes duplicates
//	                      race their first request and get 409)
//	-command name         the command to send (default widgets.create)
//	-payload json         its payload (default {"name":"idemload"} for
//	                      widgets.create, {"ms":0} for reports.generate, else {})
//	-token t              bearer token, the identity keys are scoped to
//	                      (default idemload)
//	-timeout d            per-request timeout (default 10s)
//	-settle d             after the load, how long to retry the keys that
//	                      never got a 2xx answer, so the check can count them
//	                      (default 10s; 0 skips it)
//	-verify               check exactly-once (default true; widgets.create only)
//	-label s              a name for this run in the JSON output (e.g. the store)
//	-json                 print the summary as JSON instead of a table
//	-seed n               random seed (default 0: random)
//	-quiet                no progress output
//
// Every answer is classified as executed (2xx), replayed (2xx with
// Idempotent-Replayed: true), conflict (409: the key's first request was still
// running) or error (anything else, including transport failures), and its
// latency recorded in an HDR histogram for that outcome.
//
// Exactly-once: with -command widgets.create, idemload reads widgets.list's
// count before and after the run. After the load and the settle phase, the
// number of widgets created must equal the number of distinct keys that got a
// 2xx answer, and every 2xx answer for one key must carry the same body (a
// replay is byte for byte the first answer). Anything else is a violation:
// idemload says so and exits with status 1. The check assumes no one else
// creates widgets on that server meanwhile.
//
// On a terminal, a progress bar shows on standard error; otherwise a plain
// line is printed there every second.
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
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "idemload:", err)
		os.Exit(1)
	}
}
