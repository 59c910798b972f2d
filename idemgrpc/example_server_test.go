package idemgrpc_test

import (
	"log"
	"net"
	"strings"

	"google.golang.org/grpc"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemgrpc"
)

// A server whose commands are idempotent. The interceptor goes after
// authentication; WithMethods leaves the reads alone. Compiled, not run: it
// serves on a port.
func ExampleUnaryServerInterceptor() {
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true))
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(
		// auth interceptor here,
		idemgrpc.UnaryServerInterceptor(engine,
			idemgrpc.WithMethods(func(m string) bool { return !strings.HasPrefix(m, "/shop.Orders/Get") }),
			idemgrpc.WithKey(idemgrpc.RequestField("request_id")), // AIP-155, else the metadata
		),
	))
	// shoppb.RegisterOrdersServer(srv, orders)
	lis, err := net.Listen("tcp", "127.0.0.1:50051")
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(srv.Serve(lis))
}
