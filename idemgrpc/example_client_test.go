package idemgrpc_test

import (
	"context"
	"log"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/idemkit/idempotency/idemgrpc"
)

// A client whose calls get a fresh key each, kept across grpc-go's retries,
// with a retry policy for the answers that mean "try again". Compiled, not
// run: it needs a server.
func ExampleUnaryClientInterceptor() {
	cc, err := grpc.NewClient("127.0.0.1:50051",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUnaryInterceptor(idemgrpc.UnaryClientInterceptor()),
		grpc.WithDefaultServiceConfig(`{"methodConfig":[{
			"name":[{"service":"shop.Orders"}],
			"retryPolicy":{"maxAttempts":5,"initialBackoff":"0.1s","maxBackoff":"1s",
				"backoffMultiplier":2,"retryableStatusCodes":["ABORTED","UNAVAILABLE"]}}]}`),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	// With generated code: shoppb.NewOrdersClient(cc).Create(ctx, req, grpc.Header(&header)).
	var header metadata.MD
	order := new(wrapperspb.StringValue)
	if err := cc.Invoke(context.Background(), "/shop.Orders/Create", wrapperspb.String("gear"), order, grpc.Header(&header)); err != nil {
		log.Fatal(err)
	}
	log.Printf("order %s (a replay: %v)", order.GetValue(), idemgrpc.Replayed(header))
}
