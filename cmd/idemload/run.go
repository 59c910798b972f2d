package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"time"
)

// errExactlyOnce is run's error when the server ran a command more or fewer
// times than there were keys, or answered one key with different bodies.
var errExactlyOnce = errors.New("exactly-once violated")

// errUnverified is run's error when the check could not be completed: some
// keys never got an answer, or widgets.list failed.
var errUnverified = errors.New("exactly-once could not be verified")

// config is idemload's configuration, from its flags.
type config struct {
	url      *url.URL
	workers  int
	duration time.Duration
	requests int64
	dup      float64
	keys     int
	command  string
	payload  []byte
	token    string
	timeout  time.Duration
	settle   time.Duration
	verify   bool
	label    string
	json     bool
	seed     uint64
	quiet    bool
}

func parseConfig(args []string, out io.Writer) (config, error) {
	var (
		cfg     config
		rawURL  string
		payload string
	)
	fs := flag.NewFlagSet("idemload", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&rawURL, "url", "http://127.0.0.1:8080", "idemd's base URL (loopback only)")
	fs.IntVar(&cfg.workers, "workers", 8, "concurrent workers")
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long to send requests")
	fs.Int64Var(&cfg.requests, "requests", 0, "send exactly this many requests instead of running for -duration")
	fs.Float64Var(&cfg.dup, "dup", 0.1, "fraction (0..1) of requests that reuse a key already used")
	fs.IntVar(&cfg.keys, "keys", 1000, "duplicates reuse one of this many most recently issued keys")
	fs.StringVar(&cfg.command, "command", "widgets.create", "command to send")
	fs.StringVar(&payload, "payload", "", "JSON payload (default depends on -command)")
	fs.StringVar(&cfg.token, "token", "idemload", "bearer token (the identity keys are scoped to)")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.DurationVar(&cfg.settle, "settle", 10*time.Second, "how long to retry keys without a 2xx answer after the load (0: skip)")
	fs.BoolVar(&cfg.verify, "verify", true, "check exactly-once (widgets.create only)")
	fs.StringVar(&cfg.label, "label", "", "name of this run in the JSON output")
	fs.BoolVar(&cfg.json, "json", false, "print the summary as JSON")
	fs.Uint64Var(&cfg.seed, "seed", 0, "random seed (0: random)")
	fs.BoolVar(&cfg.quiet, "quiet", false, "no progress output")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	switch {
	case fs.NArg() > 0:
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	case cfg.workers < 1:
		return config{}, fmt.Errorf("-workers %d: want at least 1", cfg.workers)
	case cfg.requests < 0:
		return config{}, fmt.Errorf("-requests %d: must not be negative", cfg.requests)
	case cfg.requests == 0 && cfg.duration <= 0:
		return config{}, fmt.Errorf("-duration %v: must be positive (or give -requests)", cfg.duration)
	case !(cfg.dup >= 0 && cfg.dup <= 1):
		return config{}, fmt.Errorf("-dup %v: want a fraction from 0 to 1", cfg.dup)
	case cfg.keys < 1:
		return config{}, fmt.Errorf("-keys %d: want at least 1", cfg.keys)
	case cfg.command == "" || strings.ContainsAny(cfg.command, "/?#"):
		return config{}, fmt.Errorf("-command %q: want a command name", cfg.command)
	case cfg.timeout <= 0:
		return config{}, fmt.Errorf("-timeout %v: must be positive", cfg.timeout)
	case cfg.settle < 0:
		return config{}, fmt.Errorf("-settle %v: must not be negative", cfg.settle)
	}
	u, err := loopbackURL(rawURL)
	if err != nil {
		return config{}, err
	}
	cfg.url = u
	if payload == "" {
		payload = defaultPayload(cfg.command)
	}
	if !json.Valid([]byte(payload)) {
		return config{}, fmt.Errorf("-payload %q: not valid JSON", payload)
	}
	cfg.payload = []byte(payload)
	return cfg, nil
}

func defaultPayload(command string) string {
	switch command {
	case "widgets.create":
		return `{"name":"idemload"}`
	case "reports.generate":
		return `{"ms":0}`
	}
	return `{}`
}

// loopbackURL parses raw and refuses any host but a loopback address:
// idemload is a load generator, and its load stays on this machine.
func loopbackURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("-url: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("-url %s: want http:// or https://", raw)
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); !(host == "localhost" || ip != nil && ip.IsLoopback()) {
		return nil, fmt.Errorf("-url %s: idemload sends load to loopback addresses only (127.0.0.0/8, ::1, localhost)", raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	return u, nil
}

// run is idemload: it loads the server named by args, prints the summary to
// stdout and progress to stderr, and returns an error wrapping errExactlyOnce
// when the server broke exactly-once.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseConfig(args, stderr)
	if err != nil {
		return err
	}
	c := newClient(cfg)
	defer c.close()
	checked := cfg.verify && cfg.command == "widgets.create"
	var before int64
	if checked {
		if before, err = c.widgetCount(ctx); err != nil {
			return fmt.Errorf("widgets.list before the load: %w", err)
		}
	}
	res := load(ctx, cfg, c, stderr)
	res.settle(ctx, cfg, c)
	sum := summarize(cfg, res)
	if checked {
		after, err := c.widgetCount(ctx)
		sum.Check = verdict(res, before, after, err)
	}
	if cfg.json {
		err = writeJSON(stdout, sum)
	} else {
		err = writeTable(stdout, sum)
	}
	if err != nil {
		return err
	}
	if sum.Check != nil && !sum.Check.OK {
		if sum.Check.Unverified {
			return fmt.Errorf("%w: %s", errUnverified, sum.Check.Reason)
		}
		return fmt.Errorf("%w: %s", errExactlyOnce, sum.Check.Reason)
	}
	return ctx.Err()
}
