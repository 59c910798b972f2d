package dispatcher_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/dispatcher"
)

// serve mounts d as idemd does and returns the test server.
func serve(t *testing.T, d *dispatcher.Dispatcher) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/v1/commands/{name}", d)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

type httpReply struct {
	status int
	header http.Header
	body   string
}

// post sends a command; header holds extra request headers (pairs).
func post(t *testing.T, srv *httptest.Server, name, payload string, header ...string) httpReply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/commands/"+name, strings.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return httpReply{resp.StatusCode, resp.Header, string(body)}
}

func TestServeHTTPReplay(t *testing.T) {
	var c counter
	d := dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore()))
	d.Register("create", c.handle)
	srv := serve(t, d)

	first := post(t, srv, "create", `{"name":"a"}`, "Idempotency-Key", "k1")
	if first.status != 201 || first.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first: got %d replayed=%q %s, want 201 not replayed", first.status, first.header.Get("Idempotent-Replayed"), first.body)
	}
	if ct := first.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type: got %q, want application/json", ct)
	}
	// The quoted structured-field form names the same key.
	for _, key := range []string{"k1", `"k1"`} {
		again := post(t, srv, "create", `{"name":"a"}`, "Idempotency-Key", key)
		if again.status != first.status || again.body != first.body {
			t.Errorf("retry with key %s: got %d %s, want %d %s", key, again.status, again.body, first.status, first.body)
		}
		if got := again.header.Get("Idempotent-Replayed"); got != "true" {
			t.Errorf("retry with key %s: Idempotent-Replayed = %q, want true", key, got)
		}
	}
	if got := c.runs.Load(); got != 1 {
		t.Errorf("handler ran %d times, want 1", got)
	}
}

func TestServeHTTPRefusals(t *testing.T) {
	var c counter
	d := dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore()), dispatcher.WithMaxBodyBytes(64))
	d.Register("create", c.handle)
	srv := serve(t, d)
	tests := []struct {
		name       string
		method     string
		payload    string
		header     []string
		wantStatus int
		wantCode   string
		wantHeader [2]string
	}{
		{"GET", http.MethodGet, "", []string{"Idempotency-Key", "k"}, 405, dispatcher.CodeMethodNotAllowed, [2]string{"Allow", "POST"}},
		{"body over the limit", http.MethodPost, `{"name":"` + strings.Repeat("x", 100) + `"}`, []string{"Idempotency-Key", "k"}, 413, dispatcher.CodePayloadTooLarge, [2]string{}},
		{"missing key", http.MethodPost, `{}`, nil, 400, dispatcher.CodeKeyMissing, [2]string{}},
		{"300-byte key", http.MethodPost, `{}`, []string{"Idempotency-Key", strings.Repeat("k", 300)}, 400, dispatcher.CodeKeyInvalid, [2]string{}},
		{"empty key", http.MethodPost, `{}`, []string{"Idempotency-Key", ""}, 400, dispatcher.CodeKeyInvalid, [2]string{}},
		{"empty quoted key", http.MethodPost, `{}`, []string{"Idempotency-Key", `""`}, 400, dispatcher.CodeKeyInvalid, [2]string{}},
		{"unterminated quoted key", http.MethodPost, `{}`, []string{"Idempotency-Key", `"k`}, 400, dispatcher.CodeKeyInvalid, [2]string{}},
		{"two keys", http.MethodPost, `{}`, []string{"Idempotency-Key", "a", "Idempotency-Key", "b"}, 400, dispatcher.CodeKeyInvalid, [2]string{}},
		{"invalid JSON", http.MethodPost, `{"name"`, []string{"Idempotency-Key", "k"}, 400, dispatcher.CodeInvalidJSON, [2]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, srv.URL+"/v1/commands/create", strings.NewReader(tt.payload))
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i+1 < len(tt.header); i += 2 {
				req.Header.Add(tt.header[i], tt.header[i+1])
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			wantError(t, resp.StatusCode, body, tt.wantStatus, tt.wantCode)
			if k := tt.wantHeader[0]; k != "" && resp.Header.Get(k) != tt.wantHeader[1] {
				t.Errorf("header %s: got %q, want %q", k, resp.Header.Get(k), tt.wantHeader[1])
			}
		})
	}
	if got := c.runs.Load(); got != 0 {
		t.Errorf("handler ran %d times, want 0", got)
	}
}

