package idempotency_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/idemkit/idempotency"
)

// BenchmarkEngineDo measures Do over the in-memory store: a replay of a
// recorded response, and a fresh key that claims, runs and completes.
func BenchmarkEngineDo(b *testing.B) {
	body := make([]byte, 256)
	ok := func(context.Context) (idempotency.Response, error) {
		return idempotency.Response{Status: 200, Body: body}, nil
	}
	ctx := context.Background()
	b.Run("Replay", func(b *testing.B) {
		e := idempotency.NewEngine(idempotency.NewInMemoryStore())
		if _, err := e.Do(ctx, idempotency.Request{Key: "bench-key", Identity: "alice", Fingerprint: "fp"}, ok); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if res, err := e.Do(ctx, idempotency.Request{Key: "bench-key", Identity: "alice", Fingerprint: "fp"}, ok); err != nil || !res.Replayed {
					b.Errorf("Do = (%+v, %v), want a replay", res, err)
					return
				}
			}
		})
	})
	b.Run("Fresh", func(b *testing.B) {
		e := idempotency.NewEngine(idempotency.NewInMemoryStore(idempotency.WithMaxEntries(1 << 20)))
		var n atomic.Int64
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				key := fmt.Sprintf("fresh-%d", n.Add(1))
				if res, err := e.Do(ctx, idempotency.Request{Key: key, Identity: "alice", Fingerprint: "fp"}, ok); err != nil || res.Replayed {
					b.Errorf("Do = (%+v, %v), want an execution", res, err)
					return
				}
			}
		})
	})
}
