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
	"sync/atomic"
	"testing"
)

// BenchmarkSidecar compares, over loopback at 64 connections, a plain
// httputil.ReverseProxy with the sidecar in front of the same upstream:
// fresh keyed requests (each runs upstream) and replays (answered from the
// in-memory store). The three sub-benchmarks run in turn, so with -count
// their runs interleave:
//
//	go test -run '^$' -bench BenchmarkSidecar -count 6 ./cmd/idemd/
func BenchmarkSidecar(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("ETag", `"v1"`)
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"id":"ord_123","status":"created"}`)
	}))
	defer up.Close()
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
	defer plain.Close()
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
	defer side.Close()

	const conns = 64
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}}
	var seq atomic.Int64
	body := `{"amount":1200,"currency":"eur"}`
	send := func(b *testing.B, url, key string) {
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
	const replayKeys = 256
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
	b.Run("plain", func(b *testing.B) { run(b, plain.URL+"/v1/payments", fresh) })
	b.Run("fresh", func(b *testing.B) { run(b, side.URL+"/v1/payments", fresh) })
	b.Run("replay", func(b *testing.B) {
		for i := range replayKeys { // recorded again: fresh keys may have evicted them
			send(b, side.URL+"/v1/payments", "replay-"+strconv.Itoa(i))
		}
		run(b, side.URL+"/v1/payments", func() string { return "replay-" + strconv.FormatInt(seq.Add(1)%replayKeys, 10) })
	})
}
