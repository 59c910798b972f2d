package idemotel_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemotel"
)

// The key and identity of the tests' requests: neither may appear anywhere
// in what is exported.
const (
	rawKey      = "raw-key-4c1d9e"
	rawIdentity = "user:secret-identity-77aa"
)

var req = idempotency.Request{Key: rawKey, Identity: rawIdentity, Fingerprint: "fp"}

// harness is an engine observed by idemotel into in-memory exporters.
type harness struct {
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	tp     *sdktrace.TracerProvider
	engine *idempotency.Engine
}

func newHarness(t *testing.T, store idempotency.Store, opts []idemotel.Option, eopts ...idempotency.EngineOption) *harness {
	t.Helper()
	h := &harness{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	h.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(h.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(h.reader))
	opts = append([]idemotel.Option{idemotel.WithTracerProvider(h.tp), idemotel.WithMeterProvider(mp)}, opts...)
	eopts = append(eopts, idempotency.WithObserver(idemotel.NewObserver(opts...)))
	h.engine = idempotency.NewEngine(store, eopts...)
	return h
}

// do runs Do under a parent span "request", as an adapter's request would be.
func (h *harness) do(t *testing.T, r idempotency.Request, fn idempotency.Func) (trace.SpanContext, idempotency.Result, error) {
	t.Helper()
	ctx, parent := h.tp.Tracer("test").Start(context.Background(), "request")
	defer parent.End()
	res, err := h.engine.Do(ctx, r, fn)
	return parent.SpanContext(), res, err
}

// executions returns the ended execution spans, in order, and checks that
// nothing exported carries the raw key or identity.
func (h *harness) executions(t *testing.T) []sdktrace.ReadOnlySpan {
	t.Helper()
	var out []sdktrace.ReadOnlySpan
	for _, s := range h.spans.Ended() {
		assertNoRaw(t, s)
		if s.Name() == "idempotency.execute" {
			out = append(out, s)
		}
	}
	return out
}

// children returns the names of the ended spans whose parent is p.
func (h *harness) children(p sdktrace.ReadOnlySpan) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range h.spans.Ended() {
		if s.Parent().SpanID() == p.SpanContext().SpanID() {
			out = append(out, s)
		}
	}
	return out
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return out
}

// assertNoRaw fails if the span's name, attributes, events or status hold
// the raw key or identity.
func assertNoRaw(t *testing.T, s sdktrace.ReadOnlySpan) {
	t.Helper()
	texts := []string{s.Name(), s.Status().Description}
	attrs := append([]attribute.KeyValue(nil), s.Attributes()...)
	for _, e := range s.Events() {
		texts = append(texts, e.Name)
		attrs = append(attrs, e.Attributes...)
	}
	for _, kv := range attrs {
		texts = append(texts, string(kv.Key), kv.Value.Emit())
	}
	for _, text := range texts {
		for _, raw := range []string{rawKey, rawIdentity} {
			if strings.Contains(text, raw) {
				t.Errorf("span %s exports %q: %q", s.Name(), raw, text)
			}
		}
	}
}

