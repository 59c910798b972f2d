package reliability

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/dispatcher"
	"github.com/idemkit/idempotency/driver"
	"github.com/idemkit/idempotency/idemhttp"
	"github.com/idemkit/idempotency/pgstore"
)

// isolationCase is one probe of TestIdentityIsolation: a record stored
// for (key, identity) must never be seen from (otherKey, otherIdentity).
type isolationCase struct {
	key, identity           string
	otherKey, otherIdentity string
}

const isolationAlphabet = "ab:|/ \"\\é#"

func randomString(r *rand.Rand, maxLen int) string {
	alphabet := []rune(isolationAlphabet)
	n := r.IntN(maxLen + 1)
	var b strings.Builder
	for range n {
		b.WriteRune(alphabet[r.IntN(len(alphabet))])
	}
	return b.String()
}

// isolationCases returns n probes: mostly the same key from another
// identity, and (key, identity) pairs whose bytes run together the same way
// when joined with a separator ("a:b","c" against "a","b:c"), or that
// differ only in where the key ends and the identity begins. Every probe
// has a key of its own, so probes never touch each other's records.
func isolationCases(r *rand.Rand, n int) []isolationCase {
	cases := make([]isolationCase, 0, n)
	for i := range n {
		base := fmt.Sprintf("iso%d-", i)
		id := randomString(r, 12)
		var c isolationCase
		switch i % 4 {
		case 0, 1: // same key, another caller
			other := randomString(r, 12)
			for other == id {
				other += "x"
			}
			c = isolationCase{base + randomString(r, 12), id, "", other}
			c.otherKey = c.key
		case 2: // the separator moved from the key into the identity
			s, tail := randomString(r, 6), randomString(r, 6)
			c = isolationCase{base + s + ":" + tail, id, base + s, tail + ":" + id}
		default: // the boundary moved: key "…ab" + identity "c" against key "…a" + identity "bc"
			s := randomString(r, 8) + "z"
			c = isolationCase{base + s, id, base + s[:len(s)-1], s[len(s)-1:] + id}
		}
		cases = append(cases, c)
	}
	return cases
}

// TestIdentityIsolation stores 10,000 records and probes each from another
// caller (same key, another identity) or from a (key, identity) pair whose
// bytes could be confused with it: no probe may see another's record, and
// a Begin from the other caller must claim a record of its own. Each store
// runs with a secret (records named by HMAC).
func TestIdentityIsolation(t *testing.T) {
	for _, k := range []backendKind{memoryBackend, redisBackend, postgresBackend} {
		t.Run(backendNames[k], func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, k, withSecret([]byte("isolation-secret")), withMemory(idempotency.WithMaxEntries(1<<20)))
			seed := rand.Uint64()
			cases := isolationCases(rand.New(rand.NewPCG(seed, 0)), scaled(10000))
			var leaks, misses, wrongClaims, errs sync.Map
			var wg sync.WaitGroup
			const workers = 8
			for w := range workers {
				wg.Go(func() {
					ctx := context.Background()
					for i := w; i < len(cases); i += workers {
						c := cases[i]
						body := fmt.Appendf(nil, `{"owner":%q}`, c.identity)
						if err := f.store.Store(ctx, c.key, c.identity, idempotency.Cached{Status: 201, WireBody: body}); err != nil {
							errs.Store(i, err)
							continue
						}
						if got, ok := f.store.Lookup(ctx, c.otherKey, c.otherIdentity); ok {
							leaks.Store(i, string(got.WireBody))
						}
						if got, ok := f.store.Lookup(ctx, c.key, c.identity); !ok || !bytes.Equal(got.WireBody, body) {
							misses.Store(i, ok)
						}
						if i%10 == 0 {
							cl, err := f.store.Begin(ctx, c.otherKey, c.otherIdentity,
								idempotency.ClaimRequest{Owner: driver.NewOwner(), Lease: time.Minute})
							if err != nil || cl.Status != idempotency.ClaimAcquired {
								wrongClaims.Store(i, fmt.Sprint(cl.Status, err))
							}
						}
					}
				})
			}
			wg.Wait()
			report := func(what string, m *sync.Map) {
				n := 0
				m.Range(func(i, v any) bool {
					if n++; n <= 5 {
						c := cases[i.(int)]
						t.Errorf("%s: stored (%q, %q), probed (%q, %q): %v", what, c.key, c.identity, c.otherKey, c.otherIdentity, v)
					}
					return true
				})
				if n > 5 {
					t.Errorf("%s: %d more", what, n-5)
				}
			}
			report("leak", &leaks)
			report("own record not found", &misses)
			report("other caller's Begin did not acquire", &wrongClaims)
			report("error", &errs)
			nLeaks := 0
			leaks.Range(func(any, any) bool { nLeaks++; return true })
			t.Logf("%s: %d pairs probed, %d leaks (seed %d)", f.name, len(cases), nLeaks, seed)
		})
	}
}

