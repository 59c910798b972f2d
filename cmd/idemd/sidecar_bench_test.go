package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkSidecar compares, over loopback at 64 connections, a plain
// httputil.ReverseProxy with the sidecar in front of the same upstream:
// fresh keyed requests (each runs upstream) and replays (answered from the
// in-memory store). The three sub-benchmarks run in turn, so with -count
// their runs interleave:
//
//	go test -run '^$' -bench 'BenchmarkSidecar$' -count 6 ./cmd/idemd/
func BenchmarkSidecar(b *testing.B) {
	plainURL, sideURL, send, seq := newSidecarBench(b)
	const conns, replayKeys = 64, 256
	run := func(b *testing.B, url string, key func() string) {
		b.SetParallelism(max(1, conns/runtime.GOMAXPROCS(0))) // 64 goroutines, one connection each
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				send(b, url, key())
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	}
	fresh := func() string { return "fresh-" + strconv.FormatInt(seq.Add(1), 10) }
	b.Run("plain", func(b *testing.B) { run(b, plainURL+"/v1/payments", fresh) })
	b.Run("fresh", func(b *testing.B) { run(b, sideURL+"/v1/payments", fresh) })
	b.Run("replay", func(b *testing.B) {
		for i := range replayKeys { // recorded again: fresh keys may have evicted them
			send(b, sideURL+"/v1/payments", "replay-"+strconv.Itoa(i))
		}
		run(b, sideURL+"/v1/payments", func() string { return "replay-" + strconv.FormatInt(seq.Add(1)%replayKeys, 10) })
	})
}

// newSidecarBench starts an upstream, a plain ReverseProxy and the sidecar
// in front of it, and returns their URLs and a function sending one keyed
// POST (failing b unless it is answered 201).
func newSidecarBench(b *testing.B) (plainURL, sideURL string, send func(b *testing.B, url, key string), seq *atomic.Int64) {

	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("ETag", `"v1"`)
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"id":"ord_123","status":"created"}`)
	}))
	b.Cleanup(up.Close)
	target, _ := url.Parse(up.URL)
	transport := &http.Transport{MaxIdleConns: 1024, MaxIdleConnsPerHost: 1024}
	plain := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
		},
		Transport:  transport,
		BufferPool: newCopyPool(),
	})
	b.Cleanup(plain.Close)
	cfg, err := parseConfig([]string{"-upstream", up.URL}, env(nil), io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	store, err := openStore(context.Background(), cfg, log) // idemd's own: -store memory
	if err != nil {
		b.Fatal(err)
	}
	s := newServer(cfg, store.store, store.dash, log)
	side := httptest.NewServer(s.handler)
	b.Cleanup(side.Close)

	const conns = 64
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}
	seq = new(atomic.Int64)
	body := `{"amount":1200,"currency":"eur"}`
	send = func(b *testing.B, url, key string) {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer bench")
		req.Header.Set("Idempotency-Key", key)
		res, err := client.Do(req)
		if err != nil {
			b.Error(err)
			return
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusCreated {
			b.Errorf("status %d", res.StatusCode)
		}
	}
	return plain.URL, side.URL, send, seq
}

// BenchmarkSidecarInterleaved measures the same pairs as BenchmarkSidecar,
// plain ReverseProxy against the sidecar (fresh keys, then replays), in
// slices of 250 ms alternating ABBA BAAB within one run, so that both sides
// of a ratio see the same machine load; throughput-ratio is the sidecar's
// requests per second over the plain proxy's:
//
//	go test -run '^$' -bench BenchmarkSidecarInterleaved -benchtime 1x -count 6 ./cmd/idemd/
func BenchmarkSidecarInterleaved(b *testing.B) {
	plainURL, sideURL, send, seq := newSidecarBench(b)
	const conns, slice = 64, 250 * time.Millisecond
	const replayKeys = 256
	for i := range replayKeys {
		send(b, sideURL+"/v1/payments", "replay-"+strconv.Itoa(i))
	}
	fresh := func() string { return "fresh-" + strconv.FormatInt(seq.Add(1), 10) }
	replay := func() string { return "replay-" + strconv.FormatInt(seq.Add(1)%replayKeys, 10) }
	// burst sends for one slice from conns goroutines and returns the count.
	burst := func(url string, key func() string) int64 {
		var n atomic.Int64
		var wg sync.WaitGroup
		end := time.Now().Add(slice)
		for range conns {
			wg.Go(func() {
				for time.Now().Before(end) {
					send(b, url, key())
					n.Add(1)
				}
			})
		}
		wg.Wait()
		return n.Load()
	}
	for _, pair := range []struct {
		name string
		key  func() string
	}{{"fresh", fresh}, {"replay", replay}} {
		b.Run(pair.name, func(b *testing.B) {
			for range b.N {
				var plain, side int64
				for _, sideFirst := range []bool{false, true, true, false, true, false, false, true} {
					if sideFirst {
						side += burst(sideURL+"/v1/payments", pair.key)
					} else {
						plain += burst(plainURL+"/v1/payments", fresh)
					}
				}
				b.ReportMetric(float64(side)/float64(plain), "throughput-ratio")
			}
		})
	}
}
