package idemhttp

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/canonicaljson"
)

// The parts of the replay path, each on its own, to see where a replay's
// time goes (BenchmarkReplay is the whole).
func BenchmarkParts(b *testing.B) {
	const body = `{"name":"gear","size":{"w":2,"h":3}}`
	req := httptest.NewRequest("POST", "/widgets", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer bench-token")
	req.Header.Set("Idempotency-Key", "k")
	b.Run("ParseKey", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ParseKey(req.Header.Values(HeaderKey)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Identity", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			DefaultIdentity(req)
		}
	})
	b.Run("Fingerprint", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			DefaultFingerprint(req, []byte(body))
		}
	})
	b.Run("CanonicalJSON", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf, _ = canonicaljson.Append(buf[:0], []byte(body))
		}
	})
	b.Run("EngineReplay", func(b *testing.B) {
		e := idempotency.NewEngine(idempotency.NewInMemoryStore())
		run := func(context.Context) (idempotency.Response, error) {
			return idempotency.Response{Status: 201, Body: []byte(`{}`)}, nil
		}
		e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "id", Fingerprint: "fp"}, run)
		b.ReportAllocs()
		for b.Loop() {
			e.Do(context.Background(), idempotency.Request{Key: "k", Identity: "id", Fingerprint: "fp"}, run)
		}
	})
	b.Run("WriteRecorded", func(b *testing.B) {
		c := &idempotency.Response{Status: 201, Body: []byte(`{"id":"w1","name":"gear"}`),
			Header: map[string][]string{"Content-Type": {"application/json"}}}
		w := &nopWriter{h: http.Header{}}
		b.ReportAllocs()
		for b.Loop() {
			clear(w.h)
			writeRecorded(w, c)
		}
	})
}

type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}
