package idemgrpc

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/idemkit/idempotency/idemclient"
)

// ClientOption configures UnaryClientInterceptor.
type ClientOption func(*clientConfig)

type clientConfig struct {
	methods func(fullMethod string) bool
	newKey  func() string
}

// WithClientMethods limits the client interceptor to the methods for which
// covered returns true (the full method name, "/package.Service/Method"):
// the commands. nil, the default, gives every unary call a key.
func WithClientMethods(covered func(fullMethod string) bool) ClientOption {
	return func(c *clientConfig) { c.methods = covered }
}

// WithKeyGenerator replaces how fresh keys are made. nil keeps the default,
// NewKey.
func WithKeyGenerator(newKey func() string) ClientOption {
	return func(c *clientConfig) {
		if newKey != nil {
			c.newKey = newKey
		}
	}
}

// UnaryClientInterceptor returns a client interceptor that gives a unary
// call without an "idempotency-key" in its outgoing metadata a fresh one.
// An interceptor runs once per logical call, and grpc-go's retries (a
// service config retryPolicy) and transparent retries re-send the call's
// metadata, so every attempt of one call carries the same key, and a retry
// gets the first attempt's answer (AIP-4235). A caller that retries by
// hand, calling again, must set the key itself to keep it:
//
//	ctx = metadata.AppendToOutgoingContext(ctx, idemgrpc.MetadataKey, idemgrpc.NewKey())
func UnaryClientInterceptor(opts ...ClientOption) grpc.UnaryClientInterceptor {
	c := clientConfig{newKey: NewKey}
	for _, o := range opts {
		o(&c)
	}
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, callOpts ...grpc.CallOption) error {
		if c.methods == nil || c.methods(method) {
			if len(metadata.ValueFromOutgoingContext(ctx, MetadataKey)) == 0 { // no copy of the whole metadata
				ctx = metadata.AppendToOutgoingContext(ctx, MetadataKey, c.newKey())
			}
		}
		return invoker(ctx, method, req, reply, cc, callOpts...)
	}
}

// NewKey returns a random version 4 UUID, the key UnaryClientInterceptor
// gives a call by default: idemclient.NewKey, the HTTP client's.
func NewKey() string { return idemclient.NewKey() }

// Replayed reports whether header metadata (from the grpc.Header call
// option) says the answer was a replay of a recorded one.
func Replayed(header metadata.MD) bool {
	vs := header.Get(MetadataReplayed)
	return len(vs) == 1 && vs[0] == "true"
}
