package pgstore

import "strings"

// queries are a Store's statements, with its table and sequence names in
// place. Each is one statement, run on its own (autocommit), so pgx
// prepares it once per connection.
type queries struct {
	lookup, store, begin, complete, release, renew, deleteExpired string

	peek, claimTx, recordTx, resolveTx string // the transactional claim's (see tx.go)

	inspect, purge, claimRows, claimSessions string // Inspector's (see inspect.go)
}

func buildQueries(n names) queries {
	r := strings.NewReplacer("{table}", n.table, "{seq}", quoteLiteral(n.sequence), "{claim}", n.tryClaim,
		"{claim_tx}", n.claimTx, "{record_tx}", n.recordTx, "{table_oid}", quoteLiteral(n.table)+"::regclass")
	return queries{
		lookup:        r.Replace(lookupSQL),
		store:         r.Replace(storeSQL),
		begin:         r.Replace(beginSQL),
		complete:      r.Replace(completeSQL),
		release:       r.Replace(releaseSQL),
		renew:         r.Replace(renewSQL),
		deleteExpired: r.Replace(deleteExpiredSQL),
		peek:          r.Replace(peekSQL),
		claimTx:       r.Replace(claimTxSQL),
		recordTx:      r.Replace(recordTxSQL),
		resolveTx:     r.Replace(resolveTxSQL),
		inspect:       r.Replace(inspectSQL),
		purge:         r.Replace(purgeSQL),
		claimRows:     r.Replace(claimRowsSQL),
		claimSessions: r.Replace(claimSessionsSQL),
	}
}

// quoteLiteral quotes s as an SQL string literal (for nextval's regclass).
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}

// lookupSQL: $1 id.
const lookupSQL = `
SELECT status, body, header, tombstone, fingerprint, stored_at, ttl_ns
FROM {table}
WHERE id = $1 AND state = 2 AND expires_at > clock_timestamp()`

// storeSQL: $1 id, $2 status, $3 body, $4 header, $5 tombstone,
// $6 fingerprint, $7 stored_at (NULL: now), $8 ttl_ns.
// The fence of an existing row is kept; the empty owner matches no token.
const storeSQL = `
INSERT INTO {table} AS r
    (id, state, owner, fence, fingerprint, expires_at, status, body, header, tombstone, stored_at, ttl_ns)
SELECT $1, 2, '', 0, $6, n.t + ($8::bigint / 1000) * interval '1 microsecond',
    $2, $3, $4, $5, n.t, $8
FROM (SELECT coalesce($7::timestamptz, clock_timestamp()) AS t) n
ON CONFLICT (id) DO UPDATE SET
    state = 2, owner = '', fingerprint = excluded.fingerprint, expires_at = excluded.expires_at,
    status = excluded.status, body = excluded.body, header = excluded.header,
    tombstone = excluded.tombstone, stored_at = excluded.stored_at, ttl_ns = excluded.ttl_ns`

// beginSQL: $1 id, $2 owner, $3 fingerprint, $4 lease in microseconds.
//
// It reads the row as of the statement's snapshot and judges it against the
// server's clock read once (n.now). Only when the row is absent or dead
// (released, lease run out, or expired) does it call the try-claim
// function (tryClaimFunction in schema.go), which inserts the row or takes
// it over and returns the new fence (-1 while a transactional claim holds
// the key). A replay, an in-flight answer or a mismatch thus
// run a plain SELECT by primary key: no lock, no transaction id, no WAL,
// and none of the executor set-up of an INSERT that would not run (a
// data-modifying WITH is set up and run whether it is needed or not).
//
// The one result row is the row as read (all NULL when it was absent): its
// state, its fingerprint, the time left until it expires (an interval),
// the caller's fence, and the recorded response. The caller's fence is the
// claim's when the row was absent or dead (NULL if the claim lost a race),
// and the row's own when the row is live and its owner is the caller. When
// the claim lost a race, the row as read is older than the winner's: the
// caller sees a dead or absent row without a fence and runs the statement
// again, with a fresh snapshot.
const beginSQL = `
SELECT r.state, r.fingerprint, r.expires_at - n.now,
    CASE WHEN r.state IN (1, 2) AND r.expires_at > n.now
        THEN CASE WHEN r.owner = $2 THEN r.fence END
        ELSE {claim}($1, $2, $3, $4) END,
    r.status, r.body, r.header, r.tombstone, r.stored_at, r.ttl_ns
FROM (SELECT clock_timestamp() AS now) n LEFT JOIN {table} r ON r.id = $1`

// completeSQL: $1 id, $2 owner, $3 fence, $4 status, $5 body, $6 header,
// $7 tombstone, $8 fingerprint (empty keeps the claim's), $9 stored_at
// (NULL: now), $10 ttl_ns.
//
// It matches the claim held by the token with a live lease, or the record
// that token already completed; in the second case every column keeps its
// value, so a repeated Complete changes nothing. Matching both in one
// UPDATE (rather than re-reading after a miss) stays right when the repeat
// races the first: the UPDATE waits for the first to commit and re-checks
// its WHERE against the completed row.
const completeSQL = `
UPDATE {table} r SET
    state = 2,
    status      = CASE WHEN r.state = 1 THEN $4 ELSE r.status END,
    body        = CASE WHEN r.state = 1 THEN $5 ELSE r.body END,
    header      = CASE WHEN r.state = 1 THEN $6 ELSE r.header END,
    tombstone   = CASE WHEN r.state = 1 THEN $7 ELSE r.tombstone END,
    fingerprint = CASE WHEN r.state = 1 AND $8 <> '' THEN $8 ELSE r.fingerprint END,
    stored_at   = CASE WHEN r.state = 1 THEN n.t ELSE r.stored_at END,
    ttl_ns      = CASE WHEN r.state = 1 THEN $10 ELSE r.ttl_ns END,
    expires_at  = CASE WHEN r.state = 1 THEN n.t + ($10::bigint / 1000) * interval '1 microsecond'
                  ELSE r.expires_at END
FROM (SELECT coalesce($9::timestamptz, clock_timestamp()) AS t) n
WHERE r.id = $1 AND r.owner = $2 AND r.fence = $3
    AND ((r.state = 1 AND r.expires_at > clock_timestamp()) OR r.state = 2)`

// releaseSQL: $1 id, $2 owner, $3 fence. The row stays, marked released,
// until the reaper removes it: a Begin racing the release then takes it
// over under the row lock, drawing a fresh fence.
const releaseSQL = `
UPDATE {table} SET state = 0, fingerprint = '', expires_at = clock_timestamp()
WHERE id = $1 AND owner = $2 AND fence = $3 AND state = 1 AND expires_at > clock_timestamp()`

// renewSQL: $1 id, $2 owner, $3 fence, $4 lease in microseconds.
const renewSQL = `
UPDATE {table} SET expires_at = clock_timestamp() + $4::bigint * interval '1 microsecond'
WHERE id = $1 AND owner = $2 AND fence = $3 AND state = 1 AND expires_at > clock_timestamp()`

// deleteExpiredSQL: $1 batch. SKIP LOCKED lets reapers on several replicas
// share the work without waiting on each other; FOR UPDATE re-checks a
// row's expiry against its latest version, so a row renewed or taken over
// meanwhile is left alone.
const deleteExpiredSQL = `
DELETE FROM {table}
WHERE id IN (
    SELECT id FROM {table}
    WHERE expires_at < clock_timestamp()
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)`
