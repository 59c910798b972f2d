package main

import (
	"context"
	"errors"
	"log/slog"

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

	// From the engine's observer.
	executions   *prometheus.CounterVec // by engine outcome
	recordErrors prometheus.Counter
	leaseLosses  *prometheus.CounterVec // by cause
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
		executions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idemd_executions_total",
			Help: "Engine executions of keyed commands, by outcome (executed, unrecorded, record_failed, failed, panicked, replayed, tombstone, in_flight, mismatch, invalid_key, store_error, cancelled).",
		}, []string{"outcome"}),
		recordErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "idemd_record_errors_total",
			Help: "Responses answered but not recorded (the store failed or the claim was lost): a retry runs the command again.",
		}),
		leaseLosses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "idemd_lease_losses_total",
			Help: "Running commands cancelled because their claim was lost (cause lost: the store said so; unconfirmed: renewals failed until the lease ran out).",
		}, []string{"cause"}),
	}
	m.reg.MustRegister(m.commands, m.duration, m.running, m.storeCalls, m.executions, m.recordErrors, m.leaseLosses,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, o := range dispatcher.Outcomes() {
		m.commands.WithLabelValues(otherCommand, string(o))
	}
	for _, o := range idempotency.Outcomes() {
		m.executions.WithLabelValues(o.String())
	}
	for _, c := range []string{"lost", "unconfirmed"} {
		m.leaseLosses.WithLabelValues(c)
	}
	return m
}

// observeStore records one store call.
func (m *metrics) observeStore(c idempotency.StoreCall) {
	result := "ok"
	switch {
	case errors.Is(c.Err, idempotency.ErrLeaseLost):
		result = "lease_lost"
	case c.Err != nil:
		result = "error"
	}
	m.storeCalls.WithLabelValues(c.Op, result).Observe(c.Duration.Seconds())
}

// observer is what the engine tells idemd: executions by outcome, store
// calls, record errors and lost leases, as metrics, and lost leases in the
// log (which the dispatcher's per-command line does not show).
func (m *metrics) observer(log *slog.Logger) *idempotency.Observer {
	return &idempotency.Observer{
		Done: func(ctx context.Context, x idempotency.Execution) {
			m.executions.WithLabelValues(x.Outcome.String()).Inc()
			if x.RecordErr != nil {
				// Logged once, with its command, by the dispatcher's
				// observer (its "command" line's record_err, at warn).
				m.recordErrors.Inc()
			}
		},
		StoreCall: func(_ context.Context, c idempotency.StoreCall) { m.observeStore(c) },
		LeaseLost: func(ctx context.Context, tok idempotency.Token, cause error) {
			m.leaseLosses.WithLabelValues(leaseCause(cause)).Inc()
			log.LogAttrs(ctx, slog.LevelWarn, "a running command lost its claim; it is cancelled",
				slog.Uint64("fence", tok.Fence), slog.String("cause", cause.Error()))
		},
	}
}

func leaseCause(err error) string {
	if errors.Is(err, idempotency.ErrLeaseExpired) {
		return "unconfirmed"
	}
	return "lost"
}
