package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/dispatcher"
	"github.com/idemkit/idempotency/idemhttp"
)

const adminToken = "test-admin-token-0123456789"

// adminClient calls an admin API over HTTP.
type adminClient struct {
	base  string
	token string
	http  *http.Client
}

func (a adminClient) call(t *testing.T, method, path string, query url.Values) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, a.base+path+"?"+query.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var env struct {
		OK    bool           `json:"ok"`
		Data  map[string]any `json:"data"`
		Error map[string]any `json:"error"`
	}
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("%s %s: %d %q is not an envelope", method, path, resp.StatusCode, body)
	}
	if env.OK != (resp.StatusCode == 200) {
		t.Fatalf("%s %s: %d with ok %v: %s", method, path, resp.StatusCode, env.OK, body)
	}
	if !env.OK {
		return resp.StatusCode, env.Error
	}
	return resp.StatusCode, env.Data
}

// record GETs one record and returns it.
func (a adminClient) record(t *testing.T, q url.Values) map[string]any {
	t.Helper()
	status, data := a.call(t, "GET", "/admin/v1/records", q)
	if status != 200 {
		t.Fatalf("GET records?%s: %d %v", q.Encode(), status, data)
	}
	return data["record"].(map[string]any)
}

// newAdminServer is newTestServerWith on st's store and dashboard, with a
// lease of its own and the admin API served beside it.
func newAdminServer(t *testing.T, st openedStore, lease time.Duration) (client, adminClient) {
	t.Helper()
	cfg := testConfig()
	cfg.lease = lease
	s, c := newTestServerConfig(t, cfg, st.store, st.dash)
	as := httptest.NewServer(newAdminAPI(s, adminToken).handler())
	t.Cleanup(as.Close)
	return c, adminClient{base: as.URL, token: adminToken, http: as.Client()}
}

func memoryStore() openedStore {
	return openedStore{store: idempotency.NewInMemoryStore(), dash: &memDashboard{}, name: "memory", close: func() {}}
}

func TestAdminNeedsTheToken(t *testing.T) {
	_, admin := newAdminServer(t, memoryStore(), time.Minute)
	q := url.Values{"key": {"k"}, "identity": {"anonymous"}}
	for _, token := range []string{"", "wrong-token-0123456789", adminToken + "x", adminToken[:len(adminToken)-1]} {
		a := admin
		a.token = token
		if status, e := a.call(t, "GET", "/admin/v1/records", q); status != 401 || e["code"] != "unauthorized" {
			t.Errorf("token %q: %d %v, want 401", token, status, e)
		}
		if status, _ := a.call(t, "DELETE", "/admin/v1/records", q); status != 401 {
			t.Errorf("DELETE with token %q: %d, want 401", token, status)
		}
	}
	// Another scheme with the right token is refused too.
	req, _ := http.NewRequest("GET", admin.base+"/admin/v1/claims", nil)
	req.Header.Set("Authorization", "Basic "+adminToken)
	resp, err := admin.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
		t.Errorf("Basic scheme: %d %v, want 401 with WWW-Authenticate", resp.StatusCode, resp.Header)
	}
	if status, _ := admin.call(t, "GET", "/admin/v1/records", q); status != 200 {
		t.Errorf("right token: %d, want 200", status)
	}
}

func TestAdminBadRequests(t *testing.T) {
	_, admin := newAdminServer(t, memoryStore(), time.Minute)
	for _, tt := range []struct {
		method, path string
		q            url.Values
		status       int
	}{
		{"GET", "/admin/v1/records", url.Values{}, 400},
		{"GET", "/admin/v1/records", url.Values{"key": {"k"}}, 400},
		{"GET", "/admin/v1/records", url.Values{"key": {"k"}, "identity": {"a"}, "credential": {"Bearer x"}}, 400},
		{"GET", "/admin/v1/records", url.Values{"id": {"x"}, "key": {"k"}}, 400},
		{"GET", "/admin/v1/records", url.Values{"id": {"not an id"}}, 400},
		{"GET", "/admin/v1/records", url.Values{"key": {"bad\x01key"}, "identity": {"a"}}, 400},
		{"DELETE", "/admin/v1/records", url.Values{"key": {"k"}}, 400},
		{"GET", "/admin/v1/claims", url.Values{"older-than": {"soon"}}, 400},
		{"GET", "/admin/v1/claims", url.Values{"older-than": {"-1s"}}, 400},
		{"GET", "/admin/v1/claims", url.Values{"limit": {"0"}}, 400},
		{"GET", "/admin/v1/nope", url.Values{}, 404},
		{"POST", "/admin/v1/records", url.Values{"key": {"k"}, "identity": {"a"}}, 405},
	} {
		if status, e := admin.call(t, tt.method, tt.path, tt.q); status != tt.status || e["message"] == "" {
			t.Errorf("%s %s?%s: %d %v, want %d with a message", tt.method, tt.path, tt.q.Encode(), status, e, tt.status)
		}
	}
}