func TestServeHTTPIdentity(t *testing.T) {
	var c counter
	d := dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore()))
	d.Register("create", c.handle)
	srv := serve(t, d)
	a1 := post(t, srv, "create", `{}`, "Idempotency-Key", "same", "Authorization", "Bearer token-a")
	b1 := post(t, srv, "create", `{}`, "Idempotency-Key", "same", "Authorization", "Bearer token-b")
	a2 := post(t, srv, "create", `{}`, "Idempotency-Key", "same", "Authorization", "bearer  token-a")
	anon := post(t, srv, "create", `{}`, "Idempotency-Key", "same")
	if a1.body == b1.body || a1.body == anon.body {
		t.Errorf("two identities shared a response: a=%s b=%s anonymous=%s", a1.body, b1.body, anon.body)
	}
	if a2.body != a1.body || a2.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("same token again: got %s, want the replay of %s", a2.body, a1.body)
	}
	if got := c.runs.Load(); got != 3 {
		t.Errorf("handler ran %d times, want 3", got)
	}
}

func TestBearerIdentity(t *testing.T) {
	id := func(auth ...string) string {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		for _, a := range auth {
			r.Header.Add("Authorization", a)
		}
		return dispatcher.BearerIdentity(r)
	}
	if got := id(); got != dispatcher.AnonymousIdentity {
		t.Errorf("no header: got %q, want %q", got, dispatcher.AnonymousIdentity)
	}
	tok := "s3cr3t-token"
	a := id("Bearer " + tok)
	if strings.Contains(a, tok) || !strings.HasPrefix(a, "bearer:") {
		t.Errorf("identity %q: want a bearer: digest without the raw token", a)
	}
	tests := []struct {
		name string
		got  string
		same bool
	}{
		{"scheme case and spaces", id("bearer  " + tok + " "), true},
		{"another token", id("Bearer other"), false},
		{"another scheme", id("Basic " + tok), false},
		{"no scheme", id(tok), false},
		{"two headers", id("Bearer "+tok, "Bearer x"), false},
	}
	for _, tt := range tests {
		if (tt.got == a) != tt.same {
			t.Errorf("%s: got %q vs %q, want same=%v", tt.name, tt.got, a, tt.same)
		}
		if tt.got == dispatcher.AnonymousIdentity {
			t.Errorf("%s: got the anonymous identity", tt.name)
		}
	}
}

func TestServeHTTPHandlerHeadersNotReplayed(t *testing.T) {
	d := dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore()))
	d.Register("login", func(context.Context, dispatcher.Request) (dispatcher.Response, error) {
		h := http.Header{}
		h.Set("Set-Cookie", "session=abc; HttpOnly")
		h.Set("X-Request-Note", "first")
		h.Set("Content-Type", "text/plain") // reserved: ignored
		return dispatcher.Response{Data: "hi", Header: h}, nil
	})
	srv := serve(t, d)
	first := post(t, srv, "login", `{}`, "Idempotency-Key", "k")
	if first.header.Get("Set-Cookie") == "" || first.header.Get("X-Request-Note") != "first" {
		t.Errorf("first: headers %v, want the handler's Set-Cookie and X-Request-Note", first.header)
	}
	if ct := first.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("first: Content-Type %q, want application/json", ct)
	}
	replay := post(t, srv, "login", `{}`, "Idempotency-Key", "k")
	if replay.header.Get("Idempotent-Replayed") != "true" || replay.body != first.body {
		t.Fatalf("second: got %v %s, want a replay of %s", replay.header, replay.body, first.body)
	}
	if got := replay.header.Values("Set-Cookie"); len(got) != 0 {
		t.Errorf("replay carries Set-Cookie %q", got)
	}
	if got := replay.header.Get("X-Request-Note"); got != "" {
		t.Errorf("replay carries X-Request-Note %q", got)
	}
}

