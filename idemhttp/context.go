package idemhttp

import (
	"context"
	"sync"
)

// runContext is the context Engine.Do runs with. Until the command starts
// it ends when the request's context ends, so a client that leaves stops a
// claim or a wait (WithWait) that has not started anything. Once the command
// has started it never ends: the command runs to completion and its
// response is recorded even if the client leaves (the engine still cancels
// the command's own context when its claim is lost). It carries the
// request's values throughout.
type runContext struct {
	context.Context // the request's values, without its cancellation

	done chan struct{}
	stop func() bool

	mu      sync.Mutex
	err     error // set when done is closed
	started bool
}

func newRunContext(req context.Context) *runContext {
	c := &runContext{Context: context.WithoutCancel(req), done: make(chan struct{})}
	if err := req.Err(); err != nil { // gone already: no need to race the AfterFunc
		c.err = err
		close(c.done)
		c.stop = func() bool { return false }
		return c
	}
	c.stop = context.AfterFunc(req, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if !c.started {
			c.err = req.Err()
			close(c.done)
		}
	})
	return c
}

// Done implements context.Context.
func (c *runContext) Done() <-chan struct{} { return c.done }

// Err implements context.Context.
func (c *runContext) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// start marks the command as started, detaching it from the request. It
// returns the request context's error if the request ended first, in which
// case the command must not run.
func (c *runContext) start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	c.started = true
	return nil
}

// release stops watching the request's context.
func (c *runContext) release() { c.stop() }
