package pgstore

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/idemkit/idempotency"
)

// Inspection (idempotency.Inspector). A plain claim is a row; a
// transactional claim is an exclusive advisory lock held by a transaction
// that has written nothing yet, so what other sessions can see of it is
// the lock (pg_locks) and the holder's session (pg_stat_activity). A
// session that holds a record's lock exclusively and has read this
// store's table (the claim function reads it) is taken for a claim of it.

// ErrLockNotAClaim is returned by Purge when the record's advisory lock is
// held, exclusively, by a session that is not a transactional claim of it
// (one that has not read this store's table: a lock the application takes
// for reasons of its own), which Purge does not end. Begin answers such a
// record "in flight" until the session lets the lock go.
var ErrLockNotAClaim = errors.New("the record's lock is held by a session that is not an idemkit claim")

// shortIDLen is the length of a short ID: the first 8 bytes of a record's
// id, in hexadecimal, which is its advisory lock. Claims names another
// process's transactional claims so, since nothing else of them shows.
const shortIDLen = 16

// RecordID implements idempotency.Inspector: the record's id column, in
// lowercase hexadecimal (64 characters). The table keeps only that digest,
// so Inspect and Purge leave RecordInfo's Key and Identity empty. They
// also take a short ID, the first 16 of those digits, which is how Claims
// names another process's transactional claims.
func (s *Store) RecordID(key, identity string) string {
	return hex.EncodeToString(s.recordID(key, identity))
}

// recordRef is a record as an ID names it: the range of ids it covers
// (from, and below to; to is nil for no bound) and its advisory lock.
type recordRef struct {
	from, to []byte
	lock     int64
}

// parseRecordID reads an ID: 64 lowercase hex digits (RecordID), or 16
// (a short ID: every record whose id starts with those 8 bytes, which
// share one lock; two records share them with a chance of 2^-64).
func parseRecordID(id string) (recordRef, error) {
	ok := len(id) == 2*sha256.Size || len(id) == shortIDLen
	for i := 0; ok && i < len(id); i++ {
		c := id[i]
		ok = c >= '0' && c <= '9' || c >= 'a' && c <= 'f'
	}
	if !ok {
		return recordRef{}, fmt.Errorf("%w: %q is not a record ID of a PostgreSQL store (64 lowercase hex digits, or the first 16)", idempotency.ErrInvalidArgument, id)
	}
	b, _ := hex.DecodeString(id)
	ref := recordRef{from: b, lock: lockOf(b)}
	if len(b) == sha256.Size {
		ref.to = append(bytes.Clone(b), 0) // the one id between
		return ref, nil
	}
	// The ids below the next 8-byte prefix, if there is one.
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] != 0xff {
			ref.to = bytes.Clone(b)
			ref.to[i]++
			clear(ref.to[i+1:])
			break
		}
	}
	return ref, nil
}

// inspectRow is what inspectSQL reads: the row, if any, and the session
// holding the record's advisory lock exclusively, if any.
type inspectRow struct {
	row    recordRow
	holder holder
}

// recordRow is a row of the table, as inspectSQL and purgeSQL read it.
type recordRow struct {
	state       pgtype.Int2
	owner       pgtype.Text
	fence       pgtype.Int8
	left        pgtype.Interval // until expires_at
	claimedAt   pgtype.Timestamptz
	rec         record
	fingerprint pgtype.Text
}

func (r *recordRow) dest() []any {
	return []any{&r.state, &r.owner, &r.fence, &r.fingerprint, &r.left, &r.claimedAt,
		&r.rec.status, &r.rec.body, &r.rec.header, &r.rec.tombstone, &r.rec.storedAt, &r.rec.ttl}
}

// live reports whether the row is a claim in flight or a record, as Begin judges it.
func (r *recordRow) live() bool { return liveRow(r.state, r.left) }

