package idempotency

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of the Engine.
const (
	// DefaultLease is how long a claim lives without a heartbeat.
	DefaultLease = 30 * time.Second
	// DefaultMaxResponseBytes is the largest response body the Engine records;
	// a larger one is answered but recorded as a tombstone.
	DefaultMaxResponseBytes = 1 << 20
	// MaxRetryAfter caps Result.RetryAfter, the hint given to a duplicate
	// that found its key in flight.
	MaxRetryAfter = time.Second
)

// detach returns a context for the store calls that must happen even after
// the caller has gone (recording a response, releasing a failed claim): ctx's
// values without its cancellation. Those calls are bounded by the store's own
// timeouts (see ClaimStore).
func detach(ctx context.Context) context.Context {
	if ctx.Done() == nil { // already never cancelled
		return ctx
	}
	return context.WithoutCancel(ctx)
}

// Func runs a command once. ctx carries the claim's Token (TokenFromContext).
// While the command runs, ctx is cancelled with cause ErrLeaseLost if the
// store says the claim is gone, and with cause ErrLeaseExpired if the Engine
// could not confirm the lease with the store (its renewals failed) before
// its own estimate of the lease ran out: another execution may then have
// taken the key over, so the command should stop. A response returned after
// either is recorded only if the store still holds the claim.
//
// A Func may return a Cached with Tombstone set to record that the command
// ran but its response is not kept (an adapter that streamed a response past
// its cap does this); retries then get ErrResponseNotRecorded.
type Func func(ctx context.Context) (Cached, error)

// Engine runs commands at most once per (key, identity) over a Store. It is
// the one implementation of the claim protocol that every adapter (dispatcher,
// HTTP middleware) shares. Its zero value is not usable; call NewEngine.
//
// With a ClaimStore, Do claims the key atomically in the store before running
// the command, so duplicates racing on several replicas that share the store
// run it once. With a plain Store it falls back to Lookup-then-Store guarded
// by an in-process claim table: duplicates within this process run once, but
// replicas sharing such a store can each run a command once.
type Engine struct {
	store  Store
	claims ClaimStore // nil when store does not implement the protocol

	lease       time.Duration
	ttl         time.Duration
	wait        bool
	record      func(Cached) bool
	maxResponse int
	detached    bool
	peek        bool // Lookup is cheap (an InMemoryStore): replays skip Begin

	mu      sync.Mutex
	flights map[recordName]*flight // executions running in this process

	id    string        // random, chosen at NewEngine
	execs atomic.Uint64 // executions begun, for owner ids

	beats beats     // the heartbeats of the executions running
	epoch time.Time // when the engine was made, for beats (monotonic)
}

// flight is an execution in this process that duplicates can wait for.
type flight struct {
	fingerprint string
	done        chan struct{}
}

// EngineOption configures an Engine.
type EngineOption func(*Engine)

// WithLease sets how long a claim lives without a heartbeat; the Engine renews
// it every third of that while the command runs, retrying a failed renewal
// after a short backoff (10ms doubling to 1s). If no renewal succeeds before
// the lease, counted from when the last successful renewal (or the claim)
// was sent, runs out, the command's context is cancelled with ErrLeaseExpired
// (see Func). A command that ends within a third of its lease costs no
// renewal. d <= 0 keeps DefaultLease (30s).
func WithLease(d time.Duration) EngineOption {
	return func(e *Engine) {
		if d > 0 {
			e.lease = d
		}
	}
}

// WithTTL sets how long recorded responses are replayed, for responses that
// do not carry their own TTL. d <= 0 (the default) leaves it to the store,
// whose default is 24h.
func WithTTL(d time.Duration) EngineOption {
	return func(e *Engine) {
		if d > 0 {
			e.ttl = d
		}
	}
}

// WithWait makes a duplicate that finds its key in flight wait for the first
// execution's result instead of failing at once with ErrInFlight. The wait is
// bounded by the duplicate's context; when that ends first, Do returns
// ErrInFlight. Off by default.
func WithWait(wait bool) EngineOption {
	return func(e *Engine) { e.wait = wait }
}

