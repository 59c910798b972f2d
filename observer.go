package idempotency

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Observer is told what an Engine does: every execution's outcome, every
// store call, every lease lost while a command runs. Metrics, logs and
// traces are built on it (idemd's are; package idemotel plugs OpenTelemetry
// in). Any field may be nil. The functions are called synchronously, from
// the goroutine running Do (StoreCall and LeaseLost also from a heartbeat's),
// so they must be safe for concurrent use and return quickly.
//
// An Engine without an Observer still tells someone what would otherwise
// go unseen: it logs record errors and lease losses with slog.Default.
//
// Request.Key and Request.Identity are what the adapter gave Do; an
// identity may derive from a credential. Hash them before exporting them.
type Observer struct {
	// Start, if set, is called first in every Do. The context it returns
	// is used for the rest of the call (the store calls, the command, the
	// other hooks), so a tracer can open a span here and end it in Done.
	Start func(ctx context.Context, req Request) context.Context
	// Done is called once per Do, after the outcome is known and before Do
	// returns (also when the command panics: then before the panic goes on).
	Done func(ctx context.Context, x Execution)
	// StoreCall is called after each call the Engine makes to its store,
	// but for Peek (a Peeker's read of process memory).
	StoreCall func(ctx context.Context, c StoreCall)
	// LeaseLost is called when a running command's claim is lost (cause
	// ErrLeaseLost: the store said so) or could not be confirmed in time
	// (cause ErrLeaseExpired), just before its context is cancelled.
	LeaseLost func(ctx context.Context, tok Token, cause error)
}

// Execution describes one finished Do.
type Execution struct {
	Request Request
	Outcome Outcome
	// Start is when Do was called; Duration how long it took, store calls
	// and waiting included.
	Start    time.Time
	Duration time.Duration
	// Waited is how long Do waited for another execution of the key
	// (WithWait).
	Waited time.Duration
	// Fence is the fencing number of the claim the command ran under; zero
	// when it did not run under a claim.
	Fence uint64
	// Err is the error Do returned, or the panic's value wrapped for
	// OutcomePanicked.
	Err error
	// RecordErr is why a response meant to be recorded was not
	// (OutcomeRecordFailed): a retry will run the command again.
	RecordErr error
}

// StoreCall describes one call of the Engine to its store.
type StoreCall struct {
	// Op is the protocol step: "begin", "complete", "release", "renew",
	// "lookup" or "store".
	Op       string
	Start    time.Time
	Duration time.Duration
	Err      error
}

// Outcome classifies how a Do call ended. Its String is a short snake_case
// name, usable as a metric label.
type Outcome uint8

// Outcomes of Do.
const (
	// OutcomeExecuted: the command ran and its response was recorded.
	OutcomeExecuted Outcome = iota + 1
	// OutcomeUnrecorded: the command ran; the record policy refused its
	// response (a 5xx, a 429…), so the key was released.
	OutcomeUnrecorded
	// OutcomeRecordFailed: the command ran, but its response could not be
	// recorded (Execution.RecordErr): a retry will run it again.
	OutcomeRecordFailed
	// OutcomeFailed: the command returned an error; the key was released.
	OutcomeFailed
	// OutcomePanicked: the command panicked; the key was released.
	OutcomePanicked
	// OutcomeReplayed: a recorded response was returned.
	OutcomeReplayed
	// OutcomeTombstone: the key's command ran before but its response was
	// too large to record (ErrResponseNotRecorded).
	OutcomeTombstone
	// OutcomeInFlight: another execution held the key (ErrInFlight).
	OutcomeInFlight
	// OutcomeMismatch: the key was used with another request (ErrMismatch).
	OutcomeMismatch
	// OutcomeInvalidKey: the key failed ValidateKey.
	OutcomeInvalidKey
	// OutcomeStoreError: the store failed before the command could run.
	OutcomeStoreError
	// OutcomeCancelled: the caller's context ended before the command ran.
	OutcomeCancelled
)

