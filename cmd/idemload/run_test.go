package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/dispatcher"
)

// demo is an idemd-like server: the dispatcher with widgets.create and
// widgets.list over engine.
type demo struct {
	mu      sync.Mutex
	widgets int
}

func newDemoServer(t *testing.T, engine *idempotency.Engine) *httptest.Server {
	t.Helper()
	db := &demo{}
	d := dispatcher.New(engine)
	d.Register("widgets.create", func(_ context.Context, req dispatcher.Request) (dispatcher.Response, error) {
		var p struct {
			Name string `json:"name"`
		}
		if err := req.Decode(&p); err != nil {
			return dispatcher.Response{}, err
		}
		db.mu.Lock()
		db.widgets++
		id := fmt.Sprintf("wgt_%d", db.widgets)
		db.mu.Unlock()
		return dispatcher.Response{Status: http.StatusCreated, Data: map[string]string{"id": id, "name": p.Name}}, nil
	})
	d.Register("widgets.list", func(context.Context, dispatcher.Request) (dispatcher.Response, error) {
		db.mu.Lock()
		defer db.mu.Unlock()
		return dispatcher.Response{Data: map[string]any{"count": db.widgets}}, nil
	}, dispatcher.NoKey())
	mux := http.NewServeMux()
	mux.Handle("/v1/commands/{name}", d)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// forgetful is a plain Store that never keeps anything: an engine over it
// runs every duplicate that does not overlap its first request again, as a
// server without idempotency would.
type forgetful struct{}

func (forgetful) Lookup(context.Context, string, string) (*idempotency.Cached, bool) {
	return nil, false
}

func (forgetful) Store(context.Context, string, string, idempotency.Cached) error { return nil }

func TestRunExactlyOnce(t *testing.T) {
	tests := []struct {
		name  string
		store idempotency.Store
		args  []string
		want  error // nil: exactly-once holds
	}{
		{"memory store, requests", idempotency.NewInMemoryStore(), []string{"-requests", "600", "-dup", "0.5", "-keys", "20"}, nil},
		{"memory store, duration", idempotency.NewInMemoryStore(), []string{"-duration", "300ms", "-dup", "0.3"}, nil},
		{"memory store, no duplicates", idempotency.NewInMemoryStore(), []string{"-requests", "200", "-dup", "0"}, nil},
		{"server executes duplicates", forgetful{}, []string{"-requests", "600", "-dup", "0.5", "-keys", "20"}, errExactlyOnce},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newDemoServer(t, idempotency.NewEngine(tt.store))
			var stdout, stderr bytes.Buffer
			args := append([]string{"-url", srv.URL, "-workers", "4", "-seed", "1"}, tt.args...)
			err := run(context.Background(), args, &stdout, &stderr)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("run = %v, want %v\nstdout:\n%s\nstderr:\n%s", err, tt.want, &stdout, &stderr)
			}
			out := stdout.String()
			for _, want := range []string{"req/s", "executed", "replayed", "conflict", "p99.9", "exactly-once:"} {
				if !strings.Contains(out, want) {
					t.Errorf("summary lacks %q:\n%s", want, out)
				}
			}
			if verdict := map[bool]string{true: "exactly-once: OK", false: "exactly-once: VIOLATED"}[tt.want == nil]; !strings.Contains(out, verdict) {
				t.Errorf("summary lacks %q:\n%s", verdict, out)
			}
		})
	}
}

func TestRunJSON(t *testing.T) {
	srv := newDemoServer(t, idempotency.NewEngine(idempotency.NewInMemoryStore()))
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"-url", srv.URL, "-workers", "2", "-requests", "100", "-dup", "0.2", "-json", "-label", "memory"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, &stderr)
	}
	for _, want := range []string{`"label": "memory"`, `"throughput":`, `"p999_us":`, `"ok": true`, `"requests": 100`} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("JSON lacks %q:\n%s", want, &stdout)
		}
	}
}