func attr(s sdktrace.ReadOnlySpan, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func wantAttr(t *testing.T, s sdktrace.ReadOnlySpan, key string, want attribute.Value) {
	t.Helper()
	got, ok := attr(s, key)
	if !ok {
		t.Errorf("span %s has no %s, want %s", s.Name(), key, want.Emit())
		return
	}
	if got != want {
		t.Errorf("span %s: %s = %s, want %s", s.Name(), key, got.Emit(), want.Emit())
	}
}

func ok201(context.Context) (idempotency.Response, error) {
	return idempotency.Response{Status: 201, Body: []byte("made")}, nil
}

func TestSpansExecutedThenReplayed(t *testing.T) {
	h := newHarness(t, idempotency.NewInMemoryStore(), []idemotel.Option{idemotel.WithStoreName("memory")})
	parent1, first, err := h.do(t, req, ok201)
	if err != nil || !first.Recorded || first.Fence == 0 {
		t.Fatalf("first Do = (%+v, %v), want recorded with a fence", first, err)
	}
	parent2, res, err := h.do(t, req, ok201)
	if err != nil || !res.Replayed {
		t.Fatalf("second Do = (%+v, %v), want replayed", res, err)
	}

	x := h.executions(t)
	if len(x) != 2 {
		t.Fatalf("got %d execution spans, want 2", len(x))
	}
	for i, parent := range []trace.SpanContext{parent1, parent2} {
		if x[i].Parent().SpanID() != parent.SpanID() || x[i].SpanContext().TraceID() != parent.TraceID() {
			t.Errorf("execution %d: parent %v, want the request span %v", i, x[i].Parent().SpanID(), parent.SpanID())
		}
		if x[i].SpanKind() != trace.SpanKindInternal {
			t.Errorf("execution %d: kind %v, want internal", i, x[i].SpanKind())
		}
		if x[i].Status().Code != codes.Unset {
			t.Errorf("execution %d: status %v, want unset", i, x[i].Status())
		}
		wantAttr(t, x[i], "idempotency.store", attribute.StringValue("memory"))
		if _, ok := attr(x[i], "idempotency.key_digest"); ok {
			t.Errorf("execution %d has a key digest without WithKeyDigest", i)
		}
	}
	wantAttr(t, x[0], "idempotency.outcome", attribute.StringValue("executed"))
	wantAttr(t, x[0], "idempotency.replayed", attribute.BoolValue(false))
	wantAttr(t, x[0], "idempotency.fence", attribute.Int64Value(int64(first.Fence)))
	wantAttr(t, x[1], "idempotency.outcome", attribute.StringValue("replayed"))
	wantAttr(t, x[1], "idempotency.replayed", attribute.BoolValue(true))

	calls := h.children(x[0])
	if got := strings.Join(names(calls), ","); got != "idempotency.store.begin,idempotency.store.complete" {
		t.Errorf("store call spans of the first execution = %s, want begin,complete", got)
	}
	for _, c := range calls {
		if c.StartTime().Before(x[0].StartTime()) || c.EndTime().After(x[0].EndTime()) || c.EndTime().Before(c.StartTime()) {
			t.Errorf("%s spans %v..%v, outside its execution's %v..%v", c.Name(), c.StartTime(), c.EndTime(), x[0].StartTime(), x[0].EndTime())
		}
		wantAttr(t, c, "idempotency.store", attribute.StringValue("memory"))
	}
}

// failBegin is a store whose Begin fails.
type failBegin struct{ *idempotency.InMemoryStore }

var errDown = errors.New("store down")

func (failBegin) Begin(context.Context, string, string, idempotency.ClaimRequest) (idempotency.Claim, error) {
	return idempotency.Claim{}, errDown
}

// failComplete is a store whose Complete fails: no response is recorded.
type failComplete struct{ *idempotency.InMemoryStore }

func (failComplete) Complete(context.Context, idempotency.Token, idempotency.Cached) error {
	return errDown
}

func TestSpanOutcomes(t *testing.T) {
	errCommand := errors.New("command failed")
	tests := []struct {
		name    string
		store   func() idempotency.Store
		before  func(e *idempotency.Engine) // runs first, unobserved by the assertions
		fn      idempotency.Func
		outcome string
		err     error // recorded on the span with status Error; nil: status unset
	}{
		{name: "failed", fn: func(context.Context) (idempotency.Response, error) { return idempotency.Response{}, errCommand },
			outcome: "failed", err: errCommand},
		{name: "store error", store: func() idempotency.Store { return failBegin{idempotency.NewInMemoryStore()} },
			fn: ok201, outcome: "store_error", err: errDown},
		{name: "record failed", store: func() idempotency.Store { return failComplete{idempotency.NewInMemoryStore()} },
			fn: ok201, outcome: "record_failed", err: errDown},
		{name: "mismatch", fn: ok201, outcome: "mismatch", before: func(e *idempotency.Engine) {
			_, _ = e.Do(context.Background(), idempotency.Request{Key: rawKey, Identity: rawIdentity, Fingerprint: "other"}, ok201)
		}},
		{name: "invalid key", fn: ok201, outcome: "invalid_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			store := idempotency.Store(idempotency.NewInMemoryStore())
			if tt.store != nil {
				store = tt.store()
			}
			h := newHarness(t, store, nil)
			if tt.before != nil {
				tt.before(h.engine)
			}
			r := req
			if tt.outcome == "invalid_key" {
				r.Key = rawKey + " \x00"
			}
			_, _, _ = h.do(t, r, tt.fn)
			x := h.executions(t)
			if len(x) == 0 {
				t.Fatal("no execution span")
			}
			last := x[len(x)-1]
			wantAttr(t, last, "idempotency.outcome", attribute.StringValue(tt.outcome))
			wantAttr(t, last, "idempotency.replayed", attribute.BoolValue(false))
			if tt.err == nil {
				if last.Status().Code != codes.Unset {
					t.Errorf("status %v, want unset", last.Status())
				}
				return
			}
			if last.Status().Code != codes.Error || !strings.Contains(last.Status().Description, tt.err.Error()) {
				t.Errorf("status %+v, want Error with %q", last.Status(), tt.err)
			}
			if !hasException(last) {
				t.Errorf("no exception event on the span (events %v)", last.Events())
			}
		})
	}
}

