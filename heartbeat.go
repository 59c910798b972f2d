package idempotency

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// heartbeat renews a claim's lease every third of the lease while its
// command runs, and cancels the run with ErrLeaseLost if the claim is lost.
// An engine's heartbeats share one timer (see beats), so a command that ends
// within a third of its lease costs no renewal, no timer and no goroutine.
type heartbeat struct {
	e *Engine
	tokenContext
	cancel context.CancelCauseFunc

	// Guarded by the queue's mu.
	prev, next *heartbeat         // in the queue while a renewal is due
	due        int64              // when it is due (beatQueue.mono)
	abort      context.CancelFunc // ends the renewal in flight; nil when none
	ended      bool               // stopped, or the claim lost: renew no more
}

// beats holds an engine's queue of heartbeats. The queue is allocated apart
// from the Engine, once, when the first heartbeat starts: its timer's
// function refers to the queue only, so a timer the runtime still holds (a
// stopped timer stays in its heap for a while) never keeps an Engine, or
// its store, reachable. Queued heartbeats do refer to their engine, but
// only while their executions run.
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
// third of the lease), so a heartbeat queued now falls due after all those
// queued before it: the queue is FIFO.
type beatQueue struct {
	mu    sync.Mutex
	head  heartbeat // sentinel of the circular queue, earliest first
	timer *time.Timer
	armed bool      // timer set and neither fired nor stopped
	epoch time.Time // the engine's, for mono
}

// start queues the heartbeat of a claim made no earlier than claimed.
func (h *heartbeat) start(cancel context.CancelCauseFunc, claimed time.Time) {
	h.cancel = cancel
	q := h.e.beats.queue(h.e.epoch)
	due := q.mono(claimed) + int64(h.e.lease/3)
	q.mu.Lock()
	q.push(h, due)
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
		go h.renew(q) // a store call: not under mu, and not in the timer's goroutine
	}
	if h := q.head.next; h != &q.head {
		q.arm(h.due)
	}
}

// renew renews the lease once and queues the next renewal, unless the
// heartbeat has ended (it was stopped, or the claim is lost).
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
	q.mu.Unlock()

	// Each attempt is bounded by the next tick.
	attempt, done := context.WithTimeout(ctx, h.e.lease/3)
	err := h.e.claims.Renew(attempt, h.tok, h.e.lease)
	done()

	q.mu.Lock()
	defer q.mu.Unlock()
	if h.ended { // stopped while renewing: the answer is nobody's business
		return
	}
	h.abort = nil
	if errors.Is(err, ErrLeaseLost) {
		h.ended = true
		h.cancel(ErrLeaseLost)
		return
	}
	// Any other failure is retried on the next tick; the lease still has
	// two thirds to run.
	q.push(h, q.mono(time.Now())+int64(h.e.lease/3))
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
