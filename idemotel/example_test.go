package idemotel_test

import (
	"context"
	"fmt"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemotel"
)

func ExampleNewObserver() {
	// An application sets up its providers once (an OTLP exporter, say);
	// here the spans go to memory, to print them.
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer func() { _ = tp.Shutdown(context.Background()) }()

	secret := []byte("a secret of the deployment") // keys the key digest
	e := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithObserver(idemotel.NewObserver(
		idemotel.WithTracerProvider(tp),
		idemotel.WithStoreName("memory"),
		idemotel.WithKeyDigest(secret),
	)))

	r := idempotency.Request{Key: "order-42", Identity: "user-7", Fingerprint: "fp"}
	for range 2 {
		_, _ = e.Do(context.Background(), r, func(context.Context) (idempotency.Response, error) {
			return idempotency.Response{Status: 201, Body: []byte("created")}, nil
		})
	}
	for _, s := range spans.Ended() {
		for _, kv := range s.Attributes() {
			if kv.Key == "idempotency.outcome" {
				fmt.Println(s.Name(), kv.Value.AsString())
			}
		}
		if s.Name() != "idempotency.execute" {
			fmt.Println(" ", s.Name())
		}
	}
	// Output:
	//   idempotency.store.begin
	//   idempotency.store.complete
	// idempotency.execute executed
	// idempotency.execute replayed
}
