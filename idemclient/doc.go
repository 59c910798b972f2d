// Package idemclient is the client side of idempotency keys: an
// http.RoundTripper that gives each POST and PATCH request an
// Idempotency-Key and re-sends it, with the same key, when the answer was
// lost or the server asked to be asked again.
//
// # Why re-sending is safe
//
// A request that timed out or whose connection broke may or may not have
// run on the server; re-sending it blindly could run the command twice. With
// an idempotency key the server (idemhttp, idemd, or any server following
// the IETF Idempotency-Key draft) runs a command once per key and answers
// every later request with that key with the recorded response. So the
// Transport only retries requests that carry a key: one the caller set (it
// is kept as is) or a fresh random UUID it sets itself. Every attempt of one
// RoundTrip sends the same key.
//
// # What is retried
//
//	connection refused, reset, closed (EOF)            retried
//	timeouts (net.Error.Timeout, WithAttemptTimeout)   retried
//	409 Conflict with a Retry-After header             retried (the key is in flight)
//	429 Too Many Requests                              retried
//	503 Service Unavailable                            retried
//	any other status: 400, 410, 413, 422, 500, 502, 504, …   returned as is
//	other errors (bad URL, TLS refused, no such host)  returned as an *Error
//
// A 409 is retried only when it carries Retry-After: that is how idemkit's
// servers say "a request with this key is still running" (idemhttp's
// problem type …/idempotency-key-in-flight and the dispatcher's
// idempotency_key_in_flight both send Retry-After: 1), while a 409 about a
// resource's state (a name taken, a version conflict) says nothing about
// later and is returned at once. The body is not read to decide.
//
// The wait before attempt n+1 is an exponential backoff with equal jitter
// (a random point in [d/2, d], d = base·2^(n-1) capped at the maximum), and
// never less than the response's Retry-After (seconds or an HTTP date,
// capped by WithMaxRetryAfter). Retries stop after WithMaxAttempts
// attempts, when the request's context is done, or when the next wait would
// end after the context's deadline; the last response (with its body
// unread) or an *Error wrapping the last error is returned then. Before
// each retry the previous response's body is drained (up to 4 KiB, so its
// connection can be reused) and closed.
//
// 500, 502 and 504 are not retried although the key would make it safe:
// a server that failed or a gateway that gave up says nothing about when
// to come back. The caller may send the request again with Key(resp).
//
// # What is never retried
//
// A request whose method is not covered (WithMethods; default POST and
// PATCH) goes to the base transport untouched. A request with a body that
// cannot be rewound (Body set, GetBody nil, as for a request built from an
// arbitrary io.Reader) gets a key but only one attempt: its body may have
// been partly sent and cannot be sent again. http.NewRequest sets GetBody
// for a *bytes.Buffer, *bytes.Reader or *strings.Reader body; set it
// yourself for other bodies you can re-open. A request whose context is
// done is never sent again.
//
// Two things outside the Transport send requests again on their own.
// net/http's Transport re-sends a request carrying an Idempotency-Key once
// when a reused connection fails before any answer (it counts such a
// request as replayable); that happens inside one attempt and is not
// counted by Attempts. And http.Client, following a 307 or 308 redirect,
// sends a new request built from the caller's, which has no key unless the
// caller set one: the redirected request gets a key of its own. Set the key
// yourself (NewKey) to keep one key across redirects.
//
// # Telling a replay
//
// Replayed reports whether the answer was replayed from the server's
// record (the Idempotent-Replayed: true header) rather than produced by
// this request: a retry whose first attempt ran but lost its answer gets a
// replay. Attempts says how many attempts the answer took, and Key which
// key was sent. When RoundTrip fails, its *Error carries the key too, so
// the caller can send the same request again later with that key
// (Idempotency-Key header) and get the answer of a command that did run.
package idemclient