// TestIdentityIsolationHTTP sends the same key with the same payload from
// two callers (two bearer tokens, or a token and no Authorization) through
// the dispatcher: each must get its own execution, never the other's.
func TestIdentityIsolationHTTP(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		t.Parallel()
		srv, _ := newDashboard(t, f.store)
		client := srv.Client()
		const n = 300
		for i := range n {
			key := fmt.Sprintf("http-iso-%s-%d", driver.NewOwner()[:6], i)
			tokA, tokB := "tokA-"+driver.NewOwner(), "tokB-"+driver.NewOwner()
			if i%3 == 0 {
				tokB = "" // anonymous
			}
			a1 := postCommand(t, client, srv.URL, "widgets.create", key, tokA, `{"name":"w"}`)
			b1 := postCommand(t, client, srv.URL, "widgets.create", key, tokB, `{"name":"w"}`)
			a2 := postCommand(t, client, srv.URL, "widgets.create", key, tokA, `{"name":"w"}`)
			if a1.status != 201 || b1.status != 201 {
				t.Fatalf("key %s: statuses %d, %d; want 201 for both callers", key, a1.status, b1.status)
			}
			if b1.replayed || a1.body == b1.body {
				t.Fatalf("key %s: caller B got caller A's response %s (replayed %v)", key, b1.body, b1.replayed)
			}
			if !a2.replayed || a2.body != a1.body {
				t.Fatalf("key %s: caller A's retry got %s (replayed %v), want its own %s", key, a2.body, a2.replayed, a1.body)
			}
		}
	})
}

// reply is what postCommand got.
type reply struct {
	status   int
	body     string
	replayed bool
	header   http.Header
}

func postCommand(t *testing.T, c *http.Client, base, name, key, token, payload string) reply {
	t.Helper()
	r, err := sendCommand(c, base, name, key, token, payload)
	if err != nil {
		t.Fatalf("POST %s: %v", name, err)
	}
	return r
}

// tryCommand posts widgets.create; it is safe to call from any goroutine.
func tryCommand(c *http.Client, base, key, token, payload string) (reply, error) {
	return sendCommand(c, base, "widgets.create", key, token, payload)
}

