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

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemhttp"
)

// trivial is the handler behind the middleware: a small JSON answer.
var trivial = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	w.Write([]byte(`{"id":"w1","name":"gear"}`))
})

const httpBody = `{"name":"gear","size":{"w":2,"h":3}}`

// httpTargets are the handlers compared: the bare handler, and the
// middleware over an InMemoryStore in front of it.
func httpTargets() map[string]http.Handler {
	return map[string]http.Handler{
		"bare":     trivial,
		"idemhttp": idemhttp.New(idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true)), idemhttp.WithAnonymous(true))(trivial),
	}
}

// discardWriter is a ResponseWriter that keeps only the status and the
// header map, reset between requests: the in-process benchmarks measure the
// handler and the middleware, not httptest's recorder.
type discardWriter struct {
	h    http.Header
	code int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *discardWriter) WriteHeader(code int)        { w.code = code }

// rewindBody serves the same bytes on every request.
type rewindBody struct{ bytes.Reader }

func (*rewindBody) Close() error { return nil }

// BenchmarkHTTPInProcess serves requests through ServeHTTP directly, reusing
// one request and one writer so that only the handler and the middleware are
// measured: replay (one key, recorded) and fresh (a new key each time),
// through the middleware and bare. The difference is what the middleware
// adds.
func BenchmarkHTTPInProcess(b *testing.B) {
	for _, path := range []string{"replay", "fresh"} {
		for _, name := range []string{"bare", "idemhttp"} {
			b.Run("path="+path+"/impl="+name, func(b *testing.B) {
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
				// Pre-made keys cycled through the default 10k entries: a
				// key is evicted long before it comes back.
				keys := make([]string, 1<<16)
				for i := range keys {
					keys[i] = "key-" + strconv.Itoa(i)
				}
				i := 0
				b.ReportAllocs()
				for b.Loop() {
					key := "k"
					if path == "fresh" {
						key = keys[i&(len(keys)-1)]
						i++
					}
					serve(key)
				}
			})
		}
	}
}

// BenchmarkHTTPLoopback serves the same over 127.0.0.1 with keep-alive, 64
// callers on 64 connections; ns/op is per request across all of them, so
// bare/idemhttp is the throughput ratio. The client runs in this process and
// shares the CPUs with the server.
func BenchmarkHTTPLoopback(b *testing.B) {
	const conns = 64
	for _, path := range []string{"replay", "fresh"} {
		for _, name := range []string{"bare", "idemhttp"} {
			b.Run("path="+path+"/impl="+name+"/conns=64", func(b *testing.B) {
				srv := httptest.NewServer(httpTargets()[name])
				defer srv.Close()
				client := &http.Client{Transport: &http.Transport{
					MaxIdleConns: conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
					IdleConnTimeout: time.Minute, DisableCompression: true,
				}}
				defer client.CloseIdleConnections()
				url := srv.URL + "/widgets"
				body := []byte(httpBody)
				send := func(key string) error {
					req, err := http.NewRequest("POST", url, bytes.NewReader(body))
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
				var seq atomic.Int64
				run := strconv.FormatInt(time.Now().UnixNano(), 36)
				// Record the replayed key, then open the 64 connections
				// before the timer starts.
				if err := send("k"); err != nil {
					b.Fatal(err)
				}
				var wg sync.WaitGroup
				errs := make(chan error, conns)
				for range conns {
					wg.Go(func() { errs <- send(run + "-warm-" + strconv.FormatInt(seq.Add(1), 10)) })
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
				atParallel(b, conns, func(i int64) error {
					key := "k"
					if path == "fresh" {
						key = run + "-" + strconv.FormatInt(seq.Add(1), 10)
					}
					return send(key)
				})
			})
		}
	}
}

type errStatus int

func (e errStatus) Error() string { return "status " + strconv.Itoa(int(e)) }