func TestServeHTTPInFlight(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	d := dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore()))
	d.Register("slow", func(context.Context, dispatcher.Request) (dispatcher.Response, error) {
		close(started)
		<-release
		return dispatcher.Response{Data: "done"}, nil
	})
	srv := serve(t, d)
	done := make(chan int)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/commands/slow", strings.NewReader(`{}`))
		req.Header.Set("Idempotency-Key", "k")
		resp, err := srv.Client().Do(req)
		if err != nil {
			done <- -1
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	<-started
	dup := post(t, srv, "slow", `{}`, "Idempotency-Key", "k")
	wantError(t, dup.status, []byte(dup.body), 409, dispatcher.CodeKeyInFlight)
	if n, err := strconv.Atoi(dup.header.Get("Retry-After")); err != nil || n < 1 || n > 30 {
		t.Errorf("Retry-After = %q, want 1..30 seconds (the lease)", dup.header.Get("Retry-After"))
	}
	close(release)
	if s := <-done; s != 200 {
		t.Errorf("first: got %d, want 200", s)
	}
}

func TestServeHTTPClientDisconnectStillRecords(t *testing.T) {
	var runs atomic.Int64
	started, release := make(chan struct{}), make(chan struct{})
	var sawCancel atomic.Bool
	d := dispatcher.New(idempotency.NewEngine(idempotency.NewInMemoryStore()))
	d.Register("slow", func(ctx context.Context, _ dispatcher.Request) (dispatcher.Response, error) {
		runs.Add(1)
		close(started)
		<-release
		sawCancel.Store(ctx.Err() != nil)
		return dispatcher.Response{Status: 201, Data: "made"}, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/commands/slow", strings.NewReader(`{}`))
	req.SetPathValue("name", "slow")
	req.Header.Set("Idempotency-Key", "k")
	done := make(chan struct{})
	go func() {
		d.ServeHTTP(httptest.NewRecorder(), req)
		close(done)
	}()
	<-started
	cancel() // the client goes away
	close(release)
	<-done
	if sawCancel.Load() {
		t.Errorf("the handler's context was cancelled with the request's")
	}
	retry := httptest.NewRequest(http.MethodPost, "/v1/commands/slow", strings.NewReader(`{}`))
	retry.SetPathValue("name", "slow")
	retry.Header.Set("Idempotency-Key", "k")
	rec := httptest.NewRecorder()
	d.ServeHTTP(rec, retry)
	if rec.Code != 201 || rec.Header().Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry: got %d %v %s, want the recorded 201", rec.Code, rec.Header(), rec.Body)
	}
	if got := runs.Load(); got != 1 {
		t.Errorf("handler ran %d times, want 1", got)
	}
}

func TestServeHTTPCommandContextCancels(t *testing.T) {
	var runs atomic.Int64
	started := make(chan struct{})
	stop, cancel := context.WithCancel(context.Background())
	slow := func(ctx context.Context, _ dispatcher.Request) (dispatcher.Response, error) {
		if runs.Add(1) > 1 {
			return dispatcher.Response{Data: "second run"}, nil
		}
		close(started)
		<-ctx.Done()
		return dispatcher.Response{}, ctx.Err()
	}
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore())
	d := dispatcher.New(engine, dispatcher.WithCommandContext(stop))
	d.Register("slow", slow)
	srv := serve(t, d)
	done := make(chan httpReply)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/commands/slow", strings.NewReader(`{}`))
		req.Header.Set("Idempotency-Key", "k")
		resp, err := srv.Client().Do(req)
		if err != nil {
			done <- httpReply{status: -1, body: err.Error()}
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- httpReply{resp.StatusCode, resp.Header, string(body)}
	}()
	<-started
	cancel() // the server shuts down
	r := <-done
	wantError(t, r.status, []byte(r.body), 503, dispatcher.CodeCancelled)
	if r.header.Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After")
	}
	// The claim was released, so a retry through a dispatcher that shares
	// the engine and still serves runs the command again.
	d2 := dispatcher.New(engine)
	d2.Register("slow", slow)
	if r := post(t, serve(t, d2), "slow", `{}`, "Idempotency-Key", "k"); r.status != 200 {
		t.Errorf("retry: got %d %s, want 200 (key released)", r.status, r.body)
	}
	if got := runs.Load(); got != 2 {
		t.Errorf("handler ran %d times, want 2", got)
	}
}
