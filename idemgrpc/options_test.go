package idemgrpc_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemgrpc"
)

// TestReplayElsewhere: a record made by one server is replayed by another
// over the same store, whose interceptor has seen no answer of that type
// (it finds it in the global registry), byte for byte.
func TestReplayElsewhere(t *testing.T) {
	store := idempotency.NewInMemoryStore()
	w1, w2 := &widgets{}, &widgets{}
	cc1 := dial(t, serve(t, w1, idemgrpc.UnaryServerInterceptor(idempotency.NewEngine(store))))
	cc2 := dial(t, serve(t, w2, idemgrpc.UnaryServerInterceptor(idempotency.NewEngine(store))))
	ctx := keyed(t.Context(), "key-1", "Bearer alice")
	first, again := create(ctx, cc1, "gear"), create(ctx, cc2, "gear")
	if first.err != nil || again.err != nil || !again.replayed() {
		t.Fatalf("first %v; on the other server %v, replayed %v", first.err, again.err, again.replayed())
	}
	if !bytes.Equal(encoded(t, again.resp), encoded(t, first.resp)) {
		t.Errorf("replay %v, want %v", again.resp, first.resp)
	}
	if n := w1.runs.Load() + w2.runs.Load(); n != 1 {
		t.Errorf("handlers ran %d times, want 1", n)
	}
}

func TestResponseTooLarge(t *testing.T) {
	f := newFixture(t, []idempotency.EngineOption{idempotency.WithMaxResponseBytes(16)})
	ctx := keyed(t.Context(), "key-1", "Bearer alice")
	first := create(ctx, f.cc, strings.Repeat("long name ", 10))
	if first.err != nil || len(encoded(t, first.resp)) <= 16 {
		t.Fatalf("first call: %v, %d bytes; want its whole answer", first.err, len(encoded(t, first.resp)))
	}
	again := create(ctx, f.cc, strings.Repeat("long name ", 10))
	if status.Code(again.err) != codes.FailedPrecondition || reason(again.err) != idemgrpc.ReasonNotRecorded {
		t.Errorf("retry: %v, want FailedPrecondition %s", again.err, idemgrpc.ReasonNotRecorded)
	}
	if n := f.w.runs.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
}

func TestWithRecordCode(t *testing.T) {
	// NOT_FOUND released (the thing may appear), INTERNAL recorded.
	f := newFixture(t, nil, idemgrpc.WithRecordCode(func(c codes.Code) bool {
		return c == codes.Internal || (c != codes.NotFound && idemgrpc.DefaultRecordCode(c))
	}))
	for _, tc := range []struct {
		code codes.Code
		runs int64
	}{{codes.NotFound, 2}, {codes.Internal, 1}} {
		before := f.w.runs.Load()
		ctx := keyed(t.Context(), "key-"+tc.code.String(), "Bearer alice")
		for range 2 {
			if err := f.cc.Invoke(ctx, methodFail, wrapperspb.String(codeName(tc.code)), new(wrapperspb.StringValue)); status.Code(err) != tc.code {
				t.Fatalf("%v: got %v", tc.code, err)
			}
		}
		if n := f.w.runs.Load() - before; n != tc.runs {
			t.Errorf("%v: handler ran %d times, want %d", tc.code, n, tc.runs)
		}
	}
}

func TestWithMethods(t *testing.T) {
	f := newFixture(t, nil, idemgrpc.WithRequired(true), idemgrpc.WithMethods(func(m string) bool { return m == methodFail }))
	ctx := keyed(t.Context(), "key-1", "Bearer alice")
	for range 2 {
		if a := create(ctx, f.cc, "gear"); a.err != nil || a.replayed() {
			t.Fatalf("uncovered method: %v, replayed %v", a.err, a.replayed())
		}
	}
	if err := dialPlain(t, f.addr).Invoke(context.Background(), methodFail, wrapperspb.String("NOT_FOUND"), new(wrapperspb.StringValue)); reason(err) != idemgrpc.ReasonKeyMissing {
		t.Errorf("covered method without a key: %v, want %s", err, idemgrpc.ReasonKeyMissing)
	}
	if n := f.w.runs.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2", n)
	}
}

func TestNewKey(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		k := idemgrpc.NewKey()
		if len(k) != 36 || k[14] != '4' || !strings.ContainsRune("89ab", rune(k[19])) || k[8] != '-' || k[23] != '-' {
			t.Fatalf("key %q is not a version 4 UUID", k)
		}
		if seen[k] {
			t.Fatalf("key %q made twice", k)
		}
		seen[k] = true
	}
}
