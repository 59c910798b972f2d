package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/dispatcher"
	"github.com/idemkit/idempotency/driver"
)

func TestContractInProcess(t *testing.T) {
	_, c := newTestServer(t)
	testContract(t, c)
}

func TestServerErrorIsNotRecorded(t *testing.T) {
	s, c := newTestServer(t)
	var runs atomic.Int64
	s.register("test.flaky", func(context.Context, dispatcher.Request) (dispatcher.Response, error) {
		if runs.Add(1) == 1 {
			return dispatcher.Response{}, errors.New("database is on fire")
		}
		return dispatcher.Response{Status: http.StatusCreated, Data: "second try"}, nil
	})
	first := c.post(t, "test.flaky", `{}`, "Idempotency-Key", "flaky-1")
	first.wantError(t, 500, dispatcher.CodeInternal)
	if first.envelope(t).Error.Message == "database is on fire" {
		t.Errorf("500 leaks the internal error: %s", first.body)
	}
	second := c.post(t, "test.flaky", `{}`, "Idempotency-Key", "flaky-1")
	var data string
	second.data(t, http.StatusCreated, &data)
	if second.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("the retry after a 500 was a replay")
	}
	third := c.post(t, "test.flaky", `{}`, "Idempotency-Key", "flaky-1")
	if third.body != second.body || third.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("third: got %d %s, want the replay of the 201", third.status, third.body)
	}
	if got := runs.Load(); got != 2 {
		t.Errorf("handler ran %d times, want 2", got)
	}
	if got := c.metric(t, `idemd_commands_total{command="test.flaky",outcome="error"}`); got != 1 {
		t.Errorf("errors counted: %v, want 1", got)
	}
}

func TestSetCookieIsNeverReplayed(t *testing.T) {
	s, c := newTestServer(t)
	s.register("test.login", func(context.Context, dispatcher.Request) (dispatcher.Response, error) {
		h := http.Header{}
		h.Add("Set-Cookie", "session=s3cr3t; Path=/; HttpOnly")
		return dispatcher.Response{Data: map[string]bool{"logged_in": true}, Header: h}, nil
	})
	first := c.post(t, "test.login", `{}`, "Idempotency-Key", "login-1")
	if first.status != 200 || len(first.header.Values("Set-Cookie")) != 1 {
		t.Fatalf("first: got %d, Set-Cookie %q; want 200 with the cookie", first.status, first.header.Values("Set-Cookie"))
	}
	replay := c.post(t, "test.login", `{}`, "Idempotency-Key", "login-1")
	if replay.header.Get("Idempotent-Replayed") != "true" || replay.body != first.body {
		t.Fatalf("second: got %d %s, want the replay", replay.status, replay.body)
	}
	if got := replay.header.Values("Set-Cookie"); len(got) != 0 {
		t.Errorf("replay carries Set-Cookie %q", got)
	}
}

func TestNotFoundIsAnEnvelope(t *testing.T) {
	_, c := newTestServer(t)
	resp, err := c.http.Get(c.base + "/nowhere")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	reply{status: resp.StatusCode, body: string(body)}.wantError(t, 404, "not_found")
}

// startServe runs s.serve on a loopback port until the returned cancel is
// called; done receives serve's error.
func startServe(t *testing.T, s *server) (c client, cancel func(), done <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- s.serve(ctx, ln)
		close(served) // later receives (the cleanup's) do not block
	}()
	t.Cleanup(func() {
		stop()
		<-served
	})
	return client{base: "http://" + ln.Addr().String(), http: &http.Client{}}, stop, served
}

func TestShutdownLetsRunningCommandsFinish(t *testing.T) {
	cfg := testConfig()
	cfg.shutdownTimeout = time.Minute
	s := newServer(cfg, idempotency.NewInMemoryStore(), &memDashboard{}, newLogger("text", slog.LevelInfo, t.Output()))
	c, shutdown, done := startServe(t, s)

	type result struct {
		r   reply
		err error
	}
	first := make(chan result, 1)
	go func() {
		r, err := c.send("reports.generate", `{"ms":300}`, "Idempotency-Key", "finish-1")
		first <- result{r, err}
	}()
	c.waitMetric(t, runningSeries("reports.generate"), 1)
	shutdown()
	res := <-first
	if res.err != nil {
		t.Fatalf("running command: %v", res.err)
	}
	var rep struct {
		ReportID string `json:"report_id"`
	}
	res.r.data(t, 200, &rep)
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
	if _, err := c.send("widgets.list", `{}`); err == nil {
		t.Errorf("a request after shutdown was answered")
	}
}

