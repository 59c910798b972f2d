package redisstore

import (
	"context"
	"fmt"
	"testing"

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
		redistest.ClaimsOnEveryMaster(t, st, func(key string) (string, error) {
			node, err := c.MasterForKey(context.Background(), st.recordKey(key, "alice"))
			if err != nil {
				return "", err
			}
			return node.Options().Addr, nil
		})
	})
}
