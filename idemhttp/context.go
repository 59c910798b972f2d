package idemhttp

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// runContext is the context Engine.Do runs with. Until the command starts
// it ends when the request's context ends, so a client that leaves stops a
// claim or a wait (WithWait) that has not started anything. Once the command
// has started it never ends: the command runs to completion and its
// response is recorded even if the client leaves (the engine still cancels
// the command's own context when its claim is lost). It carries the
// request's values throughout.
//
// It watches the request's context only once someone asks for Done: a
// replay from a store that never looks at its context costs no watcher.
// Its Done is that of an inner cancelable context, which Value exposes to
// the context package, so that contexts derived from a runContext (the
// engine's, for the command) are cancelled along with it directly, without a
// goroutine each. Its zero value is not usable; call init.
type runContext struct {
	req   context.Context
	inner atomic.Value // context.Context, set by the first Done before the start

	mu      sync.Mutex
	end     context.CancelCauseFunc // ends inner
	stop    func() bool             // stops watching req; nil until Done started it
	err     error                   // set, and inner ended, when req ended before the start
	started bool
}

func (c *runContext) init(req context.Context) { c.req = req }

// inUse reports whether init was called: whether Do runs with c.
func (c *runContext) inUse() bool { return c.req != nil }

// Deadline implements context.Context: none, whatever the request's.
func (c *runContext) Deadline() (time.Time, bool) { return time.Time{}, false }

// Value implements context.Context with the request's values. The inner
// context answers first: it has no values of its own, only the context
// package's key for the cancelable context it is.
func (c *runContext) Value(key any) any {
	if in, _ := c.inner.Load().(context.Context); in != nil {
		if v := in.Value(key); v != nil {
			return v
		}
	}
	return c.req.Value(key)
}

// Done implements context.Context. Once the command has started, a first
// call returns nil: the context can no longer end.
func (c *runContext) Done() <-chan struct{} {
	if in, _ := c.inner.Load().(context.Context); in != nil {
		return in.Done()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if in, _ := c.inner.Load().(context.Context); in != nil {
		return in.Done()
	}
	if c.started && c.err == nil {
		return nil
	}
	ctx, end := context.WithCancelCause(context.Background())
	c.end = end
	c.inner.Store(ctx)
	if c.check(); c.err == nil {
		c.stop = context.AfterFunc(c.req, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.check()
		})
	}
	return ctx.Done()
}

// check ends c if the request has ended and the command has not started.
// The caller holds mu.
func (c *runContext) check() {
	if c.started {
		return
	}
	if c.err == nil {
		c.err = c.req.Err()
	}
	if c.err != nil && c.end != nil {
		c.end(context.Cause(c.req))
	}
}

// Err implements context.Context.
func (c *runContext) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.check()
	return c.err
}

// start marks the command as started, detaching it from the request. It
// returns the request context's error if the request ended first, in which
// case the command must not run.
func (c *runContext) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.check()
	if c.err != nil {
		return c.err
	}
	c.started = true
	return nil
}

// release stops watching the request's context. It does not end the
// context: one that started never ends.
func (c *runContext) release() {
	c.mu.Lock()
	stop := c.stop
	c.mu.Unlock()
	if stop != nil {
		stop()
	}
}