func sendCommand(c *http.Client, base, name, key, token, payload string) (reply, error) {
	req, err := http.NewRequest(http.MethodPost, base+"/v1/commands/"+name, strings.NewReader(payload))
	if err != nil {
		return reply{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{resp.StatusCode, string(b), resp.Header.Get("Idempotent-Replayed") == "true", resp.Header}, nil
}

// newDashboard serves a dispatcher over store with the demo's
// widgets.create (each execution a new id, and a session cookie that must
// never be recorded) and returns the server and the per-pair effect ledger.
func newDashboard(tb testing.TB, store idempotency.Store, opts ...dispatcher.Option) (*httptest.Server, *Ledger) {
	tb.Helper()
	var ledger Ledger
	var mu sync.Mutex
	next := 0
	d := dispatcher.New(idempotency.NewEngine(store), opts...)
	d.Register("widgets.create", func(ctx context.Context, req dispatcher.Request) (dispatcher.Response, error) {
		var p struct {
			Name string `json:"name"`
		}
		if err := req.Decode(&p); err != nil {
			return dispatcher.Response{}, err
		}
		ledger.Record(Pair(req.Key, req.Identity))
		mu.Lock()
		next++
		id := fmt.Sprintf("w%d", next)
		mu.Unlock()
		h := http.Header{}
		h.Set("Set-Cookie", "session=COOKIEMARK-"+id)
		return dispatcher.Response{Status: 201, Data: map[string]string{"id": id, "name": p.Name}, Header: h}, nil
	})
	mux := http.NewServeMux()
	mux.Handle("/v1/commands/{name}", d)
	srv := httptest.NewServer(mux)
	tb.Cleanup(srv.Close)
	return srv, &ledger
}

// rawContents returns everything the fixture's backend holds for its
// namespace: record names and values, as stored.
func rawContents(tb testing.TB, f *fixture) (names []string, values [][]byte) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch f.name {
	case "redis":
		keys, err := redisKeys(ctx, f.rdb, f.prefix)
		if err != nil {
			tb.Fatal(err)
		}
		for _, k := range keys {
			names = append(names, k)
			switch typ := f.rdb.Type(ctx, k).Val(); typ {
			case "string":
				v, err := f.rdb.Get(ctx, k).Bytes()
				if err != nil {
					tb.Fatal(err)
				}
				values = append(values, v)
			case "hash":
				m, err := f.rdb.HGetAll(ctx, k).Result()
				if err != nil {
					tb.Fatal(err)
				}
				for field, v := range m {
					values = append(values, []byte(field), []byte(v))
				}
			default:
				v, err := f.rdb.Dump(ctx, k).Bytes()
				if err != nil {
					tb.Fatal(err)
				}
				values = append(values, v)
			}
		}
	case "postgres":
		rows, err := f.pool.Query(ctx, fmt.Sprintf(`SELECT encode(id, 'hex'), t::text FROM %s.%s t`, f.schema, pgstore.DefaultTable))
		if err != nil {
			tb.Fatal(err)
		}
		defer rows.Close()
		for rows.Next() {
			var id, row string
			if err := rows.Scan(&id, &row); err != nil {
				tb.Fatal(err)
			}
			names = append(names, id)
			values = append(values, []byte(row))
		}
		if err := rows.Err(); err != nil {
			tb.Fatal(err)
		}
	default:
		tb.Fatalf("no raw access to %s", f.name)
	}
	return names, values
}

// leaked reports which of secrets appear in the raw contents, as they are
// or hex-encoded (PostgreSQL shows bytea in hex).
func leaked(names []string, values [][]byte, secrets ...string) []string {
	var found []string
	for _, s := range secrets {
		needles := [][]byte{[]byte(s), []byte(hex.EncodeToString([]byte(s)))}
		hit := false
		for _, n := range needles {
			for _, name := range names {
				hit = hit || bytes.Contains([]byte(name), n)
			}
			for _, v := range values {
				hit = hit || bytes.Contains(v, n)
			}
		}
		if hit {
			found = append(found, s)
		}
	}
	return found
}

// TestStoredOnlyAsKeyedHash sends commands through the dispatcher to Redis
// and PostgreSQL stores configured with a secret, then reads the backend
// directly: the raw key, the caller's identity, its bearer token and the
// session cookie the handler set must appear nowhere, and each record must
// be named by HMAC-SHA-256(secret, key, identity), not by a plain hash.
func TestStoredOnlyAsKeyedHash(t *testing.T) {
	secret := []byte("the-configured-secret")
	for _, k := range []backendKind{redisBackend, postgresBackend} {
		t.Run(backendNames[k], func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, k, withSecret(secret))
			srv, _ := newDashboard(t, f.store)
			var secrets []string
			var wantNames, plainNames []string
			for i := range 20 {
				key := fmt.Sprintf("KEYMARK-%d-%s", i, driver.NewOwner())
				token := "TOKMARK-" + driver.NewOwner()
				r := postCommand(t, srv.Client(), srv.URL, "widgets.create", key, token, `{"name":"NAMEMARK"}`)
				if r.status != 201 {
					t.Fatalf("POST: %d %s", r.status, r.body)
				}
				if r.header.Get("Set-Cookie") == "" {
					t.Fatalf("the handler's Set-Cookie was not sent with the first response")
				}
				req := httptest.NewRequest(http.MethodPost, "/", nil)
				req.Header.Set("Authorization", "Bearer "+token)
				identity := dispatcher.BearerIdentity(req)
				secrets = append(secrets, key, token, identity, r.header.Get("Set-Cookie"),
					strings.TrimPrefix(r.header.Get("Set-Cookie"), "session="))
				sum := driver.RecordKey(secret, key, identity)
				plain := driver.RecordKey(nil, key, identity)
				wantNames = append(wantNames, hex.EncodeToString(sum[:]))
				plainNames = append(plainNames, hex.EncodeToString(plain[:]))
				again := postCommand(t, srv.Client(), srv.URL, "widgets.create", key, token, `{"name":"NAMEMARK"}`)
				if !again.replayed || again.header.Get("Set-Cookie") != "" {
					t.Errorf("replay: replayed %v, Set-Cookie %q; want a replay without the cookie", again.replayed, again.header.Get("Set-Cookie"))
				}
			}
			names, values := rawContents(t, f)
			if len(names) != 20 {
				t.Errorf("%d records in the backend, want 20", len(names))
			}
			if found := leaked(names, values, secrets...); len(found) > 0 {
				t.Errorf("stored in the clear: %q", found)
			}
			all := strings.Join(names, "\n")
			for i, want := range wantNames {
				if !strings.Contains(all, want) {
					t.Errorf("no record named by HMAC(secret, key, identity) %s", want)
				}
				if strings.Contains(all, plainNames[i]) {
					t.Errorf("record named by a plain SHA-256 %s although a secret is configured", plainNames[i])
				}
			}
		})
	}
}

