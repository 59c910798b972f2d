package idemclient

import "fmt"

// Error is RoundTrip's error when no attempt brought a response: the last
// attempt failed on the network, with an error that is not worth retrying,
// or the request's context ended. The command may or may not have run; to
// find out, send the same request again later with Key as its
// Idempotency-Key, and the server replays the answer of one that did.
type Error struct {
	// Key is the Idempotency-Key every attempt carried.
	Key string
	// Attempts is how many attempts were sent.
	Attempts int
	// Err is the last attempt's error, or the context's when it ended
	// during a wait.
	Err error
}

func (e *Error) Error() string {
	return fmt.Sprintf("idemclient: %d attempt(s) with Idempotency-Key %q: %v", e.Attempts, e.Key, e.Err)
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }
