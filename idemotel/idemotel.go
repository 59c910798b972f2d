package idemotel

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/idemkit/idempotency"
)

// ScopeName is the instrumentation scope of the tracer and meter.
const ScopeName = "github.com/idemkit/idempotency/idemotel"

// Attribute keys.
const (
	keyOutcome     = attribute.Key("idempotency.outcome")
	keyReplayed    = attribute.Key("idempotency.replayed")
	keyFence       = attribute.Key("idempotency.fence")
	keyWaited      = attribute.Key("idempotency.waited_ms")
	keyStore       = attribute.Key("idempotency.store")
	keyDigest      = attribute.Key("idempotency.key_digest")
	keyOp          = attribute.Key("idempotency.store.op")
	keyError       = attribute.Key("error")
	keyCause       = attribute.Key("idempotency.lease.cause")
	spanExecute    = "idempotency.execute"
	eventLeaseLost = "idempotency.lease_lost"
)

// digestBytes is how much of the HMAC a key digest keeps: 128 bits, hex.
const digestBytes = 16

// Option configures NewObserver.
type Option func(*config)

type config struct {
	tp     trace.TracerProvider
	mp     metric.MeterProvider
	store  string
	secret []byte
}

// WithTracerProvider sets the provider of the tracer. The default is
// otel.GetTracerProvider() at the time NewObserver is called.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithMeterProvider sets the provider of the meter. The default is
// otel.GetMeterProvider() at the time NewObserver is called.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// WithStoreName sets the idempotency.store attribute of every span and
// metric, such as "redis", "postgres" or "memory". The default is none.
func WithStoreName(name string) Option {
	return func(c *config) { c.store = name }
}

// WithKeyDigest makes each execution span carry idempotency.key_digest: an
// HMAC-SHA256 under secret of the request's key and identity, truncated to
// 128 bits, in hex. The same key and caller give the same digest for as
// long as the secret stays the same. The default, or an empty secret, is no
// key attribute at all.
func WithKeyDigest(secret []byte) Option {
	return func(c *config) { c.secret = append([]byte(nil), secret...) }
}

// NewObserver returns an observer, for idempotency.WithObserver, that
// traces and measures every execution of the engines it is given to.
func NewObserver(opts ...Option) *idempotency.Observer {
	c := config{}
	for _, opt := range opts {
		opt(&c)
	}
	if c.tp == nil {
		c.tp = otel.GetTracerProvider()
	}
	if c.mp == nil {
		c.mp = otel.GetMeterProvider()
	}
	o := newObserver(c)
	return &idempotency.Observer{
		Start:     o.start,
		Done:      o.done,
		StoreCall: o.storeCall,
		LeaseLost: o.leaseLost,
	}
}

// observer holds what the hooks need, the attribute sets precomputed so
// that a measurement allocates none.
type observer struct {
	tracer trace.Tracer
	macs   *sync.Pool // of keyed HMACs (hash.Hash); nil without WithKeyDigest

	startOpts []trace.SpanStartOption // of the execution span
	storeAttr []attribute.KeyValue    // nil without WithStoreName

	m       instruments
	byOut   []measureOpts       // indexed by Outcome; [0] for an invalid one
	calls   map[string]*storeOp // by op
	plain   measureOpts         // the store alone
	lost    measureOpts
	expired measureOpts
}

// storeOp is what a store call of one op needs: its span's name and its
// attribute sets.
type storeOp struct {
	name string
	opts [2]measureOpts // [1]: the call failed
}

// outcomeList is every outcome, to precompute their attributes.
var outcomeList = idempotency.Outcomes()

// ops are the store calls the engine reports.
var ops = []string{"begin", "complete", "release", "renew", "lookup", "store"}

func newObserver(c config) *observer {
	o := &observer{
		tracer: c.tp.Tracer(ScopeName),
		m:      newInstruments(c.mp.Meter(ScopeName)),
		calls:  make(map[string]*storeOp, len(ops)),
	}
	if secret := c.secret; len(secret) > 0 {
		// A pooled HMAC's Reset keeps its key: keying one anew would cost
		// as much as the digest itself.
		o.macs = &sync.Pool{New: func() any { return hmac.New(sha256.New, secret) }}
	}
	if c.store != "" {
		o.storeAttr = []attribute.KeyValue{keyStore.String(c.store)}
	}
	o.startOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)}
	if o.storeAttr != nil {
		o.startOpts = append(o.startOpts, trace.WithAttributes(o.storeAttr...))
	}
	o.plain = o.measure()
	o.byOut = make([]measureOpts, int(outcomeList[len(outcomeList)-1])+1)
	for _, out := range outcomeList {
		o.byOut[out] = o.measure(keyOutcome.String(out.String()))
	}
	o.byOut[0] = o.measure(keyOutcome.String(idempotency.Outcome(0).String()))
	for _, op := range ops {
		o.calls[op] = o.storeOp(op)
	}
	o.lost = o.measure(keyCause.String("lost"))
	o.expired = o.measure(keyCause.String("expired"))
	return o
}

