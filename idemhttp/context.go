package idemhttp

import (
	"context"
	"sync"
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
// Its zero value is not usable; call init.
type runContext struct {
	req context.Context

	mu      sync.Mutex
	done    chan struct{} // made by the first Done before the start
	stop    func() bool   // stops watching req; nil until Done started it
	err     error         // set, and done closed, when req ended before the start
	started bool
}

func (c *runContext) init(req context.Context) { c.req = req }

// Deadline implements context.Context: none, whatever the request's.
func (c *runContext) Deadline() (time.Time, bool) { return time.Time{}, false }

// Value implements context.Context with the request's values.
func (c *runContext) Value(key any) any { return c.req.Value(key) }

// Done implements context.Context. Once the command has started, a first
// call returns nil: the context can no longer end.
func (c *runContext) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done != nil || (c.started && c.err == nil) {
		return c.done
	}
	c.check() // done is still nil: this only sets err
	c.done = make(chan struct{})
	if c.err != nil {
		close(c.done)
		return c.done
	}
	c.stop = context.AfterFunc(c.req, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.check()
	})
	return c.done
}

// check ends c if the request has ended and the command has not started.
// The caller holds mu.
func (c *runContext) check() {
	if c.started || c.err != nil {
		return
	}
	if c.err = c.req.Err(); c.err != nil && c.done != nil {
		close(c.done)
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

// release stops watching the request's context.
func (c *runContext) release() {
	c.mu.Lock()
	stop := c.stop
	c.mu.Unlock()
	if stop != nil {
		stop()
	}
}
