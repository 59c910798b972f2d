package dispatcher

import (
	"fmt"
	"net/http"
)

// Error codes of the envelope's error.code. Those of the dashboard contract
// first, then the ones this package adds. Handlers choose their own codes for their own
// errors (see Errorf).
const (
	// CodeKeyMissing (400): the command needs an idempotency key and none was sent.
	CodeKeyMissing = "idempotency_key_missing"
	// CodeKeyInvalid (400): the key is empty, longer than 255 bytes, contains
	// control characters, or its header is malformed (see idemhttp.ParseKey:
	// a bad quoted string, a bare key with a comma or quote, several lines).
	CodeKeyInvalid = "idempotency_key_invalid"
	// CodeKeyReused (422): the key was used, by the same caller, for another
	// command or another payload.
	CodeKeyReused = "idempotency_key_reused"
	// CodeKeyInFlight (409): a request with the same key is still running;
	// retry after the Retry-After header's seconds.
	CodeKeyInFlight = "idempotency_key_in_flight"
	// CodeUnknownCommand (404): no handler is registered under the name.
	CodeUnknownCommand = "unknown_command"
	// CodeInvalidJSON (400): the payload is not valid JSON, or has no
	// canonical form to fingerprint (duplicate member names, invalid UTF-8,
	// an exponent beyond ±1e9; see the canonicaljson package).
	CodeInvalidJSON = "invalid_json"
	// CodeInternal (500): the handler failed or panicked. Nothing was
	// recorded; a retry with the same key runs the command again.
	CodeInternal = "internal"
	// CodeStoreUnavailable (503): the idempotency store failed, so the command
	// was not run (fail closed). Retry later.
	CodeStoreUnavailable = "store_unavailable"

	// CodeResponseNotRecorded (410): the command already ran for this key, but
	// its response was larger than the recording cap, so only a tombstone was
	// kept (idempotency.ErrResponseNotRecorded). The command will not run again
	// for this key; send a new key to run it again.
	CodeResponseNotRecorded = "idempotency_response_not_recorded"
	// CodeCancelled (503): the command's context ended before it finished (the
	// server is shutting down, or the claim's lease was lost). Nothing was
	// recorded and the key was released; retry it.
	CodeCancelled = "command_cancelled"
	// CodePayloadTooLarge (413): the request body is over the limit (ServeHTTP only).
	CodePayloadTooLarge = "payload_too_large"
	// CodeMethodNotAllowed (405): the request was not a POST (ServeHTTP only).
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeUnsupportedMediaType (415): the request's Content-Type is not JSON
	// (ServeHTTP only; no Content-Type at all is taken as JSON).
	CodeUnsupportedMediaType = "unsupported_media_type"
	// CodeInvalidPayload (400): the payload is valid JSON but not what the
	// command takes (Request.Decode). Recorded and replayed like any 4xx.
	CodeInvalidPayload = "invalid_payload"
)

// Error is an error a handler returns on purpose, to answer with its own
// status, code and message: {"ok":false,"error":{"code":Code,"message":Message}}.
// A 4xx Error is the command's own verdict (a validation failure): it is
// recorded and replayed for the key like a success. A 5xx Error is sent as it
// is but not recorded, and the key is released so that a retry runs again.
//
// Handlers may wrap an Error (fmt.Errorf("…: %w", err)); the dispatcher finds
// it with errors.As. An Error whose Status is not 400–599 or whose Code is
// empty is a handler bug and is answered as CodeInternal.
type Error struct {
	Status  int    // HTTP status, 400–599
	Code    string // machine-readable, snake_case
	Message string // for humans; sent to the client as is
}

// Errorf returns an *Error with the given status and code and a message
// formatted as by fmt.Sprintf.
func Errorf(status int, code, format string, args ...any) error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string {
	return fmt.Sprintf("dispatcher: %d %s: %s", e.Status, e.Code, e.Message)
}

func (e *Error) valid() bool {
	return e.Status >= 400 && e.Status <= 599 && e.Code != ""
}

// failure is a protocol answer of the dispatcher itself (never recorded).
type failure struct {
	status  int
	code    string
	message string
	outcome Outcome
	retry   bool // worth retrying as is: answered with Retry-After
}

var (
	errUnknownCommand = failure{http.StatusNotFound, CodeUnknownCommand, "", OutcomeUnknownCommand, false} // message set per command
	errKeyMissing     = failure{http.StatusBadRequest, CodeKeyMissing,
		"this command needs an Idempotency-Key header", OutcomeKeyMissing, false}
	errKeyInvalid = failure{http.StatusBadRequest, CodeKeyInvalid,
		"the idempotency key must be 1 to 255 bytes of text without control characters, sent bare or as a quoted string", OutcomeKeyInvalid, false}
	errKeyReused = failure{http.StatusUnprocessableEntity, CodeKeyReused,
		"this idempotency key was already used for a different command or payload", OutcomeKeyReused, false}
	errInFlight = failure{http.StatusConflict, CodeKeyInFlight,
		"a request with this idempotency key is still running; retry after the Retry-After delay", OutcomeInFlight, true}
	errInvalidJSON = failure{http.StatusBadRequest, CodeInvalidJSON,
		"the payload is not valid JSON", OutcomeInvalidJSON, false}
	errInternal = failure{http.StatusInternalServerError, CodeInternal,
		"the command failed; nothing was recorded, so it is safe to retry", OutcomeError, false}
	errStoreUnavailable = failure{http.StatusServiceUnavailable, CodeStoreUnavailable,
		"the idempotency store is unavailable; the command was not run", OutcomeStoreUnavailable, true}
	errNotRecorded = failure{http.StatusGone, CodeResponseNotRecorded,
		"the command already ran for this idempotency key, but its response was too large to record; it will not run again (use a new key to run it again)", OutcomeResponseNotRecorded, false}
	errCancelled = failure{http.StatusServiceUnavailable, CodeCancelled,
		"the command was cancelled before it finished; nothing was recorded, so it is safe to retry", OutcomeCancelled, true}
	errPayloadTooLarge = failure{http.StatusRequestEntityTooLarge, CodePayloadTooLarge,
		"", OutcomePayloadTooLarge, false} // message set per limit
	errMethodNotAllowed = failure{http.StatusMethodNotAllowed, CodeMethodNotAllowed,
		"commands are sent with POST", OutcomeMethodNotAllowed, false}
	errUnsupportedMediaType = failure{http.StatusUnsupportedMediaType, CodeUnsupportedMediaType,
		"the payload must be JSON: send Content-Type: application/json", OutcomeUnsupportedMediaType, false}
)
