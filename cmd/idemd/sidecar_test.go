package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/idemkit/idempotency"
)

// upstream is an HTTP API behind the sidecar that counts what it executes,
// by the Idempotency-Key it sees (or "-" without one).
type upstream struct {
	*httptest.Server
	mu    sync.Mutex
	runs  map[string]int
	reqs  []*http.Request
	total atomic.Int64
}

func newUpstream(t *testing.T, h func(u *upstream, w http.ResponseWriter, r *http.Request)) *upstream {
	t.Helper()
	return newUpstreamConn(t, h, nil)
}

func newUpstreamConn(t *testing.T, h func(u *upstream, w http.ResponseWriter, r *http.Request), connContext func(context.Context, net.Conn) context.Context) *upstream {
	t.Helper()
	u := &upstream{runs: make(map[string]int)}
	u.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		key := r.Header.Get("Idempotency-Key")
		if key == "" {
			key = "-"
		}
		u.mu.Lock()
		u.runs[key]++
		u.reqs = append(u.reqs, r)
		u.mu.Unlock()
		u.total.Add(1)
		h(u, w, r)
	}))
	u.Config.ConnContext = connContext
	u.Start()
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) count(key string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.runs[key]
}

// created answers 201 with the headers an API's clients rely on.
func created(_ *upstream, w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("ETag", `"v1"`)
	h.Set("Cache-Control", "private, max-age=60")
	h.Set("X-Request-Cost", "3")
	h.Add("X-Multi", "a")
	h.Add("X-Multi", "b, c")
	h.Set("Location", "/v1/orders/1")
	h.Set("Set-Cookie", "session=secret")
	h.Set("X-Secret", "hidden")
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, `{"id":1}`)
}

