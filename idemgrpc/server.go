package idemgrpc

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/idemkit/idempotency"
)

// UnaryServerInterceptor returns an interceptor that makes unary methods
// idempotent on e: a call with a key runs its handler at most once per
// (key, caller), and a retry gets the recorded answer back (see the package
// documentation for the outcomes and their codes). Calls without a key run
// as usual unless WithRequired is set. Streaming methods are not
// intercepted: register only this unary interceptor, and they pass through
// untouched.
//
// The engine holds the store, the lease, waiting for a duplicate
// (idempotency.WithWait) and the observer, and may be shared with other
// adapters. Its record policy sees Status set to the gRPC code (0 to 16);
// idempotency.DefaultRecordPolicy records all of them, because the
// interceptor has already released the codes WithRecordCode refuses.
//
// A handler that has started is detached from its client: a client that
// hangs up or whose deadline passes does not stop it half-way; it runs to
// its end and its answer is recorded for the retry. Its context still ends
// when the engine loses the claim. UnaryServerInterceptor panics if e is nil.
func UnaryServerInterceptor(e *idempotency.Engine, opts ...Option) grpc.UnaryServerInterceptor {
	if e == nil {
		panic("idemgrpc: UnaryServerInterceptor with a nil engine")
	}
	c := config{
		key:         KeyFromMetadata,
		fingerprint: DefaultFingerprint,
		record:      DefaultRecordCode,
	}
	for _, o := range opts {
		o(&c)
	}
	s := &server{config: c, engine: e, detached: e.RunsDetached()}
	if s.identity == nil { // DefaultIdentity, remembered
		s.identity = newIdentityMemo().identity
	}
	return s.intercept
}

// replayedHeader is the header metadata of a replay; grpc-go joins it
// into a copy, never changing it.
var replayedHeader = metadata.MD{MetadataReplayed: {"true"}}

type server struct {
	config
	engine   *idempotency.Engine
	detached bool
	types    typeCache
}

func (s *server) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if s.methods != nil && !s.methods(info.FullMethod) {
		return handler(ctx, req)
	}
	key := s.key(ctx, info, req)
	if key == "" {
		if s.required {
			return nil, refusal(codes.InvalidArgument, ReasonKeyMissing, "this method requires an idempotency-key")
		}
		return handler(ctx, req)
	}
	identity := s.identity(ctx)
	if identity == "" && !s.anonymous {
		return nil, refusal(codes.Unauthenticated, ReasonIdentityMissing,
			"calls with an idempotency-key are deduplicated per caller, and this call carries no credentials that tell its caller apart")
	}
	fingerprint, err := s.fingerprint(info.FullMethod, req)
	if err != nil {
		return nil, refusal(codes.InvalidArgument, ReasonRequestUnreadable, "the request could not be encoded for its fingerprint")
	}
	x := call{s: s, req: req, handler: handler}
	res, err := s.engine.Do(ctx, idempotency.Request{Key: key, Identity: identity, Fingerprint: fingerprint}, x.run)
	switch {
	case err != nil && x.released:
		return nil, err // the handler's own error, key released
	case err != nil:
		return nil, refuse(ctx, err)
	case !res.Replayed:
		return x.resp, x.err
	case res.Response.Streamed: // a tombstone: it ran, its answer is gone
		return nil, refuse(ctx, idempotency.ErrResponseNotRecorded)
	}
	// Header metadata only now: a refusal above must stay trailers-only,
	// or grpc-go's retry policy would not retry it.
	_ = grpc.SetHeader(ctx, replayedHeader)
	return s.replay(&res.Response)
}

// call is one keyed call's state across Engine.Do.
type call struct {
	s       *server
	req     any
	handler grpc.UnaryHandler

	resp     any   // the handler's answer, for this caller
	err      error // the handler's error, for this caller
	released bool  // run returned err: the key was released
}

// run is the command the engine runs: the handler, detached from the
// client, its answer encoded for the record.
func (x *call) run(ctx context.Context) (idempotency.Response, error) {
	if !x.s.detached {
		var stop func()
		ctx, stop = detach(ctx)
		defer stop()
	}
	x.released = false // the engine may run it again (a TxStore)
	x.resp, x.err = x.handler(ctx, x.req)
	if x.err != nil {
		st := status.Convert(x.err)
		if st.Code() == codes.OK || !x.s.record(st.Code()) {
			return x.release()
		}
		body, err := marshal(st.Proto())
		if err != nil {
			return x.release()
		}
		return idempotency.Response{Status: int(st.Code()), Body: body}, nil
	}
	r, err := x.s.encode(x.resp)
	if err != nil {
		x.resp, x.err = nil, status.Error(codes.Internal, "idemgrpc: the response could not be encoded")
		return x.release()
	}
	return r, nil
}

// release has the engine release the key, returning the handler's error.
func (x *call) release() (idempotency.Response, error) {
	x.released = true
	return idempotency.Response{}, x.err
}

// detach returns a context with run's values that ends only when the engine
// ends run for its claim (the lease lost or unconfirmed), not when the
// client goes or its deadline passes.
func detach(run context.Context) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(run))
	stop := context.AfterFunc(run, func() {
		cause := context.Cause(run)
		if errors.Is(cause, idempotency.ErrLeaseLost) || errors.Is(cause, idempotency.ErrLeaseExpired) {
			cancel(cause)
		}
	})
	return ctx, func() { stop(); cancel(nil) }
}
