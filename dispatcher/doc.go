// Package dispatcher routes named JSON commands to handlers and makes them
// safe to retry: the dashboard contract that idemd serves.
//
// A Dispatcher maps command names to Handlers. Dispatch (or ServeHTTP, for
// "POST /v1/commands/{name}") answers every command with an HTTP status and a
// JSON envelope:
//
//	{"ok":true,"data":…}
//	{"ok":false,"error":{"code":"…","message":"…"}}
//
// # Idempotency
//
// A command needs an idempotency key unless it is registered with NoKey. The
// dispatcher runs a keyed command through the idempotency.Engine given to
// New (its store, lease, waiting and record policy apply), which claims
// (key, identity) atomically in the store before the handler runs. The first dispatch of a key runs the
// handler and records its status and envelope bytes; a retry with the same
// key, identity, command name and payload gets those bytes back verbatim
// (ServeHTTP adds "Idempotent-Replayed: true") without running the handler
// again. The request fingerprint is idempotency.Fingerprint of the name and the
// payload's exact-value canonical form (canonicaljson.Canonical), so a retry
// whose payload differs only in white space, member order, string escapes or
// number spelling (1.0, 1e0) is the same request, while numbers that differ in
// any digit (1234567890123456789 and 1234567890123456788) are never the same.
//
// What is recorded:
//
//   - a success (2xx) and a handler's own *Error with a 4xx status (its
//     validation verdict, as Stripe does): recorded and replayed, except
//     408, 425 and 429 ("try again later", under the engine's default
//     record policy);
//   - a 5xx *Error, any other handler error, a panic: not recorded; the key is
//     released and a retry runs the command again. The text of such errors
//     never reaches the client (Observer gets it);
//   - the dispatcher's own refusals (missing or malformed key, unknown
//     command, invalid JSON, key in flight or reused, store unavailable): not
//     recorded, and the handler does not run.
//
// Status codes and error codes:
//
//	200/201…  {"ok":true,…}              the handler's answer
//	4xx/5xx   the handler's code         a handler's *Error (Errorf)
//	400 idempotency_key_missing          keyed command without a key
//	400 idempotency_key_invalid          empty, >255 bytes, not printable ASCII, malformed header
//	400 invalid_json                     payload is not JSON (or has duplicate names)
//	400 invalid_payload                  payload JSON of the wrong shape (Request.Decode)
//	404 unknown_command                  no such command
//	405 method_not_allowed               ServeHTTP: not a POST
//	409 idempotency_key_in_flight        same key still running (Retry-After)
//	410 idempotency_response_not_recorded  the key's command ran, but its answer
//	                                     was too large to record (a tombstone:
//	                                     it never runs again for this key)
//	413 payload_too_large                ServeHTTP: body over the limit
//	415 unsupported_media_type           ServeHTTP: a Content-Type that is not JSON
//	422 idempotency_key_reused           same key, another command or payload
//	500 internal                         handler failed or panicked (not recorded)
//	503 store_unavailable                the store failed; the command did not run
//	503 command_cancelled                the command's context ended mid-run (not recorded)
//
// # Identity
//
// A key is scoped to Command.Identity: two callers using the same key run two
// commands. ServeHTTP derives the identity with BearerIdentity by default, a
// digest of the bearer token, so raw tokens are never stored.
//
// A request without a bearer token has the anonymous identity "", and ALL
// anonymous callers share one key space: two of them sending the same key
// get one execution and each other's answer. That is the dashboard
// contract (a demo API without accounts). An application whose callers
// authenticate otherwise — a session cookie, a client certificate — must
// give WithIdentity a function that tells them apart (for a cookie, a
// digest of the session id, as idemhttp.CookieIdentity computes), or its
// users will see each other's replays.
//
// # Metrics and logs
//
// The engine's idempotency.Observer sees every keyed execution (its
// outcome, fence, store calls, record errors and lost leases); the
// dispatcher's own Observer sees every dispatch, keyed or not:
// WithObserver receives an Event per dispatch with its Outcome (executed,
// replayed, in_flight, key_reused, …), status, duration and, for failures, the
// internal error.
package dispatcher
