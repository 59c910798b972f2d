package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// probeBound is how soon the issue wants a store that cannot be reached
// answered 503, by /readyz and by a command alike, with idemd's defaults.
const probeBound = 2 * time.Second

// get fetches path, returning its status, body and how long it took.
func (c client) get(t *testing.T, path string) (int, string, time.Duration) {
	t.Helper()
	start := time.Now()
	resp, err := c.http.Get(c.base + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode, string(body), time.Since(start)
}

// waitReady polls /readyz until it answers want, each answer within
// probeBound, and fails t after limit; it returns how long that took.
// /healthz answers 200 all along.
func (c client) waitReady(t *testing.T, want int, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		status, body, took := c.get(t, "/readyz")
		if took >= probeBound {
			t.Errorf("/readyz took %v, want under %v", took, probeBound)
		}
		if status != http.StatusOK && status != http.StatusServiceUnavailable {
			t.Fatalf("/readyz: %d %s", status, body)
		}
		if status == http.StatusServiceUnavailable && !strings.Contains(body, `"store_unavailable"`) {
			t.Errorf("/readyz: 503 %s, want code store_unavailable", body)
		}
		if h, body, _ := c.get(t, "/healthz"); h != http.StatusOK {
			t.Errorf("/healthz: %d %s, want 200 whatever the store", h, body)
		}
		if status == want {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("/readyz still %d after %v, want %d", status, limit, want)
		}
		time.Sleep(20 * time.Millisecond) // a poll over real HTTP: there is no event to wait on
	}
}

func TestReadyzMemory(t *testing.T) {
	_, c := newTestServer(t)
	if status, body, _ := c.get(t, "/readyz"); status != http.StatusOK || !strings.Contains(body, `"ok":true`) {
		t.Errorf("/readyz: %d %s, want 200 ok", status, body)
	}
}

// A store cut off, then hung, makes /readyz answer 503 within probeBound,
// and 200 again once it is back; /healthz stays 200.
func TestReadyzOnBackends(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			url := backendURL(t, b)
			p := newFaultProxy(t, urlHost(t, url))
			st := openBackend(t, b, p.through(t, url), testSecret(t))
			_, c := newTestServerFor(t, st)
			c.waitReady(t, http.StatusOK, 0)
			if got := c.metric(t, "idemd_store_up"); got != 1 {
				t.Errorf("idemd_store_up = %v, want 1", got)
			}

			for _, fault := range []struct {
				name string
				mode proxyMode
			}{{"cut", cut}, {"stalled", stall}} {
				p.set(fault.mode)
				took := c.waitReady(t, http.StatusServiceUnavailable, probeBound)
				t.Logf("store %s: /readyz 503 after %v", fault.name, took)
				if got := c.metric(t, "idemd_store_up"); got != 0 {
					t.Errorf("store %s: idemd_store_up = %v, want 0", fault.name, got)
				}
				p.set(pass)
				took = c.waitReady(t, http.StatusOK, 15*time.Second)
				t.Logf("store back: /readyz 200 after %v", took)
			}
		})
	}
}

// With idemd's defaults, a command on a hung store is answered 503
// store_unavailable within probeBound.
func TestStoreTimeoutHungStore(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			url := backendURL(t, b)
			p := newFaultProxy(t, urlHost(t, url))
			cfg, err := parseConfig([]string{"-store", p.through(t, url), "-redis-client", b.client}, env(nil), io.Discard)
			if b.client == "" {
				cfg, err = parseConfig([]string{"-store", p.through(t, url)}, env(nil), io.Discard)
			}
			if err != nil {
				t.Fatal(err)
			}
			cfg.secret = testSecret(t)
			st, err := openStore(context.Background(), cfg, newLogger("text", 0, t.Output()))
			if err != nil {
				unavailable(t, url, b.env, err)
			}
			t.Cleanup(st.close)
			_, c := newTestServerFor(t, st)
			if r := c.post(t, "widgets.create", `{"name":"before"}`, "Idempotency-Key", "hung-1"); r.status != http.StatusCreated {
				t.Fatalf("store up: got %d %s, want 201", r.status, r.body)
			}

			p.set(stall)
			start := time.Now()
			r := c.post(t, "widgets.create", `{"name":"hung"}`, "Idempotency-Key", "hung-2")
			took := time.Since(start)
			t.Logf("hung store: %d after %v", r.status, took)
			r.wantError(t, http.StatusServiceUnavailable, "store_unavailable")
			if took >= probeBound {
				t.Errorf("hung store: answered after %v, want under %v", took, probeBound)
			}

			p.set(pass)
			deadline := time.Now().Add(15 * time.Second)
			for {
				r := c.post(t, "widgets.create", `{"name":"after"}`, "Idempotency-Key", "hung-3")
				if r.status == http.StatusCreated {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("store back: still %d %s after 15s, want 201", r.status, r.body)
				}
				time.Sleep(20 * time.Millisecond) // a poll over real HTTP
			}
		})
	}
}

// Concurrent probes share one ping, and a result answers the probes that
// follow it for probeFresh.
func TestReadinessSharesPings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var pings atomic.Int32
		release := make(chan struct{})
		r := newReadiness(func(ctx context.Context) error {
			pings.Add(1)
			select {
			case <-release:
			case <-ctx.Done():
			}
			return errors.New("down")
		}, time.Second, slog.New(slog.DiscardHandler))

		const n = 20
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() { errs[i] = r.check(context.Background()) })
		}
		synctest.Wait() // one pings, the others wait for its result
		close(release)
		wg.Wait()
		if got := pings.Load(); got != 1 {
			t.Errorf("%d pings for %d concurrent probes, want 1", got, n)
		}
		for i, err := range errs {
			if err == nil {
				t.Errorf("probe %d: nil, want the ping's error", i)
			}
		}
		if r.up() {
			t.Error("up() = true after a failed ping")
		}

		if r.check(context.Background()) == nil || pings.Load() != 1 {
			t.Errorf("a probe right after: %d pings, want the result reused", pings.Load())
		}
		time.Sleep(probeFresh)
		if r.check(context.Background()) == nil || pings.Load() != 2 {
			t.Errorf("a probe %v after: %d pings, want a new one", probeFresh, pings.Load())
		}
	})
}

// A ping that hangs is cut at -store-timeout, or maxProbeTimeout when
// that is longer.
func TestReadinessPingBound(t *testing.T) {
	for _, tt := range []struct{ storeTimeout, want time.Duration }{
		{300 * time.Millisecond, 300 * time.Millisecond},
		{10 * time.Second, maxProbeTimeout},
	} {
		synctest.Test(t, func(t *testing.T) {
			r := newReadiness(func(ctx context.Context) error {
				<-ctx.Done()
				return ctx.Err()
			}, tt.storeTimeout, slog.New(slog.DiscardHandler))
			start := time.Now()
			if err := r.check(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("check: %v, want a deadline exceeded", err)
			}
			if got := time.Since(start); got != tt.want {
				t.Errorf("-store-timeout %v: the ping took %v, want %v", tt.storeTimeout, got, tt.want)
			}
		})
	}
}

func TestReadyzSidecar(t *testing.T) {
	srv, _ := sidecarServer(t, "http://127.0.0.1:1")
	c := client{base: srv.URL, http: srv.Client()}
	if status, body, _ := c.get(t, adminPrefix+"readyz"); status != http.StatusOK {
		t.Errorf("%sreadyz: %d %s, want 200", adminPrefix, status, body)
	}
}
