package dispatcher

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/idemkit/idempotency"
)

// Handler runs one command. It returns the command's answer, sent as
// {"ok":true,"data":resp.Data} with resp.Status, or an error: an *Error
// (possibly wrapped) for the command's own refusal, anything else for an
// internal failure (answered 500 "internal"; its text never reaches the
// client). A panic is recovered and treated as an internal failure.
//
// For a command registered with a key, ctx carries the claim's token
// (idempotency.TokenFromContext, also in req.Fence) and is cancelled if the
// claim is lost; a handler that ends early because ctx ended should return
// ctx's error (answered 503 CodeCancelled, key released).
type Handler func(ctx context.Context, req Request) (Response, error)

// Request is what a Handler gets.
type Request struct {
	// Name is the command's name.
	Name string
	// Payload is the command's JSON payload as received; "{}" when it was
	// empty. It has been checked to be valid JSON.
	Payload json.RawMessage
	// Key is the idempotency key; "" for commands registered with NoKey.
	Key string
	// Identity is the caller's identity the key is scoped to.
	Identity string
	// Fence is the fencing number of the claim this execution holds (0
	// without a key). Pass it to systems that can refuse stale writers.
	Fence uint64
}

// Decode unmarshals the payload into v, refusing unknown fields. It returns
// an *Error (400, CodeInvalidPayload) that the handler can return as is: it is
// recorded and replayed, since the same payload always fails the same way.
func (r Request) Decode(v any) error {
	dec := json.NewDecoder(bytes.NewReader(r.Payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Errorf(http.StatusBadRequest, CodeInvalidPayload, "payload of %s: %v", r.Name, err)
	}
	return nil
}

// Response is a handler's successful answer.
type Response struct {
	// Status is the HTTP status: 0 means 200; otherwise 2xx, and not 204 or
	// 205 (every answer has an envelope body). Another status is a handler
	// bug, answered as CodeInternal.
	Status int
	// Data becomes the envelope's "data"; it must marshal with encoding/json.
	Data any
	// Header holds headers for this execution's HTTP response only (for
	// example Set-Cookie). They are never recorded, so a replay does not carry
	// them; Dispatch ignores them. Content-Type, Content-Length and
	// Idempotent-Replayed are set by the dispatcher and cannot be overridden.
	Header http.Header
}

// Command is one invocation to dispatch.
type Command struct {
	// Name selects the handler.
	Name string
	// Payload is the JSON payload; empty (or only white space) means {}.
	Payload json.RawMessage
	// Key is the idempotency key (already parsed from its header, if it came
	// in one). Required unless the command is registered with NoKey.
	Key string
	// Identity scopes the key: the same key from two identities is two
	// independent commands. Hash credentials before putting them here (see
	// BearerIdentity); "" is a valid, shared identity.
	Identity string
}

// Dispatcher routes commands to handlers by name and makes keyed commands
// idempotent through an idempotency.Engine. It is safe for concurrent use;
// handlers may be registered while it serves.
type Dispatcher struct {
	engine     *idempotency.Engine
	observe    Observer
	identity   func(*http.Request) string
	maxBody    int64
	commandCtx context.Context

	mu       sync.RWMutex
	handlers map[string]*entry
}

type entry struct {
	fn    Handler
	noKey bool
}

// DefaultMaxBodyBytes is the default limit of a request body in ServeHTTP
// (the same as idemhttp's).
const DefaultMaxBodyBytes = 1 << 20

// Option configures a Dispatcher.
type Option func(*Dispatcher)

// WithObserver sets a function called once per dispatch with its outcome.
// nil (the default) observes nothing.
func WithObserver(o Observer) Option {
	return func(d *Dispatcher) { d.observe = o }
}

// WithIdentity sets how ServeHTTP derives the caller's identity from a
// request. nil keeps the default, BearerIdentity.
func WithIdentity(f func(*http.Request) string) Option {
	return func(d *Dispatcher) {
		if f != nil {
			d.identity = f
		}
	}
}

// WithMaxBodyBytes limits the request body ServeHTTP reads; a larger one is
// answered 413 CodePayloadTooLarge. n <= 0 keeps DefaultMaxBodyBytes (1 MiB).
func WithMaxBodyBytes(n int64) Option {
	return func(d *Dispatcher) {
		if n > 0 {
			d.maxBody = n
		}
	}
}

// WithCommandContext sets the context that bounds the commands ServeHTTP
// runs. ServeHTTP detaches a command from its request, so a client that
// disconnects does not cancel it (it completes and is recorded, and the
// client's retry gets the answer); ctx ending cancels the commands still
// running instead, which releases their keys (a server shutting down cancels
// it). nil, the default, means commands are never cancelled by ServeHTTP.
// Values of the request's context stay visible to handlers.
func WithCommandContext(ctx context.Context) Option {
	return func(d *Dispatcher) { d.commandCtx = ctx }
}

// New returns a Dispatcher with no commands, running keyed commands on e:
// its store, lease, wait mode, record policy, response cap and observer
// apply. New panics if e is nil.
func New(e *idempotency.Engine, opts ...Option) *Dispatcher {
	if e == nil {
		panic("dispatcher: New with a nil engine")
	}
	d := &Dispatcher{
		engine:   e,
		identity: BearerIdentity,
		maxBody:  DefaultMaxBodyBytes,
		handlers: make(map[string]*entry),
	}
	for _, o := range opts {
		o(d)
	}
	return d
}

// RegisterOption configures one command.
type RegisterOption func(*entry)

// NoKey registers a command that is not deduplicated: it needs no
// idempotency key, and a key sent with it is ignored (not even validated).
// For reads such as widgets.list, whose answer should not be replayed. By
// default a command requires a key.
func NoKey() RegisterOption {
	return func(e *entry) { e.noKey = true }
}

// Register makes h answer the command name. Like http.ServeMux.Handle, it
// panics on an empty name, a nil handler, or a name already registered:
// these are programming errors.
func (d *Dispatcher) Register(name string, h Handler, opts ...RegisterOption) {
	if name == "" {
		panic("dispatcher: Register with an empty name")
	}
	if h == nil {
		panic("dispatcher: Register " + name + " with a nil handler")
	}
	e := &entry{fn: h}
	for _, o := range opts {
		o(e)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, dup := d.handlers[name]; dup {
		panic("dispatcher: command " + name + " registered twice")
	}
	d.handlers[name] = e
}

// Dispatch runs cmd and returns the HTTP status and the JSON envelope to send:
// {"ok":true,"data":…} or {"ok":false,"error":{"code":…,"message":…}} (see
// the Code constants). For a keyed command, the first dispatch of a key runs
// the handler and records status and envelope (unless the status is 5xx);
// later dispatches of the same key, identity, name and payload get the
// recorded bytes back verbatim without running the handler. The returned
// slice belongs to the caller.
func (d *Dispatcher) Dispatch(ctx context.Context, cmd Command) (status int, wireBody []byte) {
	r := d.dispatch(ctx, cmd, false)
	// A recorded body may be the very slice an in-process store keeps (on
	// the first run as on a replay): the caller gets a copy of its own.
	return r.status, bytes.Clone(r.body)
}

// reply is a dispatch's full answer, as ServeHTTP needs it.
type reply struct {
	status   int
	body     []byte
	replayed bool
	retry    bool        // answer with Retry-After: 1 (a polling hint: nobody knows when a holder ends)
	header   http.Header // the handler's, for this execution only
}

// dispatch runs cmd, reports it to the observer and returns the reply.
// badKey reports a key header that could not be parsed.
func (d *Dispatcher) dispatch(ctx context.Context, cmd Command, badKey bool) reply {
	start := time.Now()
	ev := Event{Command: cmd.Name, Key: cmd.Key}
	r := d.run(ctx, cmd, badKey, &ev)
	ev.Status = r.status
	ev.Duration = time.Since(start)
	d.notify(ctx, ev)
	return r
}

func (d *Dispatcher) notify(ctx context.Context, ev Event) {
	if d.observe != nil {
		d.observe(ctx, ev)
	}
}

func (d *Dispatcher) lookup(name string) *entry {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.handlers[name]
}

func (d *Dispatcher) run(ctx context.Context, cmd Command, badKey bool, ev *Event) reply {
	h := d.lookup(cmd.Name)
	if h == nil {
		f := errUnknownCommand
		f.message = fmt.Sprintf("no command is named %q", cmd.Name)
		return fail(f, ev)
	}
	if !h.noKey {
		switch {
		case badKey:
			return fail(errKeyInvalid, ev)
		case cmd.Key == "":
			return fail(errKeyMissing, ev)
		case idempotency.ValidateKey(cmd.Key) != nil:
			return fail(errKeyInvalid, ev)
		}
	}
	payload := cmd.Payload
	if len(bytes.TrimSpace(payload)) == 0 {
		payload = json.RawMessage("{}")
	}
	canon, err := canonical(payload)
	if err != nil {
		return fail(errInvalidJSON, ev)
	}
	req := Request{Name: cmd.Name, Payload: payload, Identity: cmd.Identity}
	if h.noKey {
		a := execute(ctx, h.fn, req)
		if a.err != nil {
			return handlerFailed(a.err, ev)
		}
		ev.Outcome = executedOutcome(a.status)
		return reply{status: a.status, body: a.body, header: a.header}
	}

	req.Key = cmd.Key
	var header http.Header
	fn := func(ctx context.Context) (idempotency.Response, error) {
		req := req
		if tok, ok := idempotency.TokenFromContext(ctx); ok {
			req.Fence = tok.Fence
		}
		a := execute(ctx, h.fn, req)
		if a.err != nil {
			return idempotency.Response{}, a.err
		}
		header = a.header
		return idempotency.Response{Status: a.status, Body: a.body}, nil
	}
	fp := idempotency.Fingerprint([]byte(cmd.Name), canon)
	res, err := d.engine.Do(ctx, idempotency.Request{Key: cmd.Key, Identity: cmd.Identity, Fingerprint: fp}, fn)
	var he *handlerError
	switch {
	case err == nil && res.Replayed:
		ev.Outcome = OutcomeReplayed
		return reply{status: res.Response.Status, body: res.Response.Body, replayed: true}
	case err == nil:
		ev.Outcome = executedOutcome(res.Response.Status)
		ev.Fence, ev.RecordErr = res.Fence, res.RecordErr
		return reply{status: res.Response.Status, body: res.Response.Body, header: header}
	case errors.As(err, &he):
		return handlerFailed(he, ev)
	case errors.Is(err, idempotency.ErrInFlight):
		return fail(errInFlight, ev)
	case errors.Is(err, idempotency.ErrMismatch):
		return fail(errKeyReused, ev)
	case errors.Is(err, idempotency.ErrResponseNotRecorded):
		return fail(errNotRecorded, ev)
	case errors.Is(err, idempotency.ErrInvalidKey):
		return fail(errKeyInvalid, ev)
	case errors.Is(err, idempotency.ErrStoreUnavailable):
		ev.Err = err
		return fail(errStoreUnavailable, ev)
	case ctx.Err() != nil:
		ev.Err = err
		return fail(errCancelled, ev)
	default:
		ev.Err = err
		return fail(errInternal, ev)
	}
}

// executedOutcome classifies an answer the handler gave: a 5xx Error is an
// error (and was not recorded).
func executedOutcome(status int) Outcome {
	if status >= 500 {
		return OutcomeError
	}
	return OutcomeExecuted
}

func fail(f failure, ev *Event) reply {
	ev.Outcome = f.outcome
	return reply{status: f.status, body: errorEnvelope(f.code, f.message), retry: f.retry}
}

func handlerFailed(he *handlerError, ev *Event) reply {
	ev.Err = he.err
	if he.cancelled {
		return fail(errCancelled, ev)
	}
	return fail(errInternal, ev)
}

// handlerError is a handler's internal failure, kept apart from the engine's
// own errors: a handler may well return an error that wraps an idempotency
// sentinel.
type handlerError struct {
	err       error
	cancelled bool // the handler failed after its context ended
}

func (e *handlerError) Error() string { return e.err.Error() }
func (e *handlerError) Unwrap() error { return e.err }

// answer is what one handler execution produced.
type answer struct {
	status int
	body   []byte
	header http.Header
	err    *handlerError
}

// execute runs h and turns its result into an envelope, or into a
// handlerError for an internal failure (panics included).
func execute(ctx context.Context, h Handler, req Request) (a answer) {
	defer func() {
		if v := recover(); v != nil {
			a = answer{err: &handlerError{err: fmt.Errorf("dispatcher: handler %s panicked: %v\n%s", req.Name, v, debug.Stack())}}
		}
	}()
	resp, err := h(ctx, req)
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.valid() {
			return answer{status: e.Status, body: errorEnvelope(e.Code, e.Message)}
		}
		if e != nil {
			err = fmt.Errorf("dispatcher: handler %s returned an invalid *Error (status %d, code %q): %w", req.Name, e.Status, e.Code, err)
		}
		return answer{err: &handlerError{err: err, cancelled: ctx.Err() != nil}}
	}
	status := resp.Status
	if status == 0 {
		status = http.StatusOK
	}
	if status < 200 || status > 299 || status == http.StatusNoContent || status == http.StatusResetContent {
		return answer{err: &handlerError{err: fmt.Errorf("dispatcher: handler %s returned status %d without an error", req.Name, status)}}
	}
	body, err := dataEnvelope(resp.Data)
	if err != nil {
		return answer{err: &handlerError{err: fmt.Errorf("dispatcher: handler %s: encoding data: %w", req.Name, err)}}
	}
	return answer{status: status, body: body, header: resp.Header}
}
