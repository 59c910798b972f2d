package main

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/dispatcher"
)

// metrics are idemd's Prometheus metrics, on a registry of their own.
type metrics struct {
	reg        *prometheus.Registry
	commands   *prometheus.CounterVec   // by command and outcome
	duration   *prometheus.HistogramVec // of dispatches, by outcome
	running    *prometheus.GaugeVec     // handlers running, by command
	storeCalls *prometheus.HistogramVec // by op and result
}

// otherCommand labels the metrics of names that are not registered commands,
// so callers cannot grow the label set.
const otherCommand = "other"

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		commands: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idemd_commands_total",
			Help: "Commands dispatched, by command and outcome (executed, replayed, in_flight, key_reused, key_missing, key_invalid, error, store_unavailable, ...).",
		}, []string{"command", "outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "idemd_command_duration_seconds",
			Help:    "Time to answer a command, store calls included, by outcome.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10), // 0.5ms .. ~131s
		}, []string{"outcome"}),
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "idemd_commands_running",
			Help: "Command handlers running now, by command.",
		}, []string{"command"}),
		storeCalls: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "idemd_store_call_duration_seconds",
			Help:    "Latency of idempotency store calls, by operation (begin, complete, release, renew, lookup, store) and result (ok, lease_lost, error).",
			Buckets: prometheus.ExponentialBuckets(0.00005, 4, 10), // 50µs .. ~13s
		}, []string{"op", "result"}),
	}
	m.reg.MustRegister(m.commands, m.duration, m.running, m.storeCalls,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, o := range dispatcher.Outcomes() {
		m.commands.WithLabelValues(otherCommand, string(o))
	}
	return m
}

// observeStore records one store call.
func (m *metrics) observeStore(op string, start time.Time, err error) {
	result := "ok"
	switch {
	case errors.Is(err, idempotency.ErrLeaseLost):
		result = "lease_lost"
	case err != nil:
		result = "error"
	}
	m.storeCalls.WithLabelValues(op, result).Observe(time.Since(start).Seconds())
}

// instrument wraps s so that every call is timed into m. The result
// implements idempotency.ClaimStore exactly when s does, so the engine
// still picks the claim protocol (or its fallback) as it would for s.
func instrument(s idempotency.Store, m *metrics) idempotency.Store {
	is := &instrumentedStore{s: s, m: m}
	if cs, ok := s.(idempotency.ClaimStore); ok {
		return &instrumentedClaimStore{instrumentedStore: is, cs: cs}
	}
	return is
}

type instrumentedStore struct {
	s idempotency.Store
	m *metrics
}

func (i *instrumentedStore) Lookup(ctx context.Context, key, identity string) (*idempotency.Cached, bool) {
	defer i.m.observeStore("lookup", time.Now(), nil)
	return i.s.Lookup(ctx, key, identity)
}

func (i *instrumentedStore) Store(ctx context.Context, key, identity string, c idempotency.Cached) (err error) {
	defer func(start time.Time) { i.m.observeStore("store", start, err) }(time.Now())
	return i.s.Store(ctx, key, identity, c)
}

type instrumentedClaimStore struct {
	*instrumentedStore
	cs idempotency.ClaimStore
}

func (i *instrumentedClaimStore) Begin(ctx context.Context, key, identity string, req idempotency.ClaimRequest) (c idempotency.Claim, err error) {
	defer func(start time.Time) { i.m.observeStore("begin", start, err) }(time.Now())
	return i.cs.Begin(ctx, key, identity, req)
}

func (i *instrumentedClaimStore) Complete(ctx context.Context, tok idempotency.Token, c idempotency.Cached) (err error) {
	defer func(start time.Time) { i.m.observeStore("complete", start, err) }(time.Now())
	return i.cs.Complete(ctx, tok, c)
}

func (i *instrumentedClaimStore) Release(ctx context.Context, tok idempotency.Token) (err error) {
	defer func(start time.Time) { i.m.observeStore("release", start, err) }(time.Now())
	return i.cs.Release(ctx, tok)
}

func (i *instrumentedClaimStore) Renew(ctx context.Context, tok idempotency.Token, lease time.Duration) (err error) {
	defer func(start time.Time) { i.m.observeStore("renew", start, err) }(time.Now())
	return i.cs.Renew(ctx, tok, lease)
}

var _ idempotency.ClaimStore = (*instrumentedClaimStore)(nil)