func (o *observer) storeOp(op string) *storeOp {
	return &storeOp{name: "idempotency.store." + op, opts: [2]measureOpts{
		o.measure(keyOp.String(op), keyError.Bool(false)),
		o.measure(keyOp.String(op), keyError.Bool(true)),
	}}
}

// measureOpts is one attribute set as the options of Add and Record.
type measureOpts struct {
	add []metric.AddOption
	rec []metric.RecordOption
}

func (o *observer) measure(kv ...attribute.KeyValue) measureOpts {
	set := attribute.NewSet(append(kv, o.storeAttr...)...)
	opt := metric.WithAttributeSet(set)
	return measureOpts{add: []metric.AddOption{opt}, rec: []metric.RecordOption{opt}}
}

func (o *observer) outcomeOpts(out idempotency.Outcome) *measureOpts {
	if int(out) < len(o.byOut) {
		return &o.byOut[out]
	}
	return &o.byOut[0] // "invalid"
}

func (o *observer) start(ctx context.Context, req idempotency.Request) context.Context {
	ctx, span := o.tracer.Start(ctx, spanExecute, o.startOpts...)
	if o.macs != nil && span.IsRecording() {
		span.SetAttributes(keyDigest.String(o.digest(req)))
	}
	return ctx
}

// digest is the truncated HMAC of the key and identity, the key's length
// first so that no two pairs encode alike ("ab"+"c" and "a"+"bc").
func (o *observer) digest(req idempotency.Request) string {
	h := o.macs.Get().(hash.Hash)
	defer o.macs.Put(h)
	h.Reset()
	var n [binary.MaxVarintLen64]byte
	h.Write(n[:binary.PutUvarint(n[:], uint64(len(req.Key)))])
	h.Write([]byte(req.Key))
	h.Write([]byte(req.Identity))
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:digestBytes])
}

func (o *observer) done(ctx context.Context, x idempotency.Execution) {
	mo := o.outcomeOpts(x.Outcome)
	o.m.executions.Add(ctx, 1, mo.add...)
	o.m.duration.Record(ctx, x.Duration.Seconds(), mo.rec...)
	if x.Waited > 0 {
		o.m.wait.Record(ctx, x.Waited.Seconds(), o.plain.rec...)
	}
	if x.RecordErr != nil {
		o.m.recordErrors.Add(ctx, 1, o.plain.add...)
	}

	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		span.End()
		return
	}
	attrs := make([]attribute.KeyValue, 0, 4)
	attrs = append(attrs, keyOutcome.String(x.Outcome.String()), keyReplayed.Bool(x.Outcome == idempotency.OutcomeReplayed))
	if x.Fence != 0 {
		attrs = append(attrs, keyFence.Int64(int64(x.Fence))) //nolint:gosec // fences count claims: far below 2^63
	}
	if x.Waited > 0 {
		attrs = append(attrs, keyWaited.Float64(float64(x.Waited)/float64(time.Millisecond)))
	}
	span.SetAttributes(attrs...)
	switch x.Outcome {
	case idempotency.OutcomeFailed, idempotency.OutcomePanicked, idempotency.OutcomeStoreError:
		fail(span, x.Err)
	case idempotency.OutcomeRecordFailed:
		fail(span, x.RecordErr)
	}
	span.End()
}

func fail(span trace.Span, err error) {
	if err == nil {
		span.SetStatus(codes.Error, "")
		return
	}
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
}

func (o *observer) storeCall(ctx context.Context, c idempotency.StoreCall) {
	failed := 0
	if c.Err != nil {
		failed = 1
	}
	op, known := o.calls[c.Op]
	if !known {
		op = o.storeOp(c.Op)
	}
	o.m.storeCall.Record(ctx, c.Duration.Seconds(), op.opts[failed].rec...)

	if !trace.SpanFromContext(ctx).IsRecording() {
		return // the execution is not sampled: neither is its store call
	}
	_, span := o.tracer.Start(ctx, op.name, trace.WithTimestamp(c.Start), trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(o.storeAttr...))
	if c.Err != nil {
		fail(span, c.Err)
	}
	span.End(trace.WithTimestamp(c.Start.Add(c.Duration)))
}

func (o *observer) leaseLost(ctx context.Context, _ idempotency.Token, cause error) {
	mo, name := &o.lost, "lost"
	if errors.Is(cause, idempotency.ErrLeaseExpired) {
		mo, name = &o.expired, "expired"
	}
	o.m.leaseLosses.Add(ctx, 1, mo.add...)
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.AddEvent(eventLeaseLost, trace.WithAttributes(keyCause.String(name)))
	}
}