// adminStores are the stores the admin API is tested on: memory and every
// backend.
func adminStores(t *testing.T, run func(t *testing.T, open func() openedStore)) {
	t.Run("memory", func(t *testing.T) { run(t, memoryStore) })
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			url, secret := backendURL(t, b), testSecret(t)
			run(t, func() openedStore { return openBackend(t, b, url, secret) })
		})
	}
}

// TestAdminInspectAndPurge: a record looked at by key and credential, by
// key and identity, and by id; purged; the command then runs again.
func TestAdminInspectAndPurge(t *testing.T) {
	adminStores(t, func(t *testing.T, open func() openedStore) {
		c, admin := newAdminServer(t, open(), time.Minute)
		const key, cred = "order-42", "Bearer alice-token"
		first := c.post(t, "widgets.create", `{"name":"w"}`, "Idempotency-Key", key, "Authorization", cred)
		if first.status != 201 {
			t.Fatalf("widgets.create: %d %s", first.status, first.body)
		}
		byCred := admin.record(t, url.Values{"key": {key}, "credential": {cred}})
		r := &http.Request{Header: http.Header{"Authorization": {cred}}}
		byIdentity := admin.record(t, url.Values{"key": {key}, "identity": {dispatcher.BearerIdentity(r)}})
		byID := admin.record(t, url.Values{"id": {byCred["id"].(string)}})
		for _, got := range []map[string]any{byCred, byIdentity, byID} {
			if got["state"] != "completed" || got["status"] != float64(201) || got["size"] != float64(len(first.body)) ||
				got["id"] != byCred["id"] || got["stored_at"] == nil || got["expires_at"] == nil {
				t.Errorf("record = %v, want the completed 201 of %d bytes", got, len(first.body))
			}
		}
		if got := admin.record(t, url.Values{"key": {key}, "credential": {"Bearer bob-token"}}); got["state"] != "absent" {
			t.Errorf("another caller's record = %v, want absent", got)
		}
		status, data := admin.call(t, "DELETE", "/admin/v1/records", url.Values{"key": {key}, "credential": {cred}})
		if status != 200 || data["purged"] != true || data["record"].(map[string]any)["state"] != "completed" {
			t.Fatalf("DELETE: %d %v, want the completed record purged", status, data)
		}
		if got := admin.record(t, url.Values{"id": {byCred["id"].(string)}}); got["state"] != "absent" {
			t.Errorf("after the purge: %v, want absent", got)
		}
		if status, data := admin.call(t, "DELETE", "/admin/v1/records", url.Values{"id": {byCred["id"].(string)}}); status != 200 || data["purged"] != false {
			t.Errorf("second DELETE: %d %v, want nothing purged", status, data)
		}
		again := c.post(t, "widgets.create", `{"name":"w"}`, "Idempotency-Key", key, "Authorization", cred)
		if again.status != 201 || again.body == first.body || again.header.Get("Idempotent-Replayed") != "" {
			t.Errorf("after the purge: %d %s, want the command run again (a new widget)", again.status, again.body)
		}
	})
}