// WithRecordPolicy decides which responses are recorded for replay; a
// response it refuses is returned to its caller, and the key is released so
// that a retry runs the command again. nil keeps the default, RecordNon5xx.
func WithRecordPolicy(record func(Cached) bool) EngineOption {
	return func(e *Engine) {
		if record != nil {
			e.record = record
		}
	}
}

// WithMaxResponseBytes caps the response body the Engine records. A larger
// response is returned to its caller but recorded as a tombstone, so a retry
// gets ErrResponseNotRecorded instead of running the command again.
// n <= 0 keeps DefaultMaxResponseBytes (1 MiB).
func WithMaxResponseBytes(n int) EngineOption {
	return func(e *Engine) {
		if n > 0 {
			e.maxResponse = n
		}
	}
}

// WithDetachedRun detaches a command from the caller once it has started:
// fn's context keeps the values of Do's ctx but not its cancellation or
// deadline, so a caller that leaves (a client that hangs up) does not stop a
// command half-way; it runs to its end and its response is recorded for the
// retry. fn's context still ends, with cause ErrLeaseLost, if the claim is
// lost. Until the claim is acquired, Do's ctx bounds everything as usual: if
// it has ended by then, fn does not run, the claim is released and Do returns
// the context's error. Off by default (fn's context is derived from ctx).
func WithDetachedRun(detached bool) EngineOption {
	return func(e *Engine) { e.detached = detached }
}

// RecordNon5xx is the default record policy: every response but a server
// error (status 500 and above) is recorded. Client errors (4xx) are the
// handler's own validation and are replayed, as Stripe does.
func RecordNon5xx(c Cached) bool { return c.Status < 500 }

// NewEngine returns an Engine over s.
//
// Over an *InMemoryStore, Do first looks for a completed record with Lookup
// and replays it without a claim request (no owner id, no clock reading, no
// allocation); like Lookup, it may then replay a record up to about a
// millisecond past its expiry. Anything else goes to Begin.
func NewEngine(s Store, opts ...EngineOption) *Engine {
	e := &Engine{
		store:       s,
		lease:       DefaultLease,
		record:      RecordNon5xx,
		maxResponse: DefaultMaxResponseBytes,
		flights:     make(map[recordName]*flight),
	}
	e.claims, _ = s.(ClaimStore)
	// A completed record is found without a claim request (and the owner
	// id and clock reading that go with one).
	_, e.peek = s.(*InMemoryStore)
	e.id = NewOwner()
	e.epoch = time.Now()
	for _, o := range opts {
		o(e)
	}
	return e
}

// Result is the outcome of Do when the command ran or was replayed.
type Result struct {
	// Response is the command's response: the one fn returned, or the
	// recorded one on a replay. Its WireBody may be shared: read-only.
	Response Cached
	// Replayed reports that Response came from the store and fn did not run.
	Replayed bool
	// Recorded reports that this execution's response was stored for replay.
	// False when fn's response was refused by the record policy, or when
	// RecordErr is set.
	Recorded bool
	// RecordErr is why a response meant to be recorded was not: the claim was
	// lost (ErrLeaseLost) or the store failed. The caller still has Response.
	RecordErr error
	// Fence is the fencing number of the claim this execution held; zero on a
	// replay and with a plain Store.
	Fence uint64
	// RetryAfter accompanies ErrInFlight: when a retry may find the first
	// execution finished. It is the holder's remaining lease, when the store
	// knows it, capped at MaxRetryAfter: a heartbeat keeps renewing the lease
	// of a running command, so the lease says how long a crashed holder could
	// block the key, not when a live one will be done.
	RetryAfter time.Duration
}

type tokenKey struct{}

// TokenFromContext returns the claim token of the execution running with ctx.
func TokenFromContext(ctx context.Context) (Token, bool) {
	t, ok := ctx.Value(tokenKey{}).(Token)
	return t, ok
}