// sidecarServer runs the sidecar in-process in front of up, with flags args.
func sidecarServer(t *testing.T, up string, args ...string) (*httptest.Server, *sidecar) {
	t.Helper()
	cfg, err := parseConfig(append([]string{"-upstream", up}, args...), env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(cfg, idempotency.NewInMemoryStore(), &memDashboard{}, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(s.handler)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { s.stopCommands(errShutdown) })
	return srv, s.sidecar
}

type answer struct {
	status int
	header http.Header
	body   string
}

func post(t *testing.T, url, key, body string, header ...string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(http.MethodPost, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	req.Header.Set("Authorization", "Bearer alice")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{res.StatusCode, res.Header, string(b)}
}

func problemType(t *testing.T, a answer) string {
	t.Helper()
	var p struct{ Type string }
	if err := json.Unmarshal([]byte(a.body), &p); err != nil {
		t.Fatalf("not a problem: %q", a.body)
	}
	return p.Type
}

func TestSidecarReplaysUpstreamHeaders(t *testing.T) {
	up := newUpstream(t, created)
	srv, _ := sidecarServer(t, up.URL, "-no-replay-headers", "X-Secret")
	first := post(t, srv.URL+"/v1/orders", "k1", `{"item":"book"}`)
	second := post(t, srv.URL+"/v1/orders", "k1", `{"item":"book"}`)
	if n := up.count("k1"); n != 1 {
		t.Fatalf("upstream ran %d times, want 1", n)
	}
	if first.status != 201 || second.status != 201 || first.body != second.body {
		t.Fatalf("got %d %q then %d %q", first.status, first.body, second.status, second.body)
	}
	if got := second.header.Get("Idempotent-Replayed"); got != "true" {
		t.Errorf("replay: Idempotent-Replayed %q", got)
	}
	if got := first.header.Get("Idempotent-Replayed"); got != "" {
		t.Errorf("first answer: Idempotent-Replayed %q", got)
	}
	for _, a := range []answer{first, second} {
		for _, name := range []string{"ETag", "Cache-Control", "X-Request-Cost", "Location", "Content-Type"} {
			if a.header.Get(name) == "" {
				t.Errorf("%s missing", name)
			}
		}
		if got := a.header.Values("X-Multi"); len(got) != 2 || got[0] != "a" || got[1] != "b, c" {
			t.Errorf("X-Multi %q", got)
		}
		if _, ok := a.header[recordedHeadersField]; ok {
			t.Errorf("%s reached the client", recordedHeadersField)
		}
	}
	if got := second.header.Get("ETag"); got != `"v1"` {
		t.Errorf("replayed ETag %q", got)
	}
	if got := second.header.Get("Cache-Control"); got != "private, max-age=60" {
		t.Errorf("replayed Cache-Control %q", got)
	}
	if first.header.Get("Set-Cookie") == "" || first.header.Get("X-Secret") == "" {
		t.Errorf("the first answer lost the upstream's Set-Cookie or X-Secret: %v", first.header)
	}
	if got := second.header.Get("Set-Cookie"); got != "" {
		t.Errorf("replay carries Set-Cookie %q", got)
	}
	if got := second.header.Get("X-Secret"); got != "" {
		t.Errorf("replay carries X-Secret (-no-replay-headers) %q", got)
	}
	// The upstream saw the key, and the Transport never saw it as one.
	up.mu.Lock()
	r := up.reqs[0]
	up.mu.Unlock()
	if r.Header.Get("Idempotency-Key") != "k1" || r.Header.Get("X-Forwarded-For") == "" {
		t.Errorf("upstream got headers %v", r.Header)
	}
}

func TestSidecarOutcomes(t *testing.T) {
	tests := []struct {
		name     string
		upstream func(u *upstream, w http.ResponseWriter, r *http.Request)
		args     []string
		status   int
		problem  string // the sidecar's own answer's type, if any
		runs     int    // upstream executions after a retry
		replayed bool   // the retry is a replay
	}{
		{"answer", created, nil, 201, "", 1, true},
		{"client error recorded", status(422), nil, 422, "", 1, true},
		{"upstream 500 released", status(500), nil, 500, "", 2, false},
		{"upstream 503 released", status(503), nil, 503, "", 2, false},
		{"upstream 429 released", status(429), nil, 429, "", 2, false},
		{"upstream 502 recorded", status(502), nil, 502, "", 1, true},
		{"upstream 504 recorded", status(504), nil, 504, "", 1, true},
		{"upstream 502 released on request", status(502), []string{"-upstream-ambiguous", "release"}, 502, "", 2, false},
		{"reset after sending: recorded", hangUp, nil, 502, problemOutcomeUnknown, 1, true},
		{"reset after sending: released on request", hangUp, []string{"-upstream-ambiguous", "release"}, 502, problemOutcomeUnknown, 2, false},
		{"cut off mid-answer: recorded", cutOff, nil, 502, problemOutcomeUnknown, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newUpstream(t, tt.upstream)
			srv, _ := sidecarServer(t, up.URL, tt.args...)
			a := post(t, srv.URL+"/pay", "k", `{"amount":1}`)
			b := post(t, srv.URL+"/pay", "k", `{"amount":1}`)
			if a.status != tt.status || b.status != tt.status {
				t.Fatalf("statuses %d, %d; want %d (%s)", a.status, b.status, tt.status, a.body)
			}
			if tt.problem != "" {
				if got := problemType(t, a); got != tt.problem {
					t.Errorf("problem %q, want %q", got, tt.problem)
				}
				if b.body != a.body {
					t.Errorf("retry got %q, want %q", b.body, a.body)
				}
				if got := b.header.Get("Cache-Control"); got != "no-store" {
					t.Errorf("retry: Cache-Control %q, want no-store", got)
				}
			}
			if got := up.count("k"); got != tt.runs {
				t.Errorf("upstream ran %d times, want %d", got, tt.runs)
			}
			if got := b.header.Get("Idempotent-Replayed") == "true"; got != tt.replayed {
				t.Errorf("retry replayed %v, want %v", got, tt.replayed)
			}
		})
	}
}

func status(code int) func(*upstream, http.ResponseWriter, *http.Request) {
	return func(_ *upstream, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(code)
		io.WriteString(w, http.StatusText(code))
	}
}

// hangUp closes the connection once it has read the request: it ran.
func hangUp(_ *upstream, w http.ResponseWriter, _ *http.Request) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		conn.Close()
	}
}

