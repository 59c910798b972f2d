// Package reliability holds the evidence that the idempotency stores keep
// their promises under faults: never twice, never stuck, never leaked.
//
// Its tests (reliability/*_test.go) run the scenarios listed in
// RELIABILITY.md against the in-memory store, Redis and PostgreSQL. The
// instruments those tests use live in the tests themselves (the
// *_instrument_test.go files), so none of them is an API anyone depends on:
//
//   - Ledger counts the side effects of commands outside any store, so that
//     "the command ran at most once per (key, identity)" is checked against
//     what actually happened, not against what the store says;
//   - Proxy is a TCP proxy that can cut, stall or drop the replies of the
//     connections between a client and its store;
//   - History records concurrent claim-protocol calls, with the outcome of a
//     call that failed on the network marked as unknown, and ClaimModel is
//     the per-key model that github.com/anishathalye/porcupine checks such
//     a history against for linearizability.
//
// The package is a module of its own (its tests need porcupine, rapid and
// every backend client), so none of that reaches a user of the core.
package reliability
