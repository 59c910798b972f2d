package idemgin_test

// idemhttp's middleware needs no adapter for routers built on net/http
// middleware; these tests run it under each (the root module cannot import
// them).

import (
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/go-chi/chi/v5"
	"github.com/gorilla/mux"
	"github.com/idemkit/idempotency/idemhttp"
	"github.com/labstack/echo/v4"
)

// order answers 201 with the order id from the route and its run count.
func order(runs *atomic.Int64, id func(*http.Request) string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		n := runs.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"order":%q,"run":%d}`, id(r), n)
	}
}

// wantReplay sends a keyed POST twice and checks that the handler ran once
// and the retry got the first answer back.
func wantReplay(t *testing.T, h http.Handler, runs *atomic.Int64, path, body string) {
	t.Helper()
	srv := serve(t, h)
	first := post(srv.Client(), srv.URL+path, `{}`, keyed("k")...)
	wantStatus(t, first, http.StatusCreated)
	wantReplayed(t, first, false)
	retry := post(srv.Client(), srv.URL+path, `{}`, keyed("k")...)
	wantStatus(t, retry, http.StatusCreated)
	wantReplayed(t, retry, true)
	if first.body != body || retry.body != body {
		t.Errorf("bodies = %q then %q, want %q twice", first.body, retry.body, body)
	}
	if runs.Load() != 1 {
		t.Errorf("handler ran %d times, want 1", runs.Load())
	}
}

func TestChi(t *testing.T) {
	var runs atomic.Int64
	r := chi.NewRouter()
	r.Use(idemhttp.New(newEngine()))
	r.Post("/orders/{id}/pay", order(&runs, func(r *http.Request) string { return chi.URLParam(r, "id") }))
	wantReplay(t, r, &runs, "/orders/o-7/pay", `{"order":"o-7","run":1}`)
}

func TestGorillaMux(t *testing.T) {
	var runs atomic.Int64
	r := mux.NewRouter()
	r.Use(idemhttp.New(newEngine()))
	r.HandleFunc("/orders/{id}/pay", order(&runs, func(r *http.Request) string { return mux.Vars(r)["id"] })).Methods(http.MethodPost)
	wantReplay(t, r, &runs, "/orders/o-7/pay", `{"order":"o-7","run":1}`)
}

// newEcho is an echo server with the idemhttp middleware, and after it
// one that answers a handler's returned error in place: echo renders a
// returned error only once the middleware chain has returned, too late to
// be recorded.
func newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.Use(echo.WrapMiddleware(idemhttp.New(newEngine())))
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if err := next(c); err != nil {
				c.Error(err)
			}
			return nil
		}
	})
	return e
}

func TestEcho(t *testing.T) {
	var runs atomic.Int64
	e := newEcho()
	e.POST("/orders/:id/pay", func(c echo.Context) error {
		return c.JSON(http.StatusCreated, map[string]any{"order": c.Param("id"), "run": runs.Add(1)})
	})
	wantReplay(t, e, &runs, "/orders/o-7/pay", `{"order":"o-7","run":1}`+"\n")
}

func TestEchoInFlight(t *testing.T) {
	var runs atomic.Int64
	started, release := make(chan struct{}), make(chan struct{})
	e := newEcho()
	e.POST("/pay", func(c echo.Context) error {
		close(started)
		<-release
		return c.JSON(http.StatusCreated, map[string]any{"run": runs.Add(1)})
	})
	srv := serve(t, e)

	first := inFlightDuplicate(t, srv.Client(), srv.URL+"/pay", `{}`, started, release)
	wantStatus(t, first, http.StatusCreated)
	retry := post(srv.Client(), srv.URL+"/pay", `{}`, keyed("k")...)
	wantReplayed(t, retry, true)
	if retry.body != first.body || runs.Load() != 1 {
		t.Errorf("retry body %q after %q, %d runs; want the first's body and 1 run", retry.body, first.body, runs.Load())
	}
}

// A handler's returned error is answered inside the middleware (see
// newEcho), so it is recorded and replayed like any 4xx.
func TestEchoReturnedError(t *testing.T) {
	var runs atomic.Int64
	e := newEcho()
	e.POST("/pay", func(c echo.Context) error {
		runs.Add(1)
		return echo.NewHTTPError(http.StatusPaymentRequired, "card declined")
	})
	srv := serve(t, e)

	first := post(srv.Client(), srv.URL+"/pay", `{}`, keyed("k")...)
	retry := post(srv.Client(), srv.URL+"/pay", `{}`, keyed("k")...)
	want := `{"message":"card declined"}` + "\n"
	for i, got := range []response{first, retry} {
		if got.status != http.StatusPaymentRequired || got.body != want {
			t.Errorf("answer %d = %d %q, want 402 %q", i+1, got.status, got.body, want)
		}
	}
	wantReplayed(t, retry, true)
	if runs.Load() != 1 {
		t.Errorf("handler ran %d times, want 1", runs.Load())
	}
}
