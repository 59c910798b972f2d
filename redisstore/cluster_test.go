package redisstore

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
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
}

// startCluster starts n redis-server processes in cluster mode on free
// loopback ports, joins them into one cluster with n masters, waits until
// every node reports cluster_state:ok, and kills them when t ends.
func startCluster(t *testing.T, n int) []string {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		unreachable(t, "redis-cli is not on PATH (%v); install Redis to run this test, which starts its own servers", err)
	}
	dir := t.TempDir()
	ports := freeClusterPorts(t, n)
	addrs := make([]string, n)
	for i, port := range ports {
		addrs[i] = startRedis(t, dir, port, "--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(dir, fmt.Sprintf("nodes-%d.conf", port)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	for _, addr := range addrs {
		c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
		poll(ctx, t, addr+" to report cluster_state:ok", func() bool {
			info, err := c.ClusterInfo(ctx).Result()
			return err == nil && strings.Contains(info, "cluster_state:ok")
		})
		c.Close()
	}
	return addrs
}
