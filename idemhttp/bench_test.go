package idemhttp_test

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemhttp"
)

// trivial is the handler the benchmarks wrap: a small JSON answer.
var trivial = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	w.Write([]byte(`{"id":"w1","name":"gear"}`))
})

const benchBody = `{"name":"gear","size":{"w":2,"h":3}}`

func benchRequest(key string) *http.Request {
	req := httptest.NewRequest("POST", "/widgets", strings.NewReader(benchBody))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer bench-token")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	return req
}

// BenchmarkBare is the handler alone, for comparison.
func BenchmarkBare(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		trivial.ServeHTTP(httptest.NewRecorder(), benchRequest("k"))
	}
}

// BenchmarkFresh runs a new key every time: claim, run, record.
func BenchmarkFresh(b *testing.B) {
	mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(trivial)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		rr := httptest.NewRecorder()
		mw.ServeHTTP(rr, benchRequest("key-"+strconv.Itoa(i)))
		if rr.Code != http.StatusCreated {
			b.Fatalf("status %d", rr.Code)
		}
	}
}

// BenchmarkReplay retries one key: claim finds the record, replays it.
func BenchmarkReplay(b *testing.B) {
	mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(trivial)
	mw.ServeHTTP(httptest.NewRecorder(), benchRequest("k"))
	b.ReportAllocs()
	for b.Loop() {
		rr := httptest.NewRecorder()
		mw.ServeHTTP(rr, benchRequest("k"))
		if rr.Header().Get("Idempotent-Replayed") != "true" {
			b.Fatal("not a replay")
		}
	}
}

// BenchmarkNoKey is a request without a key through the middleware: it
// passes straight through.
func BenchmarkNoKey(b *testing.B) {
	mw := idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(trivial)
	b.ReportAllocs()
	for b.Loop() {
		mw.ServeHTTP(httptest.NewRecorder(), benchRequest(""))
	}
}
