package idemotel

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// instruments are the observer's metrics.
type instruments struct {
	executions   metric.Int64Counter
	duration     metric.Float64Histogram
	storeCall    metric.Float64Histogram
	leaseLosses  metric.Int64Counter
	recordErrors metric.Int64Counter
	wait         metric.Float64Histogram
}

// secondsBuckets reach below a millisecond, where an in-process store's
// calls are, and up to a minute, where a long command's executions are.
var secondsBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// newInstruments creates the instruments on m. An instrument the meter
// refuses is reported to otel.Handle and replaced by a no-op one, as the
// OpenTelemetry instrumentation libraries do: telemetry never stops the engine.
func newInstruments(m metric.Meter) instruments {
	var nm noop.Meter
	counter := func(name, unit, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit(unit), metric.WithDescription(desc))
		if err != nil {
			otel.Handle(err)
			c, _ = nm.Int64Counter(name)
		}
		return c
	}
	histogram := func(name, desc string) metric.Float64Histogram {
		h, err := m.Float64Histogram(name, metric.WithUnit("s"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(secondsBuckets...))
		if err != nil {
			otel.Handle(err)
			h, _ = nm.Float64Histogram(name)
		}
		return h
	}
	return instruments{
		executions:   counter("idempotency.executions", "{execution}", "Executions of Engine.Do, by outcome."),
		duration:     histogram("idempotency.execution.duration", "Duration of Engine.Do, store calls and waiting included, by outcome."),
		storeCall:    histogram("idempotency.store.call.duration", "Duration of the engine's calls to its store, by operation and whether it failed."),
		leaseLosses:  counter("idempotency.lease.losses", "{loss}", "Claims lost while their command ran, by cause: lost (the store said so) or expired (not confirmed in time)."),
		recordErrors: counter("idempotency.record.errors", "{error}", "Responses that could not be recorded: a retry runs the command again."),
		wait:         histogram("idempotency.wait.duration", "How long executions waited for another execution of their key."),
	}
}
