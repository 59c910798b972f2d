package idemhttp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/idemkit/idempotency"
)

// ErrBodyTooLarge is the cause (Error.Err) of a 413 answer: the request body
// is longer than WithMaxBodyBytes allows.
var ErrBodyTooLarge = errors.New("idemhttp: request body too large")

// ErrIdentityMissing is the cause (Error.Err) of the 400 answered to a keyed
// request whose caller the identity function could not tell (it returned
// ""), unless WithAnonymous allows such requests.
var ErrIdentityMissing = errors.New("idemhttp: keyed request without an identity")

// problemBase prefixes the RFC 9457 problem type URIs of this package. They
// identify a problem; they are not promised to resolve to a page.
const problemBase = "https://github.com/idemkit/idempotency/problems/"

// Error is a request the middleware answered itself instead of (or, for a
// replay of a tombstone, after) running the handler. The default error
// handler writes it as an RFC 9457 problem (application/problem+json) with
// Type, Title, Status and Detail, and a Retry-After header when RetryAfter
// is set. WithErrorHandler receives it to answer in another format.
//
// Type, Title and Detail are safe to show to a client. Err, the cause, is
// for logs and errors.Is; it may describe an internal failure and is never
// sent to the client by the default handler.
type Error struct {
	// Status is the HTTP status: 400, 409, 410, 413, 422, 500 or 503.
	Status int
	// Type is the problem type URI; Title its short summary.
	Type, Title string
	// Detail explains this occurrence to the client.
	Detail string
	// RetryAfter is set when retrying the same request later can succeed:
	// the remaining lease of the execution in flight (409), or a short pause
	// after a store failure (503). At least one second when set.
	RetryAfter time.Duration
	// Err is the cause: ErrKeyMissing; an error wrapping
	// idempotency.ErrInvalidKey, ErrMismatch, ErrInFlight,
	// ErrResponseNotRecorded or ErrStoreUnavailable; ErrBodyTooLarge; the
	// request body's read error; or the context's error.
	Err error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("idemhttp: %d %s", e.Status, e.Title)
	}
	return fmt.Sprintf("idemhttp: %d %s: %v", e.Status, e.Title, e.Err)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// problem is the RFC 9457 body; field order is the order it is written in.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

// WriteError is the default error handler: it writes e as an
// application/problem+json document, with "Cache-Control: no-store" and, when
// e.RetryAfter is set, Retry-After in whole seconds.
func WriteError(w http.ResponseWriter, _ *http.Request, e *Error) {
	body, err := json.Marshal(problem{Type: e.Type, Title: e.Title, Status: e.Status, Detail: e.Detail})
	if err != nil { // cannot happen for these field types
		body = []byte(`{"type":"about:blank","status":500}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	if e.RetryAfter > 0 {
		h.Set("Retry-After", retryAfterSeconds(e.RetryAfter))
	}
	w.WriteHeader(e.Status)
	_, _ = w.Write(body) // a client that left needs no answer
}

// retryAfterSeconds renders d as whole seconds, rounded up, at least 1.
func retryAfterSeconds(d time.Duration) string {
	s := int64((d + time.Second - 1) / time.Second)
	return strconv.FormatInt(max(s, 1), 10)
}

func errKeyMissing() *Error {
	return &Error{
		Status: http.StatusBadRequest,
		Type:   problemBase + "idempotency-key-missing",
		Title:  "Idempotency-Key is missing",
		Detail: "This operation is idempotent and requires an Idempotency-Key header.",
		Err:    ErrKeyMissing,
	}
}

// errKeyInvalid's detail includes ParseKey's reason: it describes the
// client's own header, not an internal failure.
func errKeyInvalid(err error) *Error {
	return &Error{
		Status: http.StatusBadRequest,
		Type:   problemBase + "idempotency-key-invalid",
		Title:  "Idempotency-Key is invalid",
		Detail: "Send one Idempotency-Key header holding 1 to 255 bytes of printable text, as a quoted string or bare (" + err.Error() + ").",
		Err:    err,
	}
}

func errBodyTooLarge(limit int64) *Error {
	return &Error{
		Status: http.StatusRequestEntityTooLarge,
		Type:   problemBase + "request-body-too-large",
		Title:  "Request body too large",
		Detail: fmt.Sprintf("The request body is larger than %d bytes; it was not processed.", limit),
		Err:    ErrBodyTooLarge,
	}
}

func errBodyUnreadable(err error) *Error {
	return &Error{
		Status: http.StatusBadRequest,
		Type:   problemBase + "request-body-unreadable",
		Title:  "Request body could not be read",
		Detail: "The request body could not be read; it was not processed.",
		Err:    err,
	}
}

// inFlightRetryAfter is the Retry-After of a 409: a fixed polling hint. The
// engine cannot know when another execution will finish (its heartbeat keeps
// a running command's lease full, so the lease says nothing of that).
const inFlightRetryAfter = time.Second

func errIdentityMissing() *Error {
	return &Error{
		Status: http.StatusBadRequest,
		Type:   problemBase + "idempotency-identity-missing",
		Title:  "Caller not identified",
		Detail: "Requests with an Idempotency-Key are deduplicated per caller, and this request carries no credential that tells its caller apart. Send the request with credentials, or without an Idempotency-Key.",
		Err:    ErrIdentityMissing,
	}
}

// classify turns an error of Engine.Do into the answer for the client.
func classify(err error) *Error {
	switch {
	case errors.Is(err, idempotency.ErrMismatch):
		return &Error{
			Status: http.StatusUnprocessableEntity,
			Type:   problemBase + "idempotency-key-reused",
			Title:  "Idempotency-Key is already used",
			Detail: "This Idempotency-Key was already used for a different request (method, path or payload). Use a new key for a new request.",
			Err:    err,
		}
	case errors.Is(err, idempotency.ErrInFlight):
		return &Error{
			Status:     http.StatusConflict,
			Type:       problemBase + "idempotency-key-in-flight",
			Title:      "A request with this Idempotency-Key is being processed",
			Detail:     "The first request with this Idempotency-Key has not finished yet. Retry after the Retry-After delay to get its response.",
			RetryAfter: inFlightRetryAfter,
			Err:        err,
		}
	case errors.Is(err, idempotency.ErrResponseNotRecorded):
		return &Error{
			Status: http.StatusGone,
			Type:   problemBase + "response-not-recorded",
			Title:  "Response not recorded",
			Detail: "The request with this Idempotency-Key was already processed, but its response was too large to record, so it cannot be replayed. The request will not run again; use a new key to run it again.",
			Err:    err,
		}
	case errors.Is(err, idempotency.ErrStoreUnavailable):
		return &Error{
			Status:     http.StatusServiceUnavailable,
			Type:       problemBase + "store-unavailable",
			Title:      "Idempotency store unavailable",
			Detail:     "The request was not processed because the idempotency store is unavailable. It is safe to retry.",
			RetryAfter: time.Second,
			Err:        err,
		}
	case errors.Is(err, idempotency.ErrInvalidKey):
		return errKeyInvalid(err)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return &Error{
			Status: http.StatusServiceUnavailable,
			Type:   problemBase + "request-cancelled",
			Title:  "Request cancelled",
			Detail: "The request ended before it was processed; it did not run. It is safe to retry.",
			Err:    err,
		}
	}
	return &Error{
		Status: http.StatusInternalServerError,
		Type:   problemBase + "internal",
		Title:  "Internal error",
		Detail: "The request could not be processed.",
		Err:    err,
	}
}
