package idemhttp_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemhttp"
)

// TestWait: with WithWait, duplicates that arrive while the first request
// runs wait for it and get its response as a replay.
func TestWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		started, release := make(chan struct{}), make(chan struct{})
		runs := 0
		mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithWait(true), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			runs++
			close(started)
			<-release
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, "first")
		}))
		const dups = 5
		results := make([]*httptest.ResponseRecorder, dups+1)
		var wg sync.WaitGroup
		wg.Go(func() { results[0] = send(mw, "POST", "/", `{}`, "Idempotency-Key", "k") })
		<-started
		for i := 1; i <= dups; i++ {
			wg.Go(func() { results[i] = send(mw, "POST", "/", `{}`, "Idempotency-Key", "k") })
		}
		synctest.Wait() // every duplicate is waiting for the first
		for i, rr := range results[1:] {
			if rr != nil {
				t.Errorf("duplicate %d answered %d before the first finished", i+1, rr.Code)
			}
		}
		close(release)
		wg.Wait()

		if runs != 1 {
			t.Errorf("handler ran %d times, want 1", runs)
		}
		for i, rr := range results {
			if rr.Code != http.StatusCreated || rr.Body.String() != "first" {
				t.Errorf("request %d = %d %q, want the first's 201 \"first\"", i, rr.Code, rr.Body)
			}
			wantReplayed(t, rr, i > 0)
		}
	})
}

// TestWaitEndsWithTheClient: a waiting duplicate whose client leaves gets
// 409 and runs nothing.
func TestWaitEndsWithTheClient(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		started, release := make(chan struct{}), make(chan struct{})
		runs := 0
		mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithWait(true), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			runs++
			close(started)
			<-release
		}))
		var wg sync.WaitGroup
		wg.Go(func() { send(mw, "POST", "/", `{}`, "Idempotency-Key", "k") })
		<-started

		ctx, cancel := context.WithCancel(context.Background())
		req := httptest.NewRequest("POST", "/", strings.NewReader(`{}`)).WithContext(ctx)
		req.Header.Set("Idempotency-Key", "k")
		dup := httptest.NewRecorder()
		dupDone := make(chan struct{})
		go func() {
			defer close(dupDone)
			mw.ServeHTTP(dup, req)
		}()
		synctest.Wait()
		cancel()
		<-dupDone
		wantProblem(t, dup, http.StatusConflict)

		close(release)
		wg.Wait()
		if runs != 1 {
			t.Errorf("handler ran %d times, want 1", runs)
		}
	})
}
