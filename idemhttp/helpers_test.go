package idemhttp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/idemkit/idempotency"
)

// command is a test handler that counts its executions and answers
// {"run":n}, so a replay (same n) is told apart from a re-execution.
type command struct {
	runs   atomic.Int64
	status int // 0 means 201
}

func (c *command) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := c.runs.Add(1)
	status := c.status
	if status == 0 {
		status = http.StatusCreated
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"run":%d}`, n)
}

// send runs one request through h and returns the recorded response. header
// holds name, value pairs; names may repeat.
func send(h http.Handler, method, target, body string, header ...string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, req)
	return rr
}

// problemBody is the RFC 9457 document the middleware answers with.
type problemBody struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

// wantProblem checks that rr is a problem+json answer with status.
func wantProblem(t *testing.T, rr *httptest.ResponseRecorder, status int) problemBody {
	t.Helper()
	if rr.Code != status {
		t.Errorf("status = %d, want %d (body %s)", rr.Code, status, rr.Body)
	}
	if got := rr.Header().Get("Content-Type"); got != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json", got)
	}
	var p problemBody
	if err := json.Unmarshal(rr.Body.Bytes(), &p); err != nil {
		t.Fatalf("problem body %q: %v", rr.Body, err)
	}
	if p.Status != status || p.Type == "" || p.Title == "" || p.Detail == "" {
		t.Errorf("problem = %+v, want status %d and type, title, detail set", p, status)
	}
	return p
}

func wantRuns(t *testing.T, c *command, want int64) {
	t.Helper()
	if got := c.runs.Load(); got != want {
		t.Errorf("handler ran %d times, want %d", got, want)
	}
}

func wantReplayed(t *testing.T, rr *httptest.ResponseRecorder, want bool) {
	t.Helper()
	got := rr.Header().Get("Idempotent-Replayed")
	if want && got != "true" {
		t.Errorf("Idempotent-Replayed = %q, want true", got)
	}
	if !want && got != "" {
		t.Errorf("Idempotent-Replayed = %q on a first execution, want none", got)
	}
}

// failingStore is a ClaimStore whose every call fails as an unreachable
// backend does.
type failingStore struct{ *idempotency.InMemoryStore }

var errBackend = fmt.Errorf("dial tcp 10.1.2.3:6379: secret-internal-detail: %w", idempotency.ErrStoreUnavailable)

func (failingStore) Begin(context.Context, string, string, idempotency.ClaimRequest) (idempotency.Claim, error) {
	return idempotency.Claim{}, errBackend
}

// readAll reads and closes a client response body.
func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return string(b)
}