func hasException(s sdktrace.ReadOnlySpan) bool {
	for _, e := range s.Events() {
		if e.Name == "exception" {
			return true
		}
	}
	return false
}

func TestStoreCallSpanRecordsError(t *testing.T) {
	h := newHarness(t, failBegin{idempotency.NewInMemoryStore()}, nil)
	_, _, _ = h.do(t, req, ok201)
	x := h.executions(t)
	if len(x) != 1 {
		t.Fatalf("got %d execution spans, want 1", len(x))
	}
	calls := h.children(x[0])
	if len(calls) != 1 || calls[0].Name() != "idempotency.store.begin" {
		t.Fatalf("store call spans = %v, want one idempotency.store.begin", names(calls))
	}
	if calls[0].Status().Code != codes.Error || !hasException(calls[0]) {
		t.Errorf("begin span status %+v (events %v), want Error with the error recorded", calls[0].Status(), calls[0].Events())
	}
}

func TestSpanInFlight(t *testing.T) {
	h := newHarness(t, idempotency.NewInMemoryStore(), nil)
	in, out := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		_, _ = h.engine.Do(context.Background(), req, func(context.Context) (idempotency.Response, error) {
			close(in)
			<-out
			return idempotency.Response{Status: 200}, nil
		})
	})
	<-in
	_, _, err := h.do(t, req, ok201)
	close(out)
	wg.Wait()
	if !errors.Is(err, idempotency.ErrInFlight) {
		t.Fatalf("second Do = %v, want ErrInFlight", err)
	}
	x := h.executions(t)
	if len(x) != 2 {
		t.Fatalf("got %d execution spans, want 2", len(x))
	}
	// The in-flight one ended first.
	wantAttr(t, x[0], "idempotency.outcome", attribute.StringValue("in_flight"))
	if x[0].Status().Code != codes.Unset {
		t.Errorf("in-flight status %v, want unset: it is an answer, not a failure", x[0].Status())
	}
	wantAttr(t, x[1], "idempotency.outcome", attribute.StringValue("executed"))
}

// loseLease is a store whose Renew always reports the claim lost.
type loseLease struct{ *idempotency.InMemoryStore }

func (loseLease) Renew(context.Context, idempotency.Token, time.Duration) error {
	return idempotency.ErrLeaseLost
}

