package storetest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
)

// Benchmark runs the shared store benchmarks against a store made by
// newStore: Lookup hit and miss, Store, and, for a ClaimStore, Begin then
// Complete on fresh keys and a replaying Begin; each single-goroutine and
// under b.RunParallel. Keys are 40 bytes and bodies 256 bytes.
func Benchmark(b *testing.B, newStore func(tb testing.TB) idempotency.Store) {
	body := make([]byte, 256)
	for i := range body {
		body[i] = 'a' + byte(i%26)
	}
	resp := idempotency.Cached{Status: 201, WireBody: body, TTL: time.Hour}
	const preload = 1000
	keys := make([]string, preload)
	for i := range keys {
		keys[i] = fmt.Sprintf("bench-key-%030d", i)
	}
	ctx := context.Background()
	fill := func(b *testing.B, st idempotency.Store) {
		for _, k := range keys {
			if err := st.Store(ctx, k, "alice", resp); err != nil {
				b.Fatal(err)
			}
		}
	}
	var seq atomic.Int64
	freshKey := func() string { return fmt.Sprintf("fresh-key-%030d", seq.Add(1)) }

	both := func(name string, setup func(b *testing.B) func(i int) error) {
		b.Run(name, func(b *testing.B) {
			op := setup(b)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if err := op(i); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/parallel", func(b *testing.B) {
			op := setup(b)
			b.ReportAllocs()
			b.ResetTimer()
			var n atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				i := int(n.Add(1)) * 7919
				for pb.Next() {
					if err := op(i); err != nil {
						b.Error(err)
						return
					}
					i++
				}
			})
		})
	}

	both("LookupHit", func(b *testing.B) func(int) error {
		st := newStore(b)
		fill(b, st)
		return func(i int) error {
			if _, ok := st.Lookup(ctx, keys[i%preload], "alice"); !ok {
				return fmt.Errorf("Lookup missed a stored key")
			}
			return nil
		}
	})
	both("LookupMiss", func(b *testing.B) func(int) error {
		st := newStore(b)
		fill(b, st)
		return func(i int) error {
			if _, ok := st.Lookup(ctx, keys[i%preload], "mallory"); ok {
				return fmt.Errorf("Lookup hit another identity's key")
			}
			return nil
		}
	})
	both("Store", func(b *testing.B) func(int) error {
		st := newStore(b)
		fill(b, st)
		return func(i int) error { return st.Store(ctx, keys[i%preload], "alice", resp) }
	})
	if _, ok := newStore(b).(idempotency.ClaimStore); !ok {
		return
	}
	both("BeginComplete", func(b *testing.B) func(int) error {
		st := newStore(b).(idempotency.ClaimStore)
		return func(int) error {
			cl, err := st.Begin(ctx, freshKey(), "alice", idempotency.ClaimRequest{Fingerprint: "fp", Owner: "bench-owner", Lease: time.Minute})
			if err != nil {
				return err
			}
			if cl.Status != idempotency.ClaimAcquired {
				return fmt.Errorf("Begin on a fresh key: %v", cl.Status)
			}
			return st.Complete(ctx, cl.Token, resp)
		}
	})
	both("Replay", func(b *testing.B) func(int) error {
		st := newStore(b).(idempotency.ClaimStore)
		fill(b, st)
		return func(i int) error {
			cl, err := st.Begin(ctx, keys[i%preload], "alice", idempotency.ClaimRequest{Owner: "bench-owner", Lease: time.Minute})
			if err != nil {
				return err
			}
			if cl.Status != idempotency.ClaimReplay {
				return fmt.Errorf("Begin on a completed key: %v", cl.Status)
			}
			return nil
		}
	})
}
