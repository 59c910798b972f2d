package idemhttp_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

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

// BenchmarkOverhead measures what the middleware adds to a handler in
// front of a store holding 100k records (steady state: the store is full,
// so a fresh key evicts the least recently used record), with httptest
// requests as a test or an in-process caller makes them. The three paths
// run in alternating chunks in one loop, so that load from the rest of the
// machine weighs on all of them alike; the reported ratios are the time the
// middleware adds over the bare handler's own time:
//
//	replay-adds-x-bare = (replay − bare) / bare
//	fresh-adds-x-bare  = (fresh − bare) / bare
//
// IDEMHTTP_BENCH_RECORDS sets another number of records: the collector's
// work over a large store slows the bare handler too, so the ratios depend
// on it.
func BenchmarkOverhead(b *testing.B) {
	records := 100_000
	if v, err := strconv.Atoi(os.Getenv("IDEMHTTP_BENCH_RECORDS")); err == nil {
		records = v
	}
	store := idempotency.NewInMemoryStore(idempotency.WithMaxEntries(records))
	mw := idemhttp.New(idempotency.NewEngine(store, idempotency.WithDetachedRun(true)))(trivial)
	for i := range records {
		mw.ServeHTTP(httptest.NewRecorder(), benchRequest("fill-"+strconv.Itoa(i)))
	}
	mw.ServeHTTP(httptest.NewRecorder(), benchRequest("replayed"))
	const chunk = 64
	var bare, replay, fresh time.Duration
	n := 0
	keys := make([]string, chunk)
	b.ReportAllocs()
	for b.Loop() {
		for i := range keys {
			n++
			keys[i] = "fresh-" + strconv.Itoa(n)
		}
		t0 := time.Now()
		for range chunk {
			trivial.ServeHTTP(httptest.NewRecorder(), benchRequest("k"))
		}
		t1 := time.Now()
		for range chunk {
			mw.ServeHTTP(httptest.NewRecorder(), benchRequest("replayed"))
		}
		t2 := time.Now()
		for _, k := range keys {
			mw.ServeHTTP(httptest.NewRecorder(), benchRequest(k))
		}
		t3 := time.Now()
		bare, replay, fresh = bare+t1.Sub(t0), replay+t2.Sub(t1), fresh+t3.Sub(t2)
	}
	if store.Len() != records {
		b.Fatalf("store holds %d records, want %d", store.Len(), records)
	}
	b.ReportMetric(float64(bare.Nanoseconds())/float64(n), "bare-ns")
	b.ReportMetric(float64(replay.Nanoseconds())/float64(n), "replay-ns")
	b.ReportMetric(float64(fresh.Nanoseconds())/float64(n), "fresh-ns")
	b.ReportMetric(float64(replay-bare)/float64(bare), "replay-adds-x-bare")
	b.ReportMetric(float64(fresh-bare)/float64(bare), "fresh-adds-x-bare")
}
