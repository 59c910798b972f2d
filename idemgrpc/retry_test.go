package idemgrpc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemgrpc"
)

// TestRetryPolicyInFlight: a duplicate that finds the first call in flight
// is refused with ABORTED, trailers-only, so the service config's retry
// policy retries it with the same key, and the retry ends with the replay.
// A gate outside the interceptor orders the attempts: the duplicate's first
// attempt runs while the first call holds the key, and its later attempts
// reach the interceptor only once the first call has recorded its answer.
func TestRetryPolicyInFlight(t *testing.T) {
	started, release, firstDone := make(chan struct{}), make(chan struct{}), make(chan struct{})
	w := &widgets{create: func(ctx context.Context, in *structpb.Struct) (*structpb.Struct, error) {
		if in.GetFields()["name"].GetStringValue() == "gear" {
			close(started)
			<-release
		}
		return structpb.NewStruct(map[string]any{"id": "w1"})
	}}
	var attempts atomic.Int64
	var duplicateCodes []codes.Code // of the duplicate's attempts, in order
	var mu sync.Mutex
	gate := func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		n := attempts.Add(1)
		if n > 2 {
			<-firstDone
		}
		resp, err := handler(ctx, req)
		switch n {
		case 1:
			close(firstDone)
		case 2:
			close(release) // the duplicate was refused: let the first finish
		}
		if n > 1 {
			mu.Lock()
			duplicateCodes = append(duplicateCodes, status.Code(err))
			mu.Unlock()
		}
		return resp, err
	}
	seen := &keysSeen{}
	engine := idempotency.NewEngine(idempotency.NewInMemoryStore())
	cc := dial(t, serve(t, w, gate, seen.intercept, idemgrpc.UnaryServerInterceptor(engine)))
	ctx := keyed(t.Context(), "key-1", "Bearer alice")

	first := make(chan answer, 1)
	go func() { first <- create(ctx, cc, "gear") }()
	<-started
	// The same request under the same key; the gate tells it apart by
	// the order of attempts, the handler by nothing.
	dup := create(ctx, cc, "gear")
	if a := <-first; a.err != nil || a.replayed() {
		t.Fatalf("first call: %v, replayed %v", a.err, a.replayed())
	}
	if dup.err != nil || !dup.replayed() || dup.resp.GetFields()["id"].GetStringValue() != "w1" {
		t.Fatalf("duplicate: %v %v, replayed %v; want the replay", dup.resp, dup.err, dup.replayed())
	}
	mu.Lock()
	got := duplicateCodes
	mu.Unlock()
	if want := []codes.Code{codes.Aborted, codes.OK}; !equal(got, want) {
		t.Errorf("duplicate's attempts ended %v, want %v", got, want)
	}
	if n := w.runs.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
	for _, k := range seen.all() {
		if k != "key-1" {
			t.Errorf("an attempt carried key %q, want key-1", k)
		}
	}
}

// flakyStore is an InMemoryStore whose first failures Begin calls fail, as
// a store outage would.
type flakyStore struct {
	*idempotency.InMemoryStore
	failures atomic.Int64
}

var errOutage = errors.New("connection refused")

func (s *flakyStore) Begin(ctx context.Context, key, identity string, req idempotency.ClaimRequest) (idempotency.Claim, error) {
	if s.failures.Add(-1) >= 0 {
		return idempotency.Claim{}, errOutage
	}
	return s.InMemoryStore.Begin(ctx, key, identity, req)
}

// TestRetryPolicyStoreOutage: a store outage is refused with UNAVAILABLE,
// trailers-only, so the retry policy retries with the same key until the
// store answers; the handler runs once.
func TestRetryPolicyStoreOutage(t *testing.T) {
	store := &flakyStore{InMemoryStore: idempotency.NewInMemoryStore()}
	store.failures.Store(2)
	w := &widgets{}
	seen := &keysSeen{}
	cc := dial(t, serve(t, w, seen.intercept, idemgrpc.UnaryServerInterceptor(idempotency.NewEngine(store))))
	a := create(keyed(t.Context(), "", "Bearer alice"), cc, "gear") // the client interceptor sets the key
	if a.err != nil {
		t.Fatalf("call across the outage: %v", a.err)
	}
	keys := seen.all()
	if len(keys) != 3 || keys[0] != keys[1] || keys[1] != keys[2] {
		t.Errorf("attempts carried keys %q, want one key three times", keys)
	}
	if n := w.runs.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
	// The outage's refusal says what it was, and nothing of the store's error.
	store.failures.Store(5)
	err := dialPlain(t, serveOn(t, w, store)).Invoke(keyed(t.Context(), "key-2", "Bearer alice"), methodCreate, &structpb.Struct{}, new(structpb.Struct))
	if status.Code(err) != codes.Unavailable || reason(err) != idemgrpc.ReasonStoreUnavailable || strings.Contains(status.Convert(err).Message(), errOutage.Error()) {
		t.Errorf("outage: %v, want Unavailable %s without the store's error", err, idemgrpc.ReasonStoreUnavailable)
	}
}

