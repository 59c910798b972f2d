package redisstore_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/redisstore"
	"github.com/redis/go-redis/v9"
)

// Replicas of a service share one Redis: each builds its own client and
// Store with the same prefix and secret, and runs commands through an
// Engine. A retry of the same command, on any replica, replays the response.
// (It needs a Redis server, so it is compiled but not run.)
func Example() {
	client := redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:       []string{"127.0.0.1:6379"}, // several addresses: a cluster; with MasterName: Sentinel
		DialTimeout: time.Second,
	})
	defer client.Close()

	store := redisstore.New(client,
		redisstore.WithPrefix("billing:idem:"),
		redisstore.WithSecret([]byte("a secret shared by the replicas")),
		redisstore.WithDefaultTTL(24*time.Hour),
	)
	engine := idempotency.NewEngine(store, idempotency.WithLease(30*time.Second))

	payload := []byte(`{"amount":1200,"currency":"EUR"}`)
	charge := func(ctx context.Context) (idempotency.Response, error) {
		tok, _ := idempotency.TokenFromContext(ctx)
		// Pass tok.Fence to downstream systems that can reject stale writers.
		body := fmt.Sprintf(`{"ok":true,"data":{"charge":"ch_1","fence":%d}}`, tok.Fence)
		return idempotency.Response{Status: 201, Body: []byte(body)}, nil
	}
	ctx := context.Background()
	for range 2 { // the second call is a client's retry
		res, err := engine.Do(ctx, idempotency.Request{Key: "charge-4711", Identity: "customer-42", Fingerprint: idempotency.Fingerprint(payload)}, charge)
		if err != nil {
			log.Fatal(err) // ErrStoreUnavailable when Redis is down: answer 503
		}
		fmt.Printf("%d replayed=%v %s\n", res.Response.Status, res.Replayed, res.Response.Body)
	}
}
