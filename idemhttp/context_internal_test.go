package idemhttp

import (
	"context"
	"runtime"
	"testing"
	"testing/synctest"
)

type ctxKey struct{}

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func TestRunContext(t *testing.T) {
	tests := []struct {
		name string
		// steps run in order on a runContext over a request context that
		// the "cancel" step ends.
		steps   []string
		wantErr bool // after the steps
		wantEnd bool // Done closed after the steps
	}{
		{"live", []string{"done"}, false, false},
		{"client leaves, watched", []string{"done", "cancel"}, true, true},
		{"client leaves, Err first", []string{"cancel", "err", "done"}, true, true},
		{"client leaves, Done first", []string{"cancel", "done"}, true, true},
		{"client leaves after the start", []string{"done", "start", "cancel"}, false, false},
		{"client leaves after the start, not watched", []string{"start", "cancel", "done"}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				req, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
				defer cancel()
				var c runContext
				c.init(req)
				defer c.release()
				var done <-chan struct{}
				for _, s := range tt.steps {
					switch s {
					case "done":
						done = c.Done()
					case "cancel":
						cancel()
						synctest.Wait()
					case "err":
						c.Err()
					case "start":
						if err := c.start(); err != nil {
							t.Fatalf("start: %v", err)
						}
					}
				}
				if got := c.Err() != nil; got != tt.wantErr {
					t.Errorf("Err() = %v, want an error: %v", c.Err(), tt.wantErr)
				}
				if done == nil && !tt.wantEnd {
					// a nil Done never ends: fine
				} else if got := closed(done); got != tt.wantEnd {
					t.Errorf("Done closed = %v, want %v", got, tt.wantEnd)
				}
				if got := c.Value(ctxKey{}); got != "v" {
					t.Errorf("Value = %v, want the request's value", got)
				}
				if _, ok := c.Deadline(); ok {
					t.Error("Deadline set, want none")
				}
			})
		})
	}
}

func TestRunContextStartAfterLeave(t *testing.T) {
	req, cancel := context.WithCancel(context.Background())
	var c runContext
	c.init(req)
	cancel()
	if err := c.start(); err != context.Canceled {
		t.Errorf("start after the client left = %v, want %v", err, context.Canceled)
	}
	if !closed(c.Done()) {
		t.Error("Done not closed after the client left before the start")
	}
}

func TestRunContextNoWatchOnReplay(t *testing.T) {
	// A replay that never asks for Done must cost no watcher.
	var c runContext
	c.init(context.Background())
	_ = c.Err()
	if c.stop != nil || c.inner.Load() != nil {
		t.Error("runContext watches the request although no one asked for Done")
	}
	c.release()
}

func TestRunContextDerived(t *testing.T) {
	// The engine runs the command under
	// context.WithCancelCause(context.WithValue(runContext, …)): that
	// context must end when the client leaves before the start, never after
	// it, and must not cost a goroutine to watch the runContext.
	for _, startFirst := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			req, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
			defer cancel()
			var c runContext
			c.init(req)
			defer c.release()
			before := runtime.NumGoroutine()
			derived, stop := context.WithCancelCause(context.WithValue(&c, tokenKey{}, 1))
			defer stop(nil)
			if got := runtime.NumGoroutine(); got != before {
				t.Errorf("deriving a context started %d goroutines, want 0", got-before)
			}
			if startFirst {
				if err := c.start(); err != nil {
					t.Fatal(err)
				}
			}
			cancel()
			synctest.Wait()
			if ended := derived.Err() != nil; ended == startFirst {
				t.Errorf("started first %v: derived context ended = %v, want %v", startFirst, ended, !startFirst)
			}
			if got := derived.Value(ctxKey{}); got != "v" {
				t.Errorf("derived Value = %v, want the request's value", got)
			}
		})
	}
}

type tokenKey struct{}
