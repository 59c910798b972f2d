package bench

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// On a shared machine the load from other work changes within seconds, so
// two benchmarks run one after the other can see different machines. The
// interleaved benchmarks below run the bare handler and the middleware in
// alternating slices of time, in the order ABBA BAAB …, so that load that
// drifts over a few slices weighs on both alike, and report the comparison
// itself as the benchmark's metric. They ignore b.N: run them with
// -benchtime 1x.

// interleave runs a and b for slices slices of d each, alternating ABBA,
// and returns the operations each completed and the time each ran.
func interleave(slices int, d time.Duration, a, b func(until time.Time) int64) (na, nb int64, ta, tb time.Duration) {
	order := []bool{true, false, false, true} // ABBA
	for i := range slices {
		runA := order[i%4]
		if (i/4)%2 == 1 {
			runA = !runA // BAAB in the next four
		}
		start := time.Now()
		if runA {
			na += a(start.Add(d))
			ta += time.Since(start)
		} else {
			nb += b(start.Add(d))
			tb += time.Since(start)
		}
	}
	return na, nb, ta, tb
}

// BenchmarkHTTPInterleaved reports, for replay and fresh requests:
// in-process, the ns per request the middleware adds to the bare handler
// (metric "adds-ns/op"); over loopback with 64 keep-alive connections, the
// middleware's throughput relative to the bare handler's ("throughput-ratio").
func BenchmarkHTTPInterleaved(b *testing.B) {
	const (
		slices = 16
		slice  = 100 * time.Millisecond
		conns  = 64
	)
	for _, path := range []string{"replay", "fresh"} {
		b.Run("mode=inprocess/path="+path, func(b *testing.B) {
			bare, mw := inProcessLoop(b, "bare", path), inProcessLoop(b, "idemhttp", path)
			na, nm, ta, tm := interleave(slices, slice/4, bare, mw)
			perBare, perMW := float64(ta)/float64(na), float64(tm)/float64(nm)
			b.ReportMetric(perBare, "bare-ns/op")
			b.ReportMetric(perMW, "idemhttp-ns/op")
			b.ReportMetric(perMW-perBare, "adds-ns/op")
		})
		b.Run("mode=loopback/path="+path+"/conns=64", func(b *testing.B) {
			bare, mw := loopbackLoop(b, "bare", path, conns), loopbackLoop(b, "idemhttp", path, conns)
			na, nm, ta, tm := interleave(slices, slice, bare, mw)
			rateBare, rateMW := float64(na)/ta.Seconds(), float64(nm)/tm.Seconds()
			b.ReportMetric(rateBare, "bare-req/s")
			b.ReportMetric(rateMW, "idemhttp-req/s")
			b.ReportMetric(rateMW/rateBare, "throughput-ratio")
		})
	}
}

// inProcessLoop returns a loop serving requests through the named target
// until a deadline, as BenchmarkHTTPInProcess does.
func inProcessLoop(b *testing.B, name, path string) func(time.Time) int64 {
	h := httpTargets()[name]
	body := &rewindBody{}
	req := httptest.NewRequest("POST", "/widgets", nil)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer bench-token")
	req.Header.Set("Idempotency-Key", "k")
	req.Body, req.ContentLength = body, int64(len(httpBody))
	w := &discardWriter{h: http.Header{}}
	serve := func(key string) {
		body.Reset([]byte(httpBody))
		req.Header["Idempotency-Key"][0] = key
		clear(w.h)
		w.code = 0
		h.ServeHTTP(w, req)
		if w.code != http.StatusCreated {
			b.Fatalf("status %d", w.code)
		}
	}
	serve("k")
	keys := make([]string, 1<<16)
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
	}
	i := 0
	return func(until time.Time) int64 {
		var n int64
		for {
			for range 64 {
				key := "k"
				if path == "fresh" {
					key = keys[i&(len(keys)-1)]
					i++
				}
				serve(key)
				n++
			}
			if !time.Now().Before(until) {
				return n
			}
		}
	}
}

// loopbackLoop starts a server for the named target on 127.0.0.1 with a
// client of conns keep-alive connections (opened before it returns), and
// returns a loop that has conns goroutines send requests until a deadline.
func loopbackLoop(b *testing.B, name, path string, conns int) func(time.Time) int64 {
	srv := httptest.NewServer(httpTargets()[name])
	b.Cleanup(srv.Close)
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
		IdleConnTimeout: time.Minute, DisableCompression: true,
	}}
	b.Cleanup(client.CloseIdleConnections)
	url := srv.URL + "/widgets"
	payload := []byte(httpBody)
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	var seq atomic.Int64
	send := func() error {
		key := "k"
		if path == "fresh" {
			key = run + "-" + strconv.FormatInt(seq.Add(1), 10)
		}
		req, err := http.NewRequest("POST", url, bytes.NewReader(payload))
		if err != nil {
			return err
		}
		req.Header["Content-Type"] = []string{"application/json"}
		req.Header["Authorization"] = []string{"Bearer bench-token"}
		req.Header["Idempotency-Key"] = []string{key}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusCreated {
			err = errStatus(resp.StatusCode)
		}
		return err
	}
	// Record the replayed key first, then open every connection.
	if path == "replay" {
		if err := send(); err != nil {
			b.Fatal(err)
		}
	}
	loop := func(until time.Time) int64 {
		var n atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, conns)
		for range conns {
			wg.Go(func() {
				for time.Now().Before(until) {
					if err := send(); err != nil {
						errs <- err
						return
					}
					n.Add(1)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		return n.Load()
	}
	loop(time.Now().Add(20 * time.Millisecond)) // warm up: open the connections
	return loop
}