// Do runs fn at most once for (key, identity), or returns what its first run
// recorded. It returns, with a nil error:
//
//   - a replay (Result.Replayed) when a response was recorded for the key;
//   - fn's response after running it, recorded unless the record policy
//     refuses it (see Result.Recorded and Result.RecordErr).
//
// Errors: ErrInvalidKey for a bad key; ErrMismatch when the key was used with
// another fingerprint; ErrInFlight when another execution holds the key (or,
// with WithWait, still holds it when ctx ends); ErrResponseNotRecorded when
// the key's command ran but its response was too large to keep; a *StoreError
// (matching ErrStoreUnavailable) when the store failed before fn could run, in
// which case fn does not run; the context's error when ctx ends first; and
// fn's own error, unwrapped, after which the key is released so a retry runs
// again. If fn panics, the key is released and the panic goes on.
func (e *Engine) Do(ctx context.Context, key, identity, fingerprint string, fn Func) (Result, error) {
	if err := ValidateKey(key); err != nil {
		return Result{}, err
	}
	if ctx.Err() != nil { // the caller is gone: claim nothing, run nothing
		return Result{}, fmt.Errorf("idempotency: %w", context.Cause(ctx))
	}
	if e.claims == nil {
		return e.doLocal(ctx, key, identity, fingerprint, fn)
	}
	if e.peek {
		// The same answer a replaying Begin gives (a completed record whose
		// fingerprint matches; Lookup counts as a use as Begin does); anything
		// else goes to Begin.
		if c, ok := e.store.Lookup(ctx, key, identity); ok && !mismatch(c.Fingerprint, fingerprint) {
			return replay(c)
		}
	}
	req := ClaimRequest{Fingerprint: fingerprint, Owner: e.newOwner(), Lease: e.lease}
	for attempt := 0; ; attempt++ {
		sent := time.Now() // the lease runs from no earlier than this
		cl, err := e.claims.Begin(ctx, key, identity, req)
		if err != nil {
			return Result{}, e.failed(ctx, "begin", err)
		}
		switch cl.Status {
		case ClaimAcquired:
			return e.execute(ctx, cl.Token, sent, fingerprint, fn)
		case ClaimReplay:
			return replay(cl.Record)
		case ClaimMismatch:
			return Result{}, ErrMismatch
		case ClaimInFlight:
			if !e.wait {
				return Result{RetryAfter: min(cl.RetryAfter, MaxRetryAfter)}, ErrInFlight
			}
			if err := e.await(ctx, recordName{key, identity}, attempt); err != nil {
				return Result{RetryAfter: min(cl.RetryAfter, MaxRetryAfter)}, err
			}
		default:
			return Result{}, &StoreError{Op: "begin", Err: fmt.Errorf("invalid claim status %d", cl.Status)}
		}
	}
}

// newOwner returns an owner id unique to one execution: the engine's random
// id and a counter, cheaper than fresh randomness for every command.
func (e *Engine) newOwner() string {
	var b [40]byte
	n := copy(b[:], e.id)
	b[n] = '.'
	return string(strconv.AppendUint(b[:n+1], e.execs.Add(1), 36))
}

// failed turns a store error into what Do returns: the context's error when
// the caller gave up, a *StoreError otherwise.
func (e *Engine) failed(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return fmt.Errorf("idempotency: %s: %w", op, context.Cause(ctx))
	}
	return &StoreError{Op: op, Err: err}
}

func replay(c *Cached) (Result, error) {
	r := Result{Response: *c, Replayed: true}
	if c.Tombstone {
		return r, ErrResponseNotRecorded
	}
	return r, nil
}

// await blocks until an execution of name in this process ends, or for a
// backoff interval when the holder is elsewhere. It returns an error wrapping
// ErrInFlight and the context's error when ctx ends first.
func (e *Engine) await(ctx context.Context, name recordName, attempt int) error {
	e.mu.Lock()
	f := e.flights[name]
	e.mu.Unlock()
	var wake <-chan struct{}
	if f != nil {
		wake = f.done
	}
	t := time.NewTimer(pollInterval(attempt))
	defer t.Stop()
	select {
	case <-wake:
	case <-t.C:
	case <-ctx.Done():
		return fmt.Errorf("%w: gave up waiting: %w", ErrInFlight, context.Cause(ctx))
	}
	return nil
}

