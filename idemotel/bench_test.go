package idemotel_test

import (
	"context"
	"testing"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemotel"
)

// BenchmarkObserver measures a replay (Engine.Do of a recorded key on the
// memory store) without idemotel, with it on no-op providers, and with it on
// the SDK's (every span sampled and kept in memory, metrics aggregated).
func BenchmarkObserver(b *testing.B) {
	sdk := func() []idemotel.Option {
		// A recorder that keeps nothing: the SDK's cost, not a growing slice's.
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(discard{}))
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
		return []idemotel.Option{idemotel.WithTracerProvider(tp), idemotel.WithMeterProvider(mp),
			idemotel.WithStoreName("memory"), idemotel.WithKeyDigest([]byte("secret"))}
	}
	cases := []struct {
		name string
		obs  func() *idempotency.Observer
	}{
		{"none", func() *idempotency.Observer { return nil }},
		// The engine's own cost of calling hooks that do nothing.
		{"empty-hooks", func() *idempotency.Observer {
			return &idempotency.Observer{
				Start: func(ctx context.Context, _ idempotency.Request) context.Context { return ctx },
				Done:  func(context.Context, idempotency.Execution) {},
			}
		}},
		{"noop", func() *idempotency.Observer {
			return idemotel.NewObserver(idemotel.WithTracerProvider(tracenoop.NewTracerProvider()),
				idemotel.WithMeterProvider(metricnoop.NewMeterProvider()))
		}},
		{"sdk", func() *idempotency.Observer { return idemotel.NewObserver(sdk()...) }},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			e := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithObserver(c.obs()))
			ctx := context.Background()
			if _, err := e.Do(ctx, req, ok201); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if res, err := e.Do(ctx, req, ok201); err != nil || !res.Replayed {
					b.Fatalf("Do = (%+v, %v), want a replay", res, err)
				}
			}
		})
	}
}

// discard is a span processor that drops every span.
type discard struct{}

func (discard) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (discard) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (discard) Shutdown(context.Context) error                  { return nil }
func (discard) ForceFlush(context.Context) error                { return nil }
