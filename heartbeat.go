package idempotency

import (
	"context"
	"errors"
	"sync"
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

	// In e.beats's queue while a renewal is due; guarded by e.beats.mu.
	prev, next *heartbeat
	due        int64 // Engine.mono

	mu      sync.Mutex // held while renewing; guards stopped
	stopped bool
}

// beats is the queue of an engine's heartbeats in the order their renewals
// fall due, and the one timer armed for the first of them. Every heartbeat of
// an engine has the same interval (a third of the lease), so a heartbeat
// queued now falls due after all those queued before it: the queue is FIFO.
type beats struct {
	mu    sync.Mutex
	head  heartbeat // sentinel of the circular queue, earliest first
	timer *time.Timer
	armed bool // timer set and not fired yet
}

// start queues the heartbeat of a claim made no earlier than claimed.
func (h *heartbeat) start(cancel context.CancelCauseFunc, claimed time.Time) {
	h.cancel = cancel
	h.e.beats.push(h, h.e.mono(claimed)+int64(h.e.lease/3))
}

// push queues h to be renewed at due (Engine.mono). Heartbeats are pushed
// in about the order they fall due, so the place is found from the back.
func (b *beats) push(h *heartbeat, due int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.head.next == nil {
		b.head.prev, b.head.next = &b.head, &b.head
	}
	h.due = due
	after := b.head.prev
	for after != &b.head && after.due > due {
		after = after.prev
	}
	h.prev, h.next = after, after.next
	h.prev.next, h.next.prev = h, h
	if !b.armed || b.head.next == h {
		b.arm(h.e, b.head.next.due)
	}
}

// arm sets the timer to fire at due. The caller holds mu.
func (b *beats) arm(e *Engine, due int64) {
	d := time.Duration(due - e.mono(time.Now()))
	if b.timer == nil {
		b.timer = time.AfterFunc(d, e.tick)
	} else {
		b.timer.Reset(d)
	}
	b.armed = true
}

// unlink takes h out of the queue if it is in it. The caller holds mu.
func (b *beats) unlink(h *heartbeat) {
	if h.next == nil {
		return
	}
	h.prev.next, h.next.prev = h.next, h.prev
	h.prev, h.next = nil, nil
}

// tick starts the renewals that are due and sets the timer for the next.
func (e *Engine) tick() {
	b := &e.beats
	b.mu.Lock()
	defer b.mu.Unlock()
	b.armed = false
	now := e.mono(time.Now())
	for h := b.head.next; h != &b.head && h.due <= now; h = b.head.next {
		b.unlink(h)
		go h.renew() // a store call: not under mu, and not in the timer's goroutine
	}
	if h := b.head.next; h != &b.head {
		b.arm(e, h.due)
	}
}

// renew renews the lease once and queues the next renewal, unless the
// heartbeat was stopped or the claim is lost.
func (h *heartbeat) renew() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.stopped {
		return
	}
	// Renew even when the caller has gone: the command still runs and
	// must keep its claim. Each attempt is bounded by the next tick.
	ctx, done := context.WithTimeout(context.WithoutCancel(h.Context), h.e.lease/3)
	err := h.e.claims.Renew(ctx, h.tok, h.e.lease)
	done()
	if errors.Is(err, ErrLeaseLost) {
		h.lost(ErrLeaseLost)
		return
	}
	// Any other failure is retried on the next tick; the lease still has
	// two thirds to run.
	h.e.beats.push(h, h.e.mono(time.Now())+int64(h.e.lease/3))
}

// mono is t as nanoseconds on the engine's monotonic clock (since the
// engine was made), for the renewal queue: wall clock steps do not move it.
func (e *Engine) mono(t time.Time) int64 { return int64(t.Sub(e.epoch)) }

// stop ends the heartbeat; when it returns, no renewal runs or will start.
func (h *heartbeat) stop() {
	h.mu.Lock() // waits for a renewal in progress
	h.stopped = true
	h.mu.Unlock()
	b := &h.e.beats
	b.mu.Lock()
	b.unlink(h)
	b.mu.Unlock()
}
