package idemgin_test

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/idemkit/idempotency"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode) // no debug route listing
	os.Exit(m.Run())
}

func newEngine() *idempotency.Engine {
	return idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true))
}

// response is what a client got.
type response struct {
	status int
	header http.Header
	body   string
}

// post sends a POST to url with body and header (name, value pairs) and
// returns the response. It may run on any goroutine: it reports failures
// in the response (status 0, the error as body), never with t.Fatal.
func post(client *http.Client, url, body string, header ...string) response {
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return response{body: err.Error()}
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return response{body: err.Error()}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{body: err.Error()}
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// keyed are the headers of a keyed request from one caller.
func keyed(key string) []string {
	return []string{"Idempotency-Key", `"` + key + `"`, "Authorization", "Bearer alice"}
}

func wantStatus(t *testing.T, got response, want int) {
	t.Helper()
	if got.status != want {
		t.Fatalf("status = %d, want %d (body %q)", got.status, want, got.body)
	}
}

func wantReplayed(t *testing.T, got response, want bool) {
	t.Helper()
	v := got.header.Get("Idempotent-Replayed")
	if want && v != "true" {
		t.Errorf("Idempotent-Replayed = %q, want true", v)
	}
	if !want && v != "" {
		t.Errorf("Idempotent-Replayed = %q on a first execution, want none", v)
	}
}

// wantProblem checks that got is an RFC 9457 problem with status and a
// type ending in typ.
func wantProblem(t *testing.T, got response, status int, typ string) {
	t.Helper()
	wantStatus(t, got, status)
	if ct := got.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q, want application/problem+json", ct)
	}
	var p struct {
		Type   string `json:"type"`
		Status int    `json:"status"`
	}
	if err := json.Unmarshal([]byte(got.body), &p); err != nil {
		t.Fatalf("problem body %q: %v", got.body, err)
	}
	if !strings.HasSuffix(p.Type, "/"+typ) || p.Status != status {
		t.Errorf("problem = %+v, want type …/%s and status %d", p, typ, status)
	}
}

// inFlightDuplicate sends a keyed POST of body to url and, once its handler
// has started (it closes started and waits for release), the same request
// again; then it lets the first finish. It checks that the duplicate got
// the in-flight 409 with Retry-After 1, and returns the first's response.
func inFlightDuplicate(t *testing.T, client *http.Client, url, body string, started, release chan struct{}) response {
	t.Helper()
	firstc := make(chan response, 1)
	go func() { firstc <- post(client, url, body, keyed("k")...) }()
	<-started
	dup := post(client, url, body, keyed("k")...)
	close(release)
	first := <-firstc

	wantProblem(t, dup, http.StatusConflict, "idempotency-key-in-flight")
	if got := dup.header.Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After = %q, want 1", got)
	}
	return first
}
