package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/storetest"
)

// payments stands in for a downstream system with a store of its own (a
// payment provider, another service's database). It refuses stale holders
// with the fence rule: per idempotency key (and caller) it keeps the
// highest fence that has written, accepts a write whose fence is at least
// that, raising it, and refuses a lower one. Its SQL form is a conditional
// write on a row keyed by the idempotency key:
//
//	INSERT INTO payments (identity, key, fence, amount) VALUES ($1, $2, $3, $4)
//	ON CONFLICT (identity, key) DO NOTHING
//	-- 1 row: the first holder's charge (debit the account in the same transaction)
//	UPDATE payments SET fence = $3 WHERE identity = $1 AND key = $2 AND fence <= $3
//	-- 1 row: an earlier holder charged, this one adopts it; 0 rows: a stale holder, refused
//
// Fences compare only between holders of one key: the row is the key's,
// never a resource that commands with other keys also write.
type payments struct {
	mu      sync.Mutex
	byKey   map[payKey]*payment
	balance int
}

type payKey struct{ identity, key string }

type payment struct {
	fence  uint64 // the highest fence that has written this payment
	amount int
	status string
}

var errStaleFence = errors.New("payments: refused: a holder with a higher fence has written this key")

func newPayments(balance int) *payments {
	return &payments{byKey: make(map[payKey]*payment), balance: balance}
}

// Charge debits amount once per key. The first holder to call it makes the
// charge; a holder with a fence at least as high as any that wrote finds
// the charge made (a takeover after the earlier holder's effect, or its own
// retry) and adopts it instead of charging again; a lower fence is refused.
func (p *payments) Charge(tok idempotency.Token, amount int) (charged bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := payKey{tok.Identity, tok.Key}
	pay, ok := p.byKey[k]
	switch {
	case !ok:
		p.byKey[k] = &payment{fence: tok.Fence, amount: amount, status: "charged"}
		p.balance -= amount
		return true, nil
	case tok.Fence < pay.fence:
		return false, fmt.Errorf("%w (fence %d < %d)", errStaleFence, tok.Fence, pay.fence)
	}
	pay.fence = tok.Fence
	return false, nil
}

// Settle is a later step of the same command: a conditional update,
// refused for a lower fence.
//
//	UPDATE payments SET status = 'settled', fence = $3 WHERE identity = $1 AND key = $2 AND fence <= $3
func (p *payments) Settle(tok idempotency.Token) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	pay, ok := p.byKey[payKey{tok.Identity, tok.Key}]
	if !ok {
		return errors.New("payments: no such payment")
	}
	if tok.Fence < pay.fence {
		return fmt.Errorf("%w (fence %d < %d)", errStaleFence, tok.Fence, pay.fence)
	}
	pay.fence, pay.status = tok.Fence, "settled"
	return nil
}

// A downstream that refuses a fence lower than the highest it has seen
// for the key refuses a stale holder. Replica A claims a key and stalls
// before its charge, past its lease; replica B takes the key over with a
// higher fence, charges and answers. When A wakes, its charge is refused,
// so the customer is charged once.
func Example_fence() {
	clock := storetest.NewClock() // the store's clock, so the lease runs out at once
	store := idempotency.NewInMemoryStore(idempotency.WithClock(clock.Now))
	replicaA, replicaB := idempotency.NewEngine(store), idempotency.NewEngine(store)
	bank := newPayments(1000)
	req := idempotency.Request{Key: "order-42", Identity: "customer-7", Fingerprint: "amount=100"}
	charge := func(ctx context.Context) (idempotency.Response, error) {
		tok, _ := idempotency.TokenFromContext(ctx)
		if _, err := bank.Charge(tok, 100); err != nil {
			return idempotency.Response{}, err
		}
		return idempotency.Response{Status: 201, Body: []byte(`"charged"`)}, nil
	}

	claimed, wake := make(chan uint64), make(chan struct{})
	done := make(chan error)
	go func() {
		_, err := replicaA.Do(context.Background(), req, func(ctx context.Context) (idempotency.Response, error) {
			tok, _ := idempotency.TokenFromContext(ctx)
			claimed <- tok.Fence
			<-wake // a long GC pause, a partition: the lease runs out meanwhile
			return charge(ctx)
		})
		done <- err
	}()
	fmt.Println("A holds fence", <-claimed)
	clock.Advance(idempotency.DefaultLease + 1)

	res, err := replicaB.Do(context.Background(), req, charge)
	fmt.Println("B:", res.Response.Status, string(res.Response.Body), "fence", res.Fence, err)

	close(wake)
	fmt.Println("A:", errors.Is(<-done, errStaleFence))

	retry, _ := replicaA.Do(context.Background(), req, charge)
	fmt.Println("retry:", retry.Response.Status, "replayed:", retry.Replayed)
	fmt.Println("balance:", bank.balance)
	// Output:
	// A holds fence 1
	// B: 201 "charged" fence 2 <nil>
	// A: true
	// retry: 201 replayed: true
	// balance: 900
}