func TestRunCountsOutcomes(t *testing.T) {
	// Every request reuses the first key after the first: one execution,
	// the rest replays (or 409s while the first runs).
	srv := newDemoServer(t, idempotency.NewEngine(idempotency.NewInMemoryStore()))
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"-url", srv.URL, "-workers", "1", "-requests", "50", "-dup", "1", "-json"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, &stderr)
	}
	for _, want := range []string{
		`"outcome": "executed",` + "\n      \"count\": 1,",
		`"outcome": "replayed",` + "\n      \"count\": 49,",
		`"widgets_created": 1`,
	} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("JSON lacks %q:\n%s", want, &stdout)
		}
	}
}

func TestRunErrorsAreCounted(t *testing.T) {
	// A server that fails every command: nothing is created, every answer
	// is an error, and exactly-once cannot be verified.
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/commands/widgets.list", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `{"ok":true,"data":{"count":0}}`)
	})
	mux.HandleFunc("/v1/commands/widgets.create", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"ok":false}`, http.StatusServiceUnavailable)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"-url", srv.URL, "-workers", "2", "-requests", "20", "-settle", "50ms"}, &stdout, &stderr)
	if !errors.Is(err, errUnverified) {
		t.Fatalf("run = %v, want %v\n%s", err, errUnverified, &stdout)
	}
	if !strings.Contains(stdout.String(), "error status 503: 20") {
		t.Errorf("summary lacks the error count:\n%s", &stdout)
	}
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{}, ""},
		{[]string{"-url", "http://localhost:9/"}, ""},
		{[]string{"-url", "http://[::1]:8080"}, ""},
		{[]string{"-url", "http://127.0.0.2:8080", "-command", "reports.generate"}, ""},
		{[]string{"-url", "http://10.0.0.1:8080"}, "loopback"},
		{[]string{"-url", "http://example.com"}, "loopback"},
		{[]string{"-url", "ftp://127.0.0.1"}, "http"},
		{[]string{"-dup", "1.5"}, "-dup"},
		{[]string{"-dup", "NaN"}, "-dup"},
		{[]string{"-workers", "0"}, "-workers"},
		{[]string{"-keys", "0"}, "-keys"},
		{[]string{"-duration", "0"}, "-duration"},
		{[]string{"-duration", "0", "-requests", "5"}, ""},
		{[]string{"-payload", "{"}, "JSON"},
		{[]string{"-command", "a/b"}, "-command"},
		{[]string{"extra"}, "unexpected"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := parseConfig(tt.args, &bytes.Buffer{})
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("parseConfig = %v, want no error", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("parseConfig = %v, want an error mentioning %q", err, tt.wantErr)
			}
		})
	}
	if _, err := parseConfig([]string{"-h"}, &bytes.Buffer{}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("parseConfig(-h) = %v, want flag.ErrHelp", err)
	}
}

func TestDefaultPayload(t *testing.T) {
	cfg, err := parseConfig([]string{"-command", "reports.generate"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(cfg.payload), `{"ms":0}`; got != want {
		t.Errorf("payload = %s, want %s", got, want)
	}
}

func TestLoopbackOnlyDialer(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:80": true, "[::1]:80": true, "10.1.2.3:80": false, "192.168.0.1:80": false} {
		if err := loopbackOnly("tcp", addr, nil); (err == nil) != ok {
			t.Errorf("loopbackOnly(%s) = %v, want allowed %v", addr, err, ok)
		}
	}
}

func TestKeyGen(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	g := newKeyGen(0, 3)
	var issued []string
	for range 10 {
		k := g.next(rng)
		if slices.Contains(issued, k) {
			t.Fatalf("dup 0 repeated key %q", k)
		}
		issued = append(issued, k)
	}
	g.dup = 1
	for range 50 {
		if k := g.next(rng); !slices.Contains(issued[len(issued)-3:], k) {
			t.Fatalf("dup 1 gave %q, want one of the 3 latest keys %q", k, issued[len(issued)-3:])
		}
	}
}
