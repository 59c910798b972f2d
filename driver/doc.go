// Package driver holds what only authors of a store need: the checks every
// idempotency.ClaimStore makes on its arguments (ValidateBegin), the name a
// shared store files a record under (RecordKey, RecordHasher), and owner ids
// for claims (NewOwner). Users of the engine and its adapters never need it,
// the way go-cloud keeps its driver packages apart from the portable API.
//
// A new store should pass the conformance suite in package storetest; the
// built-in backends (redisstore, pgstore) show the rest.
package driver
