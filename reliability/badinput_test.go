package reliability

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/dispatcher"
	"github.com/idemkit/idempotency/driver"
	"github.com/idemkit/idempotency/idemhttp"
)

// rawRequest sends request (raw HTTP/1.1 bytes) to addr on a connection of
// its own and returns the response with its body read. It reads while it
// writes: a server may answer (413, 431) and close before the request is
// all sent.
func rawRequest(t *testing.T, addr, request string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	written := make(chan error, 1)
	go func() {
		_, err := io.WriteString(conn, request)
		written <- err
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading the response: %v (writing the request: %v)", err, <-written)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// command returns a raw POST of widgets.create with the given extra header
// lines (each ending in CRLF) and body.
func command(headers, body string) string {
	return "POST /v1/commands/widgets.create HTTP/1.1\r\nHost: idemd\r\nAuthorization: Bearer tok\r\n" +
		"Content-Type: application/json\r\n" + headers +
		fmt.Sprintf("Content-Length: %d\r\nConnection: close\r\n\r\n", len(body)) + body
}

// badInput is one malformed request and the answer it must get.
type badInput struct {
	name    string
	request string
	key     string // the key it carries, if any: nothing may be stored under it
	status  int
	code    string // the envelope's error.code; "" when net/http itself answers
	issue   string // a known issue that makes the server accept it
}

func badInputs() []badInput {
	const payload = `{"name":"w"}`
	long := strings.Repeat("k", 300)
	return []badInput{
		{name: "missing key", request: command("", payload), status: 400, code: dispatcher.CodeKeyMissing},
		{name: "empty key", request: command("Idempotency-Key: \r\n", payload), status: 400, code: dispatcher.CodeKeyInvalid},
		{name: "empty quoted key", request: command("Idempotency-Key: \"\"\r\n", payload), status: 400, code: dispatcher.CodeKeyInvalid},
		{name: "300-byte key", request: command("Idempotency-Key: "+long+"\r\n", payload), key: long, status: 400, code: dispatcher.CodeKeyInvalid},
		{name: "300-byte quoted key", request: command("Idempotency-Key: \""+long+"\"\r\n", payload), key: long, status: 400, code: dispatcher.CodeKeyInvalid},
		{name: "control character", request: command("Idempotency-Key: a\x01b\r\n", payload), key: "a\x01b", status: 400},
		{name: "DEL character", request: command("Idempotency-Key: a\x7fb\r\n", payload), key: "a\x7fb", status: 400},
		{name: "tab inside a quoted key", request: command("Idempotency-Key: \"a\tb\"\r\n", payload), key: "a\tb", status: 400, code: dispatcher.CodeKeyInvalid},
		{name: "tab inside a bare key", request: command("Idempotency-Key: a\tb\r\n", payload), key: "a\tb", status: 400, code: dispatcher.CodeKeyInvalid},
		{name: "non-ASCII quoted key", request: command("Idempotency-Key: \"caf\u00e9\"\r\n", payload), key: "caf\u00e9", status: 400, code: dispatcher.CodeKeyInvalid},
		{name: "non-ASCII bare key", request: command("Idempotency-Key: caf\u00e9-"+driver.NewOwner()+"\r\n", payload), status: 400, code: dispatcher.CodeKeyInvalid},
		{name: "invalid UTF-8 key", request: command("Idempotency-Key: \xff\xfe\r\n", payload), key: "\xff\xfe", status: 400, code: dispatcher.CodeKeyInvalid},
		{name: "two key headers", request: command("Idempotency-Key: \"k1\"\r\nIdempotency-Key: \"k2\"\r\n", payload), key: "k1", status: 400, code: dispatcher.CodeKeyInvalid},
		{name: "a list of keys", request: command("Idempotency-Key: \"k1\", \"k2\"\r\n", payload), key: "k1", status: 400, code: dispatcher.CodeKeyInvalid},
		{name: "a bare list of keys", request: command("Idempotency-Key: k1, k2\r\n", payload), key: "k1", status: 400, code: dispatcher.CodeKeyInvalid},
		{name: "unterminated quoted key", request: command("Idempotency-Key: \"k1\r\n", payload), key: "k1", status: 400, code: dispatcher.CodeKeyInvalid},
		{name: "key with parameters", request: command("Idempotency-Key: \"k1\";a=1\r\n", payload), key: "k1", status: 400, code: dispatcher.CodeKeyInvalid},
		{name: "body over the limit", request: command("Idempotency-Key: \"big\"\r\n", `{"name":"`+strings.Repeat("x", dispatcher.DefaultMaxBodyBytes)+`"}`),
			key: "big", status: 413, code: dispatcher.CodePayloadTooLarge},
		{name: "invalid JSON", request: command("Idempotency-Key: \"badjson\"\r\n", `{"name":`), key: "badjson", status: 400, code: dispatcher.CodeInvalidJSON},
		{name: "not JSON at all", request: command("Idempotency-Key: \"notjson\"\r\n", "name=w"), key: "notjson", status: 400, code: dispatcher.CodeInvalidJSON},
		{name: "wrong Content-Type", request: strings.Replace(command("Idempotency-Key: \"ctype-"+driver.NewOwner()+"\"\r\n", payload),
			"application/json", "text/plain", 1), status: 415, code: dispatcher.CodeUnsupportedMediaType},
		{name: "huge header", request: command("Idempotency-Key: \"huge\"\r\nX-Filler: "+strings.Repeat("f", 2<<20)+"\r\n", payload), key: "huge", status: 431},
		{name: "huge key header", request: command("Idempotency-Key: \""+strings.Repeat("k", 100<<10)+"\"\r\n", payload), key: strings.Repeat("k", 100<<10), status: 400, code: dispatcher.CodeKeyInvalid},
	}
}

// TestBadInput sends each malformed request of badInputs to the dispatcher
// (the handler idemd mounts) over each store: each gets a clear 4xx (an
// envelope with its error code, or net/http's own answer for a request it
// cannot parse), the handler never runs, nothing is stored under the key it
// carried, and the server goes on serving.
func TestBadInput(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		t.Parallel()
		srv, ledger := newDashboard(t, f.store)
		addr := srv.Listener.Addr().String()
		identity := func() string {
			r := httptest.NewRequest(http.MethodPost, "/", nil)
			r.Header.Set("Authorization", "Bearer tok")
			return dispatcher.BearerIdentity(r)
		}()
		for _, tt := range badInputs() {
			t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
				before := ledger.Total()
				resp, body := rawRequest(t, addr, tt.request)
				accepted := resp.StatusCode < 300
				if accepted && tt.issue != "" && tolerated(t, strings.SplitN(tt.issue, ":", 2)[0], tt.issue) {
					return
				}
				if resp.StatusCode != tt.status {
					t.Errorf("status %d (%.200s), want %d", resp.StatusCode, body, tt.status)
				}
				if tt.code != "" {
					var env envelope
					if err := json.Unmarshal([]byte(body), &env); err != nil || env.OK || env.Error == nil || env.Error.Code != tt.code {
						t.Errorf("answer %.200s, want an envelope with error code %q", body, tt.code)
					} else if env.Error.Message == "" {
						t.Errorf("answer %s has no message", body)
					}
				}
				if ledger.Total() != before {
					t.Errorf("the handler ran")
				}
				if tt.key != "" && idempotency.ValidateKey(tt.key) == nil {
					assertNothingStored(t, f.store, tt.key, identity)
				}
			})
		}
		// Still serving.
		ok := postCommand(t, srv.Client(), srv.URL, "widgets.create", "after-bad-input-"+driver.NewOwner(), "tok", `{"name":"w"}`)
		if ok.status != 201 {
			t.Errorf("a valid request after the bad ones: %d %s", ok.status, ok.body)
		}
	})
}

