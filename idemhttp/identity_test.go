package idemhttp_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemhttp"
)

// sessionApp is a cookie-session application: the session cookie says who
// the caller is, and each order is created for that caller.
func sessionApp(t *testing.T, opts ...idemhttp.Option) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var orders atomic.Int64
	create := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie("sid")
		if err != nil {
			http.Error(w, "no session", http.StatusUnauthorized)
			return
		}
		orders.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"order_for":"`+c.Value+`"}`)
	})
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true))
	srv := httptest.NewServer(idemhttp.New(engine, opts...)(create))
	t.Cleanup(srv.Close)
	return srv, &orders
}

func postAs(t *testing.T, srv *httptest.Server, session, key string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/orders", strings.NewReader(`{"item":"book"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	if session != "" {
		req.AddCookie(&http.Cookie{Name: "sid", Value: session})
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header
}

// TestCookieSessionsStayApart: two users of a cookie-session application
// who send the same key never get each other's response.
func TestCookieSessionsStayApart(t *testing.T) {
	t.Run("default refuses callers it cannot tell apart", func(t *testing.T) {
		srv, orders := sessionApp(t)
		status, body, h := postAs(t, srv, "alice-session", "order-1")
		if status != http.StatusBadRequest || !strings.Contains(body, "idempotency-identity-missing") || h.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("keyed request with only a session cookie = %d %s, want 400 idempotency-identity-missing", status, body)
		}
		if orders.Load() != 0 {
			t.Fatalf("the handler ran %d times, want 0", orders.Load())
		}
		// Without a key the middleware is not involved.
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/orders", strings.NewReader(`{}`))
		req.AddCookie(&http.Cookie{Name: "sid", Value: "alice-session"})
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("unkeyed request = %d, want 201", resp.StatusCode)
		}
	})

	t.Run("CookieIdentity", func(t *testing.T) {
		srv, orders := sessionApp(t, idemhttp.WithIdentity(idemhttp.CookieIdentity("sid")))
		_, alice, _ := postAs(t, srv, "alice-session", "order-1")
		status, bob, h := postAs(t, srv, "bob-session", "order-1")
		if status != http.StatusCreated || bob != `{"order_for":"bob-session"}` || h.Get(idemhttp.HeaderReplayed) != "" {
			t.Fatalf("bob, same key as alice = %d %s (replayed %q), want his own order", status, bob, h.Get(idemhttp.HeaderReplayed))
		}
		_, again, h := postAs(t, srv, "alice-session", "order-1")
		if again != alice || h.Get(idemhttp.HeaderReplayed) != "true" {
			t.Fatalf("alice's retry = %s (replayed %q), want her replay %s", again, h.Get(idemhttp.HeaderReplayed), alice)
		}
		if orders.Load() != 2 {
			t.Fatalf("orders created: %d, want 2 (one each)", orders.Load())
		}
		// No cookie: no identity, refused.
		if status, _, _ := postAs(t, srv, "", "order-1"); status != http.StatusBadRequest {
			t.Fatalf("keyed request without the cookie = %d, want 400", status)
		}
	})

	t.Run("WithAnonymous shares one key space, as documented", func(t *testing.T) {
		srv, orders := sessionApp(t, idemhttp.WithAnonymous(true))
		postAs(t, srv, "alice-session", "order-1")
		_, bob, h := postAs(t, srv, "bob-session", "order-1")
		if bob != `{"order_for":"alice-session"}` || h.Get(idemhttp.HeaderReplayed) != "true" || orders.Load() != 1 {
			t.Fatalf("bob = %s (replayed %q, %d orders), want alice's replay: the documented hazard", bob, h.Get(idemhttp.HeaderReplayed), orders.Load())
		}
	})
}

func TestCookieIdentity(t *testing.T) {
	id := idemhttp.CookieIdentity("sid")
	req := func(cookies ...*http.Cookie) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		for _, c := range cookies {
			r.AddCookie(c)
		}
		return r
	}
	a, b := id(req(&http.Cookie{Name: "sid", Value: "a"})), id(req(&http.Cookie{Name: "sid", Value: "b"}))
	if len(a) != 64 || len(b) != 64 || a == b {
		t.Errorf("identities %q, %q: want two distinct digests", a, b)
	}
	if got := id(req(&http.Cookie{Name: "other", Value: "a"})); got != "" {
		t.Errorf("without the cookie = %q, want none", got)
	}
	if got := id(req(&http.Cookie{Name: "other", Value: "x"}, &http.Cookie{Name: "sid", Value: "a"})); got != a {
		t.Errorf("with other cookies too = %q, want %q", got, a)
	}
	if got := idemhttp.CookieIdentity("sid2")(req(&http.Cookie{Name: "sid2", Value: "a"})); got == a {
		t.Error("two cookie names with one value share an identity")
	}
}

func TestIdentityMissingError(t *testing.T) {
	var got *idemhttp.Error
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore())
	mw := idemhttp.New(engine, idemhttp.WithErrorHandler(func(w http.ResponseWriter, r *http.Request, e *idemhttp.Error) {
		got = e
		idemhttp.WriteError(w, r, e)
	}))(http.NotFoundHandler())
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader("{}"))
	r.Header.Set("Idempotency-Key", "k")
	mw.ServeHTTP(httptest.NewRecorder(), r)
	if got == nil || got.Status != http.StatusBadRequest || !errors.Is(got.Err, idemhttp.ErrIdentityMissing) {
		t.Fatalf("error = %+v, want 400 wrapping ErrIdentityMissing", got)
	}
}