// info describes the row as Inspect does (id names it).
func (r *recordRow) info(id string) (idempotency.RecordInfo, error) {
	if !r.live() {
		return idempotency.RecordInfo{ID: id}, nil
	}
	if r.state.Int16 == stateInFlight {
		return idempotency.RecordInfo{
			ID: id, State: idempotency.RecordInFlight, Owner: r.owner.String, Fence: uint64(r.fence.Int64),
			Fingerprint: r.fingerprint.String, ClaimedAt: r.claimedAt.Time, LeaseLeft: durationOf(r.left),
		}, nil
	}
	r.rec.fingerprint = r.fingerprint
	c, err := r.rec.cached()
	if err != nil {
		return idempotency.RecordInfo{}, err
	}
	info := idempotency.InfoOf(id, c)
	if r.owner.String != "" { // completed through a claim, not written by Store
		info.Fence = uint64(r.fence.Int64)
	}
	return info, nil
}

// holder is the session holding a record's advisory lock exclusively.
type holder struct {
	pid       pgtype.Int4
	readTable pgtype.Bool        // it holds a lock on this store's table: a claim
	xactStart pgtype.Timestamptz // NULL when another role's session hides it
	state     pgtype.Text
	idleFor   pgtype.Interval // since its state last changed
}

func (h *holder) dest() []any {
	return []any{&h.pid, &h.readTable, &h.xactStart, &h.state, &h.idleFor}
}

// claim describes the transactional claim of lock that h holds, as
// Inspect does under id, with this process's claim of it (nil when
// another process holds it). ok is false when h is no claim: a session
// holding the lock for reasons of its own.
func (s *Store) claim(id string, lock int64, h *holder) (info idempotency.RecordInfo, c *txClaim, ok bool) {
	info = idempotency.RecordInfo{ID: id, State: idempotency.RecordInFlight, ClaimedAt: h.xactStart.Time}
	if c = s.ownClaim(lock, uint32(h.pid.Int32)); c != nil {
		info.Owner, info.Fence, info.Fingerprint = c.tok.Owner, c.tok.Fence, c.fp
		lease := time.Duration(c.idle) * time.Millisecond
		info.LeaseLeft = lease
		if h.state.String == "idle in transaction" {
			info.LeaseLeft = max(0, lease-durationOf(h.idleFor))
		}
		return info, c, true
	}
	if !h.readTable.Bool {
		return idempotency.RecordInfo{ID: id, State: idempotency.RecordInFlight}, nil, false
	}
	return info, nil, true
}

// ownClaim returns this process's transactional claim in s of a record
// whose lock is lock, whose session is pid, or nil.
func (s *Store) ownClaim(lock int64, pid uint32) *txClaim {
	var found *txClaim
	txClaims.Range(func(_, v any) bool {
		c := v.(*txClaim)
		if c.s.storeBase == s && c.pid.Load() == pid && lockOf(c.id) == lock {
			found = c
			return false
		}
		return true
	})
	return found
}

