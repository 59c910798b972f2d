package reliability

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/idemkit/idempotency"
)

// op builds one recorded operation for the model tests.
func op(client int, call, ret int64, c Call, o Outcome) porcupine.Operation {
	if c.Pair == "" {
		c.Pair = "p"
	}
	return porcupine.Operation{ClientId: client, Input: c, Call: call, Output: o, Return: ret}
}

var (
	acquired = func(fence uint64) Outcome { return Outcome{Status: idempotency.ClaimAcquired, Fence: fence} }
	inflight = Outcome{Status: idempotency.ClaimInFlight}
	lost     = Outcome{LeaseLost: true}
	okOut    = Outcome{}
	unknown  = Outcome{Unknown: true}
)

func beginCall(owner, fp string) Call { return Call{Op: OpBegin, Owner: owner, Fingerprint: fp} }
func completeCall(owner string, fence uint64, body string) Call {
	return Call{Op: OpComplete, Owner: owner, Fence: fence, Body: body}
}

// TestClaimModel checks that the model accepts the histories the contract
// allows and refuses those it forbids: the checker can fail.
func TestClaimModel(t *testing.T) {
	const forever = 1 << 62
	tests := []struct {
		name string
		ops  []porcupine.Operation
		want bool
	}{
		{"claim, complete, replay", []porcupine.Operation{
			op(0, 0, 1, beginCall("a", "f"), acquired(1)),
			op(0, 2, 3, completeCall("a", 1, "x"), okOut),
			op(1, 4, 5, beginCall("b", "f"), Outcome{Status: idempotency.ClaimReplay, Body: "x"}),
			op(1, 6, 7, Call{Op: OpLookup}, Outcome{Hit: true, Body: "x"}),
		}, true},
		{"two concurrent claims both acquired", []porcupine.Operation{
			op(0, 0, 10, beginCall("a", "f"), acquired(1)),
			op(1, 1, 9, beginCall("b", "f"), acquired(2)),
		}, false},
		{"concurrent claims: one acquires, one sees it in flight", []porcupine.Operation{
			op(0, 0, 10, beginCall("a", "f"), acquired(1)),
			op(1, 1, 9, beginCall("b", "f"), inflight),
		}, true},
		{"in flight on an absent record", []porcupine.Operation{
			op(0, 0, 1, beginCall("a", "f"), inflight),
		}, false},
		{"replay of the wrong body", []porcupine.Operation{
			op(0, 0, 1, beginCall("a", "f"), acquired(1)),
			op(0, 2, 3, completeCall("a", 1, "x"), okOut),
			op(1, 4, 5, beginCall("b", "f"), Outcome{Status: idempotency.ClaimReplay, Body: "y"}),
		}, false},
		{"stale holder completes", []porcupine.Operation{
			op(0, 0, 1, beginCall("a", "f"), acquired(1)),
			op(0, 2, 3, Call{Op: OpRelease, Owner: "a", Fence: 1}, okOut),
			op(1, 4, 5, beginCall("b", "f"), acquired(2)),
			op(0, 6, 7, completeCall("a", 1, "x"), okOut),
		}, false},
		{"stale holder is refused", []porcupine.Operation{
			op(0, 0, 1, beginCall("a", "f"), acquired(1)),
			op(0, 2, 3, Call{Op: OpRelease, Owner: "a", Fence: 1}, okOut),
			op(1, 4, 5, beginCall("b", "f"), acquired(2)),
			op(0, 6, 7, completeCall("a", 1, "x"), lost),
		}, true},
		{"fence does not grow after a release", []porcupine.Operation{
			op(0, 0, 1, beginCall("a", "f"), acquired(5)),
			op(0, 2, 3, Call{Op: OpRelease, Owner: "a", Fence: 5}, okOut),
			op(1, 4, 5, beginCall("b", "f"), acquired(5)),
		}, false},
		{"mismatch alters the record", []porcupine.Operation{
			op(0, 0, 1, beginCall("a", "f"), acquired(1)),
			op(0, 2, 3, completeCall("a", 1, "x"), okOut),
			op(1, 4, 5, beginCall("b", "g"), Outcome{Status: idempotency.ClaimMismatch}),
			op(1, 6, 7, Call{Op: OpLookup}, Outcome{Hit: true, Body: "x"}),
		}, true},
		{"a fingerprint-less retry is no mismatch", []porcupine.Operation{
			op(0, 0, 1, beginCall("a", "f"), acquired(1)),
			op(1, 2, 3, beginCall("b", ""), Outcome{Status: idempotency.ClaimMismatch}),
		}, false},
		{"repeated complete is idempotent", []porcupine.Operation{
			op(0, 0, 1, beginCall("a", "f"), acquired(1)),
			op(0, 2, 3, completeCall("a", 1, "x"), okOut),
			op(0, 4, 5, completeCall("a", 1, "x"), okOut),
		}, true},
		{"lost reply of a claim: the owner's retry gets its token", []porcupine.Operation{
			op(0, 0, forever, beginCall("a", "f"), unknown),
			op(1, 2, 3, beginCall("b", "f"), inflight),
			op(0, 4, 5, beginCall("a", "f"), acquired(7)),
			op(0, 6, 7, completeCall("a", 7, "x"), okOut),
		}, true},
		{"lost reply of a claim that did not happen", []porcupine.Operation{
			op(0, 0, forever, beginCall("a", "f"), unknown),
			op(1, 2, 3, beginCall("b", "f"), acquired(1)),
		}, true},
		{"lost reply, then the owner's retry gets another token", []porcupine.Operation{
			op(0, 0, forever, beginCall("a", "f"), unknown),
			op(0, 2, 3, beginCall("a", "f"), acquired(1)),
			op(0, 4, 5, beginCall("a", "f"), acquired(2)),
		}, false},
		{"lookup sees a record in flight", []porcupine.Operation{
			op(0, 0, 1, beginCall("a", "f"), acquired(1)),
			op(1, 2, 3, Call{Op: OpLookup}, Outcome{Hit: true, Body: ""}),
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := porcupine.CheckOperations(ClaimModel(), tt.ops); got != tt.want {
				t.Errorf("linearizable = %v, want %v", got, tt.want)
			}
		})
	}
}