func TestLeaseLost(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, loseLease{idempotency.NewInMemoryStore()}, nil, idempotency.WithLease(3*time.Second))
		_, res, err := h.do(t, req, func(ctx context.Context) (idempotency.Response, error) {
			<-ctx.Done()                // the heartbeat's renewal says the claim is lost
			time.Sleep(3 * time.Second) // fake time: the claim runs out in the store too
			return idempotency.Response{Status: 200}, nil
		})
		if err != nil || res.Recorded {
			t.Fatalf("Do = (%+v, %v), want not recorded", res, err)
		}
		x := h.executions(t)
		if len(x) != 1 {
			t.Fatalf("got %d execution spans, want 1", len(x))
		}
		var lost []string
		for _, e := range x[0].Events() {
			if e.Name == "idempotency.lease_lost" {
				for _, kv := range e.Attributes {
					if kv.Key == "idempotency.lease.cause" {
						lost = append(lost, kv.Value.AsString())
					}
				}
			}
		}
		if len(lost) != 1 || lost[0] != "lost" {
			t.Errorf("lease_lost events with causes %v, want one, lost", lost)
		}
		if got := strings.Join(names(h.children(x[0])), ","); !strings.Contains(got, "idempotency.store.renew") {
			t.Errorf("store call spans %s, want a renew", got)
		}
		m := collect(t, h.reader)
		if got := sum(t, m, "idempotency.lease.losses", attribute.String("idempotency.lease.cause", "lost")); got != 1 {
			t.Errorf("lease losses (lost) = %d, want 1", got)
		}
		if got := sum(t, m, "idempotency.record.errors"); got != 1 {
			t.Errorf("record errors = %d, want 1", got)
		}
	})
}

func TestKeyDigest(t *testing.T) {
	digest := func(secret string, r idempotency.Request) string {
		t.Helper()
		h := newHarness(t, idempotency.NewInMemoryStore(), []idemotel.Option{idemotel.WithKeyDigest([]byte(secret))})
		_, _, _ = h.do(t, r, ok201)
		x := h.executions(t)
		if len(x) != 1 {
			t.Fatalf("got %d execution spans, want 1", len(x))
		}
		v, ok := attr(x[0], "idempotency.key_digest")
		if !ok {
			t.Fatal("no idempotency.key_digest with WithKeyDigest")
		}
		return v.AsString()
	}
	d := digest("s1", req)
	if len(d) != 32 || strings.Trim(d, "0123456789abcdef") != "" {
		t.Errorf("digest %q, want 32 hex digits", d)
	}
	if again := digest("s1", req); again != d {
		t.Errorf("digest of the same request = %q, then %q: want stable", d, again)
	}
	if other := digest("s2", req); other == d {
		t.Errorf("digest under another secret = %q, the same: want it to depend on the secret", other)
	}
	if other := digest("s1", idempotency.Request{Key: rawKey, Identity: "someone else"}); other == d {
		t.Error("another identity gives the same digest")
	}
	// The key and the identity are not simply concatenated.
	ab := digest("s1", idempotency.Request{Key: "ab", Identity: "c"})
	if a := digest("s1", idempotency.Request{Key: "a", Identity: "bc"}); a == ab {
		t.Errorf("(ab, c) and (a, bc) both digest to %q", a)
	}
}

// collect reads the metrics, and checks that none carries the raw key or
// identity in an attribute.
func collect(t *testing.T, r *sdkmetric.ManualReader) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m.Data
			var sets []attribute.Set
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					sets = append(sets, p.Attributes)
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					sets = append(sets, p.Attributes)
				}
			}
			for _, s := range sets {
				if enc := s.Encoded(attribute.DefaultEncoder()); strings.Contains(enc, rawKey) || strings.Contains(enc, rawIdentity) {
					t.Errorf("metric %s carries the raw key or identity: %s", m.Name, enc)
				}
			}
		}
	}
	return out
}

// matches says whether set holds every one of want.
func matches(set attribute.Set, want []attribute.KeyValue) bool {
	for _, kv := range want {
		if v, ok := set.Value(kv.Key); !ok || v != kv.Value {
			return false
		}
	}
	return true
}

// sum is the total of the counter name over the points with the attributes want.
func sum(t *testing.T, m map[string]metricdata.Aggregation, name string, want ...attribute.KeyValue) int64 {
	t.Helper()
	d, ok := m[name].(metricdata.Sum[int64])
	if !ok {
		t.Errorf("metric %s is %T, want an int64 sum", name, m[name])
		return -1
	}
	var n int64
	for _, p := range d.DataPoints {
		if matches(p.Attributes, want) {
			n += p.Value
		}
	}
	return n
}