var outcomeNames = [...]string{
	OutcomeExecuted:     "executed",
	OutcomeUnrecorded:   "unrecorded",
	OutcomeRecordFailed: "record_failed",
	OutcomeFailed:       "failed",
	OutcomePanicked:     "panicked",
	OutcomeReplayed:     "replayed",
	OutcomeTombstone:    "tombstone",
	OutcomeInFlight:     "in_flight",
	OutcomeMismatch:     "mismatch",
	OutcomeInvalidKey:   "invalid_key",
	OutcomeStoreError:   "store_error",
	OutcomeCancelled:    "cancelled",
}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) && outcomeNames[o] != "" {
		return outcomeNames[o]
	}
	return "invalid"
}

// Outcomes lists every Outcome, for example to initialise metrics at zero.
func Outcomes() []Outcome {
	all := make([]Outcome, 0, len(outcomeNames)-1)
	for o := OutcomeExecuted; int(o) < len(outcomeNames); o++ {
		all = append(all, o)
	}
	return all
}

// WithObserver adds an observer of the engine's executions and store calls.
// Observers added by several options are each called, in order. nil adds
// nothing. Without any, record errors and lease losses are logged with
// slog.Default.
func WithObserver(o *Observer) EngineOption {
	return func(e *Engine) {
		if o != nil {
			e.obs = joinObservers(e.obs, o)
		}
	}
}

// joinObservers returns an observer that calls a's hooks, then b's.
func joinObservers(a, b *Observer) *Observer {
	if a == nil {
		c := *b
		return &c
	}
	j := &Observer{}
	switch {
	case a.Start == nil:
		j.Start = b.Start
	case b.Start == nil:
		j.Start = a.Start
	default:
		j.Start = func(ctx context.Context, req Request) context.Context { return b.Start(a.Start(ctx, req), req) }
	}
	j.Done = join2(a.Done, b.Done)
	j.StoreCall = join2(a.StoreCall, b.StoreCall)
	if a.LeaseLost == nil || b.LeaseLost == nil {
		j.LeaseLost = a.LeaseLost
		if j.LeaseLost == nil {
			j.LeaseLost = b.LeaseLost
		}
	} else {
		j.LeaseLost = func(ctx context.Context, tok Token, cause error) {
			a.LeaseLost(ctx, tok, cause)
			b.LeaseLost(ctx, tok, cause)
		}
	}
	return j
}

func join2[T any](a, b func(context.Context, T)) func(context.Context, T) {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	}
	return func(ctx context.Context, v T) { a(ctx, v); b(ctx, v) }
}

// observed is Do with the observer told.
func (e *Engine) observed(ctx context.Context, req Request, fn Func) (res Result, err error) {
	o := e.obs
	start := time.Now()
	if o.Start != nil {
		ctx = o.Start(ctx, req)
	}
	var r run
	returned := false
	defer func() {
		x := Execution{Request: req, Outcome: r.outcome, Start: start, Duration: time.Since(start),
			Waited: r.waited, Fence: res.Fence, Err: err, RecordErr: res.RecordErr}
		if !returned {
			x.Outcome, x.Err = OutcomePanicked, errPanicked
		}
		if o.Done != nil {
			o.Done(ctx, x)
		}
	}()
	res, r, err = e.do(ctx, req, fn)
	returned = true
	return res, err
}

// errPanicked is Execution.Err for a command that panicked; the panic itself
// goes on to the caller with its own stack.
var errPanicked = errors.New("idempotency: the command panicked")

// callStart is when a store call starts, for StoreCall: read only when an
// observer wants it (a clock reading is not free on the hot path).
func (e *Engine) callStart() time.Time {
	if e.obs == nil || e.obs.StoreCall == nil {
		return time.Time{}
	}
	return time.Now()
}

// storeCall tells the observer about a store call that began at start.
func (e *Engine) storeCall(ctx context.Context, op string, start time.Time, err error) {
	if e.obs == nil || e.obs.StoreCall == nil {
		return
	}
	e.obs.StoreCall(ctx, StoreCall{Op: op, Start: start, Duration: time.Since(start), Err: err})
}

// logRecordErr is what an Engine without an observer does with a record error.
func logRecordErr(ctx context.Context, res Result) {
	slog.ErrorContext(ctx, "idempotency: a response was not recorded; a retry will run the command again",
		"fence", res.Fence, "err", res.RecordErr)
}
