package idemgin_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemgin"
	"github.com/idemkit/idempotency/idemhttp"
)

// serve runs r on a loopback server for the test.
func serve(t *testing.T, r http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return srv
}

// charge is a gin handler that counts its runs and answers 201 with
// {"run":n}, so a replay (same n) is told apart from a run.
func charge(runs *atomic.Int64) gin.HandlerFunc {
	return func(c *gin.Context) {
		n := runs.Add(1)
		c.Header("Location", fmt.Sprintf("/charges/%d", n))
		c.JSON(http.StatusCreated, gin.H{"run": n})
	}
}

func TestReplay(t *testing.T) {
	var runs, after atomic.Int64
	seen := make(chan string, 2) // what middleware before idemgin sees of each answer
	r := gin.New()
	r.Use(func(c *gin.Context) {
		c.Next()
		seen <- fmt.Sprintf("%d/%d/%t", c.Writer.Status(), c.Writer.Size(), c.IsAborted())
	})
	r.POST("/charges", idemgin.New(newEngine()), func(c *gin.Context) { after.Add(1); c.Next() }, charge(&runs))
	srv := serve(t, r)

	first := post(srv.Client(), srv.URL+"/charges", `{"amount":1000}`, keyed("order-42")...)
	wantStatus(t, first, http.StatusCreated)
	wantReplayed(t, first, false)
	retry := post(srv.Client(), srv.URL+"/charges", `{"amount":1000}`, keyed("order-42")...)
	wantStatus(t, retry, http.StatusCreated)
	wantReplayed(t, retry, true)

	if retry.body != first.body || first.body != `{"run":1}` {
		t.Errorf("bodies = %q then %q, want {\"run\":1} twice", first.body, retry.body)
	}
	for _, name := range []string{"Content-Type", "Location", "Content-Length"} {
		if got, want := retry.header.Get(name), first.header.Get(name); got != want || want == "" {
			t.Errorf("replayed %s = %q, want %q", name, got, want)
		}
	}
	if runs.Load() != 1 || after.Load() != 1 {
		t.Errorf("handler ran %d times, the middleware after idemgin %d; want 1 and 1", runs.Load(), after.Load())
	}
	// The outer middleware sees both answers on c.Writer; the replay aborted the chain.
	for _, want := range []string{"201/9/false", "201/9/true"} {
		if got := <-seen; got != want {
			t.Errorf("outer middleware saw status/size/aborted %s, want %s", got, want)
		}
	}
}

// Each way a gin handler answers is recorded as it went out, and replayed
// the same.
func TestRenderers(t *testing.T) {
	tests := []struct {
		name    string
		handler gin.HandlerFunc
		status  int
		body    string
	}{
		{"JSON", func(c *gin.Context) { c.JSON(http.StatusCreated, gin.H{"ok": true}) }, 201, `{"ok":true}`},
		{"String", func(c *gin.Context) { c.String(http.StatusAccepted, "queued %d", 7) }, 202, "queued 7"},
		{"Data", func(c *gin.Context) { c.Data(http.StatusOK, "application/octet-stream", []byte{0, 1, 2}) }, 200, "\x00\x01\x02"},
		{"Status only", func(c *gin.Context) { c.Status(http.StatusNoContent) }, 204, ""},
		{"AbortWithStatus", func(c *gin.Context) { c.AbortWithStatus(http.StatusAccepted) }, 202, ""},
		{"last status wins until written", func(c *gin.Context) {
			c.Status(http.StatusAccepted)
			c.JSON(http.StatusCreated, gin.H{"id": 1})
		}, 201, `{"id":1}`},
		{"nothing written", func(*gin.Context) {}, 200, ""},
		{"Writer.WriteString", func(c *gin.Context) {
			c.Writer.WriteHeader(http.StatusCreated)
			_, _ = c.Writer.WriteString("made")
			if c.Writer.Size() != 4 || !c.Writer.Written() || c.Writer.Status() != 201 {
				panic(fmt.Sprintf("writer: size %d, written %t, status %d", c.Writer.Size(), c.Writer.Written(), c.Writer.Status()))
			}
		}, 201, "made"},
		{"Stream", func(c *gin.Context) {
			n := 0
			c.Stream(func(w io.Writer) bool { n++; fmt.Fprintf(w, "chunk %d;", n); return n < 3 })
		}, 200, "chunk 1;chunk 2;chunk 3;"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var runs atomic.Int64
			r := gin.New()
			r.POST("/", idemgin.New(newEngine()), func(c *gin.Context) { runs.Add(1); tt.handler(c) })
			srv := serve(t, r)

			first := post(srv.Client(), srv.URL, `{}`, keyed("k")...)
			retry := post(srv.Client(), srv.URL, `{}`, keyed("k")...)
			for i, got := range []response{first, retry} {
				if got.status != tt.status || got.body != tt.body {
					t.Errorf("answer %d = %d %q, want %d %q", i+1, got.status, got.body, tt.status, tt.body)
				}
			}
			wantReplayed(t, retry, true)
			if got, want := retry.header.Get("Content-Type"), first.header.Get("Content-Type"); got != want {
				t.Errorf("replayed Content-Type = %q, want %q", got, want)
			}
			if runs.Load() != 1 {
				t.Errorf("handler ran %d times, want 1", runs.Load())
			}
		})
	}
}

