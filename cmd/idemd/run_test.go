package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestParseConfig(t *testing.T) {
	defaults := config{
		addr: "127.0.0.1:8080", store: "memory", ttl: 24 * time.Hour, lease: 30 * time.Second,
		shutdownTimeout: 20 * time.Second, storeTimeout: 1500 * time.Millisecond, logFormat: "text", redisClient: "go-redis",
		adminAddr: "127.0.0.1:8081",
		sidecar: sidecarConfig{methods: []string{"POST", "PATCH"}, paths: []string{"/"}, identity: "authorization",
			ambiguous: "record", upstreamTimeout: time.Minute},
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want func(c *config)
	}{
		{"defaults", nil, nil, func(*config) {}},
		{"flags", []string{"-addr", ":9", "-store", "redis://h/0", "-ttl", "1h", "-lease", "5s", "-shutdown-timeout", "0s", "-log-format", "json"}, nil,
			func(c *config) {
				c.addr, c.store, c.ttl, c.lease, c.shutdownTimeout, c.logFormat = ":9", "redis://h/0", time.Hour, 5*time.Second, 0, "json"
			}},
		{"environment", nil, map[string]string{"IDEMD_ADDR": ":7", "IDEMD_TTL": "2h", "IDEMD_SECRET": "s"},
			func(c *config) { c.addr, c.ttl, c.secret = ":7", 2*time.Hour, "s" }},
		{"flag wins over environment", []string{"-addr", ":8"}, map[string]string{"IDEMD_ADDR": ":7"},
			func(c *config) { c.addr = ":8" }},
		{"log level", []string{"-log-level", "warn"}, nil, func(c *config) { c.logLevel = slog.LevelWarn }},
		{"redis client", []string{"-redis-client", "rueidis"}, nil, func(c *config) { c.redisClient = "rueidis" }},
		{"store timeout", []string{"-store-timeout", "250ms"}, nil, func(c *config) { c.storeTimeout = 250 * time.Millisecond }},
		{"store timeout from the environment", nil, map[string]string{"IDEMD_STORE_TIMEOUT": "3s"}, func(c *config) { c.storeTimeout = 3 * time.Second }},
		{"admin API", []string{"-admin-addr", "127.0.0.1:9"}, map[string]string{"IDEMD_ADMIN_TOKEN": "0123456789abcdef"},
			func(c *config) { c.adminToken, c.adminAddr = "0123456789abcdef", "127.0.0.1:9" }},
		{"log level from the environment", nil, map[string]string{"IDEMD_LOG_LEVEL": "debug"}, func(c *config) { c.logLevel = slog.LevelDebug }},
		{"sidecar", []string{"-upstream", "http://127.0.0.1:9000", "-methods", "post,PUT", "-paths", "/v1/,/v2/pay",
			"-identity", "header:X-Api-Key", "-anonymous", "-require-key", "-upstream-ambiguous", "release",
			"-upstream-timeout", "5s", "-no-replay-headers", "X-Secret"}, nil,
			func(c *config) {
				c.sidecar = sidecarConfig{upstream: "http://127.0.0.1:9000", methods: []string{"POST", "PUT"},
					paths: []string{"/v1/", "/v2/pay"}, identity: "header:X-Api-Key", anonymous: true, requireKey: true,
					ambiguous: "release", upstreamTimeout: 5 * time.Second, noReplay: []string{"X-Secret"}}
			}},
		{"sidecar from the environment", nil, map[string]string{"IDEMD_UPSTREAM": "https://api.example", "IDEMD_ANONYMOUS": "true"},
			func(c *config) { c.sidecar.upstream, c.sidecar.anonymous = "https://api.example", true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConfig(tt.args, env(tt.env), io.Discard)
			want := defaults
			tt.want(&want)
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v, %v\nwant %+v", got, err, want)
			}
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"unknown flag", []string{"-nope"}, nil},
		{"argument", []string{"extra"}, nil},
		{"zero ttl", []string{"-ttl", "0s"}, nil},
		{"negative lease", []string{"-lease", "-1s"}, nil},
		{"negative shutdown timeout", []string{"-shutdown-timeout", "-1s"}, nil},
		{"zero store timeout", []string{"-store-timeout", "0s"}, nil},
		{"negative store timeout", []string{"-store-timeout", "-1s"}, nil},
		{"zero store timeout from the environment", nil, map[string]string{"IDEMD_STORE_TIMEOUT": "0"}},
		{"bad store timeout in the environment", nil, map[string]string{"IDEMD_STORE_TIMEOUT": "soon"}},
		{"log format", []string{"-log-format", "xml"}, nil},
		{"log level", []string{"-log-level", "loud"}, nil},
		{"redis client", []string{"-redis-client", "hiredis"}, nil},
		{"bad duration in the environment", nil, map[string]string{"IDEMD_LEASE": "soon"}},
		{"upstream not a URL", []string{"-upstream", "localhost:9000"}, nil},
		{"upstream scheme", []string{"-upstream", "ftp://h/"}, nil},
		{"safe method covered", []string{"-upstream", "http://h", "-methods", "POST,GET"}, nil},
		{"path not absolute", []string{"-upstream", "http://h", "-paths", "v1/"}, nil},
		{"identity", []string{"-upstream", "http://h", "-identity", "cookie"}, nil},
		{"identity header without a name", []string{"-upstream", "http://h", "-identity", "header:"}, nil},
		{"ambiguous", []string{"-upstream", "http://h", "-upstream-ambiguous", "retry"}, nil},
		{"upstream timeout", []string{"-upstream", "http://h", "-upstream-timeout", "0s"}, nil},
		{"bad bool in the environment", nil, map[string]string{"IDEMD_ANONYMOUS": "maybe"}},
		{"short admin token", []string{"-admin-token", "secret"}, nil},
		{"admin API on the command listener", []string{"-admin-token", "0123456789abcdef", "-addr", "127.0.0.1:9", "-admin-addr", "127.0.0.1:9"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := parseConfig(tt.args, env(tt.env), io.Discard); err == nil {
				t.Errorf("got %+v, want an error", got)
			}
		})
	}
	if _, err := parseConfig([]string{"-h"}, env(nil), io.Discard); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("-h: got %v, want flag.ErrHelp", err)
	}
}