// assertNothingStored checks that (key, identity) has neither a record nor
// a claim: Lookup misses and a new Begin acquires it (then releases it).
func assertNothingStored(t *testing.T, s idempotency.ClaimStore, key, identity string) {
	t.Helper()
	ctx := context.Background()
	if rec, ok := s.Lookup(ctx, key, identity); ok {
		t.Errorf("a record was stored under the key: %s", rec.WireBody)
	}
	cl, err := s.Begin(ctx, key, identity, idempotency.ClaimRequest{Owner: driver.NewOwner(), Lease: time.Minute})
	if err != nil || cl.Status != idempotency.ClaimAcquired {
		t.Errorf("Begin on the key after the bad request: %v %v, want acquired (nothing stored)", cl.Status, err)
		return
	}
	if err := s.Release(ctx, cl.Token); err != nil {
		t.Errorf("Release: %v", err)
	}
}

// TestSlowClient trickles a request to the dispatcher, header line by
// header line and then its body, over about a second: meanwhile other
// callers are served at once, and the slow request, once complete, runs
// its command once.
func TestSlowClient(t *testing.T) {
	f := newFixture(t, memoryBackend)
	srv, ledger := newDashboard(t, f.store)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	key := "slow-" + driver.NewOwner()
	req := command("Idempotency-Key: \""+key+"\"\r\n", `{"name":"slow"}`)
	chunks := strings.SplitAfter(req, "\n")
	for i, c := range chunks {
		if _, err := io.WriteString(conn, c); err != nil {
			t.Fatalf("writing: %v", err)
		}
		// Another caller, while the slow one holds its connection.
		if i%3 == 0 {
			start := time.Now()
			r := postCommand(t, srv.Client(), srv.URL, "widgets.create", fmt.Sprintf("fast-%s-%d", key, i), "tok2", `{"name":"w"}`)
			if r.status != 201 || time.Since(start) > time.Second {
				t.Errorf("a caller served during the slow request: %d after %v", r.status, time.Since(start))
			}
		}
		time.Sleep(100 * time.Millisecond) // the slow client's own pace
	}
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the slow request got no answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Errorf("the slow request: %d, want 201", resp.StatusCode)
	}
	if err := ledger.Check(nil); err != nil {
		t.Error(err)
	}
}