// pollInterval is the backoff between Begin attempts while waiting for a
// holder in another process: 10ms doubling to 320ms.
func pollInterval(attempt int) time.Duration {
	return 10 * time.Millisecond << min(attempt, 5)
}

// execute runs fn under the claim tok and records or releases.
func (e *Engine) execute(ctx context.Context, tok Token, claimed time.Time, fingerprint string, fn Func) (Result, error) {
	name := recordName{tok.Key, tok.Identity}
	if e.wait {
		f := e.enter(name, fingerprint)
		defer e.leave(name, f)
	}
	// One allocation holds the heartbeat and the parent of fn's context (ctx's
	// values and the token): a cancelable context of its own ends fn with
	// ErrLeaseLost or ErrLeaseExpired.
	hb := &heartbeat{e: e, tokenContext: tokenContext{Context: ctx, tok: tok, detached: e.detached}}
	runCtx, cancel := context.WithCancelCause(&hb.tokenContext)
	defer cancel(nil)
	if e.detached && ctx.Err() != nil {
		// The caller left while the claim was being acquired: run nothing.
		cancel(nil)
		e.release(ctx, tok)
		return Result{}, fmt.Errorf("idempotency: %w", context.Cause(ctx))
	}
	hb.start(cancel, claimed)
	returned := false
	defer func() {
		if !returned {
			// fn panicked: release the key and let the panic go on with its
			// own stack (nothing here recovers it).
			hb.stop()
			e.release(ctx, tok)
		}
	}()
	c, err := fn(runCtx)
	returned = true

	if err != nil || !e.record(c) {
		hb.stop()
		e.release(ctx, tok)
		if err != nil {
			return Result{}, err
		}
		return Result{Response: c, Fence: tok.Fence}, nil
	}
	// The caller's context may be gone by now (a client that disconnected);
	// the response must still reach the store. The heartbeat goes on while
	// it does, so that a store that fails for a moment does not cost the claim.
	res := Result{Response: c, Fence: tok.Fence, Recorded: true}
	bg := detach(ctx)
	err = e.persist(e.prepare(c, fingerprint), func(rec Cached) error {
		return e.claims.Complete(bg, tok, rec)
	})
	hb.stop()
	if err != nil {
		res.Recorded, res.RecordErr = false, &StoreError{Op: "complete", Err: err}
	}
	return res, nil
}

// persist records rec with write (Complete, or a seed Store). A store
// failure (ErrStoreUnavailable) is retried with backoff for one lease length
// from the first failure: Complete is idempotent for its token, and a
// response not recorded would let a retry run the command again. The
// retries go on past this process's estimate of the lease's end (the
// heartbeat may renew the lease once the store is back, and a renewal's
// reply may have been lost): a Complete whose lease is over is refused by
// the store itself (ErrLeaseLost), which ends the retries. A response too
// large for the store becomes a tombstone.
func (e *Engine) persist(rec Cached, write func(Cached) error) error {
	backoff := completeBackoff
	var giveUp time.Time // one lease after the first failure, even if the lease keeps being renewed
	for {
		err := write(rec)
		switch {
		case errors.Is(err, ErrTooLarge) && !rec.Tombstone:
			rec = tombstone(rec)
			continue
		case err == nil || !errors.Is(err, ErrStoreUnavailable):
			return err
		case giveUp.IsZero():
			giveUp = time.Now().Add(e.lease)
		}
		if time.Now().Add(backoff).After(giveUp) {
			return err
		}
		sleep(backoff)
		backoff = min(2*backoff, maxCompleteBackoff)
	}
}

// Backoff of Complete retries while the store fails.
const (
	completeBackoff    = 10 * time.Millisecond
	maxCompleteBackoff = time.Second
)

func sleep(d time.Duration) {
	t := time.NewTimer(d)
	<-t.C
}

// release gives tok's claim up, even when the caller's context is gone. A
// failure is ignored: a lost lease is released already, and an unreachable
// store lets the lease run out.
func (e *Engine) release(ctx context.Context, tok Token) {
	bg := detach(ctx)
	_ = e.claims.Release(bg, tok)
}