// TestAdminStuckClaim: a command that runs on and on is found among the
// claims, purged, and its key run again by a retry; the stuck holder is
// refused afterwards: it never answers with a recorded response, and the
// retry's response is the one replayed.
func TestAdminStuckClaim(t *testing.T) {
	adminStores(t, func(t *testing.T, open func() openedStore) {
		c, admin := newAdminServer(t, open(), 1500*time.Millisecond)
		const key = "stuck-1"
		stale := make(chan reply, 1)
		go func() {
			r, err := c.send("reports.generate", `{"ms":8000}`, "Idempotency-Key", key)
			if err != nil {
				r.body = err.Error()
			}
			stale <- r
		}()
		// A shared Redis lists the claims of every test under the prefix:
		// look for this one's.
		wantID := admin.record(t, url.Values{"key": {key}, "identity": {dispatcher.AnonymousIdentity}})["id"]
		find := func(q url.Values) map[string]any {
			t.Helper()
			status, data := admin.call(t, "GET", "/admin/v1/claims", q)
			if status != 200 {
				t.Fatalf("GET claims: %d %v", status, data)
			}
			list := data["claims"].([]any)
			if data["count"] != float64(len(list)) {
				t.Fatalf("claims = %v: count is not the length", data)
			}
			for _, c := range list {
				if c := c.(map[string]any); c["id"] == wantID {
					return c
				}
			}
			return nil
		}
		var claim map[string]any
		deadline := time.Now().Add(20 * time.Second)
		for claim == nil {
			if time.Now().After(deadline) {
				t.Fatal("the running command's claim was never listed")
			}
			if claim = find(url.Values{"older-than": {"200ms"}}); claim == nil {
				time.Sleep(20 * time.Millisecond)
			}
		}
		if claim["state"] != "in_flight" || claim["fence"] == nil || claim["age_ms"].(float64) < 200 {
			t.Fatalf("claim = %v, want the in-flight claim of %v, at least 200 ms old", claim, wantID)
		}
		if c := find(url.Values{"older-than": {"1h"}}); c != nil {
			t.Fatalf("claims older than 1h list %v", c)
		}
		if r := c.post(t, "reports.generate", `{"ms":8000}`, "Idempotency-Key", key); r.status != 409 {
			t.Fatalf("retry before the purge: %d %s, want 409", r.status, r.body)
		}
		status, data := admin.call(t, "DELETE", "/admin/v1/records", url.Values{"id": {claim["id"].(string)}})
		if status != 200 || data["purged"] != true || data["record"].(map[string]any)["state"] != "in_flight" {
			t.Fatalf("DELETE: %d %v, want the claim purged", status, data)
		}
		retry := c.post(t, "reports.generate", `{"ms":0}`, "Idempotency-Key", key)
		if retry.status != 200 {
			t.Fatalf("retry after the purge: %d %s, want 200", retry.status, retry.body)
		}
		select {
		case r := <-stale:
			if r.status == 200 {
				t.Errorf("the purged holder answered 200 %s", r.body)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the purged holder never answered")
		}
		replay := c.post(t, "reports.generate", `{"ms":0}`, "Idempotency-Key", key)
		if replay.body != retry.body || replay.header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("replay: %d %s, want the retry's %s", replay.status, replay.body, retry.body)
		}
		if c := find(url.Values{}); c != nil {
			t.Errorf("claims at the end list %v", c)
		}
	})
}

// TestRunServesTheAdminAPI: run with -admin-token serves the API on
// -admin-addr, and logs every call.
func TestRunServesTheAdminAPI(t *testing.T) {
	logged := make(chan map[string]any, 16)
	addrs, stop := startRun(t, map[string]string{"IDEMD_ADMIN_TOKEN": adminToken}, []string{"-admin-addr", "127.0.0.1:0"},
		[]string{"listening", "admin API listening"}, func(l map[string]any) {
			if l["msg"] == "admin call" {
				logged <- l
			}
		})
	c := client{base: "http://" + addrs["listening"], http: &http.Client{}}
	c.post(t, "widgets.create", `{"name":"x"}`, "Idempotency-Key", "run-admin-1").data(t, 201, &struct{}{})
	admin := adminClient{base: "http://" + addrs["admin API listening"], token: adminToken, http: &http.Client{}}
	got := admin.record(t, url.Values{"key": {"run-admin-1"}, "identity": {"anonymous"}})
	if got["state"] != "completed" {
		t.Errorf("record = %v, want completed", got)
	}
	select {
	case l := <-logged:
		if l["method"] != "GET" || l["path"] != "/admin/v1/records" || l["status"] != float64(200) || l["remote"] == "" {
			t.Errorf("admin call logged as %v", l)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the admin call was not logged")
	}
	// The command listener does not serve the admin API.
	resp, err := http.Get(c.base + "/admin/v1/claims")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("admin path on the command listener: %d, want 404", resp.StatusCode)
	}
	if err := stop(); err != nil {
		t.Errorf("run: %v", err)
	}
}