// unfencedStore is a deliberately broken ClaimStore: Begin checks, then
// claims, in two steps (Lookup-then-Store, the race the claim protocol exists to close).
type unfencedStore struct {
	*idempotency.InMemoryStore
	checked sync.WaitGroup // done by each Begin between its check and its claim
	gate    chan struct{}  // closed once both racers have checked
	mu      sync.Mutex
	held    map[string]bool
	n       uint64
}

func (s *unfencedStore) Begin(ctx context.Context, key, identity string, req idempotency.ClaimRequest) (idempotency.Claim, error) {
	s.mu.Lock()
	taken := s.held[key+"\x00"+identity]
	s.mu.Unlock()
	s.checked.Done()
	<-s.gate
	if taken {
		return idempotency.Claim{Status: idempotency.ClaimInFlight}, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.held[key+"\x00"+identity] = true
	s.n++
	return idempotency.Claim{Status: idempotency.ClaimAcquired,
		Token: idempotency.Token{Key: key, Identity: identity, Owner: req.Owner, Fence: s.n}}, nil
}

// TestHistoryCatchesDoubleClaim runs two racing Begins on a store that
// checks and claims in two steps, and expects porcupine to refuse the
// history: the harness can see the bug it exists for.
func TestHistoryCatchesDoubleClaim(t *testing.T) {
	s := &unfencedStore{InMemoryStore: idempotency.NewInMemoryStore(), gate: make(chan struct{}), held: map[string]bool{}}
	w := newWorkload(s, false)
	p := pairRef{"k", "id"}
	var wg sync.WaitGroup
	s.checked.Add(2)
	for c := range 2 {
		wg.Go(func() { w.begin(c, p, "owner"+string(rune('a'+c)), "f") })
	}
	s.checked.Wait() // both racers have checked before either claims
	close(s.gate)
	wg.Wait()
	if err := w.err(); err != nil {
		t.Fatal(err)
	}
	res, _ := w.h.Check(10 * time.Second)
	if res != porcupine.Illegal {
		t.Errorf("Check = %s, want %s: two Acquired for one record went unnoticed", res, porcupine.Illegal)
	}
}