func TestRunUnknownStore(t *testing.T) {
	err := run(context.Background(), []string{"-store", "mongodb://x"}, env(nil), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "unsupported") {
		t.Errorf("got %v, want an unsupported store error", err)
	}
}

// startRun runs idemd in-process with JSON logs, the environment vars
// and the flags -addr 127.0.0.1:0 and args, until the test ends. It
// returns once each message in listening has been logged, with the addr
// each gave, keyed by message; onLog, if not nil, sees every log line
// first, on the goroutine that reads them. stop cancels run and returns
// its error; it may be called more than once.
func startRun(t *testing.T, vars map[string]string, args, listening []string, onLog func(map[string]any)) (addrs map[string]string, stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e := map[string]string{}
	maps.Copy(e, vars)
	e["IDEMD_LOG_FORMAT"] = "json"
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"-addr", "127.0.0.1:0"}, args...), env(e), pw)
		pw.Close()
	}()
	found := make(chan [2]string, len(listening))
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			var l map[string]any
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				continue
			}
			if onLog != nil {
				onLog(l)
			}
			if msg, _ := l["msg"].(string); slices.Contains(listening, msg) {
				addr, _ := l["addr"].(string)
				select {
				case found <- [2]string{msg, addr}:
				default: // logged again: the first address stands
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	wait := sync.OnceValue(func() error { return <-done })
	stop = func() error {
		cancel()
		return wait()
	}
	t.Cleanup(func() { _ = stop() })
	addrs = make(map[string]string, len(listening))
	for len(addrs) < len(listening) {
		select {
		case a := <-found:
			addrs[a[0]] = a[1]
		case err := <-done:
			done <- err // for stop
			t.Fatalf("run returned before listening: %v", err)
		}
	}
	return addrs, stop
}

// runIdemd is startRun with a client of its command listener.
func runIdemd(t *testing.T, vars map[string]string, args ...string) (client, func() error) {
	t.Helper()
	addrs, stop := startRun(t, vars, args, []string{"listening"}, nil)
	return client{base: "http://" + addrs["listening"], http: &http.Client{}}, stop
}

// TestRun runs idemd in-process until its context ends.
func TestRun(t *testing.T) {
	c, stop := runIdemd(t, nil)
	c.post(t, "widgets.create", `{"name":"x"}`, "Idempotency-Key", "run-1").data(t, 201, &struct{}{})
	if n := c.widgetCount(t); n != 1 {
		t.Errorf("widgets: %d, want 1", n)
	}
	if err := stop(); err != nil {
		t.Errorf("run: %v", err)
	}
}

func TestUsageSaysWhereTheDashboardLives(t *testing.T) {
	var out strings.Builder
	if _, err := parseConfig([]string{"-h"}, env(nil), &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	for _, want := range []string{"postgres://…  in PostgreSQL", "idemd_widgets", "memory, redis://…",
		"in this process's memory", "-store", "pool_max_conns"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("-h does not say %q:\n%s", want, out.String())
		}
	}
}
