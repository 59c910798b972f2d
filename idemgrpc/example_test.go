package idemgrpc_test

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemgrpc"
)

// The interceptor is a plain function: called here as grpc-go would call
// it, twice with the same key, it runs the handler once and answers the
// retry with the recorded message.
func Example() {
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore())
	intercept := idemgrpc.UnaryServerInterceptor(engine)

	runs := 0
	createOrder := func(ctx context.Context, req any) (any, error) {
		runs++
		return wrapperspb.String(fmt.Sprintf("order %d for %s", runs, req.(*wrapperspb.StringValue).GetValue())), nil
	}
	info := &grpc.UnaryServerInfo{FullMethod: "/shop.Orders/Create"}
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs(
		"idempotency-key", "3f2b6c1e-order-1",
		"authorization", "Bearer alice-token",
	))
	for range 2 {
		resp, err := intercept(ctx, wrapperspb.String("gear"), info, createOrder)
		fmt.Println(resp.(*wrapperspb.StringValue).GetValue(), err)
	}
	fmt.Println("runs:", runs)
	// Output:
	// order 1 for gear <nil>
	// order 1 for gear <nil>
	// runs: 1
}