func TestInFlight(t *testing.T) {
	var runs atomic.Int64
	started, release := make(chan struct{}), make(chan struct{})
	r := gin.New()
	r.POST("/charges", idemgin.New(newEngine()), func(c *gin.Context) {
		close(started)
		<-release
		c.Next()
	}, charge(&runs))
	srv := serve(t, r)

	first := inFlightDuplicate(t, srv.Client(), srv.URL+"/charges", `{"amount":1}`, started, release)
	wantStatus(t, first, http.StatusCreated)
	retry := post(srv.Client(), srv.URL+"/charges", `{"amount":1}`, keyed("k")...)
	wantStatus(t, retry, http.StatusCreated)
	wantReplayed(t, retry, true)
	if runs.Load() != 1 {
		t.Errorf("handler ran %d times, want 1", runs.Load())
	}
}

func TestReuse(t *testing.T) {
	var runs atomic.Int64
	r := gin.New()
	r.POST("/charges", idemgin.New(newEngine()), charge(&runs))
	srv := serve(t, r)

	wantStatus(t, post(srv.Client(), srv.URL+"/charges", `{"amount":1}`, keyed("k")...), http.StatusCreated)
	other := post(srv.Client(), srv.URL+"/charges", `{"amount":2}`, keyed("k")...)
	wantProblem(t, other, http.StatusUnprocessableEntity, "idempotency-key-reused")
	if runs.Load() != 1 {
		t.Errorf("handler ran %d times, want 1", runs.Load())
	}
}

// A 5xx answer is not recorded: the key is released and the retry runs.
func TestServerErrorReleased(t *testing.T) {
	var runs atomic.Int64
	r := gin.New()
	r.POST("/charges", idemgin.New(newEngine()), func(c *gin.Context) {
		if runs.Add(1) == 1 {
			c.JSON(http.StatusServiceUnavailable, gin.H{"error": "bank down"})
			return
		}
		c.JSON(http.StatusCreated, gin.H{"run": runs.Load()})
	})
	srv := serve(t, r)

	failed := post(srv.Client(), srv.URL+"/charges", `{}`, keyed("k")...)
	wantStatus(t, failed, http.StatusServiceUnavailable)
	retry := post(srv.Client(), srv.URL+"/charges", `{}`, keyed("k")...)
	wantStatus(t, retry, http.StatusCreated)
	wantReplayed(t, retry, false)
	again := post(srv.Client(), srv.URL+"/charges", `{}`, keyed("k")...)
	wantReplayed(t, again, true)
	if again.body != `{"run":2}` || runs.Load() != 2 {
		t.Errorf("after a 5xx and a success: body %q, %d runs; want {\"run\":2} and 2", again.body, runs.Load())
	}
}