// serveOn serves w over store with the interceptor alone.
func serveOn(t *testing.T, w *widgets, store idempotency.Store) string {
	return serve(t, w, idemgrpc.UnaryServerInterceptor(idempotency.NewEngine(store)))
}

func equal[T comparable](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// lossyProxy forwards TCP connections to a server. On the first connection
// it forwards the client's bytes as they come and the server's HTTP/2
// frames up to the first HEADERS frame of a stream, the start of a
// response; there it closes both sides, losing the response of a request
// the server has run. Later connections are forwarded whole.
type lossyProxy struct {
	lis     net.Listener
	target  string
	dropped chan struct{} // closed when a response was lost
	wg      sync.WaitGroup
}

func newLossyProxy(t *testing.T, target string) *lossyProxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &lossyProxy{lis: lis, target: target, dropped: make(chan struct{})}
	p.wg.Go(p.accept)
	t.Cleanup(func() { lis.Close(); p.wg.Wait() })
	return p
}

func (p *lossyProxy) addr() string { return p.lis.Addr().String() }

func (p *lossyProxy) accept() {
	for first := true; ; first = false {
		client, err := p.lis.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		closeBoth := sync.OnceFunc(func() { client.Close(); server.Close() })
		p.wg.Go(func() { io.Copy(server, client); closeBoth() })
		if first {
			p.wg.Go(func() { p.loseResponse(client, server); closeBoth() })
		} else {
			p.wg.Go(func() { io.Copy(client, server); closeBoth() })
		}
	}
}

// loseResponse forwards the server's frames to the client until the first
// response HEADERS frame, which it drops.
func (p *lossyProxy) loseResponse(client, server net.Conn) {
	const frameHeaders = 0x1
	var hdr [9]byte
	for {
		if _, err := io.ReadFull(server, hdr[:]); err != nil {
			return
		}
		length := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		stream := uint32(hdr[5]&0x7f)<<24 | uint32(hdr[6])<<16 | uint32(hdr[7])<<8 | uint32(hdr[8])
		if hdr[3] == frameHeaders && stream != 0 {
			close(p.dropped)
			return
		}
		payload := make([]byte, length)
		if _, err := io.ReadFull(server, payload); err != nil {
			return
		}
		if _, err := client.Write(append(hdr[:], payload...)); err != nil {
			return
		}
	}
}

// TestLostResponse: the connection breaks after the server ran the call and
// before its answer reached the client; the client's retry (the same key,
// from the client interceptor) gets the replay, and the handler ran once.
func TestLostResponse(t *testing.T) {
	w := &widgets{}
	seen := &keysSeen{}
	addr := serve(t, w, seen.intercept, idemgrpc.UnaryServerInterceptor(idempotency.NewEngine(idempotency.NewInMemoryStore())))
	proxy := newLossyProxy(t, addr)
	cc := dial(t, proxy.addr())
	a := create(keyed(t.Context(), "", "Bearer alice"), cc, "gear")
	select {
	case <-proxy.dropped:
	default:
		t.Fatal("the proxy lost no response")
	}
	if a.err != nil || !a.replayed() {
		t.Fatalf("call across the lost response: %v, replayed %v; want the replay", a.err, a.replayed())
	}
	if n := w.runs.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
	keys := seen.all()
	if len(keys) != 2 || keys[0] != keys[1] || keys[0] == "" {
		t.Errorf("attempts carried keys %q, want one key twice", keys)
	}
}

// TestRefusalTrailersOnly: the interceptor sends no header metadata before
// a refusal (grpc-go's retry policy would not retry it otherwise).
func TestRefusalTrailersOnly(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	w := &widgets{create: func(context.Context, *structpb.Struct) (*structpb.Struct, error) {
		close(started)
		<-release
		return &structpb.Struct{}, nil
	}}
	addr := serve(t, w, idemgrpc.UnaryServerInterceptor(idempotency.NewEngine(idempotency.NewInMemoryStore())))
	cc := dialPlain(t, addr, grpc.WithDisableRetry())
	ctx := keyed(t.Context(), "key-1", "Bearer alice")
	first := make(chan answer, 1)
	go func() { first <- create(ctx, cc, "gear") }()
	<-started
	dup := create(ctx, cc, "gear")
	close(release)
	if a := <-first; a.err != nil {
		t.Fatal(a.err)
	}
	if status.Code(dup.err) != codes.Aborted || reason(dup.err) != idemgrpc.ReasonInFlight {
		t.Errorf("duplicate: %v, want Aborted %s", dup.err, idemgrpc.ReasonInFlight)
	}
	for k := range dup.header {
		if k != "content-type" { // a trailers-only answer's header block
			t.Errorf("refusal sent header metadata %q: %v", k, dup.header[k])
		}
	}
}
