package idemgrpc_test

import (
	"testing"

	"google.golang.org/grpc"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemgrpc"
)

func TestClientOptions(t *testing.T) {
	w := &widgets{}
	seen := &keysSeen{}
	addr := serve(t, w, seen.intercept, idemgrpc.UnaryServerInterceptor(idempotency.NewEngine(idempotency.NewInMemoryStore())))

	// A generator that always answers one key: the second call is a replay.
	fixed := dialPlain(t, addr, grpc.WithUnaryInterceptor(idemgrpc.UnaryClientInterceptor(
		idemgrpc.WithKeyGenerator(func() string { return "always-this" }))))
	ctx := keyed(t.Context(), "", "Bearer alice")
	if a, b := create(ctx, fixed, "gear"), create(ctx, fixed, "gear"); a.err != nil || b.err != nil || a.replayed() || !b.replayed() {
		t.Errorf("fixed key: %v, %v; replayed %v, %v; want a replay the second time", a.err, b.err, a.replayed(), b.replayed())
	}
	// A method left out gets no key.
	none := dialPlain(t, addr, grpc.WithUnaryInterceptor(idemgrpc.UnaryClientInterceptor(
		idemgrpc.WithClientMethods(func(m string) bool { return m != methodCreate }))))
	before := len(seen.all())
	if a := create(ctx, none, "gear"); a.err != nil {
		t.Fatal(a.err)
	}
	if keys := seen.all(); len(keys) != before {
		t.Errorf("a method left out got key %q", keys[before:])
	}
	if n := w.runs.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2", n)
	}
}
