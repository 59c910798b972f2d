package idemhttp_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemhttp"
)

// TestOversizeResponse: a response over the cap reaches the client whole, a
// tombstone is recorded, and the retry gets 410 without running the handler.
func TestOversizeResponse(t *testing.T) {
	store := idempotency.NewInMemoryStore()
	runs := 0
	big := strings.Repeat("0123456789", 10)
	mw := idemhttp.New(idempotency.NewEngine(store, idempotency.WithMaxResponseBytes(32), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs++
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, big[:20]) // fits
		io.WriteString(w, big[20:]) // does not
	}))
	first := send(mw, "POST", "/", `{}`, "Idempotency-Key", "k")
	if first.Code != http.StatusCreated || first.Body.String() != big {
		t.Errorf("first = %d %q, want 201 and the whole body", first.Code, first.Body)
	}
	rec, ok := store.Lookup(context.Background(), "k", "")
	if !ok || !rec.Tombstone || len(rec.WireBody) != 0 {
		t.Fatalf("record = %+v, %v; want a tombstone", rec, ok)
	}
	retry := send(mw, "POST", "/", `{}`, "Idempotency-Key", "k")
	p := wantProblem(t, retry, http.StatusGone)
	if !strings.Contains(p.Detail, "too large to record") {
		t.Errorf("detail = %q, want it to say the response was too large to record", p.Detail)
	}
	if runs != 1 {
		t.Errorf("handler ran %d times, want 1", runs)
	}
}

// TestFlushStreams: after Flush the client has what was written so far,
// while the handler is still running; the whole stream is recorded.
func TestFlushStreams(t *testing.T) {
	flushed, resume := make(chan struct{}), make(chan struct{})
	runs := 0
	mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs++
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("Flush: %v", err)
		}
		close(flushed)
		<-resume
		io.WriteString(w, "data: two\n\n")
		w.(http.Flusher).Flush()
	}))
	rr := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		req := httptest.NewRequest("POST", "/", nil)
		req.Header.Set("Idempotency-Key", "k")
		mw.ServeHTTP(rr, req)
	}()
	<-flushed
	if !rr.Flushed || rr.Body.String() != "data: one\n\n" || rr.Code != http.StatusOK {
		t.Errorf("after Flush the client has %d %q (flushed %v), want 200 and the first event", rr.Code, rr.Body, rr.Flushed)
	}
	close(resume)
	<-done
	if rr.Body.String() != "data: one\n\ndata: two\n\n" {
		t.Errorf("client got %q, want both events", rr.Body)
	}
	retry := send(mw, "POST", "/", "", "Idempotency-Key", "k")
	wantReplayed(t, retry, true)
	if retry.Body.String() != "data: one\n\ndata: two\n\n" || retry.Header().Get("Content-Type") != "text/event-stream" || runs != 1 {
		t.Errorf("replay = %q (%s) after %d runs, want the whole stream after 1", retry.Body, retry.Header().Get("Content-Type"), runs)
	}
}

func TestFlushedStreamOverCap(t *testing.T) {
	runs := 0
	mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithMaxResponseBytes(8), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs++
		io.WriteString(w, "12345")
		w.(http.Flusher).Flush()
		io.WriteString(w, "67890")
	}))
	first := send(mw, "POST", "/", "", "Idempotency-Key", "k")
	if first.Body.String() != "1234567890" {
		t.Errorf("client got %q, want the whole stream", first.Body)
	}
	wantProblem(t, send(mw, "POST", "/", "", "Idempotency-Key", "k"), http.StatusGone)
	if runs != 1 {
		t.Errorf("handler ran %d times, want 1", runs)
	}
}

// TestHijack: a handler that takes over the connection leaves a tombstone.
// The client has its answer before the handler returns, so the retry waits
// (WithWait) for the first execution to be recorded instead of racing it.
func TestHijack(t *testing.T) {
	runs := 0
	mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithWait(true), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs++
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
		brw.Flush()
	}))
	srv := httptest.NewServer(mw)
	defer srv.Close()

	post := func() (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", srv.URL, nil)
		req.Header.Set("Idempotency-Key", "k")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, readAll(t, resp)
	}
	if status, body := post(); status != 200 || body != "hijacked" {
		t.Errorf("first = %d %q, want the hijacked answer", status, body)
	}
	if status, _ := post(); status != http.StatusGone {
		t.Errorf("retry status = %d, want 410 (a tombstone)", status)
	}
	if runs != 1 {
		t.Errorf("handler ran %d times, want 1", runs)
	}
}

// TestResponseControllerThroughRecorder: deadlines reach the server's writer
// through Unwrap.
func TestResponseControllerThroughRecorder(t *testing.T) {
	var deadlineErr error
	mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		deadlineErr = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(time.Minute))
		fmt.Fprint(w, "ok")
	}))
	srv := httptest.NewServer(mw)
	defer srv.Close()
	req, _ := http.NewRequest("POST", srv.URL, nil)
	req.Header.Set("Idempotency-Key", "k")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if deadlineErr != nil {
		t.Errorf("SetWriteDeadline through the recorder: %v", deadlineErr)
	}
}

// TestHandlerWritesAfterClientLeft: write errors of a departed client do not
// reach the handler, and its response is still recorded.
func TestHandlerWritesAfterClientLeft(t *testing.T) {
	runs := 0
	var writeErr error
	mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithMaxResponseBytes(4), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs++
		_, writeErr = io.WriteString(w, "longer than four")
	}))
	req := httptest.NewRequest("POST", "/", nil)
	req.Header.Set("Idempotency-Key", "k")
	mw.ServeHTTP(brokenWriter{httptest.NewRecorder()}, req)
	if writeErr != nil {
		t.Errorf("handler saw write error %v", writeErr)
	}
	wantProblem(t, send(mw, "POST", "/", "", "Idempotency-Key", "k"), http.StatusGone)
	if runs != 1 {
		t.Errorf("handler ran %d times, want 1", runs)
	}
}

type brokenWriter struct{ *httptest.ResponseRecorder }

func (brokenWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }
