package idemgrpc_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemgrpc"
)

func TestReplay(t *testing.T) {
	f := newFixture(t, nil)
	ctx := keyed(t.Context(), "key-1", "Bearer alice")
	first := create(ctx, f.cc, "gear")
	if first.err != nil {
		t.Fatal(first.err)
	}
	if first.replayed() {
		t.Errorf("first answer has %s", idemgrpc.MetadataReplayed)
	}
	for i := range 3 {
		again := create(ctx, f.cc, "gear")
		if again.err != nil {
			t.Fatal(again.err)
		}
		if !again.replayed() {
			t.Errorf("retry %d: header %v, want %s: true", i, again.header, idemgrpc.MetadataReplayed)
		}
		if got, want := encoded(t, again.resp), encoded(t, first.resp); !bytes.Equal(got, want) {
			t.Errorf("retry %d: replay encodes to %x, want %x", i, got, want)
		}
	}
	if n := f.w.runs.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
	// Without a key the interceptor stays out of the way.
	for range 2 {
		if a := create(keyed(t.Context(), "", "Bearer alice"), f.cc, "gear"); a.err != nil || a.replayed() {
			t.Fatalf("unkeyed call: %v, replayed %v", a.err, a.replayed())
		}
	}
	if n := f.w.runs.Load(); n != 3 {
		t.Errorf("handler ran %d times, want 3", n)
	}
}

func TestMismatch(t *testing.T) {
	f := newFixture(t, nil)
	ctx := keyed(t.Context(), "key-1", "Bearer alice")
	if a := create(ctx, f.cc, "gear"); a.err != nil {
		t.Fatal(a.err)
	}
	a := create(ctx, f.cc, "sprocket")
	if status.Code(a.err) != codes.FailedPrecondition || reason(a.err) != idemgrpc.ReasonKeyReused {
		t.Errorf("other request, same key: %v (reason %q), want FailedPrecondition %s", a.err, reason(a.err), idemgrpc.ReasonKeyReused)
	}
	// The same key for another method is another request too.
	err := f.cc.Invoke(ctx, methodFail, wrapperspb.String("NOT_FOUND"), new(wrapperspb.StringValue))
	if status.Code(err) != codes.FailedPrecondition || reason(err) != idemgrpc.ReasonKeyReused {
		t.Errorf("other method, same key: %v, want FailedPrecondition %s", err, idemgrpc.ReasonKeyReused)
	}
	if n := f.w.runs.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
}

func TestIdentityIsolation(t *testing.T) {
	f := newFixture(t, nil)
	alice := keyed(t.Context(), "shared-key", "Bearer alice")
	bob := keyed(t.Context(), "shared-key", "Bearer bob")
	a1, b1 := create(alice, f.cc, "gear"), create(bob, f.cc, "gear")
	if a1.err != nil || b1.err != nil {
		t.Fatal(a1.err, b1.err)
	}
	if a1.replayed() || b1.replayed() {
		t.Error("a first call of its caller was a replay of another's")
	}
	if n := f.w.runs.Load(); n != 2 {
		t.Fatalf("handler ran %d times, want 2 (one per caller)", n)
	}
	a2, b2 := create(alice, f.cc, "gear"), create(bob, f.cc, "gear")
	if !proto.Equal(a2.resp, a1.resp) || !proto.Equal(b2.resp, b1.resp) || proto.Equal(a1.resp, b1.resp) {
		t.Errorf("replays %v, %v of %v, %v: each caller must get its own", a2.resp, b2.resp, a1.resp, b1.resp)
	}
	if a := create(keyed(t.Context(), "shared-key", ""), f.cc, "gear"); status.Code(a.err) != codes.Unauthenticated || reason(a.err) != idemgrpc.ReasonIdentityMissing {
		t.Errorf("keyed call without credentials: %v, want Unauthenticated %s", a.err, idemgrpc.ReasonIdentityMissing)
	}
	if n := f.w.runs.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2", n)
	}
}

func TestAnonymous(t *testing.T) {
	f := newFixture(t, nil, idemgrpc.WithAnonymous(true))
	ctx := keyed(t.Context(), "key-1", "")
	if a := create(ctx, f.cc, "gear"); a.err != nil || a.replayed() {
		t.Fatalf("first: %v", a.err)
	}
	if a := create(ctx, f.cc, "gear"); a.err != nil || !a.replayed() {
		t.Fatalf("retry: %v, replayed %v", a.err, a.replayed())
	}
}

func TestKeyRefused(t *testing.T) {
	f := newFixture(t, nil, idemgrpc.WithRequired(true))
	plain := dialPlain(t, f.addr) // the client interceptor would add a key
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		reason string
	}{
		{"missing", keyed(t.Context(), "", "Bearer alice"), idemgrpc.ReasonKeyMissing},
		{"too long", keyed(t.Context(), strings.Repeat("k", idempotency.MaxKeyLen+1), "Bearer alice"), idemgrpc.ReasonKeyInvalid},
		{"two values", metadata.AppendToOutgoingContext(keyed(t.Context(), "a", "Bearer alice"), idemgrpc.MetadataKey, "b"), idemgrpc.ReasonKeyInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var header metadata.MD
			in, _ := structpb.NewStruct(map[string]any{"name": "gear"})
			err := plain.Invoke(tc.ctx, methodCreate, in, new(structpb.Struct), grpc.Header(&header))
			if status.Code(err) != codes.InvalidArgument || reason(err) != tc.reason {
				t.Errorf("got %v (reason %q), want InvalidArgument %s", err, reason(err), tc.reason)
			}
		})
	}
	if n := f.w.runs.Load(); n != 0 {
		t.Errorf("handler ran %d times, want 0", n)
	}
}

func TestRequestField(t *testing.T) {
	// StringValue's "value" stands in for AIP-155's request_id.
	f := newFixture(t, nil, idemgrpc.WithKey(idemgrpc.RequestField("value")))
	ctx := keyed(t.Context(), "", "Bearer alice")
	for i := range 2 {
		var header metadata.MD
		err := f.cc.Invoke(ctx, methodFail, wrapperspb.String("NOT_FOUND"), new(wrapperspb.StringValue), grpc.Header(&header))
		if status.Code(err) != codes.NotFound {
			t.Fatalf("call %d: %v, want NotFound", i, err)
		}
		if got, want := idemgrpc.Replayed(header), i > 0; got != want {
			t.Errorf("call %d: replayed %v, want %v", i, got, want)
		}
	}
	if n := f.w.runs.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
}

// TestStatusTable checks which handler errors are recorded and replayed and
// which release the key, for every code.
func TestStatusTable(t *testing.T) {
	for c := codes.Canceled; c <= codes.Unauthenticated; c++ {
		t.Run(c.String(), func(t *testing.T) {
			f := newFixture(t, nil)
			ctx := keyed(t.Context(), "key-"+c.String(), "Bearer alice")
			in := wrapperspb.String(codeName(c))
			first := f.cc.Invoke(ctx, methodFail, in, new(wrapperspb.StringValue))
			if status.Code(first) != c {
				t.Fatalf("first call: %v, want %v", first, c)
			}
			var header metadata.MD
			again := f.cc.Invoke(ctx, methodFail, in, new(wrapperspb.StringValue), grpc.Header(&header))
			recorded := idemgrpc.DefaultRecordCode(c)
			wantRuns := int64(2)
			if recorded {
				wantRuns = 1
				if !idemgrpc.Replayed(header) {
					t.Errorf("recorded %v: retry not marked replayed", c)
				}
				if got, want := encoded(t, status.Convert(again).Proto()), encoded(t, status.Convert(first).Proto()); !bytes.Equal(got, want) {
					t.Errorf("replayed status %v, want %v", again, first)
				}
			} else if status.Code(again) != c || idemgrpc.Replayed(header) {
				t.Errorf("released %v: retry got %v (replayed %v), want the handler's %v again", c, again, idemgrpc.Replayed(header), c)
			}
			// Retried codes (ABORTED, UNAVAILABLE) run once per attempt: count
			// the calls, not the attempts, by the policy's max.
			if n := f.w.runs.Load(); c != codes.Aborted && c != codes.Unavailable && n != wantRuns {
				t.Errorf("handler ran %d times, want %d", n, wantRuns)
			}
		})
	}
}