// cutOff sends the headers and half the body it announced, then hangs up.
func cutOff(_ *upstream, w http.ResponseWriter, _ *http.Request) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return
	}
	brw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\":")
	brw.Flush()
	conn.Close()
}

func TestSidecarUpstreamUnreachableReleases(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens: the dial is refused
	srv, sc := sidecarServer(t, "http://"+addr)
	for range 2 {
		a := post(t, srv.URL+"/pay", "k", `{"amount":1}`)
		if a.status != 503 || a.header.Get("Retry-After") == "" || a.header.Get("Idempotent-Replayed") != "" {
			t.Fatalf("got %d %v %s, want 503 with Retry-After, not a replay", a.status, a.header, a.body)
		}
		if got := problemType(t, a); got != problemUpstreamUnavailable {
			t.Errorf("problem %q", got)
		}
	}
	if n, m := sc.notSent.Load(), sc.ambiguous.Load(); n != 2 || m != 0 {
		t.Errorf("not sent %d, ambiguous %d; want 2, 0", n, m)
	}
	res, err := http.Get(srv.URL + adminPrefix + "metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(metrics), "idemd_upstream_not_sent_total 2") {
		t.Errorf("metrics lack idemd_upstream_not_sent_total 2:\n%s", metrics)
	}
}

// reuseCloser is an upstream that executes the second request on every
// connection and then closes that connection without answering: the
// failure after which Go's Transport sends a request it counts as
// replayable again, on a new connection.
func reuseCloser(t *testing.T) *upstream {
	type connKey struct{}
	return newUpstreamConn(t, func(_ *upstream, w http.ResponseWriter, r *http.Request) {
		n := r.Context().Value(connKey{}).(*atomic.Int64)
		if n.Add(1) == 2 {
			hangUp(nil, w, r)
			return
		}
		w.WriteHeader(http.StatusCreated)
	}, func(ctx context.Context, _ net.Conn) context.Context {
		return context.WithValue(ctx, connKey{}, new(atomic.Int64))
	})
}

func TestSidecarNeverSendsTwiceOnReusedConnection(t *testing.T) {
	// Go's Transport, on its own, sends such a request twice.
	t.Run("plain transport", func(t *testing.T) {
		up := reuseCloser(t)
		c := &http.Client{Transport: &http.Transport{}}
		for _, key := range []string{"warm", "k"} {
			req, _ := http.NewRequest(http.MethodPost, up.URL, nil)
			req.Header.Set("Idempotency-Key", key)
			if res, err := c.Do(req); err == nil {
				res.Body.Close()
			}
		}
		if n := up.count("k"); n != 2 {
			t.Skipf("the plain Transport sent the request %d times, expected 2: this Go no longer re-sends it", n)
		}
	})
	for _, body := range []string{"", `{"amount":1}`} {
		t.Run("sidecar body="+body, func(t *testing.T) {
			up := reuseCloser(t)
			srv, sc := sidecarServer(t, up.URL)
			if a := post(t, srv.URL+"/pay", "warm", body); a.status != 201 {
				t.Fatalf("warm-up: %d %s", a.status, a.body)
			}
			a := post(t, srv.URL+"/pay", "k", body)
			if n := up.count("k"); n != 1 {
				t.Fatalf("upstream ran the request %d times, want 1", n)
			}
			if a.status != 502 || problemType(t, a) != problemOutcomeUnknown {
				t.Errorf("got %d %s, want 502 outcome unknown", a.status, a.body)
			}
			if b := post(t, srv.URL+"/pay", "k", body); b.status != 502 || b.header.Get("Idempotent-Replayed") != "true" {
				t.Errorf("retry: %d %v", b.status, b.header)
			}
			if n := up.count("k"); n != 1 {
				t.Errorf("after the retry the upstream ran it %d times, want 1", n)
			}
			if sc.ambiguous.Load() != 1 {
				t.Errorf("ambiguous %d, want 1", sc.ambiguous.Load())
			}
		})
	}
}

