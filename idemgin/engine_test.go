package idemgin_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemgin"
	"github.com/idemkit/idempotency/idemhttp"
)

// Racing duplicates run the chain once; with the engine's WithWait every
// one gets the first's answer.
func TestStorm(t *testing.T) {
	var runs atomic.Int64
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true), idempotency.WithWait(true))
	r := gin.New()
	r.POST("/charges", idemgin.New(engine), charge(&runs))
	srv := serve(t, r)

	const n = 32
	start := make(chan struct{})
	answers := make(chan response, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			answers <- post(srv.Client(), srv.URL+"/charges", `{"amount":5}`, keyed("storm")...)
		})
	}
	close(start)
	wg.Wait()
	close(answers)
	replays := 0
	for got := range answers {
		if got.status != http.StatusCreated || got.body != `{"run":1}` {
			t.Errorf("answer = %d %q, want 201 {\"run\":1}", got.status, got.body)
		}
		if got.header.Get("Idempotent-Replayed") == "true" {
			replays++
		}
	}
	if runs.Load() != 1 || replays != n-1 {
		t.Errorf("%d runs and %d replays, want 1 and %d", runs.Load(), replays, n-1)
	}
}

// A response over the engine's cap goes to the client and leaves a
// tombstone: the retry gets 410 and the chain does not run again.
func TestResponseOverCap(t *testing.T) {
	var runs atomic.Int64
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true), idempotency.WithMaxResponseBytes(64))
	big := strings.Repeat("b", 1000)
	r := gin.New()
	r.POST("/export", idemgin.New(engine), func(c *gin.Context) {
		runs.Add(1)
		c.String(http.StatusOK, big)
	})
	srv := serve(t, r)

	first := post(srv.Client(), srv.URL+"/export", `{}`, keyed("k")...)
	if first.status != http.StatusOK || first.body != big {
		t.Errorf("first = %d, %d bytes; want 200 and %d bytes", first.status, len(first.body), len(big))
	}
	wantProblem(t, post(srv.Client(), srv.URL+"/export", `{}`, keyed("k")...), http.StatusGone, "response-not-recorded")
	if runs.Load() != 1 {
		t.Errorf("handler ran %d times, want 1", runs.Load())
	}
}

// rerunStore is a TxStore that asks for one more run after a first run's
// failure, as a transactional store does after a serialization failure.
type rerunStore struct{ *idempotency.InMemoryStore }

func (rerunStore) Again(_ context.Context, _ idempotency.Token, _ error, runs int) bool {
	return runs == 1
}

// Over an engine that reruns, New panics (see TestNewPanics); the handler
// wrapped by idemhttp itself, under gin.WrapH, can run again.
func TestRerunningEngineWrapH(t *testing.T) {
	var runs atomic.Int64
	engine := idempotency.NewEngine(rerunStore{idempotency.NewInMemoryStore()}, idempotency.WithDetachedRun(true))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if runs.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable) // not recorded: the store asks for another run
			return
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte("second run"))
	})
	r := gin.New()
	r.POST("/charges", gin.WrapH(idemhttp.New(engine)(h)))
	srv := serve(t, r)

	first := post(srv.Client(), srv.URL+"/charges", `{}`, keyed("k")...)
	if first.status != http.StatusCreated || first.body != "second run" || runs.Load() != 2 {
		t.Errorf("first = %d %q after %d runs, want 201 \"second run\" after 2", first.status, first.body, runs.Load())
	}
	wantReplayed(t, post(srv.Client(), srv.URL+"/charges", `{}`, keyed("k")...), true)
}
