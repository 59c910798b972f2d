package idemclient_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemclient"
	"github.com/idemkit/idempotency/idemhttp"
)

func TestHeaderNamesMatchIdemhttp(t *testing.T) {
	if idemclient.HeaderKey != idemhttp.HeaderKey || idemclient.HeaderReplayed != idemhttp.HeaderReplayed {
		t.Fatalf("idemclient's headers %q %q, idemhttp's %q %q",
			idemclient.HeaderKey, idemclient.HeaderReplayed, idemhttp.HeaderKey, idemhttp.HeaderReplayed)
	}
}

// loseFirstReply runs next for every request, but throws away the answer
// to the first request of each key and closes its connection: the command
// ran, the caller never heard.
func loseFirstReply(t *testing.T, next http.Handler) http.Handler {
	var mu sync.Mutex
	seen := make(map[string]bool)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get(idemhttp.HeaderKey)
		mu.Lock()
		lose := !seen[key]
		seen[key] = true
		mu.Unlock()
		if !lose {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(httptest.NewRecorder(), r)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		conn.Close()
	})
}

// server is idemhttp in front of a handler that counts its executions and
// answers 201 with the execution's number.
type server struct {
	runs atomic.Int64
	url  string
}

func newServer(t *testing.T, wrap func(http.Handler) http.Handler, hold func(r *http.Request)) *server {
	s := &server{}
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hold != nil {
			hold(r)
		}
		n := s.runs.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"run":%d}`, n)
	})
	var handler http.Handler = idemhttp.New(engine)(h)
	if wrap != nil {
		handler = wrap(handler)
	}
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	s.url = srv.URL
	return s
}

func send(t *testing.T, client *http.Client, url, key string) (status int, body string, replayed bool, attempts int) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"amount":1000}`))
	if err != nil {
		t.Error(err)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer alice")
	if key != "" {
		req.Header.Set(idemhttp.HeaderKey, key)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Errorf("POST: %v", err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Errorf("reading the answer: %v", err)
	}
	return resp.StatusCode, string(b), idemclient.Replayed(resp), idemclient.Attempts(resp)
}

// TestLostRepliesAgainstIdemhttp: every first answer is lost on the wire;
// each of 16 concurrent callers still gets its own 201, as a replay on the
// retry, and each command ran once.
func TestLostRepliesAgainstIdemhttp(t *testing.T) {
	s := newServer(t, func(h http.Handler) http.Handler { return loseFirstReply(t, h) }, nil)
	client := &http.Client{Transport: idemclient.New(idemclient.WithBackoff(time.Millisecond, 10*time.Millisecond))}
	const callers = 16
	bodies := make([]string, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			// The attempt count is not checked: net/http itself re-sends a
			// keyed request once when a reused connection fails.
			status, body, replayed, _ := send(t, client, s.url, "")
			if status != 201 || !replayed {
				t.Errorf("caller %d: %d replayed=%v, want a replayed 201", i, status, replayed)
			}
			bodies[i] = body
		})
	}
	wg.Wait()
	if got := s.runs.Load(); got != callers {
		t.Errorf("%d executions, want %d (one per caller)", got, callers)
	}
	distinct := make(map[string]bool)
	for _, b := range bodies {
		distinct[b] = true
	}
	if len(distinct) != callers {
		t.Errorf("%d distinct answers among %d callers, want one each: %q", len(distinct), callers, bodies)
	}
}

// TestInFlightAgainstIdemhttp: two callers send one key; the second gets
// idemhttp's 409 (Retry-After) while the first runs, retries, and ends
// with the first's answer as a replay. The handler is held until the 409
// has gone out.
func TestInFlightAgainstIdemhttp(t *testing.T) {
	conflicted := make(chan struct{})
	var once sync.Once
	watch := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			for k, vs := range rec.Header() {
				w.Header()[k] = vs
			}
			w.WriteHeader(rec.Code)
			_, _ = io.Copy(w, bytes.NewReader(rec.Body.Bytes()))
			if rec.Code == http.StatusConflict {
				once.Do(func() { close(conflicted) })
			}
		})
	}
	started := make(chan struct{})
	s := newServer(t, watch, func(*http.Request) {
		close(started)
		<-conflicted
	})
	client := &http.Client{Transport: idemclient.New(
		idemclient.WithBackoff(time.Millisecond, 10*time.Millisecond),
		idemclient.WithMaxRetryAfter(0), // the 409's Retry-After: 1 would make this test slow
		idemclient.WithMaxAttempts(100))}
	type result struct {
		status   int
		body     string
		replayed bool
	}
	first := make(chan result, 1)
	go func() {
		status, body, replayed, _ := send(t, client, s.url, "order-1")
		first <- result{status, body, replayed}
	}()
	<-started
	status, body, replayed, attempts := send(t, client, s.url, "order-1")
	a := <-first
	if a.status != 201 || a.replayed {
		t.Errorf("first caller: %d replayed=%v, want a fresh 201", a.status, a.replayed)
	}
	if status != 201 || !replayed || attempts < 2 || body != a.body {
		t.Errorf("second caller: %d %q replayed=%v after %d attempts, want the first's %q replayed after at least 2",
			status, body, replayed, attempts, a.body)
	}
	if got := s.runs.Load(); got != 1 {
		t.Errorf("%d executions, want 1", got)
	}
}

// TestMismatchNotRetried: idemhttp's 422 (the key reused with another
// payload) is returned at once.
func TestMismatchNotRetried(t *testing.T) {
	s := newServer(t, nil, nil)
	client := &http.Client{Transport: idemclient.New()}
	if status, _, _, _ := send(t, client, s.url, "k"); status != 201 {
		t.Fatalf("first: %d, want 201", status)
	}
	req, _ := http.NewRequest(http.MethodPost, s.url, strings.NewReader(`{"amount":2000}`))
	req.Header.Set("Authorization", "Bearer alice")
	req.Header.Set(idemhttp.HeaderKey, "k")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 422 || idemclient.Attempts(resp) != 1 {
		t.Fatalf("got %d after %d attempts, want 422 after 1", resp.StatusCode, idemclient.Attempts(resp))
	}
}