func TestStorm(t *testing.T) {
	f := newFixture(t, []idempotency.EngineOption{idempotency.WithWait(true)})
	const callers = 32
	start := make(chan struct{})
	answers := make([]answer, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			<-start
			answers[i] = create(keyed(t.Context(), "storm", "Bearer alice"), f.cc, "gear")
		})
	}
	close(start)
	wg.Wait()
	if n := f.w.runs.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
	want := encoded(t, answers[0].resp)
	for i, a := range answers {
		if a.err != nil {
			t.Errorf("caller %d: %v", i, a.err)
		} else if got := encoded(t, a.resp); !bytes.Equal(got, want) {
			t.Errorf("caller %d: %x, want %x", i, got, want)
		}
	}
}

// TestDetached: a client that hangs up does not stop a started handler; its
// answer is recorded and the retry gets it. The interceptor detaches the
// handler itself, or leaves it to an engine made WithDetachedRun(true).
func TestDetached(t *testing.T) {
	for _, engineDetached := range []bool{false, true} {
		t.Run(map[bool]string{false: "interceptor", true: "engine"}[engineDetached], func(t *testing.T) {
			testDetached(t, engineDetached)
		})
	}
}

func testDetached(t *testing.T, engineDetached bool) {
	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan idempotency.Execution, 1)
	f := &fixture{w: &widgets{}}
	f.w.create = func(ctx context.Context, in *structpb.Struct) (*structpb.Struct, error) {
		close(started)
		<-release
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return structpb.NewStruct(map[string]any{"id": "w1"})
	}
	f.engine = idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(engineDetached), idempotency.WithObserver(&idempotency.Observer{
		Done: func(_ context.Context, x idempotency.Execution) {
			if x.Outcome == idempotency.OutcomeExecuted {
				done <- x
			}
		},
	}))
	f.cc = dial(t, serve(t, f.w, idemgrpc.UnaryServerInterceptor(f.engine)))

	ctx, cancel := context.WithCancel(keyed(t.Context(), "key-1", "Bearer alice"))
	go func() { <-started; cancel() }()
	if a := create(ctx, f.cc, "gear"); status.Code(a.err) != codes.Canceled {
		t.Fatalf("cancelled call: %v, want Canceled", a.err)
	}
	close(release)
	<-done
	a := create(keyed(t.Context(), "key-1", "Bearer alice"), f.cc, "gear")
	if a.err != nil || !a.replayed() || a.resp.GetFields()["id"].GetStringValue() != "w1" {
		t.Fatalf("retry: %v %v, replayed %v; want the recorded answer", a.resp, a.err, a.replayed())
	}
	if n := f.w.runs.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
}

func TestStreamingPassesThrough(t *testing.T) {
	f := newFixture(t, nil, idemgrpc.WithRequired(true))
	ctx := keyed(t.Context(), "key-1", "Bearer alice")
	for range 2 {
		s, err := f.cc.NewStream(ctx, &widgetsDesc.Streams[0], methodWatch)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.SendMsg(wrapperspb.String("tick")); err != nil {
			t.Fatal(err)
		}
		if err := s.CloseSend(); err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			var m wrapperspb.StringValue
			if err := s.RecvMsg(&m); err != nil {
				break
			}
			n++
		}
		if n != 3 {
			t.Errorf("stream got %d messages, want 3", n)
		}
	}
}
