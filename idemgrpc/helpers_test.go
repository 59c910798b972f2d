package idemgrpc_test

import (
	"context"
	"errors"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemgrpc"
)

// The test service is written by hand (there is no code generation here):
// idemtest.Widgets with a unary Create (Struct in, Struct out), a unary Fail
// (its StringValue names the code to fail with) and a server-streaming
// Watch.
const (
	methodCreate = "/idemtest.Widgets/Create"
	methodFail   = "/idemtest.Widgets/Fail"
	methodWatch  = "/idemtest.Widgets/Watch"
	methodPut    = "/idemtest.Widgets/Put"
)

// widgets is the test service. create, when set, replaces Create's default
// answer; every run of a unary handler is counted.
type widgets struct {
	runs   atomic.Int64
	create func(ctx context.Context, in *structpb.Struct) (*structpb.Struct, error)
}

func (w *widgets) Create(ctx context.Context, in *structpb.Struct) (*structpb.Struct, error) {
	n := w.runs.Add(1)
	if w.create != nil {
		return w.create(ctx, in)
	}
	// A map with several entries: its encoding depends on map order unless
	// it is deterministic.
	return structpb.NewStruct(map[string]any{
		"id": "w1", "name": in.GetFields()["name"].GetStringValue(), "run": float64(n),
		"a": 1.0, "b": true, "c": "x", "d": []any{1.0, "two"}, "e": map[string]any{"f": 1.0, "g": 2.0},
	})
}

// Put answers a flat message (scalar fields, no map) with another: the
// benchmarks' common case, beside Create's map-heavy Struct.
func (w *widgets) Put(_ context.Context, in *descriptorpb.FieldDescriptorProto) (*descriptorpb.FieldDescriptorProto, error) {
	w.runs.Add(1)
	return putAnswer, nil
}

var putAnswer = &descriptorpb.FieldDescriptorProto{
	Name: proto.String("w1"), Number: proto.Int32(7), JsonName: proto.String("gear"),
	Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(), Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum(),
}

// codeName is c's name in a service config (and in Code.UnmarshalJSON).
func codeName(c codes.Code) string {
	if c == codes.Canceled {
		return "CANCELLED"
	}
	return strings.ToUpper(regexp.MustCompile(`([a-z])([A-Z])`).ReplaceAllString(c.String(), "${1}_${2}"))
}

func (w *widgets) Fail(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	w.runs.Add(1)
	var c codes.Code
	if err := c.UnmarshalJSON([]byte(`"` + in.GetValue() + `"`)); err != nil {
		return nil, errors.New("not a status error")
	}
	st, _ := status.New(c, "failed with "+in.GetValue()).WithDetails(&errdetails.DebugInfo{Detail: "from the handler"})
	return nil, st.Err()
}

var widgetsDesc = grpc.ServiceDesc{
	ServiceName: "idemtest.Widgets",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Create", Handler: unary(methodCreate, (*widgets).Create)},
		{MethodName: "Fail", Handler: unary(methodFail, (*widgets).Fail)},
		{MethodName: "Put", Handler: unary(methodPut, (*widgets).Put)},
	},
	Streams: []grpc.StreamDesc{{StreamName: "Watch", ServerStreams: true, Handler: func(_ any, stream grpc.ServerStream) error {
		in := new(wrapperspb.StringValue)
		if err := stream.RecvMsg(in); err != nil {
			return err
		}
		for range 3 {
			if err := stream.SendMsg(in); err != nil {
				return err
			}
		}
		return nil
	}}},
}

// unary is what protoc-gen-go-grpc writes for a unary method.
func unary[Req, Resp any, PReq interface {
	*Req
	proto.Message
}](fullMethod string, method func(*widgets, context.Context, PReq) (Resp, error)) func(any, context.Context, func(any) error, grpc.UnaryServerInterceptor) (any, error) {
	return func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
		in := PReq(new(Req))
		if err := dec(in); err != nil {
			return nil, err
		}
		w := srv.(*widgets)
		if interceptor == nil {
			return method(w, ctx, in)
		}
		info := &grpc.UnaryServerInfo{Server: srv, FullMethod: fullMethod}
		return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
			return method(w, ctx, req.(PReq))
		})
	}
}

