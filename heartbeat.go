package idempotency

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// heartbeat keeps a claim's lease while its command runs.
//
// The engine keeps its own estimate of the lease: it is confirmed until the
// time the last successful Renew (or the Begin that made the claim) was
// sent, plus the lease. The store started that lease when the call reached
// it, no earlier, so (drift between the two clocks' rates aside) the store's
// lease ends no earlier than the estimate.
//
//   - Cadence: a renewal falls due a third of the lease after the lease was
//     last confirmed, so a command that ends within a third of its lease
//     costs no renewal, no goroutine, and no timer beyond the one an engine's
//     heartbeats share (see beatQueue).
//   - Retry: a renewal that fails with anything but ErrLeaseLost (the store
//     is unavailable, or the attempt ran out of time) is tried again after a
//     short backoff (renewBackoff doubling to maxRenewBackoff) for as long as
//     the estimate lasts. Each attempt is bounded by a third of the lease and
//     by the time left before the estimate's end, so one hung attempt leaves
//     time for another.
//   - Causes: the command's context is cancelled with ErrLeaseLost when the
//     store answers that the claim is gone, and with ErrLeaseExpired when the
//     estimate runs out before a renewal succeeds: another execution may
//     have taken the key over by then, so the command should stop. Either
//     way the heartbeat ends; nothing renews that claim again.
//   - Afterwards: a command that returns a response despite the
//     cancellation still has it recorded if the store agrees. Complete is a
//     compare-and-set on the token with a live lease, so the store accepts
//     it only if this claim still holds there (its lease outlasted the
//     estimate: a renewal got through but its answer did not), and refuses
//     it with ErrLeaseLost otherwise, which ends Engine.persist's retries.
//     While the store is unreachable, persist retries as it always does (for
//     one lease from the first failure); no heartbeat renews the claim then.
//   - Stop: stop returns at once. A renewal in flight has its context
//     cancelled and, whatever it answers, queues no other renewal and
//     cancels nothing. A racing late Renew is harmless: the stores' calls
//     are atomic, and a Renew after Complete or Release answers ErrLeaseLost.
//     (A store whose Renew ignores its context keeps that goroutine, and so
//     the engine, until the call returns.)
type heartbeat struct {
	e *Engine
	tokenContext
	cancel context.CancelCauseFunc

	// Guarded by the queue's mu.
	prev, next *heartbeat         // in the queue while a renewal is due
	due        int64              // when it is due (beatQueue.mono)
	until      int64              // the estimate's end (beatQueue.mono)
	abort      context.CancelFunc // ends the renewal in flight; nil when none
	ended      bool               // stopped, or the claim lost or expired: renew no more
}

// Backoff between attempts of a renewal that failed.
const (
	renewBackoff    = 10 * time.Millisecond
	maxRenewBackoff = time.Second
)

// beats holds an engine's queue of heartbeats. The queue is allocated apart
// from the Engine, once, when the first heartbeat starts: its timer's
// function refers to the queue only, so a timer the runtime still holds (a
// stopped timer stays in its heap for a while) never keeps an Engine, or
// its store, reachable. Queued heartbeats, and renewals in flight, do refer
// to their engine, but only while their executions run.
type beats struct {
	q atomic.Pointer[beatQueue]
}

// queue returns the engine's queue, making it on first use.
func (b *beats) queue(epoch time.Time) *beatQueue {
	if q := b.q.Load(); q != nil {
		return q
	}
	q := &beatQueue{epoch: epoch}
	q.head.prev, q.head.next = &q.head, &q.head
	if b.q.CompareAndSwap(nil, q) {
		return q
	}
	return b.q.Load()
}

// beatQueue is the queue of an engine's heartbeats in the order their
// renewals fall due, and the one timer armed for the first of them while the
// queue is not empty. Every heartbeat of an engine has the same interval (a
// third of the lease) from about when it is queued, so the queue is nearly
// FIFO.
type beatQueue struct {
	mu    sync.Mutex
	head  heartbeat // sentinel of the circular queue, earliest first
	timer *time.Timer
	armed bool      // timer set and neither fired nor stopped
	epoch time.Time // the engine's, for mono
}

// start queues the heartbeat of a claim whose Begin was sent at claimed.
func (h *heartbeat) start(cancel context.CancelCauseFunc, claimed time.Time) {
	h.cancel = cancel
	q := h.e.beats.queue(h.e.epoch)
	c := q.mono(claimed)
	q.mu.Lock()
	h.until = c + int64(h.e.lease)
	q.push(h, c+int64(h.e.lease/3))
	q.mu.Unlock()
}

