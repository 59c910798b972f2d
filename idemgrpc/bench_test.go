package idemgrpc_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemgrpc"
)

// On a shared machine the load from other work changes within seconds, so
// BenchmarkUnaryInterleaved runs the bare server and the one with the
// interceptor in alternating slices of time, in the order ABBA BAAB …, and
// reports the comparison itself, for a flat request and answer (a few
// scalar fields, Put) and for map-heavy ones (a Struct, Create, whose
// deterministic encoding sorts its maps). It ignores b.N: run it with -benchtime 1x:
//
//	go test -run '^$' -bench UnaryInterleaved -benchtime 1x ./idemgrpc
func BenchmarkUnaryInterleaved(b *testing.B) {
	const (
		slices  = 32
		slice   = 125 * time.Millisecond
		callers = 32 // concurrent calls on one connection
	)
	for _, msg := range []string{"flat", "struct"} {
		for _, path := range []string{"replay", "fresh"} {
			b.Run("msg="+msg+"/path="+path, func(b *testing.B) {
				bare := loopbackLoop(b, false, msg, path, callers)
				idem := loopbackLoop(b, true, msg, path, callers)
				nb, ni, tb, ti := interleave(slices, slice, bare, idem)
				rateBare, rateIdem := float64(nb)/tb.Seconds(), float64(ni)/ti.Seconds()
				b.ReportMetric(rateBare, "bare-calls/s")
				b.ReportMetric(rateIdem, "idemgrpc-calls/s")
				b.ReportMetric(rateIdem/rateBare, "throughput-ratio")
			})
		}
	}
}

// interleave runs a and b for slices slices of d each, alternating ABBA,
// and returns the calls each completed and the time each ran.
func interleave(slices int, d time.Duration, a, b func(until time.Time) int64) (na, nb int64, ta, tb time.Duration) {
	order := []bool{true, false, false, true} // ABBA
	for i := range slices {
		runA := order[i%4]
		if (i/4)%2 == 1 {
			runA = !runA // BAAB in the next four
		}
		start := time.Now()
		if runA {
			na += a(start.Add(d))
			ta += time.Since(start)
		} else {
			nb += b(start.Add(d))
			tb += time.Since(start)
		}
	}
	return na, nb, ta, tb
}

// loopbackLoop starts a server on 127.0.0.1, with the interceptor over an
// in-memory engine or bare, and a client connection to it, and returns a
// loop that has callers goroutines call Create until a deadline. Both kinds
// of server get the same calls, key and credentials included.
func loopbackLoop(b *testing.B, intercepted bool, msg, path string, callers int) func(time.Time) int64 {
	answer, _ := structpb.NewStruct(map[string]any{"id": "w1", "name": "gear"})
	w := &widgets{create: func(context.Context, *structpb.Struct) (*structpb.Struct, error) { return answer, nil }}
	var interceptors []grpc.UnaryServerInterceptor
	if intercepted {
		engine := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithDetachedRun(true))
		interceptors = append(interceptors, idemgrpc.UnaryServerInterceptor(engine))
	}
	cc := dialPlain(b, serve(b, w, interceptors...))
	var in proto.Message
	var out func() proto.Message
	method := methodCreate
	switch msg {
	case "flat":
		method = methodPut
		in = &descriptorpb.FieldDescriptorProto{Name: proto.String("gear"), Number: proto.Int32(2), TypeName: proto.String(".shop.Size"), JsonName: proto.String("gear")}
		out = func() proto.Message { return new(descriptorpb.FieldDescriptorProto) }
	default:
		in, _ = structpb.NewStruct(map[string]any{"name": "gear", "size": map[string]any{"w": 2.0, "h": 3.0}})
		out = func() proto.Message { return new(structpb.Struct) }
	}
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	var seq atomic.Int64
	call := func() error {
		key := "k"
		if path == "fresh" {
			key = run + "-" + strconv.FormatInt(seq.Add(1), 10)
		}
		return cc.Invoke(keyed(context.Background(), key, "Bearer bench-token"), method, in, out())
	}
	if err := call(); err != nil { // connect, and record "k"
		b.Fatal(err)
	}
	return func(until time.Time) int64 {
		var n atomic.Int64
		var failed atomic.Value
		var wg sync.WaitGroup
		for range callers {
			wg.Go(func() {
				for time.Now().Before(until) {
					if err := call(); err != nil {
						failed.Store(err)
						return
					}
					n.Add(1)
				}
			})
		}
		wg.Wait()
		if err, _ := failed.Load().(error); err != nil {
			b.Fatal(err)
		}
		return n.Load()
	}
}
