// Package redisstore is the Redis backend of the idempotency package: a
// Store and ClaimStore on github.com/redis/go-redis/v9 that many replicas of
// a service can share.
//
//	client := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{"127.0.0.1:6379"}})
//	defer client.Close()
//	store := redisstore.New(client, redisstore.WithSecret(secret))
//	engine := idempotency.NewEngine(store)
//
// New takes a redis.UniversalClient, so a single node, Sentinel
// (redis.NewFailoverClient, or UniversalOptions with MasterName) and Redis
// Cluster (redis.NewClusterClient) all work. The server must be Redis 6.2 or
// later (SET … PXAT); the tests run against Redis 7.0.
//
// # Guarantees
//
// Every protocol step is one Lua script, which Redis runs atomically on the
// node that holds the record, so the claim protocol holds across any number
// of processes sharing the server:
//
//   - Begin claims a key for exactly one caller at a time. A caller retrying
//     its own Begin (same Owner, lease still live) gets its token back.
//   - Complete, Release and Renew are compare-and-set on (owner, fence) and
//     succeed only while the lease is live, so a holder whose lease ran out
//     cannot overwrite the new holder's work. Complete repeated by the token
//     that succeeded returns nil and changes nothing.
//   - Leases and TTLs are judged by the server's clock (TIME, read inside the
//     scripts), never the clients' clocks, so replicas with skewed clocks
//     agree. Redis enforces them too: a claim's key expires with its lease,
//     a completed record's with its TTL.
//   - Fences grow strictly for each (key, identity), also across the expiry
//     of its record: a new claim gets max(previous fence + 1, server clock in
//     µs), and no key disappears before the server's clock has passed the
//     fence it carries (package redisrec says why that suffices). A master
//     whose clock steps back, or a failover to a node whose clock is behind,
//     can break this for records that expired or were released meanwhile.
//   - A mismatch, a replay and an in-flight answer change nothing.
//   - Records are named by driver.RecordKey (HMAC-SHA-256 with
//     WithSecret): raw keys and identities never reach Redis.
//   - Failures (connection refused, timeouts, a script error, a record
//     that does not decode) return errors wrapping
//     idempotency.ErrStoreUnavailable, which adapters answer with 503; the
//     command does not run. When Redis is out of memory (maxmemory with the
//     noeviction policy) the error also wraps idempotency.ErrStoreFull.
//     Lookup reports every failure as a miss.
//
// Two properties belong to the deployment rather than to this package. Redis
// replicates asynchronously: a failover can lose the last claims and
// completions, after which a retry may run a command again (min-replicas-to-write
// narrows the window; it does not close it). And Redis must not evict claims:
// run it with maxmemory-policy noeviction (the default), so that a full Redis
// answers with an error instead of silently dropping a claim in flight; every
// record carries a TTL, so a volatile-* policy would evict them.
//
// # Keys and values
//
// The record of (key, identity) is one Redis string under
//
//	prefix + "{" + hex(driver.RecordKey(secret, key, identity)) + "}"
//
// for example idem:{3f5c…64 hex digits…}. The braces are a Redis Cluster hash
// tag: the slot is that of the record's hash, so records spread over the
// cluster while everything a script touches lies in one slot (each script
// touches exactly one key). The prefix (WithPrefix, default "idem:") should
// not contain '{'.
//
// The value is a small binary encoding (see redisrec): a fixed header the
// scripts read (kind, fence, lease end or expiry, owner, fingerprint), and
// for completed records the response (status, StoredAt, TTL, flags, headers,
// body, the body last and unescaped). A claim in flight is about 80 bytes;
// a completed record about 100 bytes plus its headers and body.
//
// # Round trips
//
// Begin, Complete, Release, Renew, Lookup and Store each cost one round trip:
// one EVALSHA, which falls back to EVAL when the server does not have the
// script cached, as go-redis's Script.Run does. Begin answers a replay with
// the recorded response itself, so replaying a response costs one round
// trip, the same as claiming a key.
//
// The arguments are sent from buffers the Store reuses, so that a step
// allocates little besides what go-redis allocates for the command and its
// reply (and, for a replay, the response): with go-redis v9.23, 7
// allocations for a replaying Begin, 5 for a claiming one and 4 for
// Complete. A hook that keeps a command's Args after the command has
// returned sees them reused.
//
// # Inspection
//
// Store implements idempotency.Inspector. A record's ID is its hex record
// key, the part of its Redis key inside the braces; Key and Identity in a
// RecordInfo are empty, since Redis holds only their digest. Inspect and
// Purge cost one round trip each. A claim's ClaimedAt is read from its
// fence, which is the server's clock when the claim was made unless an
// earlier fence of the key was ahead of that clock: then ClaimedAt is later
// than the claim, so Claims may list such a claim late, never early. Claims
// SCANs every key under the prefix (on every master of a cluster) and reads
// each with a script, pipelined a thousand at a time: its cost grows with
// the number of keys under the prefix, whatever its limit, so it suits an
// operator's occasional look rather than a hot path.
//
// # Retries
//
// go-redis retries a command (up to MaxRetries, 3 by default) after errors
// that make another try worthwhile: a failed dial, a connection closed before
// the reply arrived, a pool or read timeout, and server answers such as
// LOADING, READONLY, CLUSTERDOWN or TRYAGAIN. Some of those retries repeat a
// script that did run and whose reply was lost. Each script is safe to run
// twice, so this package adds no retry loop of its own and needs none
// disabled:
//
//   - Begin: the repeat finds the claim it made, owned by the same Owner with
//     a live lease, and answers with the same token. It can never hand the
//     key to two callers: a repeat that finds the lease already run out takes
//     the key over with a new fence, for the same caller, who never saw the
//     first one.
//   - Complete: the repeat finds the record completed by the same owner and
//     fence and returns nil without changing it.
//   - Renew extends the lease again from now; Store writes the same response
//     again; Lookup reads.
//   - Release: the repeat finds the key released and returns ErrLeaseLost;
//     the claim was released all the same. The Engine ignores Release errors.
//
// A Begin whose every attempt failed may still have claimed the key on the
// server. The caller got an error and did not run the command; its claim
// blocks the key (ClaimInFlight) only until the lease ends, unless the caller
// retries with the same Owner, which gets the claim back.
//
// To fail fast when Redis is down, configure the client: DialTimeout,
// DialerRetries, MaxRetries, ReadTimeout and WriteTimeout bound how long a
// step can take before it returns ErrStoreUnavailable.
package redisstore