// Inspect implements idempotency.Inspector in one statement, which reads
// the row and whether another session holds the record's advisory lock
// exclusively (a transactional claim in flight). A live row is described
// as it is. Otherwise a held lock is a claim in flight: ClaimedAt is when
// its transaction began; Owner, Fence, Fingerprint and LeaseLeft (what
// remains of the idle timeout that is its lease) are known only when this
// process holds the claim (see the package documentation). A lock that
// some other session holds, for reasons of its own, makes Begin answer
// "in flight" too: Inspect says so, with nothing else known.
func (s *Store) Inspect(ctx context.Context, id string) (idempotency.RecordInfo, error) {
	ref, err := parseRecordID(id)
	if err != nil {
		return idempotency.RecordInfo{}, fmt.Errorf("pgstore: inspect: %w", err)
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	r, err := s.inspect(ctx, ref)
	if err != nil {
		return idempotency.RecordInfo{}, s.fail("inspect", err)
	}
	if r.row.live() || !r.holder.pid.Valid {
		info, err := r.row.info(id)
		if err != nil {
			return idempotency.RecordInfo{}, s.fail("inspect", err)
		}
		return info, nil
	}
	info, _, _ := s.claim(id, ref.lock, &r.holder)
	return info, nil
}

func (s *Store) inspect(ctx context.Context, ref recordRef) (*inspectRow, error) {
	hi, lo := lockHalves(ref.lock)
	r := new(inspectRow)
	err := s.pool.QueryRow(ctx, s.q.inspect, ref.from, ref.to, hi, lo).
		Scan(append(r.row.dest(), r.holder.dest()...)...)
	return r, err
}

// lockHalves splits a bigint advisory key as pg_locks shows it: classid
// the high 32 bits, objid the low.
func lockHalves(lock int64) (hi, lo int64) {
	u := uint64(lock)
	return int64(u >> 32), int64(u & math.MaxUint32)
}

// Purge implements idempotency.Inspector. It reads what Inspect reads;
// when a transactional claim holds the record, it ends the claim's
// session with pg_terminate_backend, which rolls its transaction back, so
// that nothing the command wrote commits, and waits for the session to
// end; then it deletes the row, in one DELETE. Its holder's Complete, Release and Renew then return
// idempotency.ErrLeaseLost. Fences come from the sequence, so the next
// claim's is greater.
//
// Ending another session takes the privilege to signal it: the same role,
// or membership in pg_signal_backend. Without it Purge fails (a
// misconfiguration), changing nothing, as it does when the record's lock
// is held by a session that is not a claim of it (ErrLockNotAClaim). It
// also fails when the session does not end within three quarters of the
// store's timeout (it was told to, and may end later), and waiting for it
// takes PostgreSQL 14 or later.
func (s *Store) Purge(ctx context.Context, id string) (idempotency.RecordInfo, error) {
	ref, err := parseRecordID(id)
	if err != nil {
		return idempotency.RecordInfo{}, fmt.Errorf("pgstore: purge: %w", err)
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	r, err := s.inspect(ctx, ref)
	if err != nil {
		return idempotency.RecordInfo{}, s.fail("purge", err)
	}
	was := idempotency.RecordInfo{ID: id}
	if !r.row.live() && r.holder.pid.Valid {
		info, c, ok := s.claim(id, ref.lock, &r.holder)
		if !ok {
			return idempotency.RecordInfo{}, fmt.Errorf("pgstore: purge: %w (pid %d)", ErrLockNotAClaim, r.holder.pid.Int32)
		}
		if err := s.terminate(ctx, &r.holder, ref.lock); err != nil {
			return idempotency.RecordInfo{}, err
		}
		if c != nil {
			c.purged.Store(true)
		}
		was = info
	}
	var row recordRow
	for range maxAttempts {
		err = s.pool.QueryRow(ctx, s.q.purge, ref.from, ref.to).Scan(row.dest()...)
		if !retryable(err) {
			break
		}
	}
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return was, nil
	case err != nil:
		return idempotency.RecordInfo{}, s.fail("purge", err)
	}
	if !row.live() {
		return was, nil
	}
	info, err := row.info(id)
	if err != nil { // a corrupt header column: the record is gone all the same
		return idempotency.RecordInfo{ID: id, State: idempotency.RecordCompleted}, nil
	}
	return info, nil
}

// terminate ends the session of h, if it still holds lock, and waits for
// it to end.
func (s *Store) terminate(ctx context.Context, h *holder, lock int64) error {
	wait := s.timeout
	if d, ok := ctx.Deadline(); ok {
		wait = time.Until(d)
	}
	ms := max(1, (wait * 3 / 4).Milliseconds())
	var ended pgtype.Bool
	hi, lo := lockHalves(lock)
	err := s.pool.QueryRow(ctx, terminateSQL, h.pid.Int32, hi, lo, ms).Scan(&ended)
	switch {
	case errors.Is(err, pgx.ErrNoRows): // it ended by itself
		return nil
	case err != nil:
		return s.fail("purge", fmt.Errorf("ending the session of the claim (pid %d): %w", h.pid.Int32, err))
	case !ended.Bool:
		return s.fail("purge", fmt.Errorf("the session of the claim (pid %d) did not end within %dms", h.pid.Int32, ms))
	}
	return nil
}

// Claims implements idempotency.Inspector, in one round trip of two
// statements. Plain claims are the live rows in state 1, read by a scan of
// every live row of the table (the expiry index does not tell claims from
// records): a cost proportional to the table, for an operator's tool, not
// for the request path. Rows claimed by a version that did not date its
// claims are listed whatever olderThan is, with a zero ClaimedAt.
// Transactional claims are the sessions that hold an advisory lock
// exclusively and have read this table; they are dated by the start of
// their transaction, and described as Inspect describes them. This
// process's own are named by their record's ID; another process's by a
// short ID, the first 16 hex digits of it (its lock), with no owner or
// fence, which only the process holding the claim knows. An exclusive
// advisory lock that a command takes in its own transaction is listed as
// a claim too.
func (s *Store) Claims(ctx context.Context, olderThan time.Duration, limit int) ([]idempotency.RecordInfo, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var lim pgtype.Int8
	if limit > 0 {
		lim = pgtype.Int8{Int64: int64(limit), Valid: true}
	}
	age := micros(max(0, olderThan))
	b := &pgx.Batch{}
	b.Queue(s.q.claimRows, age, lim)
	b.Queue(s.q.claimSessions, age)
	br := s.pool.SendBatch(ctx, b)
	defer br.Close()
	var out []idempotency.RecordInfo
	seen := map[string]bool{}
	rows, err := br.Query()
	if err != nil {
		return nil, s.fail("claims", err)
	}
	for rows.Next() {
		var rid []byte
		var row recordRow
		row.state = pgtype.Int2{Int16: stateInFlight, Valid: true}
		if err := rows.Scan(&rid, &row.owner, &row.fence, &row.fingerprint, &row.claimedAt, &row.left); err != nil {
			return nil, s.fail("claims", err)
		}
		info, _ := row.info(hex.EncodeToString(rid))
		out = append(out, info)
		seen[info.ID] = true
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("claims", err)
	}
	rows, err = br.Query()
	if err != nil {
		return nil, s.fail("claims", err)
	}
	for rows.Next() {
		var h holder
		var hi, lo int64
		if err := rows.Scan(append(h.dest(), &hi, &lo)...); err != nil {
			return nil, s.fail("claims", err)
		}
		lock := int64(uint64(hi)<<32 | uint64(lo))
		if lock == migrateLock {
			continue // a Migrate, which reads the table too
		}
		var key [8]byte
		binary.BigEndian.PutUint64(key[:], uint64(lock))
		info, c, _ := s.claim(hex.EncodeToString(key[:]), lock, &h)
		if c != nil {
			info.ID = hex.EncodeToString(c.id)
		}
		if !seen[info.ID] {
			out = append(out, info)
			seen[info.ID] = true
		}
	}
	if err := rows.Err(); err != nil {
		return nil, s.fail("claims", err)
	}
	slices.SortFunc(out, func(a, b idempotency.RecordInfo) int {
		return cmp.Or(a.ClaimedAt.Compare(b.ClaimedAt), cmp.Compare(a.Fence, b.Fence))
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// durationOf converts an interval between two timestamps (no months) to a
// Duration; NULL is 0.
func durationOf(iv pgtype.Interval) time.Duration {
	if !iv.Valid {
		return 0
	}
	return time.Duration(iv.Microseconds+int64(iv.Days)*(24*60*60*1_000_000)) * time.Microsecond
}

// The inspection statements (see Inspect, Purge and Claims).
const (
	// inspectSQL: $1 and $2 the range of ids (recordRef; $2 NULL: no
	// bound), $3 and $4 the high and low 32 bits of its lock (a bigint
	// advisory key shows in pg_locks as classid, objid and objsubid 1).
	// The row's columns are recordRow's, then the lock holder's session
	// (holder).
	inspectSQL = `
SELECT r.state, r.owner, r.fence, r.fingerprint, r.expires_at - n.now, r.claimed_at,
    r.status, r.body, r.header, r.tombstone, r.stored_at, r.ttl_ns,
    h.pid, h.read_table, h.xact_start, h.state, n.now - h.state_change
FROM (SELECT clock_timestamp() AS now) n
LEFT JOIN LATERAL (
    SELECT * FROM {table} r WHERE r.id >= $1 AND ($2::bytea IS NULL OR r.id < $2) ORDER BY r.id LIMIT 1) r ON true
LEFT JOIN LATERAL (
    SELECT l.pid, a.xact_start, a.state, a.state_change,
        EXISTS (SELECT FROM pg_locks t WHERE t.pid = l.pid AND t.locktype = 'relation'
            AND t.relation = {table_oid} AND t.granted) AS read_table
    FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.classid::bigint = $3 AND l.objid::bigint = $4 AND l.objsubid = 1
        AND l.mode = 'ExclusiveLock' AND l.granted AND l.pid <> pg_backend_pid()
    LIMIT 1) h ON true`

	// purgeSQL: $1 and $2 the range of ids, as in inspectSQL. The row
	// deleted, as inspectSQL reads it.
	purgeSQL = `
DELETE FROM {table} r USING (SELECT clock_timestamp() AS now) n WHERE r.id >= $1 AND ($2::bytea IS NULL OR r.id < $2)
RETURNING r.state, r.owner, r.fence, r.fingerprint, r.expires_at - n.now, r.claimed_at,
    r.status, r.body, r.header, r.tombstone, r.stored_at, r.ttl_ns`

	// terminateSQL: $1 pid, $2 and $3 the halves of the lock it holds, $4
	// how long to wait for it to end, in milliseconds. No row when the
	// session no longer holds the lock (it ended, or the pid is another's).
	terminateSQL = `
SELECT pg_terminate_backend(l.pid, $4::bigint) FROM pg_locks l
WHERE l.pid = $1 AND l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND l.classid::bigint = $2 AND l.objid::bigint = $3 AND l.objsubid = 1
    AND l.mode = 'ExclusiveLock' AND l.granted
LIMIT 1`

	// claimRowsSQL: $1 minimum age in microseconds, $2 limit (NULL: all).
	claimRowsSQL = `
SELECT r.id, r.owner, r.fence, r.fingerprint, r.claimed_at, r.expires_at - n.now
FROM (SELECT clock_timestamp() AS now) n JOIN {table} r
    ON r.state = 1 AND r.expires_at > n.now
    AND (r.claimed_at IS NULL OR r.claimed_at <= n.now - $1::bigint * interval '1 microsecond')
ORDER BY r.claimed_at NULLS FIRST, r.fence
LIMIT $2`

	// claimSessionsSQL: $1 minimum age in microseconds. The sessions that
	// have read the table in their transaction, each with every bigint
	// advisory lock it holds exclusively. A session whose transaction
	// start another role's privileges hide is kept.
	claimSessionsSQL = `
WITH n AS (SELECT clock_timestamp() AS now, (SELECT oid FROM pg_database WHERE datname = current_database()) AS db),
l AS MATERIALIZED (SELECT * FROM pg_locks WHERE granted AND database = (SELECT db FROM n))
SELECT a.pid, true, a.xact_start, a.state, n.now - a.state_change, k.classid::bigint, k.objid::bigint
FROM n JOIN pg_stat_activity a ON a.datid = n.db
JOIN l k ON k.pid = a.pid AND k.locktype = 'advisory' AND k.objsubid = 1 AND k.mode = 'ExclusiveLock'
WHERE a.pid <> pg_backend_pid()
    AND (a.xact_start IS NULL OR a.xact_start <= n.now - $1::bigint * interval '1 microsecond')
    AND EXISTS (SELECT FROM l t WHERE t.pid = a.pid AND t.locktype = 'relation' AND t.relation = {table_oid})`
)

var _ idempotency.Inspector = (*Store)(nil)
var _ idempotency.Inspector = (*TxStore)(nil)
