package rueidisstore

import (
	"context"
	"crypto/rand"
	"net"
	"os"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/redisstore/internal/redistest"
	"github.com/redis/rueidis"
)

const defaultRedisURL = "redis://127.0.0.1:6379/0"

// unreachable skips the test, or fails it when IDEMPOTENCY_REQUIRE_BACKENDS=1.
var unreachable = redistest.Unreachable

// redisURL is the test server's URL.
func redisURL() string {
	if url := os.Getenv("IDEMPOTENCY_REDIS_URL"); url != "" {
		return url
	}
	return defaultRedisURL
}

// clientOption returns the rueidis options of the test server.
func clientOption(tb testing.TB) rueidis.ClientOption {
	tb.Helper()
	opt, err := rueidis.ParseURL(redisURL())
	if err != nil {
		tb.Fatalf("IDEMPOTENCY_REDIS_URL %q: %v", redisURL(), err)
	}
	opt.Dialer = net.Dialer{Timeout: time.Second}
	return opt
}

// newClient returns a client of the test server, closed when tb ends; it
// skips the test when the server does not answer (rueidis.NewClient
// connects at once).
func newClient(tb testing.TB) rueidis.Client {
	tb.Helper()
	c, err := rueidis.NewClient(clientOption(tb))
	if err != nil {
		unreachable(tb, "redis at %s does not answer: %v; to run this test, start redis-server on 127.0.0.1:6379"+
			" or point IDEMPOTENCY_REDIS_URL at a server", redisURL(), err)
	}
	tb.Cleanup(c.Close)
	return c
}

// newPrefix returns a key prefix no other test uses and deletes its keys
// when tb ends.
func newPrefix(tb testing.TB, c rueidis.Client) string {
	tb.Helper()
	prefix := "idemtest:" + rand.Text() + ":"
	tb.Cleanup(func() { deletePrefix(tb, c, prefix) })
	return prefix
}

// deletePrefix deletes every key under prefix on a single-node server.
func deletePrefix(tb testing.TB, c rueidis.Client, prefix string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var cursor uint64
	for {
		e, err := c.Do(ctx, c.B().Scan().Cursor(cursor).Match(prefix+"*").Count(1000).Build()).AsScanEntry()
		if err != nil {
			tb.Errorf("scanning keys under %q: %v", prefix, err)
			return
		}
		if len(e.Elements) > 0 {
			if err := c.Do(ctx, c.B().Unlink().Key(e.Elements...).Build()).Error(); err != nil {
				tb.Errorf("deleting keys under %q: %v", prefix, err)
				return
			}
		}
		if cursor = e.Cursor; cursor == 0 {
			return
		}
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