func TestShutdownReleasesClaimsItCannotFinish(t *testing.T) {
	cfg := testConfig()
	cfg.shutdownTimeout = 50 * time.Millisecond
	store := idempotency.NewInMemoryStore()
	s := newServer(cfg, store, &memDashboard{}, newLogger("text", slog.LevelInfo, t.Output()))
	c, shutdown, done := startServe(t, s)

	type result struct {
		r   reply
		err error
	}
	first := make(chan result, 1)
	go func() {
		r, err := c.send("reports.generate", `{"ms":10000}`, "Idempotency-Key", "cut-1")
		first <- result{r, err}
	}()
	c.waitMetric(t, runningSeries("reports.generate"), 1)
	start := time.Now()
	shutdown()
	if err := <-done; err != nil {
		t.Errorf("serve: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("shutdown took %v; the 10s command should have been cancelled after 50ms", took)
	}
	res := <-first
	if res.err != nil {
		t.Fatalf("cancelled command: %v", res.err)
	}
	res.r.wantError(t, 503, dispatcher.CodeCancelled)

	// The claim was released at once: a new owner acquires the key now, with
	// the 30s lease far from over.
	cl, err := store.Begin(context.Background(), "cut-1", dispatcher.AnonymousIdentity, idempotency.ClaimRequest{
		Owner: driver.NewOwner(), Lease: time.Second,
	})
	if err != nil || cl.Status != idempotency.ClaimAcquired {
		t.Errorf("Begin after shutdown: got %v, %v; want acquired (claim released)", cl.Status, err)
	}
}

func TestHealthzDuringShutdown(t *testing.T) {
	s, c := newTestServer(t)
	s.active.close()
	resp, err := c.http.Get(c.base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 {
		t.Errorf("/healthz while shutting down: %d, want 503", resp.StatusCode)
	}
	r := c.post(t, "widgets.list", `{}`)
	r.wantError(t, 503, "shutting_down")
}

// plainStore is a Store without the claim protocol.
type plainStore struct{ s *idempotency.InMemoryStore }

func (p plainStore) Lookup(ctx context.Context, key, identity string) (*idempotency.Cached, bool) {
	return p.s.Lookup(ctx, key, identity)
}

func (p plainStore) Store(ctx context.Context, key, identity string, c idempotency.Cached) error {
	return p.s.Store(ctx, key, identity, c)
}

// TestObserverTimesStoreCalls runs commands through an engine observed as
// idemd observes its own, over a plain store and a claim store.
func TestObserverTimesStoreCalls(t *testing.T) {
	m := newMetrics()
	ctx := context.Background()
	ok := func(context.Context) (idempotency.Response, error) { return idempotency.Response{Status: 200}, nil }
	failing := func(context.Context) (idempotency.Response, error) { return idempotency.Response{}, errors.New("boom") }
	claims := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithObserver(m.observer(slog.New(slog.DiscardHandler))))
	plain := idempotency.NewEngine(plainStore{idempotency.NewInMemoryStore()}, idempotency.WithObserver(m.observer(slog.New(slog.DiscardHandler))))
	for _, call := range []struct {
		e   *idempotency.Engine
		key string
		fn  idempotency.Func
	}{{claims, "k", ok}, {claims, "f", failing}, {plain, "p", ok}} {
		_, _ = call.e.Do(ctx, idempotency.Request{Key: call.key, Identity: "id"}, call.fn)
	}
	got := map[string]uint64{}
	mfs, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "idemd_store_call_duration_seconds" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			var op, result string
			for _, l := range mt.GetLabel() {
				switch l.GetName() {
				case "op":
					op = l.GetValue()
				case "result":
					result = l.GetValue()
				}
			}
			got[op+"/"+result] = mt.GetHistogram().GetSampleCount()
		}
	}
	// claims: begin+complete for k, begin+release for f; plain: two lookups
	// (before and under its in-process claim) and a store for p.
	for k, want := range map[string]uint64{"begin/ok": 2, "complete/ok": 1, "release/ok": 1, "lookup/ok": 2, "store/ok": 1} {
		if got[k] != want {
			t.Errorf("%s calls timed: %d, want %d (all: %v)", k, got[k], want, got)
		}
	}
}
