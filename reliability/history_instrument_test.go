package reliability

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/idemkit/idempotency"
)

// History records concurrent claim-protocol calls, with their call and
// return times, for a linearizability check against ClaimModel. It is safe
// for concurrent use. Build it with NewHistory.
type History struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

// NewHistory returns an empty history whose clock starts now.
func NewHistory() *History { return &History{start: time.Now()} }

// Record runs fn as one call c of client (a small integer naming the
// goroutine that calls, for porcupine's visualisation) and records it. A
// call whose Outcome is Unknown is recorded as returning after every other
// call: it may have taken effect at any moment after it began.
func (h *History) Record(client int, c Call, fn func() Outcome) Outcome {
	call := time.Since(h.start).Nanoseconds()
	o := fn()
	ret := time.Since(h.start).Nanoseconds()
	if o.Unknown {
		ret = math.MaxInt64
	}
	h.mu.Lock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: c, Call: call, Output: o, Return: ret})
	h.mu.Unlock()
	return o
}

// Len returns the number of calls recorded.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops)
}

// Unknown returns the number of calls recorded with an unknown outcome.
func (h *History) Unknown() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, op := range h.ops {
		if op.Output.(Outcome).Unknown {
			n++
		}
	}
	return n
}

// Check checks the history against ClaimModel, giving up after timeout
// (porcupine.Unknown). For an illegal history, info can be passed to
// porcupine.Visualize.
func (h *History) Check(timeout time.Duration) (porcupine.CheckResult, porcupine.LinearizationInfo) {
	h.mu.Lock()
	ops := append([]porcupine.Operation(nil), h.ops...)
	h.mu.Unlock()
	return porcupine.CheckOperationsVerbose(ClaimModel(), ops, timeout)
}

// BeginOutcome turns what Begin returned into an Outcome. A failure that
// may or may not have reached the store (ErrStoreUnavailable, a context
// error) is Unknown; any other error is returned, since no valid call
// fails with it.
func BeginOutcome(cl idempotency.Claim, err error) (Outcome, error) {
	if err != nil {
		return unknownOr(err)
	}
	o := Outcome{Status: cl.Status}
	switch cl.Status {
	case idempotency.ClaimAcquired:
		o.Fence = cl.Token.Fence
	case idempotency.ClaimReplay:
		if cl.Record == nil {
			return Outcome{}, errors.New("begin: replay without a record")
		}
		o.Body = string(cl.Record.WireBody)
	}
	return o, nil
}

// TokenOutcome turns what Complete, Release or Renew returned into an
// Outcome, as BeginOutcome does.
func TokenOutcome(err error) (Outcome, error) {
	switch {
	case err == nil:
		return Outcome{}, nil
	case errors.Is(err, idempotency.ErrLeaseLost):
		return Outcome{LeaseLost: true}, nil
	}
	return unknownOr(err)
}

// LookupOutcome turns what Lookup returned into an Outcome. Lookup reports
// a store failure as a miss, so when faults are being injected (faulty) a
// miss is Unknown: it says nothing about the record.
func LookupOutcome(c *idempotency.Cached, ok, faulty bool) Outcome {
	if ok {
		return Outcome{Hit: true, Body: string(c.WireBody)}
	}
	return Outcome{Unknown: faulty}
}

func unknownOr(err error) (Outcome, error) {
	if errors.Is(err, idempotency.ErrStoreUnavailable) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled) {
		return Outcome{Unknown: true}, nil
	}
	return Outcome{}, fmt.Errorf("unexpected error: %w", err)
}