func TestSidecarLargeAnswerTombstone(t *testing.T) {
	big := strings.Repeat("x", 2<<20)
	up := newUpstream(t, func(_ *upstream, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, big)
	})
	srv, _ := sidecarServer(t, up.URL)
	a := post(t, srv.URL+"/export", "k", "{}")
	if a.status != 200 || a.body != big {
		t.Fatalf("first: %d, %d bytes", a.status, len(a.body))
	}
	b := post(t, srv.URL+"/export", "k", "{}")
	if b.status != http.StatusGone {
		t.Errorf("retry: %d %s, want 410", b.status, b.body)
	}
	if n := up.count("k"); n != 1 {
		t.Errorf("upstream ran %d times, want 1", n)
	}
}

func TestSidecarCoverage(t *testing.T) {
	up := newUpstream(t, created)
	srv, _ := sidecarServer(t, up.URL, "-paths", "/v1/pay", "-methods", "POST")
	// A path not covered passes through, key or not.
	post(t, srv.URL+"/v1/other", "k1", "{}")
	if b := post(t, srv.URL+"/v1/other", "k1", "{}"); b.header.Get("Idempotent-Replayed") != "" {
		t.Error("a path not covered was replayed")
	}
	if n := up.count("k1"); n != 2 {
		t.Errorf("path not covered: upstream ran %d times, want 2", n)
	}
	// A method not covered passes through.
	for range 2 {
		req, _ := http.NewRequest(http.MethodPut, srv.URL+"/v1/pay", strings.NewReader("{}"))
		req.Header.Set("Idempotency-Key", "k2")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
	}
	if n := up.count("k2"); n != 2 {
		t.Errorf("method not covered: upstream ran %d times, want 2", n)
	}
	// No key: passes through.
	post(t, srv.URL+"/v1/pay", "", "{}")
	post(t, srv.URL+"/v1/pay", "", "{}")
	if n := up.count("-"); n != 2 {
		t.Errorf("no key: upstream ran %d times, want 2", n)
	}
	// Covered, keyed: once; another payload with the key: 422.
	post(t, srv.URL+"/v1/pay", "k3", `{"a":1}`)
	post(t, srv.URL+"/v1/pay", "k3", `{"a":1}`)
	if n := up.count("k3"); n != 1 {
		t.Errorf("covered: upstream ran %d times, want 1", n)
	}
	if c := post(t, srv.URL+"/v1/pay", "k3", `{"a":2}`); c.status != 422 {
		t.Errorf("other payload: %d, want 422", c.status)
	}
	// idemd's own endpoints.
	res, err := http.Get(srv.URL + adminPrefix + "healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || up.total.Load() != 7 {
		t.Errorf("healthz %d; upstream requests %d, want 7", res.StatusCode, up.total.Load())
	}
}

func TestSidecarIdentity(t *testing.T) {
	up := newUpstream(t, created)
	srv, _ := sidecarServer(t, up.URL, "-identity", "header:X-Api-Key")
	post(t, srv.URL+"/pay", "k", "{}", "X-Api-Key", "one")
	post(t, srv.URL+"/pay", "k", "{}", "X-Api-Key", "one")
	post(t, srv.URL+"/pay", "k", "{}", "X-Api-Key", "two")
	if n := up.count("k"); n != 2 {
		t.Errorf("upstream ran %d times, want 2 (one per API key)", n)
	}
	if a := post(t, srv.URL+"/pay", "k", "{}"); a.status != 400 {
		t.Errorf("no X-Api-Key: %d, want 400", a.status)
	}
	srv, _ = sidecarServer(t, up.URL, "-identity", "header:X-Api-Key", "-anonymous")
	post(t, srv.URL+"/pay", "k4", "{}")
	if a := post(t, srv.URL+"/pay", "k4", "{}"); a.status != 201 || a.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("anonymous: %d %v", a.status, a.header)
	}
}