// tokenContext is the parent of a command's context: the caller's context
// with the claim's token as a value, and without the caller's cancellation
// and deadline when the command runs detached (WithDetachedRun).
type tokenContext struct {
	context.Context
	tok      Token
	detached bool
}

func (c *tokenContext) Value(key any) any {
	if _, ok := key.(tokenKey); ok {
		return c.tok
	}
	return c.Context.Value(key)
}

func (c *tokenContext) Deadline() (time.Time, bool) {
	if c.detached {
		return time.Time{}, false
	}
	return c.Context.Deadline()
}

func (c *tokenContext) Done() <-chan struct{} {
	if c.detached {
		return nil
	}
	return c.Context.Done()
}

func (c *tokenContext) Err() error {
	if c.detached {
		return nil
	}
	return c.Context.Err()
}

// prepare turns fn's response into the record to store.
func (e *Engine) prepare(c Cached, fingerprint string) Cached {
	c.Fingerprint = fingerprint
	if c.TTL <= 0 {
		c.TTL = e.ttl
	}
	c.StoredAt = time.Time{}
	if len(c.WireBody) > e.maxResponse {
		c = tombstone(c)
	}
	return c
}

func tombstone(c Cached) Cached {
	return Cached{Status: c.Status, TTL: c.TTL, Fingerprint: c.Fingerprint, Tombstone: true}
}

func (e *Engine) enter(name recordName, fingerprint string) *flight {
	f := &flight{fingerprint: fingerprint, done: make(chan struct{})}
	e.mu.Lock()
	e.flights[name] = f
	e.mu.Unlock()
	return f
}

func (e *Engine) leave(name recordName, f *flight) {
	e.mu.Lock()
	if e.flights[name] == f {
		delete(e.flights, name)
	}
	e.mu.Unlock()
	close(f.done)
}

// doLocal is Do over a plain Store: Lookup, then an in-process claim, then Store.
func (e *Engine) doLocal(ctx context.Context, key, identity, fingerprint string, fn Func) (Result, error) {
	name := recordName{key, identity}
	for {
		if c, ok := e.store.Lookup(ctx, key, identity); ok {
			if mismatch(c.Fingerprint, fingerprint) {
				return Result{}, ErrMismatch
			}
			return replay(c)
		}
		e.mu.Lock()
		f := e.flights[name]
		if f == nil {
			f = &flight{fingerprint: fingerprint, done: make(chan struct{})}
			e.flights[name] = f
			e.mu.Unlock()
			return e.executeLocal(ctx, name, f, fn)
		}
		e.mu.Unlock()
		switch {
		case mismatch(f.fingerprint, fingerprint):
			return Result{}, ErrMismatch
		case !e.wait:
			return Result{}, ErrInFlight
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return Result{}, fmt.Errorf("%w: gave up waiting: %w", ErrInFlight, context.Cause(ctx))
		}
	}
}

func (e *Engine) executeLocal(ctx context.Context, name recordName, f *flight, fn Func) (Result, error) {
	defer e.leave(name, f)
	// A duplicate may have stored its response between our Lookup and our
	// claim; look again now that no one else can.
	if c, ok := e.store.Lookup(ctx, name.key, name.identity); ok {
		if mismatch(c.Fingerprint, f.fingerprint) {
			return Result{}, ErrMismatch
		}
		return replay(c)
	}
	c, err := fn(ctx) // a panic goes on; the deferred leave frees the key
	switch {
	case err != nil:
		return Result{}, err
	case !e.record(c):
		return Result{Response: c}, nil
	}
	bg := detach(ctx)
	res := Result{Response: c, Recorded: true}
	// Duplicates in this process wait or get ErrInFlight until we return, so
	// a failing store is retried for as long as a claim's lease would last.
	err = e.persist(e.prepare(c, f.fingerprint), func(rec Cached) error {
		return e.store.Store(bg, name.key, name.identity, rec)
	})
	if err != nil {
		res.Recorded, res.RecordErr = false, &StoreError{Op: "store", Err: err}
	}
	return res, nil
}
