// Package rueidisstore is a Redis backend of the idempotency package on
// github.com/redis/rueidis: a Store and ClaimStore with exactly the
// semantics, key layout, record encoding and Lua scripts of redisstore,
// which is on github.com/redis/go-redis/v9.
//
//	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{"127.0.0.1:6379"}})
//	if err != nil { ... } // rueidis connects at once
//	defer client.Close()
//	store := rueidisstore.New(client, rueidisstore.WithSecret(secret))
//	engine := idempotency.NewEngine(store)
//
// # Choosing it over redisstore
//
// The two are interchangeable: with the same prefix (WithPrefix) and secret
// (WithSecret) they name the same keys and read and write the same records,
// so replicas may run either, and a service may switch from one to the other
// without losing a record or a claim in flight. Every step is one script
// (EVALSHA, falling back to EVAL when the server does not have it yet), one
// round trip, whichever package sends it.
//
// They differ in how commands reach the server. go-redis takes a pooled
// connection per command; rueidis pipelines the commands of concurrent
// callers on a few shared connections (auto-pipelining), so it needs fewer
// connections and fewer system calls when many goroutines use one client at
// once. Prefer this package when a process runs many concurrent commands
// against Redis (tens of callers and more) and redisstore's throughput or
// connection count limits it; otherwise redisstore, whose client also serves
// as a redis.UniversalClient elsewhere, is as good. Measure under your load:
// at low concurrency the two are close.
//
// # Errors
//
// Failures to reach Redis or to run a script there match
// idempotency.ErrStoreUnavailable, and also idempotency.ErrStoreFull when
// Redis is out of memory. Lookup reports any failure as a miss. Unlike
// go-redis, rueidis.NewClient connects before it returns and fails when it
// cannot; configure ClientOption.Dialer.Timeout and ConnWriteTimeout so that
// a dead server fails commands soon rather than at the caller's deadline.
//
// # Inspection
//
// Store implements idempotency.Inspector as redisstore does, with the same
// record IDs (the hex record key) and the same costs: Inspect and Purge
// take one round trip, Claims SCANs every key under the prefix on every
// master (client.Nodes, replicas skipped). Key and Identity in a RecordInfo
// are empty, and a claim's ClaimedAt is read from its fence.
//
// See redisstore's documentation for the guarantees (atomic steps, server
// clock, fences), the key layout and the record encoding: they are the same.
package rueidisstore