// count is the number of observations of the histogram name with the attributes want.
func count(t *testing.T, m map[string]metricdata.Aggregation, name string, want ...attribute.KeyValue) uint64 {
	t.Helper()
	d, ok := m[name].(metricdata.Histogram[float64])
	if !ok {
		t.Errorf("metric %s is %T, want a float64 histogram", name, m[name])
		return 0
	}
	var n uint64
	for _, p := range d.DataPoints {
		if matches(p.Attributes, want) {
			n += p.Count
		}
	}
	return n
}

func TestMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, idempotency.NewInMemoryStore(), []idemotel.Option{idemotel.WithStoreName("memory")}, idempotency.WithWait(true))
		in := make(chan struct{})
		var wg sync.WaitGroup
		wg.Go(func() {
			_, _ = h.engine.Do(context.Background(), req, func(context.Context) (idempotency.Response, error) {
				close(in)
				time.Sleep(2 * time.Second) // fake time: the waiter below waits for it
				return idempotency.Response{Status: 201}, nil
			})
		})
		<-in
		if _, res, err := h.do(t, req, ok201); err != nil || !res.Replayed {
			t.Fatalf("waiter = (%+v, %v), want the first response", res, err)
		}
		wg.Wait()
		_, _, _ = h.do(t, idempotency.Request{Key: "other", Identity: rawIdentity, Fingerprint: "fp"},
			func(context.Context) (idempotency.Response, error) { return idempotency.Response{}, errors.New("no") })

		m := collect(t, h.reader)
		store := attribute.String("idempotency.store", "memory")
		for outcome, want := range map[string]int64{"executed": 1, "replayed": 1, "failed": 1, "mismatch": 0} {
			o := attribute.String("idempotency.outcome", outcome)
			if got := sum(t, m, "idempotency.executions", o, store); got != want {
				t.Errorf("executions %s = %d, want %d", outcome, got, want)
			}
			if got := count(t, m, "idempotency.execution.duration", o, store); got != uint64(want) {
				t.Errorf("execution durations %s = %d, want %d", outcome, got, want)
			}
		}
		if got := count(t, m, "idempotency.wait.duration", store); got != 1 {
			t.Errorf("waits = %d, want 1", got)
		}
		if d := m["idempotency.wait.duration"].(metricdata.Histogram[float64]); len(d.DataPoints) == 1 && d.DataPoints[0].Sum != 2 {
			t.Errorf("waited %vs in all, want 2 (fake time)", d.DataPoints[0].Sum)
		}
		if got := count(t, m, "idempotency.store.call.duration", attribute.String("idempotency.store.op", "begin"), attribute.Bool("error", false), store); got < 2 {
			t.Errorf("begin calls = %d, want at least 2", got)
		}
		if got := count(t, m, "idempotency.store.call.duration", attribute.Bool("error", true)); got != 0 {
			t.Errorf("failed store calls = %d, want 0", got)
		}
		if _, ok := m["idempotency.record.errors"]; ok {
			if got := sum(t, m, "idempotency.record.errors"); got != 0 {
				t.Errorf("record errors = %d, want 0", got)
			}
		}
		_ = h.executions(t) // the raw key and identity in no span
	})
}

// An execution that is not sampled exports nothing, store calls included,
// but is still measured.
func TestUnsampled(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.NeverSample()))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	e := idempotency.NewEngine(idempotency.NewInMemoryStore(), idempotency.WithObserver(idemotel.NewObserver(
		idemotel.WithTracerProvider(tp), idemotel.WithMeterProvider(mp), idemotel.WithKeyDigest([]byte("s")))))
	if _, err := e.Do(context.Background(), req, ok201); err != nil {
		t.Fatal(err)
	}
	if got := len(rec.Ended()) + len(rec.Started()); got != 0 {
		t.Errorf("%d spans recorded, want none", got)
	}
	if got := sum(t, collect(t, reader), "idempotency.executions", attribute.String("idempotency.outcome", "executed")); got != 1 {
		t.Errorf("executions = %d, want 1", got)
	}
}
