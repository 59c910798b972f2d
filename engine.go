package idempotency

import (
	"context"
	"crypto/rand"
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

// Request names one command for Engine.Do: the idempotency key the client
// sent, the caller it came from, and what it asked for. The fields are
// named, not positional, because swapping two of them would compile and
// silently mix callers up.
type Request struct {
	// Key is the client's idempotency key; it must pass ValidateKey.
	Key string
	// Identity is the caller, derived from its credentials by the adapter (a
	// user id, a digest of a token: never a raw secret). Requests with the
	// same Key and different identities are independent. "" is one shared
	// anonymous caller.
	Identity string
	// Fingerprint summarises the request's content (see Fingerprint), so
	// that a key reused for a different request is refused with ErrMismatch.
	// "" disables that check for this request.
	Fingerprint string
}

// Response is what a command answers, and what a replay gives back.
type Response struct {
	// Status is the command's status code (HTTP's, for the adapters).
	Status int
	// Header holds the response headers to record and replay (the adapters
	// choose which). It may be shared on a replay: read-only.
	Header map[string][]string
	// Body is the response body. It may be shared on a replay: read-only.
	Body []byte
	// Streamed says the response was sent to the client as it was produced
	// and Body does not hold all of it (an adapter that passed a response
	// past its size cap straight through). The Engine then records a
	// tombstone: the command ran, and a retry gets ErrResponseNotRecorded
	// rather than running it again. A replayed tombstone has Streamed set
	// and no body.
	Streamed bool
}

// Func runs a command once. ctx carries the claim's Token (TokenFromContext).
// While the command runs, ctx is cancelled with cause ErrLeaseLost if the
// store says the claim is gone, and with cause ErrLeaseExpired if the Engine
// could not confirm the lease with the store (its renewals failed) before
// its own estimate of the lease ran out: another execution may then have
// taken the key over, so the command should stop. A response returned after
// either is recorded only if the store still holds the claim. Over a TxStore,
// fn may run more than once in one Do (see TxStore.Again), each run in a
// fresh transaction: it must not depend on what an earlier run did outside it.
type Func func(ctx context.Context) (Response, error)

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
	tx     TxStore    // non-nil when the store's claims are transactions

	lease       time.Duration
	wait        bool
	record      func(Response) bool
	maxResponse int
	detached    bool
	peeker      Peeker       // nil unless the store's lookups are cheap: replays skip Begin
	checked     CheckedStore // nil unless a plain store reports lookup failures
	obs         *Observer    // nil: record errors and lease losses go to slog.Default

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

// WithWait makes a duplicate that finds its key in flight wait for the first
// execution's result instead of failing at once with ErrInFlight. The wait is
// bounded by the duplicate's context; when that ends first, Do returns
// ErrInFlight. Off by default.
func WithWait(wait bool) EngineOption {
	return func(e *Engine) { e.wait = wait }
}

// WithRecordPolicy decides which responses are recorded for replay; a
// response it refuses is returned to its caller, and the key is released so
// that a retry runs the command again. nil keeps the default,
// DefaultRecordPolicy.
func WithRecordPolicy(record func(Response) bool) EngineOption {
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
// retry. fn's context still ends if the claim is lost (cause ErrLeaseLost)
// or cannot be confirmed in time (cause ErrLeaseExpired). Until the claim is acquired, Do's ctx bounds everything as usual: if
// it has ended by then, fn does not run, the claim is released and Do returns
// the context's error. Off by default (fn's context is derived from ctx).
func WithDetachedRun(detached bool) EngineOption {
	return func(e *Engine) { e.detached = detached }
}

// DefaultRecordPolicy is the default record policy: every response is
// recorded except server errors (500 and above) and the answers that mean
// "try again later": 408 Request Timeout, 425 Too Early and 429 Too Many
// Requests. Those release the key, so the client's retry runs the command
// again. Other client errors (4xx) are the handler's own validation and are
// replayed, as Stripe does.
func DefaultRecordPolicy(r Response) bool {
	switch {
	case r.Status >= 500, r.Status == 408, r.Status == 425, r.Status == 429:
		return false
	}
	return true
}

// NewEngine returns an Engine over s.
//
// When s is a Peeker (an *InMemoryStore is), Do first looks for a completed
// record with Peek and replays it without a claim request (no owner id, no
// clock reading, no allocation); anything else goes to Begin. A plain Store
// that is a CheckedStore has its lookup failures seen (Do fails closed).
func NewEngine(s Store, opts ...EngineOption) *Engine {
	e := &Engine{
		store:       s,
		lease:       DefaultLease,
		record:      DefaultRecordPolicy,
		maxResponse: DefaultMaxResponseBytes,
		flights:     make(map[recordName]*flight),
	}
	e.claims, _ = s.(ClaimStore)
	e.tx, _ = s.(TxStore)
	e.peeker, _ = s.(Peeker)
	e.checked, _ = s.(CheckedStore)
	e.id = rand.Text() // 128 random bits; owner ids add a counter
	e.epoch = time.Now()
	for _, o := range opts {
		o(e)
	}
	return e
}

// RunsDetached reports whether the Engine was made WithDetachedRun(true), for
// adapters that otherwise detach a started command themselves.
func (e *Engine) RunsDetached() bool { return e.detached }

// Reruns reports whether a command may run more than once in one Do: the
// store is a TxStore, which runs it again after a serialization failure.
// Adapters that keep state across a run (a response buffer) reset it then.
func (e *Engine) Reruns() bool { return e.tx != nil }

// MaxResponseBytes is the largest response body the Engine records (see
// WithMaxResponseBytes), for adapters that stream a larger one through.
func (e *Engine) MaxResponseBytes() int { return e.maxResponse }

// Result is the outcome of Do when the command ran or was replayed.
type Result struct {
	// Response is the command's response: the one fn returned, or the
	// recorded one on a replay (whose Header and Body may be shared:
	// read-only).
	Response Response
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
}

type tokenKey struct{}

// TokenFromContext returns the claim token of the execution running with ctx.
func TokenFromContext(ctx context.Context) (Token, bool) {
	t, ok := ctx.Value(tokenKey{}).(Token)
	return t, ok
}

// Do runs fn at most once for (req.Key, req.Identity), or returns what its
// first run recorded. It returns, with a nil error:
//
//   - a replay (Result.Replayed) when a response was recorded for the key;
//   - fn's response after running it, recorded unless the record policy
//     refuses it (see Result.Recorded and Result.RecordErr).
//
// Errors: ErrInvalidKey for a bad key; ErrMismatch when the key was used with
// another fingerprint; ErrInFlight when another execution holds the key (or,
// with WithWait, still holds it when ctx ends); ErrResponseNotRecorded when
// the key's command ran but its response was too large to keep; a *StoreError
// (matching ErrStoreUnavailable, or ErrStoreMisconfigured) when the store
// failed before fn could run, in which case fn does not run; the context's
// error when ctx ends first; and fn's own error, unwrapped, after which the
// key is released so a retry runs again. If fn panics, the key is released
// and the panic goes on.
func (e *Engine) Do(ctx context.Context, req Request, fn Func) (Result, error) {
	if e.obs != nil {
		return e.observed(ctx, req, fn)
	}
	res, _, err := e.do(ctx, req, fn)
	if res.RecordErr != nil {
		// Nobody else is told: the caller has its response, and a retry
		// will run the command again.
		logRecordErr(ctx, res)
	}
	return res, err
}

// do is Do without the observer; it also says how the call ended.
func (e *Engine) do(ctx context.Context, req Request, fn Func) (Result, run, error) {
	if err := ValidateKey(req.Key); err != nil {
		return Result{}, run{outcome: OutcomeInvalidKey}, err
	}
	if ctx.Err() != nil { // the caller is gone: claim nothing, run nothing
		return Result{}, run{outcome: OutcomeCancelled}, fmt.Errorf("idempotency: %w", context.Cause(ctx))
	}
	if e.claims == nil {
		return e.doLocal(ctx, req, fn)
	}
	if e.peeker != nil {
		// The same answer a replaying Begin gives (a completed record whose
		// fingerprint matches; Peek counts as a use as Begin does); anything
		// else goes to Begin.
		if c, ok := e.peeker.Peek(ctx, req.Key, req.Identity); ok && !mismatch(c.Fingerprint, req.Fingerprint) {
			return replay(c)
		}
	}
	creq := ClaimRequest{Fingerprint: req.Fingerprint, Owner: e.newOwner(), Lease: e.lease}
	var r run
	for attempt := 0; ; attempt++ {
		sent := time.Now() // the lease runs from no earlier than this
		cl, err := e.claims.Begin(ctx, req.Key, req.Identity, creq)
		e.storeCall(ctx, "begin", sent, err)
		if err != nil {
			return e.storeFailed(ctx, r, "begin", err)
		}
		switch cl.Status {
		case ClaimAcquired:
			return e.execute(ctx, cl.Token, sent, req.Fingerprint, fn, r)
		case ClaimReplay:
			res, rr, err := replay(cl.Record)
			rr.waited = r.waited
			return res, rr, err
		case ClaimMismatch:
			r.outcome = OutcomeMismatch
			return Result{}, r, ErrMismatch
		case ClaimInFlight:
			r.outcome = OutcomeInFlight
			if !e.wait {
				return Result{}, r, ErrInFlight
			}
			waitStart := time.Now()
			err := e.await(ctx, recordName{req.Key, req.Identity}, attempt)
			r.waited += time.Since(waitStart)
			if err != nil {
				return Result{}, r, err
			}
		default:
			r.outcome = OutcomeStoreError
			return Result{}, r, &StoreError{Op: "begin", Err: fmt.Errorf("invalid claim status %d", cl.Status)}
		}
	}
}

// run is how one Do call ended, for the observer.
type run struct {
	outcome Outcome
	waited  time.Duration // waiting for another execution (WithWait)
}

// newOwner returns an owner id unique to one execution: the engine's random
// id and a counter, cheaper than fresh randomness for every command.
func (e *Engine) newOwner() string {
	var b [40]byte
	n := copy(b[:], e.id)
	b[n] = '.'
	return string(strconv.AppendUint(b[:n+1], e.execs.Add(1), 36))
}

// storeFailed is what Do returns when a store call failed before the
// command could run: the context's error when the caller gave up (the
// failure is its cancellation), a *StoreError otherwise.
func (e *Engine) storeFailed(ctx context.Context, r run, op string, err error) (Result, run, error) {
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		r.outcome = OutcomeCancelled
		return Result{}, r, fmt.Errorf("idempotency: %s: %w", op, context.Cause(ctx))
	}
	r.outcome = OutcomeStoreError
	return Result{}, r, &StoreError{Op: op, Err: err}
}

func replay(c *Cached) (Result, run, error) {
	res := Result{Response: Response{Status: c.Status, Header: c.Header, Body: c.WireBody, Streamed: c.Tombstone}, Replayed: true}
	if c.Tombstone {
		return res, run{outcome: OutcomeTombstone}, ErrResponseNotRecorded
	}
	return res, run{outcome: OutcomeReplayed}, nil
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
func (e *Engine) execute(ctx context.Context, tok Token, claimed time.Time, fingerprint string, fn Func, r run) (Result, run, error) {
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
		e.release(ctx, tok)
		r.outcome = OutcomeCancelled
		return Result{}, r, fmt.Errorf("idempotency: %w", context.Cause(ctx))
	}
	if time.Since(claimed) >= e.lease {
		// Begin answered after the lease it asked for had run out (a reply
		// held up on the network): the claim may be taken over already, so
		// the command must not start.
		e.release(ctx, tok)
		r.outcome = OutcomeStoreError
		return Result{}, r, &StoreError{Op: "begin", Err: fmt.Errorf("the claim's lease ran out before Begin answered: %w", ErrLeaseExpired)}
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
	// The caller's context may be gone after fn (a client that disconnected):
	// recording, releasing and running again must still reach the store.
	bg := detach(ctx)
	for runs := 1; ; runs++ {
		returned = false
		c, err := fn(runCtx)
		returned = true

		if err != nil || !e.record(c) {
			if e.tx != nil && e.tx.Again(bg, tok, err, runs) {
				continue
			}
			hb.stop()
			e.release(bg, tok) // bg is detached already: release need not detach it again
			if err != nil {
				r.outcome = OutcomeFailed
				return Result{Fence: tok.Fence}, r, err
			}
			r.outcome = OutcomeUnrecorded
			return Result{Response: c, Fence: tok.Fence}, r, nil
		}
		// The heartbeat goes on while the response is recorded, so that a
		// store that fails for a moment does not cost the claim.
		res := Result{Response: c, Fence: tok.Fence, Recorded: true}
		err = e.persist(e.prepare(c, fingerprint), func(rec Cached) error {
			start := e.callStart()
			err := e.claims.Complete(bg, tok, rec)
			e.storeCall(bg, "complete", start, err)
			return err
		})
		if err != nil && e.tx != nil {
			// The command's writes did not commit (or may not have): its
			// response is not an answer.
			if e.tx.Again(bg, tok, err, runs) {
				continue
			}
			hb.stop()
			r.outcome = OutcomeFailed
			return Result{Fence: tok.Fence}, r, &StoreError{Op: "commit", Err: err}
		}
		hb.stop()
		r.outcome = OutcomeExecuted
		if err != nil {
			res.Recorded, res.RecordErr = false, &StoreError{Op: "complete", Err: err}
			r.outcome = OutcomeRecordFailed
		}
		return res, r, nil
	}
}

// persist records rec with write (Complete, or a seed Store). A store
// failure (ErrStoreUnavailable) is retried with backoff for one lease length
// from the first failure: Complete is idempotent for its token, and a
// response not recorded would let a retry run the command again. The
// retries go on past this process's estimate of the lease's end (a
// renewal may have reached the store although its reply was lost, so the
// store may still hold the claim): a Complete whose lease is over is
// refused by the store itself (ErrLeaseLost), which ends the retries. A response too
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
	start := e.callStart()
	err := e.claims.Release(bg, tok)
	e.storeCall(bg, "release", start, err)
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

// prepare turns fn's response into the record to store; its TTL is the
// store's default.
func (e *Engine) prepare(r Response, fingerprint string) Cached {
	c := Cached{Status: r.Status, WireBody: r.Body, Header: r.Header, Fingerprint: fingerprint}
	if r.Streamed || len(c.WireBody) > e.maxResponse {
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
func (e *Engine) doLocal(ctx context.Context, req Request, fn Func) (Result, run, error) {
	name := recordName{req.Key, req.Identity}
	var r run
	for {
		if res, rr, found, err := e.lookup(ctx, req, r); found {
			return res, rr, err
		}
		e.mu.Lock()
		f := e.flights[name]
		if f == nil {
			f = &flight{fingerprint: req.Fingerprint, done: make(chan struct{})}
			e.flights[name] = f
			e.mu.Unlock()
			return e.executeLocal(ctx, name, f, fn, r)
		}
		e.mu.Unlock()
		switch {
		case mismatch(f.fingerprint, req.Fingerprint):
			r.outcome = OutcomeMismatch
			return Result{}, r, ErrMismatch
		case !e.wait:
			r.outcome = OutcomeInFlight
			return Result{}, r, ErrInFlight
		}
		waitStart := time.Now()
		select {
		case <-f.done:
			r.waited += time.Since(waitStart)
		case <-ctx.Done():
			r.outcome = OutcomeInFlight
			r.waited += time.Since(waitStart)
			return Result{}, r, fmt.Errorf("%w: gave up waiting: %w", ErrInFlight, context.Cause(ctx))
		}
	}
}

// lookup reads a plain store's record for req and says what it means for
// Do: found is false when there is none (the command may run); otherwise
// the answer is a replay, a mismatch or a failure. A CheckedStore's failure
// is an error; a plain Store cannot tell one from a miss.
func (e *Engine) lookup(ctx context.Context, req Request, r run) (res Result, rr run, found bool, err error) {
	start := e.callStart()
	var c *Cached
	var ok bool
	if e.checked != nil {
		c, ok, err = e.checked.CheckedLookup(ctx, req.Key, req.Identity)
	} else {
		c, ok = e.store.Lookup(ctx, req.Key, req.Identity)
	}
	e.storeCall(ctx, "lookup", start, err)
	switch {
	case err != nil:
		res, rr, err = e.storeFailed(ctx, r, "lookup", err)
		return res, rr, true, err
	case !ok:
		return Result{}, r, false, nil
	case mismatch(c.Fingerprint, req.Fingerprint):
		r.outcome = OutcomeMismatch
		return Result{}, r, true, ErrMismatch
	}
	res, rr, err = replay(c)
	rr.waited = r.waited
	return res, rr, true, err
}

func (e *Engine) executeLocal(ctx context.Context, name recordName, f *flight, fn Func, r run) (Result, run, error) {
	defer e.leave(name, f)
	// A duplicate may have stored its response between our Lookup and our
	// claim; look again now that no one else can.
	if res, rr, found, err := e.lookup(ctx, Request{Key: name.key, Identity: name.identity, Fingerprint: f.fingerprint}, r); found {
		return res, rr, err
	}
	resp, err := fn(ctx) // a panic goes on; the deferred leave frees the key
	switch {
	case err != nil:
		r.outcome = OutcomeFailed
		return Result{}, r, err
	case !e.record(resp):
		r.outcome = OutcomeUnrecorded
		return Result{Response: resp}, r, nil
	}
	bg := detach(ctx)
	res := Result{Response: resp, Recorded: true}
	// Duplicates in this process wait or get ErrInFlight until we return, so
	// a failing store is retried for as long as a claim's lease would last.
	err = e.persist(e.prepare(resp, f.fingerprint), func(rec Cached) error {
		start := e.callStart()
		err := e.store.Store(bg, name.key, name.identity, rec)
		e.storeCall(bg, "store", start, err)
		return err
	})
	r.outcome = OutcomeExecuted
	if err != nil {
		res.Recorded, res.RecordErr = false, &StoreError{Op: "store", Err: err}
		r.outcome = OutcomeRecordFailed
	}
	return res, r, nil
}
