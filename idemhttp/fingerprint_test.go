package idemhttp_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/canonicaljson"
	"github.com/idemkit/idempotency/idemhttp"
)

// A retry's JSON body is compared by exact value: two bodies whose numbers
// differ in any digit are two requests (422), however close the numbers,
// while spellings of one value are one request (replayed). Over a real
// connection, as a client sees it.
func TestFingerprintExactNumbers(t *testing.T) {
	tests := []struct {
		name          string
		first, second string
		wantStatus    int
	}{
		{"ids one apart beyond 2^53", `{"account_id":1234567890123456789}`, `{"account_id":1234567890123456788}`, http.StatusUnprocessableEntity},
		{"2^53+1 and 2^53", `{"n":9007199254740993}`, `{"n":9007199254740992}`, http.StatusUnprocessableEntity},
		{"a digit past a double's precision", `{"amount":0.1}`, `{"amount":0.10000000000000000001}`, http.StatusUnprocessableEntity},
		{"beyond a double's range", `{"n":1e400}`, `{"n":1e401}`, http.StatusUnprocessableEntity},
		{"below a double's range", `{"n":1e-400}`, `{"n":0}`, http.StatusUnprocessableEntity},
		{"same id", `{"account_id":1234567890123456789}`, `{ "account_id" : 1234567890123456789.0 }`, http.StatusCreated},
		{"same value, other spellings", `{"amount":100,"rate":0.5}`, `{"rate":5e-1,"amount":1e2}`, http.StatusCreated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := &command{}
			srv := httptest.NewServer(idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(cmd))
			defer srv.Close()
			post := func(body string) (int, string) {
				t.Helper()
				req, err := http.NewRequest("POST", srv.URL+"/accounts", strings.NewReader(body))
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Idempotency-Key", "k")
				resp, err := srv.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				return resp.StatusCode, string(b)
			}
			if status, body := post(tt.first); status != http.StatusCreated {
				t.Fatalf("first: got %d %s, want 201", status, body)
			}
			status, body := post(tt.second)
			switch {
			case status != tt.wantStatus:
				t.Errorf("retry with %s after %s: got %d %s, want %d", tt.second, tt.first, status, body, tt.wantStatus)
			case status == http.StatusCreated && body != `{"run":1}`:
				t.Errorf("retry with %s after %s: got %s, want the replay {\"run\":1}", tt.second, tt.first, body)
			}
			if want := int64(1); cmd.runs.Load() != want {
				t.Errorf("handler ran %d times, want %d", cmd.runs.Load(), want)
			}
		})
	}
}

// DefaultFingerprint is idempotency.Fingerprint of the method, the path, the
// query, a tag naming the body's form and the body in that form: a JSON
// body's canonical form under "json-exact", any other body's bytes under
// "raw". The tags keep a raw body from ever matching a canonical one with
// the same bytes.
func TestDefaultFingerprintDefinition(t *testing.T) {
	canonical := func(s string) string {
		c, err := canonicaljson.Canonical([]byte(s))
		if err != nil {
			t.Fatalf("Canonical(%s): %v", s, err)
		}
		return string(c)
	}
	tests := []struct {
		contentType, body string
		form, digested    string
	}{
		{"application/json", `{"b":1.0,"a":"\u0041"}`, "json-exact", canonical(`{"b":1.0,"a":"\u0041"}`)},
		{"application/json", `{"a":"A","b":1}`, "json-exact", `{"a":"A","b":1}`},
		{"text/plain", `{"a":"A","b":1}`, "raw", `{"a":"A","b":1}`},
		{"application/json", `{"a":1,"a":2}`, "raw", `{"a":1,"a":2}`}, // no canonical form
		{"application/json", `{"n":1e99999999999}`, "raw", `{"n":1e99999999999}`},
		{"application/json", `{bad`, "raw", `{bad`},
	}
	for _, tt := range tests {
		req := httptest.NewRequest("POST", "/a/b%20c?q=1", nil)
		req.Header.Set("Content-Type", tt.contentType)
		got := idemhttp.DefaultFingerprint(req, []byte(tt.body))
		want := idempotency.Fingerprint([]byte("POST"), []byte("/a/b%20c"), []byte("q=1"), []byte(tt.form), []byte(tt.digested))
		if got != want {
			t.Errorf("DefaultFingerprint(%s %s) = %s, want Fingerprint(…, %q, %s) = %s", tt.contentType, tt.body, got, tt.form, tt.digested, want)
		}
	}
	// The same bytes, raw and canonical, are two fingerprints.
	body := `{"a":"A","b":1}`
	asJSON := httptest.NewRequest("POST", "/a", nil)
	asJSON.Header.Set("Content-Type", "application/json")
	asText := httptest.NewRequest("POST", "/a", nil)
	asText.Header.Set("Content-Type", "text/plain")
	if idemhttp.DefaultFingerprint(asJSON, []byte(body)) == idemhttp.DefaultFingerprint(asText, []byte(body)) {
		t.Error("a canonical JSON body and the same bytes as text share a fingerprint")
	}
}