// A store that cannot be inspected (a plain Store of the application's
// own) is answered 501 on every call, after the token is checked.
func TestAdminStoreNotInspectable(t *testing.T) {
	st := memoryStore()
	st.store = plainStore{idempotency.NewInMemoryStore()}
	_, admin := newAdminServer(t, st, time.Minute)
	for _, path := range []string{"/admin/v1/records", "/admin/v1/claims"} {
		if status, e := admin.call(t, "GET", path, url.Values{"key": {"k"}, "identity": {"a"}}); status != 501 || e["code"] != "not_inspectable" {
			t.Errorf("GET %s: %d %v, want 501 not_inspectable", path, status, e)
		}
	}
	admin.token = "wrong-token-0123456789"
	if status, _ := admin.call(t, "GET", "/admin/v1/claims", url.Values{}); status != 401 {
		t.Errorf("wrong token: %d, want 401 first", status)
	}
}

// credential= derives the identity as the serving mode does for a request.
func TestAdminCredentialIdentity(t *testing.T) {
	req := func(name, value string) *http.Request {
		return &http.Request{Header: http.Header{name: {value}}}
	}
	cfg := testConfig()
	if got, want := identityFunc(cfg)("Bearer tok"), dispatcher.BearerIdentity(req("Authorization", "Bearer tok")); got != want {
		t.Errorf("dashboard: %q, want the dispatcher's %q", got, want)
	}
	if got := identityFunc(cfg)(""); got != dispatcher.AnonymousIdentity {
		t.Errorf("dashboard, no credential: %q, want %q", got, dispatcher.AnonymousIdentity)
	}
	cfg.sidecar.upstream, cfg.sidecar.identity = "http://127.0.0.1:9", "authorization"
	if got, want := identityFunc(cfg)("Bearer tok"), idemhttp.DefaultIdentity(req("Authorization", "Bearer tok")); got != want || got == "" {
		t.Errorf("sidecar: %q, want idemhttp's %q", got, want)
	}
	cfg.sidecar.identity = "header:X-Api-Key"
	if got, want := identityFunc(cfg)("key-1"), headerIdentity("X-Api-Key")(req("X-Api-Key", "key-1")); got != want || got == "" {
		t.Errorf("sidecar header:X-Api-Key: %q, want %q", got, want)
	}
	if identityFunc(cfg)("key-1") == identityFunc(cfg)("key-2") {
		t.Error("two credentials, one identity")
	}
}

// On PostgreSQL, a record whose lock a session holds for reasons of its own
// (not a claim) is not purged: 409 lock_not_a_claim, the session left alone.
func TestAdminPurgeRefusesForeignLock(t *testing.T) {
	b := backends[len(backends)-1]
	if b.env != postgresEnv {
		t.Fatal("the last backend is not PostgreSQL")
	}
	u := backendURL(t, b)
	_, admin := newAdminServer(t, openBackend(t, b, u, testSecret(t)), time.Minute)
	id := admin.record(t, url.Values{"key": {"k"}, "identity": {"anonymous"}})["id"].(string)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	// The record's lock is its id's first 8 bytes, as a bigint.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(('x' || $1)::bit(64)::bigint)", id[:16]); err != nil {
		t.Fatal(err)
	}
	status, e := admin.call(t, "DELETE", "/admin/v1/records", url.Values{"id": {id}})
	if status != 409 || e["code"] != "lock_not_a_claim" {
		t.Errorf("DELETE: %d %v, want 409 lock_not_a_claim", status, e)
	}
	if _, err := tx.Exec(ctx, "SELECT 1"); err != nil {
		t.Errorf("the lock holder's session: %v, want it alive", err)
	}
}
