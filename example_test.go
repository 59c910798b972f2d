package idempotency_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
)

// A retried command runs once; the retry gets the recorded response.
func ExampleEngine_Do() {
	store := idempotency.NewInMemoryStore()
	engine := idempotency.NewEngine(store)
	ctx := context.Background()

	charges := 0
	charge := func(ctx context.Context) (idempotency.Response, error) {
		charges++
		return idempotency.Response{Status: 201, Body: []byte(`{"ok":true,"data":{"charge":"ch_1"}}`)}, nil
	}
	for range 3 { // the client retries twice
		res, err := engine.Do(ctx, idempotency.Request{Key: "order-42", Identity: "customer-7", Fingerprint: "amount=1000"}, charge)
		if err != nil {
			panic(err)
		}
		fmt.Println(res.Response.Status, string(res.Response.Body), "replayed:", res.Replayed)
	}
	fmt.Println("charges:", charges)
	// Output:
	// 201 {"ok":true,"data":{"charge":"ch_1"}} replayed: false
	// 201 {"ok":true,"data":{"charge":"ch_1"}} replayed: true
	// 201 {"ok":true,"data":{"charge":"ch_1"}} replayed: true
	// charges: 1
}

// Reusing a key with a different request is refused.
func ExampleEngine_Do_mismatch() {
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore())
	ctx := context.Background()
	ok := func(context.Context) (idempotency.Response, error) { return idempotency.Response{Status: 200}, nil }

	_, err := engine.Do(ctx, idempotency.Request{Key: "order-42", Identity: "customer-7", Fingerprint: "amount=1000"}, ok)
	fmt.Println(err)
	_, err = engine.Do(ctx, idempotency.Request{Key: "order-42", Identity: "customer-7", Fingerprint: "amount=9999"}, ok)
	fmt.Println(errors.Is(err, idempotency.ErrMismatch))
	// Output:
	// <nil>
	// true
}

// A failed command releases its key, so the retry runs it again.
func ExampleEngine_Do_failure() {
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore())
	ctx := context.Background()
	attempts := 0
	flaky := func(context.Context) (idempotency.Response, error) {
		attempts++
		if attempts == 1 {
			return idempotency.Response{}, errors.New("upstream timeout")
		}
		return idempotency.Response{Status: 200, Body: []byte(`"paid"`)}, nil
	}
	_, err := engine.Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, flaky)
	fmt.Println(err)
	res, _ := engine.Do(ctx, idempotency.Request{Key: "k", Identity: "", Fingerprint: ""}, flaky)
	fmt.Println(string(res.Response.Body), attempts)
	// Output:
	// upstream timeout
	// "paid" 2
}

// The seed API: a store of responses with TTL and LRU eviction.
func ExampleInMemoryStore() {
	store := idempotency.NewInMemoryStore(idempotency.WithMaxEntries(1000))
	ctx := context.Background()
	_ = store.Store(ctx, "key-1", "alice", idempotency.Cached{Status: 200, WireBody: []byte(`{"ok":true}`)})

	if c, ok := store.Lookup(ctx, "key-1", "alice"); ok {
		fmt.Println(c.Status, string(c.WireBody))
	}
	_, ok := store.Lookup(ctx, "key-1", "bob") // another caller never sees it
	fmt.Println(ok)
	// Output:
	// 200 {"ok":true}
	// false
}

// The claim protocol by hand: what the Engine does for you.
func ExampleClaimStore() {
	var store idempotency.ClaimStore = idempotency.NewInMemoryStore()
	ctx := context.Background()
	req := idempotency.ClaimRequest{Fingerprint: "fp", Owner: driver.NewOwner(), Lease: 30e9}

	cl, _ := store.Begin(ctx, "k", "alice", req)
	fmt.Println(cl.Status)
	other := req
	other.Owner = driver.NewOwner()
	dup, _ := store.Begin(ctx, "k", "alice", other)
	fmt.Println(dup.Status)

	_ = store.Complete(ctx, cl.Token, idempotency.Cached{Status: 200, WireBody: []byte("done")})
	again, _ := store.Begin(ctx, "k", "alice", other)
	fmt.Println(again.Status, string(again.Record.WireBody))
	// Output:
	// acquired
	// in flight
	// replay done
}