func TestSidecarRequireKey(t *testing.T) {
	up := newUpstream(t, created)
	srv, _ := sidecarServer(t, up.URL, "-require-key")
	if a := post(t, srv.URL+"/pay", "", "{}"); a.status != 400 {
		t.Errorf("no key: %d, want 400", a.status)
	}
	if up.total.Load() != 0 {
		t.Errorf("upstream got %d requests", up.total.Load())
	}
}

func TestSidecarUpstreamCannotForgeTheRecordedField(t *testing.T) {
	up := newUpstream(t, func(_ *upstream, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set(recordedHeadersField, "Set-Cookie=forged&X-Forged=1")
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok")
	})
	srv, _ := sidecarServer(t, up.URL)
	post(t, srv.URL+"/pay", "k", "{}")
	a := post(t, srv.URL+"/pay", "k", "{}")
	if a.header.Get("Idempotent-Replayed") != "true" || a.header.Get("Set-Cookie") != "" || a.header.Get("X-Forged") != "" {
		t.Errorf("replay headers %v", a.header)
	}
}

func TestPackUnpack(t *testing.T) {
	s := &sidecar{skip: notReplayed}
	h := http.Header{
		"Etag": {`"a&b=c"`}, "X-Odd": {"100%", "π ✓", ""}, "Set-Cookie": {"s=1"},
		"Content-Type": {"text/plain"},
	}
	got := http.Header{"Content-Type": {"text/plain"}}
	unpack(got, s.pack(h), notReplayed)
	delete(h, "Set-Cookie")
	if len(got) != len(h) {
		t.Fatalf("got %v, want %v", got, h)
	}
	for k, vs := range h {
		if strings.Join(got[k], "\x00") != strings.Join(vs, "\x00") || len(got[k]) != len(vs) {
			t.Errorf("%s: got %q, want %q", k, got[k], vs)
		}
	}
}

// blocker is an upstream handler that reports each request it starts and
// holds it until release is closed (or the client goes).
func blocker(started chan<- struct{}, release <-chan struct{}) func(*upstream, http.ResponseWriter, *http.Request) {
	return func(_ *upstream, w http.ResponseWriter, r *http.Request) {
		started <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusCreated)
	}
}

func TestSidecarUpstreamTimeoutRecorded(t *testing.T) {
	started, release := make(chan struct{}, 1), make(chan struct{})
	defer close(release)
	up := newUpstream(t, blocker(started, release))
	srv, _ := sidecarServer(t, up.URL, "-upstream-timeout", "50ms")
	a := post(t, srv.URL+"/pay", "k", "{}")
	<-started
	b := post(t, srv.URL+"/pay", "k", "{}")
	if a.status != http.StatusGatewayTimeout || problemType(t, a) != problemOutcomeUnknown {
		t.Fatalf("got %d %s, want 504 outcome unknown", a.status, a.body)
	}
	if b.status != http.StatusGatewayTimeout || b.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry: %d %v", b.status, b.header)
	}
	if n := up.count("k"); n != 1 {
		t.Errorf("upstream ran %d times, want 1", n)
	}
}

func TestSidecarShutdownCutsRecorded(t *testing.T) {
	started, release := make(chan struct{}, 1), make(chan struct{})
	defer close(release)
	up := newUpstream(t, blocker(started, release))
	cfg, err := parseConfig([]string{"-upstream", up.URL}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(cfg, idempotency.NewInMemoryStore(), &memDashboard{}, slog.New(slog.DiscardHandler))
	srv := httptest.NewServer(s.handler)
	defer srv.Close()
	first := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/pay", strings.NewReader("{}"))
		req.Header.Set("Idempotency-Key", "k")
		req.Header.Set("Authorization", "Bearer alice")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			first <- answer{}
			return
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		first <- answer{res.StatusCode, res.Header, string(b)}
	}()
	<-started
	// What serve does when shutdown runs out of time: the running
	// exchanges are cut, and each is recorded as outcome unknown.
	s.stopCommands(errShutdown)
	a := <-first
	if a.status != http.StatusBadGateway || problemType(t, a) != problemOutcomeUnknown {
		t.Fatalf("got %d %s, want 502 outcome unknown", a.status, a.body)
	}
	if b := post(t, srv.URL+"/pay", "k", "{}"); b.status != http.StatusBadGateway || b.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry: %d %v", b.status, b.header)
	}
	if n := up.count("k"); n != 1 {
		t.Errorf("upstream ran %d times, want 1", n)
	}
}

