package redisstore

import (
	"context"
	"crypto/rand"
	"os"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/redis/go-redis/v9"
)

const defaultRedisURL = "redis://127.0.0.1:6379/0"

// redisOptions returns the options of the test server and skips the test
// when it does not answer.
func redisOptions(tb testing.TB) *redis.Options {
	tb.Helper()
	url := os.Getenv("IDEMPOTENCY_REDIS_URL")
	if url == "" {
		url = defaultRedisURL
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatalf("IDEMPOTENCY_REDIS_URL %q: %v", url, err)
	}
	probe := redis.NewClient(&redis.Options{Addr: opt.Addr, Network: opt.Network, Username: opt.Username,
		Password: opt.Password, DB: opt.DB, TLSConfig: opt.TLSConfig, DialTimeout: time.Second, DialerRetries: 1, MaxRetries: -1})
	defer probe.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := probe.Ping(ctx).Err(); err != nil {
		unreachable(tb, "redis at %s does not answer: %v; to run this test, start redis-server on 127.0.0.1:6379"+
			" or point IDEMPOTENCY_REDIS_URL at a server", url, err)
	}
	return opt
}

// newClient returns a client of the test server, closed when tb ends.
func newClient(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(redisOptions(tb))
	tb.Cleanup(func() { c.Close() })
	return c
}

// newPrefix returns a key prefix no other test uses and deletes its keys
// when tb ends.
func newPrefix(tb testing.TB, c redis.UniversalClient) string {
	tb.Helper()
	prefix := "idemtest:" + rand.Text() + ":"
	tb.Cleanup(func() { deletePrefix(tb, c, prefix) })
	return prefix
}

// deletePrefix deletes every key under prefix, on every master of a cluster.
func deletePrefix(tb testing.TB, c redis.UniversalClient, prefix string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// One UNLINK per key: in a cluster, one command may not span slots.
	clean := func(ctx context.Context, c *redis.Client) error {
		iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		pipe := c.Pipeline()
		for iter.Next(ctx) {
			pipe.Unlink(ctx, iter.Val())
			if pipe.Len() == 500 {
				if _, err := pipe.Exec(ctx); err != nil {
					return err
				}
			}
		}
		if err := iter.Err(); err != nil {
			return err
		}
		_, err := pipe.Exec(ctx) // nil when empty
		return err
	}
	var err error
	switch c := c.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, clean)
	case *redis.Client:
		err = clean(ctx, c)
	default:
		tb.Fatalf("deletePrefix: unsupported client %T", c)
	}
	if err != nil {
		tb.Errorf("deleting keys under %q: %v", prefix, err)
	}
}

// newStore is the storetest factory: a Store on its own client and prefix.
func newStore(tb testing.TB) idempotency.Store {
	tb.Helper()
	c := newClient(tb)
	return New(c, WithPrefix(newPrefix(tb, c)))
}

// newReplicas returns n Stores, each with its own client, on one prefix.
func newReplicas(tb testing.TB, n int) []idempotency.Store {
	tb.Helper()
	first := newClient(tb)
	prefix := newPrefix(tb, first)
	stores := []idempotency.Store{New(first, WithPrefix(prefix))}
	for len(stores) < n {
		stores = append(stores, New(newClient(tb), WithPrefix(prefix)))
	}
	return stores[:n]
}

// acquire claims (key, "alice") for owner on st, failing t unless it does.
func acquire(t *testing.T, st *Store, key, owner string) idempotency.Token {
	t.Helper()
	cl, err := st.Begin(context.Background(), key, "alice", idempotency.ClaimRequest{Owner: owner, Fingerprint: "fp", Lease: time.Minute})
	if err != nil || cl.Status != idempotency.ClaimAcquired {
		t.Fatalf("Begin(%s, %s) = (%+v, %v), want acquired", key, owner, cl, err)
	}
	return cl.Token
}

// fenceAhead moves the fence of tok's record an hour ahead of the clock,
// and returns tok with that fence.
func fenceAhead(t *testing.T, c *redis.Client, st *Store, tok idempotency.Token) idempotency.Token {
	t.Helper()
	tok.Fence += uint64(time.Hour / time.Microsecond)
	fence := fenceBytes(tok.Fence)
	if err := c.SetRange(context.Background(), st.recordKey(tok.Key, tok.Identity), 1, string(fence[:])).Err(); err != nil {
		t.Fatal(err)
	}
	return tok
}