// A handler that panics under gin.Recovery gets Recovery's 500 on the
// client's writer, and the key is released.
func TestPanicReleased(t *testing.T) {
	var runs atomic.Int64
	r := gin.New()
	r.Use(gin.CustomRecoveryWithWriter(io.Discard, func(c *gin.Context, _ any) { c.AbortWithStatus(http.StatusInternalServerError) }))
	r.POST("/charges", idemgin.New(newEngine()), func(c *gin.Context) {
		if runs.Add(1) == 1 {
			panic("boom")
		}
		c.String(http.StatusCreated, "ok")
	})
	srv := serve(t, r)

	wantStatus(t, post(srv.Client(), srv.URL+"/charges", `{}`, keyed("k")...), http.StatusInternalServerError)
	retry := post(srv.Client(), srv.URL+"/charges", `{}`, keyed("k")...)
	wantStatus(t, retry, http.StatusCreated)
	wantReplayed(t, retry, false)
}

// The middleware reads the body to fingerprint it; the handler binds it
// again.
func TestBodyRestored(t *testing.T) {
	type payment struct {
		Amount int    `json:"amount" binding:"required"`
		Note   string `json:"note"`
	}
	var got []payment
	r := gin.New()
	r.POST("/payments", idemgin.New(newEngine()), func(c *gin.Context) {
		var p payment
		if err := c.ShouldBindJSON(&p); err != nil {
			c.String(http.StatusBadRequest, "bind: %v", err)
			return
		}
		got = append(got, p)
		c.JSON(http.StatusCreated, p)
	})
	srv := serve(t, r)

	note := strings.Repeat("x", 300) // past the middleware's small-body buffer
	body := `{"amount":1000,"note":"` + note + `"}`
	first := post(srv.Client(), srv.URL+"/payments", body, keyed("k")...)
	wantStatus(t, first, http.StatusCreated)
	retry := post(srv.Client(), srv.URL+"/payments", body, keyed("k")...)
	wantReplayed(t, retry, true)
	if len(got) != 1 || got[0] != (payment{1000, note}) {
		t.Errorf("handler bound %+v, want one payment of 1000", got)
	}
	if retry.body != first.body {
		t.Errorf("replayed body %q, want %q", retry.body, first.body)
	}
}

func TestSetCookieNotReplayed(t *testing.T) {
	r := gin.New()
	r.POST("/login", idemgin.New(newEngine()), func(c *gin.Context) {
		c.SetCookie("session", "s3cret", 3600, "/", "", true, true)
		c.String(http.StatusOK, "welcome")
	})
	srv := serve(t, r)

	first := post(srv.Client(), srv.URL+"/login", `{}`, keyed("k")...)
	if !strings.HasPrefix(first.header.Get("Set-Cookie"), "session=s3cret") {
		t.Errorf("first Set-Cookie = %q, want the session cookie", first.header.Get("Set-Cookie"))
	}
	retry := post(srv.Client(), srv.URL+"/login", `{}`, keyed("k")...)
	wantReplayed(t, retry, true)
	if got := retry.header.Values("Set-Cookie"); len(got) != 0 {
		t.Errorf("replayed Set-Cookie = %q, want none", got)
	}
	if retry.body != "welcome" {
		t.Errorf("replayed body = %q, want welcome", retry.body)
	}
}

// The caller is told apart by its Authorization header: one key is
// independent per caller, and a keyed request without one is refused.
func TestIdentity(t *testing.T) {
	var runs atomic.Int64
	r := gin.New()
	r.POST("/charges", idemgin.New(newEngine()), charge(&runs))
	r.POST("/open", idemgin.New(newEngine(), idemhttp.WithAnonymous(true)), charge(&runs))
	srv := serve(t, r)

	alice := post(srv.Client(), srv.URL+"/charges", `{}`, "Idempotency-Key", "k", "Authorization", "Bearer alice")
	bob := post(srv.Client(), srv.URL+"/charges", `{}`, "Idempotency-Key", "k", "Authorization", "Bearer bob")
	aliceAgain := post(srv.Client(), srv.URL+"/charges", `{}`, "Idempotency-Key", "k", "Authorization", "Bearer alice")
	if alice.body != `{"run":1}` || bob.body != `{"run":2}` || aliceAgain.body != alice.body {
		t.Errorf("alice, bob, alice again = %q, %q, %q; want run 1, 2, 1", alice.body, bob.body, aliceAgain.body)
	}
	wantReplayed(t, bob, false)
	wantReplayed(t, aliceAgain, true)

	anonymous := post(srv.Client(), srv.URL+"/charges", `{}`, "Idempotency-Key", "k")
	wantProblem(t, anonymous, http.StatusBadRequest, "idempotency-identity-missing")
	if runs.Load() != 2 {
		t.Errorf("handler ran %d times, want 2", runs.Load())
	}
	wantStatus(t, post(srv.Client(), srv.URL+"/open", `{}`, "Idempotency-Key", "k"), http.StatusCreated)
}