// TestSensitiveHeadersNeverStored runs idemhttp over each store with a
// handler that sets Set-Cookie, Authorization and other headers, and with
// WithHeaders asking for them: the record and its replay must carry the
// allowed headers and never Set-Cookie or Authorization, and (for Redis and
// PostgreSQL) the cookie and the caller's token appear nowhere in the
// backend.
func TestSensitiveHeadersNeverStored(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		t.Parallel()
		var ledger Ledger
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ledger.Record("payments")
			w.Header().Set("Set-Cookie", "sid=COOKIEMARK")
			w.Header().Set("Authorization", "Bearer RESPTOKMARK")
			w.Header().Set("Proxy-Authenticate", "Basic")
			w.Header().Set("X-Request-Trace", "trace-1")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{"ok":true}`)
		})
		mw := idemhttp.New(idempotency.NewEngine(f.store, idempotency.WithDetachedRun(true)), idemhttp.WithHeaders("Set-Cookie", "Authorization", "Proxy-Authenticate", "X-Request-Trace"), idemhttp.WithAnonymous(true))
		srv := httptest.NewServer(mw(h))
		defer srv.Close()
		key := "hdr-" + driver.NewOwner()
		send := func() *http.Response {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/payments", strings.NewReader(`{"amount":1}`))
			req.Header.Set("Idempotency-Key", `"`+key+`"`)
			req.Header.Set("Authorization", "Bearer REQTOKMARK")
			req.Header.Set("Content-Type", "application/json")
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			return resp
		}
		first := send()
		if first.StatusCode != 201 || first.Header.Get("Set-Cookie") == "" {
			t.Fatalf("first response: %d, Set-Cookie %q", first.StatusCode, first.Header.Get("Set-Cookie"))
		}
		replay := send()
		if replay.Header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("second response is not a replay: %d %v", replay.StatusCode, replay.Header)
		}
		for _, name := range []string{"Set-Cookie", "Authorization", "Proxy-Authenticate"} {
			if v := replay.Header.Get(name); v != "" {
				t.Errorf("replay carries %s: %q", name, v)
			}
		}
		if got := replay.Header.Get("X-Request-Trace"); got != "trace-1" {
			t.Errorf("replay X-Request-Trace = %q, want the recorded trace-1", got)
		}
		if got := ledger.Count("payments"); got != 1 {
			t.Errorf("handler ran %d times", got)
		}
		if f.name == "memory" {
			return
		}
		names, values := rawContents(t, f)
		if found := leaked(names, values, "COOKIEMARK", "RESPTOKMARK", "REQTOKMARK", key); len(found) > 0 {
			t.Errorf("stored: %q", found)
		}
	})
}

// TestMismatchLeavesRecord reuses a key with another payload through the
// dispatcher: 422, and the stored record is byte for byte what it was (read
// from the backend directly for Redis and PostgreSQL), so the original
// caller's retry still replays its response.
func TestMismatchLeavesRecord(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		t.Parallel()
		srv, ledger := newDashboard(t, f.store)
		c := srv.Client()
		key := "mismatch-" + driver.NewOwner()
		first := postCommand(t, c, srv.URL, "widgets.create", key, "tok", `{"name":"A"}`)
		if first.status != 201 {
			t.Fatalf("first: %d %s", first.status, first.body)
		}
		snapshot := func() string {
			if f.name == "memory" {
				req := httptest.NewRequest(http.MethodPost, "/", nil)
				req.Header.Set("Authorization", "Bearer tok")
				rec, ok := f.store.Lookup(context.Background(), key, dispatcher.BearerIdentity(req))
				if !ok {
					t.Fatal("no record")
				}
				b, _ := json.Marshal(rec)
				return string(b)
			}
			names, values := rawContents(t, f)
			var b strings.Builder
			for i, n := range names {
				fmt.Fprintf(&b, "%s=%x;", n, values[i])
			}
			return b.String()
		}
		before := snapshot()
		for _, payload := range []string{`{"name":"B"}`, `{"name":"A","extra":1}`, `[]`} {
			r := postCommand(t, c, srv.URL, "widgets.create", key, "tok", payload)
			if r.status != http.StatusUnprocessableEntity {
				t.Errorf("payload %s with a used key: %d %s, want 422", payload, r.status, r.body)
			}
		}
		if after := snapshot(); after != before {
			t.Errorf("the mismatched requests altered the record:\nbefore %s\n after %s", before, after)
		}
		retry := postCommand(t, c, srv.URL, "widgets.create", key, "tok", `{"name":"A"}`)
		if !retry.replayed || retry.body != first.body {
			t.Errorf("original retry: replayed %v body %s, want %s", retry.replayed, retry.body, first.body)
		}
		if err := ledger.Check(nil); err != nil {
			t.Error(err)
		}
	})
}