// retryConfig is a service config whose retry policy retries ABORTED (a
// duplicate in flight) and UNAVAILABLE (a store outage, a lost connection).
const retryConfig = `{"methodConfig":[{"name":[{"service":"idemtest.Widgets"}],"retryPolicy":{
	"maxAttempts":5,"initialBackoff":"0.01s","maxBackoff":"0.1s","backoffMultiplier":2,
	"retryableStatusCodes":["ABORTED","UNAVAILABLE"]}}]}`

// serve starts a grpc-go server on 127.0.0.1 with the given interceptors
// (outermost first) and returns its address.
func serve(t testing.TB, w *widgets, interceptors ...grpc.UnaryServerInterceptor) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(interceptors...))
	srv.RegisterService(&widgetsDesc, w)
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return lis.Addr().String()
}

// dial returns a client of addr with the retry policy and the client
// interceptor.
func dial(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	return dialPlain(t, addr, append([]grpc.DialOption{grpc.WithUnaryInterceptor(idemgrpc.UnaryClientInterceptor())}, opts...)...)
}

// dialPlain returns a client of addr with the retry policy, without the
// client interceptor.
func dialPlain(t testing.TB, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(retryConfig),
	}, opts...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// fixture is a server with the interceptor on an in-memory engine, and a
// client of it.
type fixture struct {
	w      *widgets
	engine *idempotency.Engine
	addr   string
	cc     *grpc.ClientConn // with the client interceptor
}

func newFixture(t testing.TB, engineOpts []idempotency.EngineOption, opts ...idemgrpc.Option) *fixture {
	t.Helper()
	f := &fixture{w: &widgets{}}
	f.engine = idempotency.NewEngine(idempotency.NewInMemoryStore(), engineOpts...)
	f.addr = serve(t, f.w, idemgrpc.UnaryServerInterceptor(f.engine, opts...))
	f.cc = dial(t, f.addr)
	return f
}

// keyed returns ctx with the key and the caller's credential in its
// outgoing metadata ("" leaves either out).
func keyed(ctx context.Context, key, auth string) context.Context {
	if key != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, idemgrpc.MetadataKey, key)
	}
	if auth != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", auth)
	}
	return ctx
}

// answer is one call's outcome.
type answer struct {
	resp   *structpb.Struct
	err    error
	header metadata.MD
}

func (a answer) replayed() bool { return idemgrpc.Replayed(a.header) }

func create(ctx context.Context, cc *grpc.ClientConn, name string) answer {
	in, _ := structpb.NewStruct(map[string]any{"name": name})
	var a answer
	a.resp = new(structpb.Struct)
	a.err = cc.Invoke(ctx, methodCreate, in, a.resp, grpc.Header(&a.header))
	return a
}

// encoded is the deterministic encoding of m.
func encoded(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// reason returns the ErrorInfo reason of err's status, "" without one.
func reason(err error) string {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == idemgrpc.ErrorDomain {
			return info.GetReason()
		}
	}
	return ""
}

// keysSeen is a server interceptor, outside idemgrpc's, that records the
// idempotency key of every attempt that reaches the server.
type keysSeen struct {
	mu   sync.Mutex
	keys []string
}

func (k *keysSeen) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	k.mu.Lock()
	k.keys = append(k.keys, md.Get(idemgrpc.MetadataKey)...)
	k.mu.Unlock()
	return handler(ctx, req)
}

func (k *keysSeen) all() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.keys...)
}

// incoming returns a context with the incoming metadata kv, as a server
// handler sees it.
func incoming(t testing.TB, kv ...string) context.Context {
	return metadata.NewIncomingContext(t.Context(), metadata.Pairs(kv...))
}