// TestBadInputMiddleware sends the key and size cases of badInputs to the
// generic idemhttp middleware (key required) over each store: each gets a
// 4xx problem (application/problem+json), the handler never runs, nothing
// is stored, and the server goes on serving.
func TestBadInputMiddleware(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		t.Parallel()
		var ledger Ledger
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ledger.Record("payments")
			w.WriteHeader(http.StatusCreated)
		})
		srv := httptest.NewServer(idemhttp.New(idempotency.NewEngine(f.store, idempotency.WithDetachedRun(true)), idemhttp.WithRequired(true), idemhttp.WithAnonymous(true))(h))
		defer srv.Close()
		addr := srv.Listener.Addr().String()
		identity := func() string {
			r := httptest.NewRequest(http.MethodPost, "/", nil)
			r.Header.Set("Authorization", "Bearer tok")
			return idemhttp.DefaultIdentity(r)
		}()
		for _, tt := range badInputs() {
			if tt.code == dispatcher.CodeInvalidJSON || tt.status == 415 {
				continue // payload checks belong to the handler, not the generic middleware
			}
			t.Run(strings.ReplaceAll(tt.name, " ", "_"), func(t *testing.T) {
				before := ledger.Total()
				resp, body := rawRequest(t, addr, tt.request)
				if resp.StatusCode < 300 && tt.issue != "" && tt.issue[:5] != "BARE-" &&
					tolerated(t, strings.SplitN(tt.issue, ":", 2)[0], tt.issue) {
					return
				}
				if resp.StatusCode != tt.status {
					t.Errorf("status %d (%.200s), want %d", resp.StatusCode, body, tt.status)
				}
				if tt.code != "" && !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
					t.Errorf("Content-Type %q, want application/problem+json", resp.Header.Get("Content-Type"))
				}
				if ledger.Total() != before {
					t.Errorf("the handler ran")
				}
				if tt.key != "" && idempotency.ValidateKey(tt.key) == nil {
					assertNothingStored(t, f.store, tt.key, identity)
				}
			})
		}
		resp, _ := rawRequest(t, addr, command("Idempotency-Key: \"fine\"\r\n", `{}`))
		if resp.StatusCode != http.StatusCreated {
			t.Errorf("a valid request after the bad ones: %d", resp.StatusCode)
		}
	})
}
