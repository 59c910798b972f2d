package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/storetest"
)

// The fence rule on its own: per key and caller, a write whose fence is at
// least the highest seen is accepted (the holder's own retry, a newer
// holder), a lower one is refused, and fences of other keys never
// interfere.
func TestFenceRule(t *testing.T) {
	bank := newPayments(1000)
	tok := func(key string, fence uint64) idempotency.Token {
		return idempotency.Token{Key: key, Identity: "alice", Fence: fence}
	}
	steps := []struct {
		name        string
		tok         idempotency.Token
		wantCharged bool
		wantStale   bool
	}{
		{"first holder charges", tok("k", 5), true, false},
		{"its own retry adopts", tok("k", 5), false, false},
		{"a newer holder adopts", tok("k", 9), false, false},
		{"the older holder is refused", tok("k", 5), false, true},
		{"another key is independent", tok("other", 1), true, false},
		{"another caller is independent", idempotency.Token{Key: "k", Identity: "bob", Fence: 1}, true, false},
	}
	for _, s := range steps {
		charged, err := bank.Charge(s.tok, 100)
		if charged != s.wantCharged || errors.Is(err, errStaleFence) != s.wantStale {
			t.Errorf("%s: Charge(%+v) = (%v, %v), want charged %v, stale %v", s.name, s.tok, charged, err, s.wantCharged, s.wantStale)
		}
	}
	if err := bank.Settle(tok("k", 5)); !errors.Is(err, errStaleFence) {
		t.Errorf("Settle by the older holder = %v, want errStaleFence", err)
	}
	if err := bank.Settle(tok("k", 9)); err != nil {
		t.Errorf("Settle by the newest holder = %v, want nil", err)
	}
	if want := 1000 - 3*100; bank.balance != want {
		t.Errorf("balance = %d, want %d (three charges: k, other, bob's k)", bank.balance, want)
	}
}

// stallingHolder runs req on e in a goroutine with a command that runs
// before (if not nil), reports its token on claimed, waits for wake, then
// runs after; Do's result arrives on the returned channel.
func stallingHolder(e *idempotency.Engine, req idempotency.Request, claimed chan<- idempotency.Token, wake <-chan struct{},
	before func(context.Context) error, after idempotency.Func) <-chan fenceDo {
	done := make(chan fenceDo, 1)
	go func() {
		res, err := e.Do(context.Background(), req, func(ctx context.Context) (idempotency.Response, error) {
			if before != nil {
				if err := before(ctx); err != nil {
					return idempotency.Response{}, err
				}
			}
			tok, _ := idempotency.TokenFromContext(ctx)
			claimed <- tok
			<-wake
			return after(ctx)
		})
		done <- fenceDo{res, err}
	}()
	return done
}

type fenceDo struct {
	res idempotency.Result
	err error
}

// A plain handler whose holder stalls past its lease before its effect: the
// new holder (higher fence) takes the key over and has its effect; the
// stale holder's write, after it, is refused, and the key ends with one
// effect and the new holder's record. No sleeps: the store's clock is
// advanced past the lease.
func TestFenceStaleHolderBeforeItsEffect(t *testing.T) {
	clock := storetest.NewClock()
	store := idempotency.NewInMemoryStore(idempotency.WithClock(clock.Now))
	a, b := idempotency.NewEngine(store), idempotency.NewEngine(store)
	bank := newPayments(1000)
	req := idempotency.Request{Key: "order-1", Identity: "alice", Fingerprint: "fp"}
	charge := func(ctx context.Context) (idempotency.Response, error) {
		tok, _ := idempotency.TokenFromContext(ctx)
		if _, err := bank.Charge(tok, 100); err != nil {
			return idempotency.Response{}, err
		}
		return idempotency.Response{Status: 201, Body: []byte("charged")}, nil
	}
	claimed, wake := make(chan idempotency.Token), make(chan struct{})
	doneA := stallingHolder(a, req, claimed, wake, nil, charge)
	stale := <-claimed
	clock.Advance(idempotency.DefaultLease + 1)

	resB, err := b.Do(context.Background(), req, charge)
	if err != nil || !resB.Recorded || resB.Fence <= stale.Fence {
		t.Fatalf("takeover: Do = (%+v, %v), want recorded with a fence > %d", resB, err, stale.Fence)
	}
	close(wake)
	gotA := <-doneA
	if !errors.Is(gotA.err, errStaleFence) {
		t.Errorf("stale holder: Do error = %v, want errStaleFence", gotA.err)
	}
	if bank.balance != 900 {
		t.Errorf("balance = %d, want 900: one charge", bank.balance)
	}
	// The stale holder's failure released nothing of the new holder's.
	replay, err := a.Do(context.Background(), req, charge)
	if err != nil || !replay.Replayed || string(replay.Response.Body) != "charged" {
		t.Errorf("retry = (%+v, %v), want the new holder's response replayed", replay, err)
	}
}

