package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
)

// client talks to an idemd over real HTTP.
type client struct {
	base string
	http *http.Client
}

type reply struct {
	status int
	header http.Header
	body   string
}

// envelope is the decoded wire envelope.
type envelope struct {
	OK    bool            `json:"ok"`
	Data  json.RawMessage `json:"data"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// send posts a command; header holds extra request headers as pairs. It does
// not fail the test (it may run on another goroutine): check err.
func (c client) send(name, payload string, header ...string) (reply, error) {
	req, err := http.NewRequest(http.MethodPost, c.base+"/v1/commands/"+name, strings.NewReader(payload))
	if err != nil {
		return reply{}, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, resp.Header, string(body)}, err
}

func (c client) post(t *testing.T, name, payload string, header ...string) reply {
	t.Helper()
	r, err := c.send(name, payload, header...)
	if err != nil {
		t.Fatalf("POST %s: %v", name, err)
	}
	return r
}

func (r reply) envelope(t *testing.T) envelope {
	t.Helper()
	var e envelope
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		t.Fatalf("body %q is not an envelope: %v", r.body, err)
	}
	return e
}

// wantError checks that r is an error envelope with status and code.
func (r reply) wantError(t *testing.T, status int, code string) {
	t.Helper()
	e := r.envelope(t)
	if r.status != status || e.OK || e.Error == nil || e.Error.Code != code || e.Error.Message == "" {
		t.Errorf("got %d %s, want %d with code %q", r.status, r.body, status, code)
	}
}

// data decodes the data of a success envelope with want status into v.
func (r reply) data(t *testing.T, status int, v any) {
	t.Helper()
	e := r.envelope(t)
	if r.status != status || !e.OK {
		t.Fatalf("got %d %s, want %d ok", r.status, r.body, status)
	}
	if err := json.Unmarshal(e.Data, v); err != nil {
		t.Fatalf("data %s: %v", e.Data, err)
	}
}

// widgetCount lists the widgets.
func (c client) widgetCount(t *testing.T) int {
	t.Helper()
	var d struct {
		Count   int               `json:"count"`
		Widgets []json.RawMessage `json:"widgets"`
	}
	c.post(t, "widgets.list", `{}`).data(t, http.StatusOK, &d)
	if d.Count != len(d.Widgets) {
		t.Fatalf("widgets.list: count %d but %d widgets", d.Count, len(d.Widgets))
	}
	return d.Count
}

// metric returns the value of the sample line that starts with series
// (name and labels exactly as exposed), or -1 when there is none.
func (c client) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := c.http.Get(c.base + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return f
		}
	}
	return -1
}

// waitMetric polls /metrics until series has value want. Over real HTTP
// there is no event to wait on; the poll is bounded.
func (c client) waitMetric(t *testing.T, series string, want float64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got := c.metric(t, series)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %v after 20s, want %v", series, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func runningSeries(command string) string {
	return fmt.Sprintf("idemd_commands_running{command=%q}", command)
}

func testConfig() config {
	return config{
		addr: "127.0.0.1:0", store: "memory", ttl: time.Hour, lease: 30 * time.Second,
		shutdownTimeout: 5 * time.Second, storeTimeout: defaultStoreTimeout, logFormat: "text", redisClient: "go-redis",
	}
}

// newTestServer returns an idemd server on a new in-memory store, served by
// an httptest.Server. Its commands are cancelled when the test ends, before
// the HTTP server closes.
func newTestServer(t *testing.T) (*server, client) {
	t.Helper()
	return newTestServerOn(t, idempotency.NewInMemoryStore())
}

// newTestServerOn is newTestServer on the given store, with the dashboard
// in memory.
func newTestServerOn(t *testing.T, store idempotency.Store) (*server, client) {
	t.Helper()
	return newTestServerWith(t, store, &memDashboard{})
}

// newTestServerFor is newTestServer on an opened store and its dashboard,
// as run pairs them.
func newTestServerFor(t *testing.T, st openedStore) (*server, client) {
	t.Helper()
	s, c := newTestServerWith(t, st.store, st.dash)
	s.ready.ping = st.ping
	return s, c
}

func newTestServerWith(t *testing.T, store idempotency.Store, dash dashboard) (*server, client) {
	t.Helper()
	return newTestServerConfig(t, testConfig(), store, dash)
}

// newTestServerConfig is newTestServerWith on cfg.
func newTestServerConfig(t *testing.T, cfg config, store idempotency.Store, dash dashboard) (*server, client) {
	t.Helper()
	s := newServer(cfg, store, dash, newLogger(cfg.logFormat, cfg.logLevel, t.Output()))
	hs := httptest.NewServer(s.handler)
	t.Cleanup(hs.Close)
	t.Cleanup(func() { s.stopCommands(context.Canceled) })
	return s, client{base: hs.URL, http: hs.Client()}
}
