package idemgrpc

import (
	"context"
	"errors"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/idemkit/idempotency"
)

// ErrorDomain is the domain of the google.rpc.ErrorInfo detail in the
// interceptor's own refusals; its Reason is one of the Reason constants.
const ErrorDomain = "idempotency.idemkit.github.com"

// Reasons in the ErrorInfo detail of the interceptor's own refusals, so a
// client can tell them from a handler's answer with the same code.
const (
	ReasonKeyMissing         = "IDEMPOTENCY_KEY_MISSING"
	ReasonKeyInvalid         = "IDEMPOTENCY_KEY_INVALID"
	ReasonKeyReused          = "IDEMPOTENCY_KEY_REUSED"
	ReasonInFlight           = "IDEMPOTENCY_KEY_IN_FLIGHT"
	ReasonIdentityMissing    = "IDEMPOTENCY_IDENTITY_MISSING"
	ReasonNotRecorded        = "IDEMPOTENCY_RESPONSE_NOT_RECORDED"
	ReasonStoreUnavailable   = "IDEMPOTENCY_STORE_UNAVAILABLE"
	ReasonStoreMisconfigured = "IDEMPOTENCY_STORE_MISCONFIGURED"
	ReasonRequestUnreadable  = "IDEMPOTENCY_REQUEST_UNREADABLE"
)

// DefaultRecordCode is the default record policy for a handler's error
// codes. Recorded and replayed, like an HTTP 4xx: the answers about the
// request itself — INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
// PERMISSION_DENIED, UNAUTHENTICATED, FAILED_PRECONDITION, OUT_OF_RANGE.
// Every other code releases the key, so a retry runs the handler again:
// the transient ones (UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED,
// DEADLINE_EXCEEDED, CANCELLED) and the server's failures (INTERNAL,
// UNKNOWN, DATA_LOSS, UNIMPLEMENTED), like an HTTP 5xx, 408 or 429.
func DefaultRecordCode(c codes.Code) bool {
	switch c {
	case codes.OK, codes.InvalidArgument, codes.NotFound, codes.AlreadyExists,
		codes.PermissionDenied, codes.Unauthenticated, codes.FailedPrecondition, codes.OutOfRange:
		return true
	}
	return false
}

// refusal is a status the interceptor answers itself, with an ErrorInfo.
func refusal(c codes.Code, reason, msg string) error {
	st := status.New(c, msg)
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain}); err == nil {
		st = d
	}
	return st.Err()
}

// refuse turns an error of Engine.Do that is not the handler's own into the
// status the client gets. None carries an internal failure's text.
func refuse(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, idempotency.ErrInvalidKey):
		return refusal(codes.InvalidArgument, ReasonKeyInvalid, "idempotency-key is invalid: send one value of 1 to 255 bytes of printable text")
	case errors.Is(err, idempotency.ErrMismatch):
		return refusal(codes.FailedPrecondition, ReasonKeyReused, "this idempotency-key was already used for a different request; use a new key for a new request")
	case errors.Is(err, idempotency.ErrInFlight):
		return refusal(codes.Aborted, ReasonInFlight, "a request with this idempotency-key is still in progress; retry later")
	case errors.Is(err, idempotency.ErrResponseNotRecorded):
		return refusal(codes.FailedPrecondition, ReasonNotRecorded, "the request with this idempotency-key already ran, but its response was too large to record; it will not run again")
	case errors.Is(err, idempotency.ErrStoreMisconfigured):
		return refusal(codes.Internal, ReasonStoreMisconfigured, "the idempotency store is misconfigured")
	case errors.Is(err, idempotency.ErrStoreUnavailable):
		return refusal(codes.Unavailable, ReasonStoreUnavailable, "the idempotency store is unavailable; retry later")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "the deadline passed before the request ran")
	case errors.Is(err, context.Canceled), ctx.Err() != nil:
		// The call's context ended, whatever its cause says.
		return status.Error(codes.Canceled, "the call was cancelled before the request ran")
	}
	return status.Error(codes.Internal, "idemgrpc: internal error")
}
