package idemclient

import (
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"time"
)

// HeaderKey and HeaderReplayed are the header names of the IETF
// Idempotency-Key draft and of idemkit's replays (the same as idemhttp's).
const (
	HeaderKey      = "Idempotency-Key"
	HeaderReplayed = "Idempotent-Replayed"
)

// Transport is an http.RoundTripper that keys and retries POST and PATCH
// requests (see the package documentation). It is safe for concurrent use.
// Make one with New; use it as an http.Client's Transport:
//
//	client := &http.Client{Transport: idemclient.New()}
//
// An http.Client's Timeout bounds the whole RoundTrip, every attempt and
// wait included, as the request's context does.
type Transport struct {
	base           http.RoundTripper
	maxAttempts    int
	baseDelay      time.Duration
	maxDelay       time.Duration
	maxRetryAfter  time.Duration
	attemptTimeout time.Duration
	methods        map[string]bool
	newKey         func() string
	now            func() time.Time
	sleep          func(context.Context, time.Duration) error
	jitter         func(int64) int64
}

// New returns a Transport with the options applied over the defaults:
// http.DefaultTransport, 5 attempts, a backoff from 100ms to 5s,
// Retry-After capped at 30s, no attempt timeout of its own, POST and PATCH.
func New(opts ...Option) *Transport {
	t := &Transport{
		base:          http.DefaultTransport,
		maxAttempts:   5,
		baseDelay:     100 * time.Millisecond,
		maxDelay:      5 * time.Second,
		maxRetryAfter: 30 * time.Second,
		methods:       map[string]bool{http.MethodPost: true, http.MethodPatch: true},
		newKey:        NewKey,
		now:           time.Now,
		sleep:         sleep,
		jitter:        rand.Int64N,
	}
	for _, o := range opts {
		o(t)
	}
	if t.base == nil {
		t.base = http.DefaultTransport
	}
	return t
}

// RoundTrip sends req, with a key and retries when its method is covered.
// It returns the first response that is not worth retrying, or the last
// one when retries are over; or an *Error when the last attempt got no
// response (or the context ended during a wait). It does not modify req.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.methods[req.Method] {
		return t.base.RoundTrip(req)
	}
	ctx := req.Context()
	header, key := req.Header, ""
	if vs := req.Header[HeaderKey]; len(vs) > 0 { // HeaderKey is canonical: what Get would read
		key = vs[0]
	} else {
		key = t.newKey()
		header = req.Header.Clone()
		if header == nil {
			header = make(http.Header)
		}
		header.Set(HeaderKey, key)
	}
	// A body that cannot be re-opened may be partly sent by a failed
	// attempt: it is sent once.
	rewindable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	for attempt := 1; ; attempt++ {
		areq, err := attemptRequest(req, header, attempt)
		if err != nil {
			return nil, &Error{Key: key, Attempts: attempt - 1, Err: err}
		}
		resp, err := t.send(areq)
		final := attempt >= t.maxAttempts || !rewindable || ctx.Err() != nil
		var wait time.Duration
		if err != nil {
			if final || !retryableError(err) {
				return nil, &Error{Key: key, Attempts: attempt, Err: err}
			}
			wait = t.backoff(attempt)
		} else {
			if resp.Request == nil {
				resp.Request = areq
			}
			if final || !retryableStatus(resp) {
				return resp, nil
			}
			wait = max(t.backoff(attempt), t.retryAfter(resp))
		}
		if deadline, ok := ctx.Deadline(); ok && t.now().Add(wait).After(deadline) {
			// The next attempt could not finish in time: the caller is
			// better served by the answer at hand.
			if resp != nil {
				return resp, nil
			}
			return nil, &Error{Key: key, Attempts: attempt, Err: err}
		}
		if resp != nil {
			discard(resp.Body)
		}
		if serr := t.sleep(ctx, wait); serr != nil {
			if err == nil {
				err = serr
			}
			return nil, &Error{Key: key, Attempts: attempt, Err: err}
		}
	}
}

// attemptRequest is req as attempt number attempt sends it: with header,
// the attempt number in its context (for Attempts), and, after the first,
// a fresh body from GetBody.
func attemptRequest(req *http.Request, header http.Header, attempt int) (*http.Request, error) {
	r := req.WithContext(context.WithValue(req.Context(), attemptsKey{}, attempt))
	r.Header = header
	if attempt > 1 && req.GetBody != nil && req.Body != nil && req.Body != http.NoBody {
		body, err := req.GetBody()
		if err != nil {
			return nil, err
		}
		r.Body = body
	}
	return r, nil
}

// send runs one attempt, bounded by the attempt timeout until the response
// headers arrive.
func (t *Transport) send(req *http.Request) (*http.Response, error) {
	if t.attemptTimeout <= 0 {
		return t.base.RoundTrip(req)
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	timer := time.AfterFunc(t.attemptTimeout, func() { cancel(errAttemptTimeout) })
	resp, err := t.base.RoundTrip(req.WithContext(ctx))
	if !timer.Stop() { // it fired: whatever came back is cut off
		if resp != nil {
			resp.Body.Close()
		}
		cancel(nil)
		return nil, errAttemptTimeout
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	resp.Body = &cancelBody{ReadCloser: resp.Body, cancel: cancel}
	return resp, nil
}

// cancelBody ends an attempt's context when its body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}

// discard drains a little of a response that is retried, so that its
// connection can be reused, and closes it.
func discard(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, 4<<10)
	_ = body.Close()
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
