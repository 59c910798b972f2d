package redisstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/redisstore/internal/redistest"
	"github.com/idemkit/idempotency/storetest"
	"github.com/redis/go-redis/v9"
)

// TestCluster runs the conformance suite against a real three-master Redis
// Cluster that it starts on loopback ports and stops at the end.
func TestCluster(t *testing.T) {
	t.Parallel()
	addrs := startCluster(t, 3)
	newClusterClient := func(tb testing.TB) *redis.ClusterClient {
		c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
		tb.Cleanup(func() { c.Close() })
		return c
	}
	newStore := func(tb testing.TB) idempotency.Store {
		c := newClusterClient(tb)
		return New(c, WithPrefix(newPrefix(tb, c)))
	}
	newReplicas := func(tb testing.TB, n int) []idempotency.Store {
		first := newClusterClient(tb)
		prefix := newPrefix(tb, first)
		stores := []idempotency.Store{New(first, WithPrefix(prefix))}
		for len(stores) < n {
			stores = append(stores, New(newClusterClient(tb), WithPrefix(prefix)))
		}
		return stores[:n]
	}
	storetest.Run(t, newStore, storetest.WithReplicas(newReplicas))

	// Records spread over the masters: the hash tag is the record's hash,
	// not the shared prefix.
	t.Run("RecordsSpreadOverMasters", func(t *testing.T) {
		c := newClusterClient(t)
		st := New(c, WithPrefix(newPrefix(t, c)))
		ctx := context.Background()
		for i := range 60 {
			if err := st.Store(ctx, fmt.Sprint("k", i), "alice", idempotency.Cached{Status: 200}); err != nil {
				t.Fatal(err)
			}
		}
		holding := 0
		for _, addr := range addrs {
			n, err := redis.NewClient(&redis.Options{Addr: addr}).DBSize(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			if n > 0 {
				holding++
			}
		}
		if holding < 2 {
			t.Errorf("60 records live on %d of %d masters, want them spread", holding, len(addrs))
		}
	})

	// Claims scans every master: it lists claims whichever holds them.
	t.Run("ClaimsOnEveryMaster", func(t *testing.T) {
		c := newClusterClient(t)
		st := New(c, WithPrefix(newPrefix(t, c)))
		ctx := context.Background()
		var want []string
		masters := map[string]bool{}
		for i := range 30 {
			key := fmt.Sprint("k", i)
			if _, err := st.Begin(ctx, key, "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Minute}); err != nil {
				t.Fatal(err)
			}
			want = append(want, st.RecordID(key, "alice"))
			node, err := c.MasterForKey(ctx, st.recordKey(key, "alice"))
			if err != nil {
				t.Fatal(err)
			}
			masters[node.Options().Addr] = true
		}
		if len(masters) < 2 {
			t.Fatalf("30 claims live on %d masters, want them spread", len(masters))
		}
		claims, err := st.Claims(ctx, 0, 0)
		if err != nil {
			t.Fatalf("Claims = %v", err)
		}
		redistest.WantClaims(t, claims, want)
	})
}
