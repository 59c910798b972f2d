package main

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// maxProbeTimeout bounds /readyz's store ping whatever -store-timeout says,
// so that a readiness probe is answered within 2s even when the last
// result is just too old to answer it (probeFresh).
const maxProbeTimeout = time.Second

// probeFresh is how long a ping's result answers /readyz before the next
// ping: probes from many kubelets, load balancers and people cost the store
// one ping per this interval at most.
const probeFresh = 250 * time.Millisecond

// readiness answers whether the store can be reached, for /readyz. One
// ping runs at a time: concurrent probes wait for it and share its result,
// which also answers the probes that come within probeFresh after it.
type readiness struct {
	ping    func(context.Context) error // nil: always ready
	timeout time.Duration               // bounds each ping
	log     *slog.Logger

	mu      sync.Mutex
	at      time.Time     // when the last ping ended; zero before the first
	err     error         // its result
	running chan struct{} // closed when the running ping ends; nil when none runs
}

func newReadiness(ping func(context.Context) error, storeTimeout time.Duration, log *slog.Logger) *readiness {
	timeout := maxProbeTimeout
	if storeTimeout > 0 {
		timeout = min(storeTimeout, maxProbeTimeout)
	}
	return &readiness{ping: ping, timeout: timeout, log: log}
}

// check returns nil when the store answered its last ping, at most
// probeFresh ago, or the error of that ping; it pings when the last result
// is older. It returns ctx's error when ctx ends while it waits.
func (r *readiness) check(ctx context.Context) error {
	if r.ping == nil {
		return nil
	}
	r.mu.Lock()
	if !r.at.IsZero() && time.Since(r.at) < probeFresh {
		err := r.err
		r.mu.Unlock()
		return err
	}
	if done := r.running; done != nil {
		r.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.err
	}
	done := make(chan struct{})
	r.running = done
	r.mu.Unlock()

	// The ping is every waiting probe's, not only this request's: it runs
	// to its own bound even if this caller goes.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.timeout)
	err := r.ping(pctx)
	cancel()

	r.mu.Lock()
	was := r.err
	r.at, r.err, r.running = time.Now(), err, nil
	r.mu.Unlock()
	close(done)
	switch {
	case err != nil && was == nil:
		r.log.Warn("the store does not answer: not ready", "err", err)
	case err == nil && was != nil:
		r.log.Info("the store answers again: ready")
	}
	return err
}

// up reports the result of the last ping (true before the first: the store
// answered at start), for the idemd_store_up gauge.
func (r *readiness) up() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err == nil
}

// readyz is the readiness probe: 200 while the store answers, 503 while it
// does not or the server is shutting down.
func (s *server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.active.isClosed() {
		writeError(w, http.StatusServiceUnavailable, "shutting_down", "the server is shutting down")
		return
	}
	if err := s.ready.check(r.Context()); err != nil {
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", "the store cannot be reached")
		return
	}
	writeJSON(w, http.StatusOK, okEnvelope{OK: true, Data: map[string]string{"status": "ok"}})
}