// push queues h to be renewed at due (mono). Heartbeats are pushed in about
// the order they fall due, so the place is found from the back. The caller
// holds mu.
func (q *beatQueue) push(h *heartbeat, due int64) {
	h.due = due
	after := q.head.prev
	for after != &q.head && after.due > due {
		after = after.prev
	}
	h.prev, h.next = after, after.next
	h.prev.next, h.next.prev = h, h
	if !q.armed || q.head.next == h {
		q.arm(q.head.next.due)
	}
}

// arm sets the timer to fire at due. The caller holds mu.
func (q *beatQueue) arm(due int64) {
	d := time.Duration(due - q.mono(time.Now()))
	if q.timer == nil {
		q.timer = time.AfterFunc(d, q.tick)
	} else {
		q.timer.Reset(d)
	}
	q.armed = true
}

// unlink takes h out of the queue if it is in it, and stops the timer when
// the queue is left empty. The caller holds mu.
func (q *beatQueue) unlink(h *heartbeat) {
	if h.next == nil {
		return
	}
	h.prev.next, h.next.prev = h.next, h.prev
	h.prev, h.next = nil, nil
	if q.armed && q.head.next == &q.head {
		q.timer.Stop()
		q.armed = false
	}
}

// tick starts the renewals that are due and sets the timer for the next.
func (q *beatQueue) tick() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.armed = false
	now := q.mono(time.Now())
	for h := q.head.next; h != &q.head && h.due <= now; h = q.head.next {
		q.unlink(h)
		go h.renew(q) // store calls: not under mu, and not in the timer's goroutine
	}
	if h := q.head.next; h != &q.head {
		q.arm(h.due)
	}
}

// renew renews the lease, retrying failures until the estimate runs out,
// and queues the next renewal; it gives up when the heartbeat ends (it was
// stopped) and ends it when the claim is lost or the estimate runs out.
func (h *heartbeat) renew(q *beatQueue) {
	// Renew even when the caller has gone: the command still runs and
	// must keep its claim. stop cancels ctx: nobody waits for its answer.
	ctx, abort := context.WithCancel(context.WithoutCancel(h.Context))
	defer abort()
	q.mu.Lock()
	if h.ended {
		q.mu.Unlock()
		return
	}
	h.abort = abort
	until := h.until
	q.mu.Unlock()

	lease := h.e.lease
	for backoff := renewBackoff; ; backoff = min(2*backoff, maxRenewBackoff) {
		sent := time.Now()
		left := time.Duration(until - q.mono(sent))
		if left <= 0 {
			h.end(q, ErrLeaseExpired)
			return
		}
		attempt, done := context.WithTimeout(ctx, min(lease/3, left))
		err := h.e.claims.Renew(attempt, h.tok, lease)
		done()
		if ctx.Err() == nil { // not cut short by stop
			h.e.storeCall(h.Context, "renew", sent, err)
		}
		switch {
		case err == nil:
			q.mu.Lock()
			if !h.ended {
				h.abort = nil
				h.until = q.mono(sent) + int64(lease)
				q.push(h, q.mono(sent)+int64(lease/3))
			}
			q.mu.Unlock()
			return
		case errors.Is(err, ErrLeaseLost):
			h.end(q, ErrLeaseLost)
			return
		}
		// Any other failure is tried again soon, within the estimate.
		if wait := min(backoff, time.Duration(until-q.mono(time.Now()))); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		if ctx.Err() != nil { // stopped
			return
		}
	}
}

// end ends the heartbeat with cause, unless it was stopped already: a
// renewal that answers after stop cancels nothing.
func (h *heartbeat) end(q *beatQueue, cause error) {
	q.mu.Lock()
	if h.ended {
		q.mu.Unlock()
		return
	}
	h.ended, h.abort = true, nil
	q.mu.Unlock()
	h.lost(cause) // tells the observer (not under mu), then cancels
}

// lost cancels the heartbeat's command with cause, once a lost lease has
// been seen (by the observer, or in the log).
func (h *heartbeat) lost(cause error) {
	e := h.e
	switch {
	case e.obs == nil:
		slog.WarnContext(h.Context, "idempotency: a running command lost its claim; its context is cancelled",
			"fence", h.tok.Fence, "cause", cause)
	case e.obs.LeaseLost != nil:
		e.obs.LeaseLost(h.Context, h.tok, cause)
	}
	h.cancel(cause)
}

// mono is t as nanoseconds on the queue's monotonic clock (since the engine
// was made): wall clock steps do not move it.
func (q *beatQueue) mono(t time.Time) int64 { return int64(t.Sub(q.epoch)) }

// stop ends the heartbeat at once: a renewal in flight is cancelled, not
// waited for, and when it returns it neither queues another nor cancels the
// command's context.
func (h *heartbeat) stop() {
	q := h.e.beats.q.Load()
	q.mu.Lock()
	defer q.mu.Unlock()
	h.ended = true
	q.unlink(h)
	if h.abort != nil {
		h.abort()
		h.abort = nil
	}
}