// Requests without a key, and methods not covered, run the chain as usual
// on gin's own writer; WithRequired refuses a missing key.
func TestPassThrough(t *testing.T) {
	var runs atomic.Int64
	r := gin.New()
	r.POST("/optional", idemgin.New(newEngine()), charge(&runs))
	r.GET("/optional", idemgin.New(newEngine()), charge(&runs))
	r.POST("/required", idemgin.New(newEngine(), idemhttp.WithRequired(true)), charge(&runs))
	srv := serve(t, r)

	for range 2 {
		wantReplayed(t, post(srv.Client(), srv.URL+"/optional", `{}`), false)
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/optional", nil)
		req.Header.Set("Idempotency-Key", "k")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	if runs.Load() != 4 {
		t.Errorf("handler ran %d times, want 4", runs.Load())
	}
	wantProblem(t, post(srv.Client(), srv.URL+"/required", `{}`, "Authorization", "Bearer alice"), http.StatusBadRequest, "idempotency-key-missing")
	if runs.Load() != 4 {
		t.Errorf("handler ran after a missing required key")
	}
}

// An engine not made WithDetachedRun detaches the handlers through its run
// context: the request's context the handlers see is not the client's.
func TestNotDetachedEngine(t *testing.T) {
	var runs atomic.Int64
	r := gin.New()
	r.POST("/charges", idemgin.New(idempotency.NewEngine(idempotency.NewInMemoryStore())), func(c *gin.Context) {
		if _, ok := idempotency.TokenFromContext(c.Request.Context()); !ok {
			c.String(http.StatusInternalServerError, "no claim token in the handler's context")
			return
		}
		c.Next()
	}, charge(&runs))
	srv := serve(t, r)

	wantStatus(t, post(srv.Client(), srv.URL+"/charges", `{}`, keyed("k")...), http.StatusCreated)
	wantReplayed(t, post(srv.Client(), srv.URL+"/charges", `{}`, keyed("k")...), true)
	if runs.Load() != 1 {
		t.Errorf("handler ran %d times, want 1", runs.Load())
	}
}

// txStore is a TxStore: its engine may run a command twice.
type txStore struct{ *idempotency.InMemoryStore }

func (txStore) Again(context.Context, idempotency.Token, error, int) bool { return false }

func TestNewPanics(t *testing.T) {
	tests := []struct {
		name   string
		engine *idempotency.Engine
	}{
		{"nil engine", nil},
		{"engine that reruns", idempotency.NewEngine(txStore{idempotency.NewInMemoryStore()})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("New did not panic")
				}
			}()
			idemgin.New(tt.engine)
		})
	}
}

// Middleware that renders c.Errors after the handlers is recorded when it
// comes after idemgin in the chain.
func TestErrorRendererAfter(t *testing.T) {
	var runs atomic.Int64
	renderErrors := func(c *gin.Context) {
		c.Next()
		if err := c.Errors.Last(); err != nil && !c.Writer.Written() {
			c.JSON(http.StatusPaymentRequired, gin.H{"error": err.Error()})
		}
	}
	r := gin.New()
	r.POST("/pay", idemgin.New(newEngine()), renderErrors, func(c *gin.Context) {
		runs.Add(1)
		_ = c.Error(errDeclined)
	})
	srv := serve(t, r)

	first := post(srv.Client(), srv.URL+"/pay", `{}`, keyed("k")...)
	retry := post(srv.Client(), srv.URL+"/pay", `{}`, keyed("k")...)
	for i, got := range []response{first, retry} {
		if got.status != http.StatusPaymentRequired || got.body != `{"error":"card declined"}` {
			t.Errorf("answer %d = %d %q, want 402 with the error", i+1, got.status, got.body)
		}
	}
	wantReplayed(t, retry, true)
	if runs.Load() != 1 {
		t.Errorf("handler ran %d times, want 1", runs.Load())
	}
}

type declined struct{}

func (declined) Error() string { return "card declined" }

var errDeclined error = declined{}
