package dispatcher

import (
	"context"
	"time"
)

// Outcome classifies how a dispatch ended, for metrics and logs. Its values
// are short snake_case strings, usable as metric label values.
type Outcome string

// Outcomes of a dispatch.
const (
	// OutcomeExecuted: the handler ran and answered (2xx, or its own 4xx
	// Error); the answer was recorded unless Event.RecordErr says otherwise
	// or the command needs no key.
	OutcomeExecuted Outcome = "executed"
	// OutcomeReplayed: the recorded answer of an earlier run was sent back.
	OutcomeReplayed Outcome = "replayed"
	// OutcomeInFlight: another request with the key is still running (409).
	OutcomeInFlight Outcome = "in_flight"
	// OutcomeKeyReused: the key was used with another command or payload (422).
	OutcomeKeyReused Outcome = "key_reused"
	// OutcomeKeyMissing: a command that needs a key came without one (400).
	OutcomeKeyMissing Outcome = "key_missing"
	// OutcomeKeyInvalid: the key is malformed (400).
	OutcomeKeyInvalid Outcome = "key_invalid"
	// OutcomeUnknownCommand: no handler has the name (404).
	OutcomeUnknownCommand Outcome = "unknown_command"
	// OutcomeInvalidJSON: the payload is not JSON (400).
	OutcomeInvalidJSON Outcome = "invalid_json"
	// OutcomeError: the handler failed, panicked, answered a 5xx Error, or
	// broke the Handler contract; nothing was recorded (5xx). Event.Err says why.
	OutcomeError Outcome = "error"
	// OutcomeStoreUnavailable: the store failed before the command could run (503).
	OutcomeStoreUnavailable Outcome = "store_unavailable"
	// OutcomeResponseNotRecorded: the key's command ran before but its
	// response was too large to record (410).
	OutcomeResponseNotRecorded Outcome = "response_not_recorded"
	// OutcomeCancelled: the command's context ended before it finished (503).
	OutcomeCancelled Outcome = "cancelled"
	// OutcomePayloadTooLarge: the request body was over the limit (413, ServeHTTP).
	OutcomePayloadTooLarge Outcome = "payload_too_large"
	// OutcomeMethodNotAllowed: the request was not a POST (405, ServeHTTP).
	OutcomeMethodNotAllowed Outcome = "method_not_allowed"
	// OutcomeUnsupportedMediaType: the request body was declared as something
	// other than JSON (415, ServeHTTP).
	OutcomeUnsupportedMediaType Outcome = "unsupported_media_type"
)

// Outcomes lists every Outcome, for example to initialise metrics at zero.
func Outcomes() []Outcome {
	return []Outcome{
		OutcomeExecuted, OutcomeReplayed, OutcomeInFlight, OutcomeKeyReused,
		OutcomeKeyMissing, OutcomeKeyInvalid, OutcomeUnknownCommand,
		OutcomeInvalidJSON, OutcomeError, OutcomeStoreUnavailable,
		OutcomeResponseNotRecorded, OutcomeCancelled, OutcomePayloadTooLarge,
		OutcomeMethodNotAllowed, OutcomeUnsupportedMediaType,
	}
}

// Event describes one finished dispatch. It is passed to the Observer.
type Event struct {
	// Command is the requested command name. For OutcomeUnknownCommand it is
	// whatever the caller sent: do not use it as a metric label unchecked.
	Command string
	// Key is the idempotency key as received ("" when none).
	Key     string
	Outcome Outcome
	// Status is the HTTP status of the answer.
	Status int
	// Duration is how long the dispatch took, store calls included.
	Duration time.Duration
	// Fence is the fencing number of the claim the handler ran under (0 when
	// it did not run under a claim).
	Fence uint64
	// Err is the internal failure behind OutcomeError, OutcomeStoreUnavailable
	// and OutcomeCancelled (a recovered panic includes its stack). It is for
	// logs only; the client never sees it.
	Err error
	// RecordErr is set when the handler's answer was sent but could not be
	// recorded (the store failed or the claim was lost): a retry may run the
	// command again.
	RecordErr error
}

// Observer is called once per dispatch, after the answer is known and before
// it is written, on the dispatching goroutine; it must be safe for
// concurrent use and should return quickly.
type Observer func(ctx context.Context, e Event)