// Two sidecar replicas sharing a backend send a key's request upstream once
// between them, replay it on both with the upstream's headers, and share an
// "outcome unknown" answer. On PostgreSQL the store is not transactional
// (a rerun would send the request again).
func TestSidecarOnBackends(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			up := newUpstream(t, func(u *upstream, w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/hang" {
					hangUp(u, w, r)
					return
				}
				created(u, w, r)
			})
			url, secret := backendURL(t, b), testSecret(t)
			client := b.client
			if client == "" {
				client = "go-redis"
			}
			var urls []string
			for range 2 {
				cfg, err := parseConfig([]string{"-upstream", up.URL, "-store", url, "-redis-client", client, "-ttl", "10m"},
					env(map[string]string{"IDEMD_SECRET": secret}), io.Discard)
				if err != nil {
					t.Fatal(err)
				}
				log := slog.New(slog.DiscardHandler)
				st, err := openStore(context.Background(), cfg, log)
				if err != nil {
					unavailable(t, url, b.env, err)
				}
				t.Cleanup(st.close)
				if _, tx := st.store.(idempotency.TxStore); tx {
					t.Fatal("the sidecar's store is transactional: a rerun would send a request twice")
				}
				s := newServer(cfg, st.store, st.dash, log)
				srv := httptest.NewServer(s.handler)
				t.Cleanup(srv.Close)
				t.Cleanup(func() { s.stopCommands(errShutdown) })
				urls = append(urls, srv.URL)
			}
			const n = 40
			answers := make([]answer, n)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					<-start
					req, _ := http.NewRequest(http.MethodPost, urls[i%2]+"/orders", strings.NewReader(`{"item":"book"}`))
					req.Header.Set("Idempotency-Key", "storm")
					req.Header.Set("Authorization", "Bearer alice")
					res, err := http.DefaultClient.Do(req)
					if err != nil {
						return
					}
					body, _ := io.ReadAll(res.Body)
					res.Body.Close()
					answers[i] = answer{res.StatusCode, res.Header, string(body)}
				})
			}
			close(start)
			wg.Wait()
			for i, a := range answers {
				if a.status != 201 && a.status != 409 {
					t.Errorf("request %d: %d %s, want 201 or 409", i, a.status, a.body)
				}
			}
			if n := up.count("storm"); n != 1 {
				t.Errorf("upstream ran the storm's request %d times, want 1", n)
			}
			for i, u := range urls {
				a := post(t, u+"/orders", "storm", `{"item":"book"}`)
				if a.status != 201 || a.header.Get("Idempotent-Replayed") != "true" || a.header.Get("ETag") != `"v1"` ||
					a.header.Get("Set-Cookie") != "" {
					t.Errorf("replica %d replay: %d %v", i, a.status, a.header)
				}
			}
			first := post(t, urls[0]+"/hang", "hang", "{}")
			again := post(t, urls[1]+"/hang", "hang", "{}")
			if first.status != 502 || again.status != 502 || again.header.Get("Idempotent-Replayed") != "true" || again.body != first.body {
				t.Errorf("outcome unknown across replicas: %d, then %d %v", first.status, again.status, again.header)
			}
			if n := up.count("hang"); n != 1 {
				t.Errorf("upstream ran the hung-up request %d times, want 1", n)
			}
		})
	}
}