// A plain handler whose holder has its effect and then stalls past its
// lease before Complete: the new holder finds the effect made and adopts it
// (the downstream's row is keyed by the idempotency key), raising the
// fence, so the stale holder's later step is refused and its Complete
// fails with ErrLeaseLost. One effect, whichever order the holders write in.
func TestFenceStaleHolderAfterItsEffect(t *testing.T) {
	clock := storetest.NewClock()
	store := idempotency.NewInMemoryStore(idempotency.WithClock(clock.Now))
	// An Observer of its own keeps the stale holder's record error out of the log.
	a := idempotency.NewEngine(store, idempotency.WithObserver(&idempotency.Observer{}))
	b := idempotency.NewEngine(store)
	bank := newPayments(1000)
	req := idempotency.Request{Key: "order-2", Identity: "alice", Fingerprint: "fp"}
	settle := func(ctx context.Context) (idempotency.Response, error) {
		tok, _ := idempotency.TokenFromContext(ctx)
		if err := bank.Settle(tok); err != nil {
			return idempotency.Response{}, err
		}
		return idempotency.Response{Status: 201, Body: []byte("settled")}, nil
	}

	charge := func(ctx context.Context) error {
		tok, _ := idempotency.TokenFromContext(ctx)
		if charged, err := bank.Charge(tok, 100); err != nil || !charged {
			return fmt.Errorf("first holder's Charge = (%v, %v), want a charge", charged, err)
		}
		return nil
	}
	claimed, wake := make(chan idempotency.Token), make(chan struct{})
	doneA := stallingHolder(a, req, claimed, wake, charge, settle)
	stale := <-claimed // charged, and stalled before its next step
	clock.Advance(idempotency.DefaultLease + 1)

	resB, err := b.Do(context.Background(), req, func(ctx context.Context) (idempotency.Response, error) {
		tok, _ := idempotency.TokenFromContext(ctx)
		if again, err := bank.Charge(tok, 100); err != nil || again {
			t.Errorf("new holder's Charge = (%v, %v), want the first charge adopted", again, err)
		}
		return settle(ctx)
	})
	if err != nil || !resB.Recorded || resB.Fence <= stale.Fence {
		t.Fatalf("takeover: Do = (%+v, %v), want recorded with a fence > %d", resB, err, stale.Fence)
	}
	close(wake)
	gotA := <-doneA
	if !errors.Is(gotA.err, errStaleFence) {
		t.Errorf("stale holder's Settle: Do error = %v, want errStaleFence", gotA.err)
	}
	if bank.balance != 900 {
		t.Errorf("balance = %d, want 900: one charge", bank.balance)
	}
	if st := bank.byKey[payKey{"alice", "order-2"}].status; st != "settled" {
		t.Errorf("payment status = %q, want settled (by the new holder)", st)
	}

	// Without a downstream step after it, the stale holder learns at
	// Complete: its response is not recorded.
	req.Key = "order-3"
	wake = make(chan struct{})
	doneA = stallingHolder(a, req, claimed, wake, nil, func(context.Context) (idempotency.Response, error) {
		return idempotency.Response{Status: 201, Body: []byte("stale")}, nil
	})
	<-claimed
	clock.Advance(idempotency.DefaultLease + 1)
	if res, err := b.Do(context.Background(), req, answerNew); err != nil || !res.Recorded {
		t.Fatalf("takeover of order-3 = (%+v, %v), want recorded", res, err)
	}
	close(wake)
	gotA = <-doneA
	if gotA.err != nil || gotA.res.Recorded || !errors.Is(gotA.res.RecordErr, idempotency.ErrLeaseLost) {
		t.Errorf("stale holder's Do = (%+v, %v), want its response, not recorded, RecordErr ErrLeaseLost", gotA.res, gotA.err)
	}
}

func answerNew(context.Context) (idempotency.Response, error) {
	return idempotency.Response{Status: 201, Body: []byte("new")}, nil
}
