package pgstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
)

// Begin implements idempotency.ClaimStore in one statement (see the package
// documentation). Lease checks use the server's clock_timestamp().
//
// When that statement loses a race (a serialization failure, or a snapshot
// older than the row another Begin just wrote), Begin runs it again, a
// bounded number of times; if every attempt loses, the key is being
// claimed by others right now and Begin answers ClaimInFlight with no
// RetryAfter, never an error.
func (s *Store) Begin(ctx context.Context, key, identity string, req idempotency.ClaimRequest) (idempotency.Claim, error) {
	if err := driver.ValidateBegin(key, req); err != nil {
		return idempotency.Claim{}, fmt.Errorf("pgstore: %w", err)
	}
	id := s.recordID(key, identity)
	lease := micros(req.Lease)
	ctx, cancel := s.bound(ctx)
	defer cancel()
	for range maxAttempts {
		var r beginRow
		found, err := s.queryBegin(ctx, &r, req.Fingerprint, s.q.begin, id, req.Owner, req.Fingerprint, lease)
		if err == nil && !found { // beginSQL answers a row even for an absent record
			err = pgx.ErrNoRows
		}
		if retryable(err) {
			continue
		}
		if err != nil {
			return idempotency.Claim{}, s.fail("begin", err)
		}
		cl, ok, err := r.claim(key, identity, req)
		if err != nil {
			return idempotency.Claim{}, s.fail("begin", err)
		}
		if ok {
			return cl, nil
		}
	}
	return idempotency.Claim{Status: idempotency.ClaimInFlight}, nil
}

// queryBegin runs sql, a statement answering one row of beginSQL's shape
// (beginSQL, peekSQL), and reads that row into r; found is false when it
// answered none.
func (s *Store) queryBegin(ctx context.Context, r *beginRow, fp, sql string, args ...any) (found bool, err error) {
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return false, err
	}
	return readBeginRow(rows, r, fp)
}

// readBeginRow reads the one row of beginSQL's shape rows holds, if any,
// into r, and closes rows.
func readBeginRow(rows pgx.Rows, r *beginRow, fp string) (found bool, err error) {
	defer rows.Close()
	if !rows.Next() {
		return false, rows.Err()
	}
	if !r.decode(rows.FieldDescriptions(), rows.RawValues(), fp) {
		sc := new(beginRow) // not r, which Scan would move to the heap on every call
		if err := rows.Scan(&sc.state, &sc.fingerprint, &sc.left, &sc.fence, &sc.rec.status, &sc.rec.body, &sc.rec.header, &sc.rec.tombstone, &sc.rec.storedAt, &sc.rec.ttl); err != nil {
			return false, err
		}
		*r = *sc
	}
	rows.Close()
	return true, rows.Err()
}

// beginRow is the result of beginSQL.
type beginRow struct {
	state       pgtype.Int2 // the row as this call found it, if any
	fingerprint pgtype.Text
	left        pgtype.Interval // until the lease ends or the record expires
	fence       pgtype.Int8     // the caller's: see beginSQL
	rec         record
}

// beginOIDs are the types of beginSQL's columns, in order.
var beginOIDs = [...]uint32{
	pgtype.Int2OID, pgtype.TextOID, pgtype.IntervalOID, pgtype.Int8OID,
	pgtype.Int4OID, pgtype.ByteaOID, pgtype.ByteaOID, pgtype.BoolOID, pgtype.TimestamptzOID, pgtype.Int8OID,
}

// decode reads beginSQL's row from its binary values (text in the text
// format, which pgx prefers and which is the same bytes), as pgx receives
// them with its default (cached, prepared) statements, without the
// per-query scan plans of Rows.Scan. The body is copied (vals are only valid until
// the next read); a fingerprint equal to fp reuses fp. It returns false,
// having changed nothing, when the values are not all in the binary format
// of the expected types (another QueryExecMode): the caller then scans them.
func (r *beginRow) decode(fields []pgconn.FieldDescription, vals [][]byte, fp string) bool {
	if len(fields) != len(beginOIDs) || len(vals) != len(beginOIDs) {
		return false
	}
	for i, f := range fields {
		// pgx asks for text in the text format, which is the same bytes.
		binary := f.Format == pgtype.BinaryFormatCode || f.DataTypeOID == pgtype.TextOID
		if !binary || f.DataTypeOID != beginOIDs[i] || !binarySize(f.DataTypeOID, vals[i]) {
			return false
		}
	}
	if vals[0] != nil {
		r.state = pgtype.Int2{Int16: int16(binary.BigEndian.Uint16(vals[0])), Valid: true}
	}
	if b := vals[1]; b != nil {
		r.fingerprint = pgtype.Text{String: fp, Valid: true}
		if string(b) != fp {
			r.fingerprint.String = string(b)
		}
	}
	if b := vals[2]; b != nil {
		r.left = pgtype.Interval{
			Microseconds: int64(binary.BigEndian.Uint64(b)),
			Days:         int32(binary.BigEndian.Uint32(b[8:])),
			Months:       int32(binary.BigEndian.Uint32(b[12:])),
			Valid:        true,
		}
	}
	r.fence = binInt8(vals[3])
	if b := vals[4]; b != nil {
		r.rec.status = pgtype.Int4{Int32: int32(binary.BigEndian.Uint32(b)), Valid: true}
	}
	if vals[5] != nil {
		r.rec.body = bytes.Clone(vals[5])
	}
	if vals[6] != nil {
		r.rec.header = bytes.Clone(vals[6])
	}
	r.rec.tombstone = binBool(vals[7])
	if b := vals[8]; b != nil {
		r.rec.storedAt = binTimestamptz(int64(binary.BigEndian.Uint64(b)))
	}
	r.rec.ttl = binInt8(vals[9])
	return true
}

// binarySize reports whether v, a value of type oid in the binary format,
// is NULL or of the length that type has.
func binarySize(oid uint32, v []byte) bool {
	if v == nil {
		return true
	}
	switch oid {
	case pgtype.BoolOID:
		return len(v) == 1
	case pgtype.Int2OID:
		return len(v) == 2
	case pgtype.Int4OID:
		return len(v) == 4
	case pgtype.Int8OID, pgtype.TimestamptzOID:
		return len(v) == 8
	case pgtype.IntervalOID:
		return len(v) == 16
	}
	return true // text, bytea
}

func binInt8(v []byte) pgtype.Int8 {
	if v == nil {
		return pgtype.Int8{}
	}
	return pgtype.Int8{Int64: int64(binary.BigEndian.Uint64(v)), Valid: true}
}

func binBool(v []byte) pgtype.Bool {
	if v == nil {
		return pgtype.Bool{}
	}
	return pgtype.Bool{Bool: v[0] != 0, Valid: true}
}

// binTimestamptz decodes microseconds since 2000-01-01 UTC as pgx does
// (the local time zone; ±infinity as an infinite Timestamptz).
func binTimestamptz(us int64) pgtype.Timestamptz {
	switch us {
	case math.MaxInt64:
		return pgtype.Timestamptz{InfinityModifier: pgtype.Infinity, Valid: true}
	case math.MinInt64:
		return pgtype.Timestamptz{InfinityModifier: pgtype.NegativeInfinity, Valid: true}
	}
	const y2k = 946684800 // 2000-01-01 in Unix seconds
	return pgtype.Timestamptz{Time: time.Unix(y2k+us/1_000_000, (us%1_000_000)*1000), Valid: true}
}

// claim turns the row into Begin's answer. ok is false when the row shows
// that the statement lost a race and must run again.
func (r *beginRow) claim(key, identity string, req idempotency.ClaimRequest) (cl idempotency.Claim, ok bool, err error) {
	token := func(fence int64) idempotency.Token {
		return idempotency.Token{Key: key, Identity: identity, Owner: req.Owner, Fence: uint64(fence)}
	}
	if !r.live() {
		if r.fence.Valid && r.fence.Int64 < 0 { // a transactional claim (or a racing one) holds the key
			return idempotency.Claim{Status: idempotency.ClaimInFlight}, true, nil
		}
		if r.fence.Valid { // the claim function ran and won
			return idempotency.Claim{Status: idempotency.ClaimAcquired, Token: token(r.fence.Int64)}, true, nil
		}
		return idempotency.Claim{}, false, nil // absent or dead, yet not acquired: a stale snapshot
	}
	if mismatch(r.fingerprint.String, req.Fingerprint) {
		return idempotency.Claim{Status: idempotency.ClaimMismatch}, true, nil
	}
	switch r.state.Int16 {
	case stateCompleted:
		r.rec.fingerprint = r.fingerprint
		c, err := r.rec.cached()
		if err != nil {
			return idempotency.Claim{}, false, err
		}
		return idempotency.Claim{Status: idempotency.ClaimReplay, Record: c}, true, nil
	case stateInFlight:
		if r.fence.Valid { // the caller's own claim
			return idempotency.Claim{Status: idempotency.ClaimAcquired, Token: token(r.fence.Int64)}, true, nil
		}
		return idempotency.Claim{Status: idempotency.ClaimInFlight, RetryAfter: durationOf(r.left)}, true, nil
	}
	return idempotency.Claim{}, false, nil
}

// live reports whether the row is a record or a claim that is still
// alive, as beginSQL judges it: state in (1, 2) and expires_at after the
// clock.
func (r *beginRow) live() bool { return liveRow(r.state, r.left) }

// liveRow reports whether a row in state, left (expires_at minus the
// clock) before it expires, is a claim in flight or a record.
func liveRow(state pgtype.Int2, left pgtype.Interval) bool {
	return (state.Int16 == stateInFlight || state.Int16 == stateCompleted) && durationOf(left) > 0
}

// mismatch reports whether two request fingerprints are both known and differ.
func mismatch(stored, req string) bool {
	return stored != "" && req != "" && stored != req
}

// Complete implements idempotency.ClaimStore with one UPDATE that matches
// the token's owner and fence and, for a claim in flight, a lease still
// ahead of clock_timestamp(). A zero c.StoredAt becomes the server's clock,
// a TTL <= 0 the store's default, and an empty c.Fingerprint the claim's.
// Repeated with the token that completed the record, it returns nil and
// changes nothing. There is no byte cap: it never returns ErrTooLarge.
func (s *Store) Complete(ctx context.Context, tok idempotency.Token, c idempotency.Cached) error {
	header, err := encodeHeader(c.Header)
	if err != nil {
		return fmt.Errorf("pgstore: complete: %w", err)
	}
	if tok.Fence > math.MaxInt64 {
		return fmt.Errorf("pgstore: complete: %w", idempotency.ErrLeaseLost)
	}
	return s.casUpdate(ctx, "complete", s.q.complete,
		s.recordID(tok.Key, tok.Identity), tok.Owner, int64(tok.Fence),
		int32(c.Status), []byte(c.WireBody), header, c.Tombstone, c.Fingerprint,
		storedAt(c.StoredAt), int64(s.ttl(c.TTL)))
}

// Release implements idempotency.ClaimStore with one UPDATE that marks the
// claim released (the reaper deletes the row later). Only the holder of a
// live lease can release.
func (s *Store) Release(ctx context.Context, tok idempotency.Token) error {
	if tok.Fence > math.MaxInt64 {
		return fmt.Errorf("pgstore: release: %w", idempotency.ErrLeaseLost)
	}
	return s.casUpdate(ctx, "release", s.q.release, s.recordID(tok.Key, tok.Identity), tok.Owner, int64(tok.Fence))
}

// Renew implements idempotency.ClaimStore with one UPDATE that sets the
// lease to end lease after the server's clock_timestamp().
func (s *Store) Renew(ctx context.Context, tok idempotency.Token, lease time.Duration) error {
	if lease <= 0 {
		return fmt.Errorf("pgstore: renew: %w: lease %v is not positive", idempotency.ErrInvalidArgument, lease)
	}
	if tok.Fence > math.MaxInt64 {
		return fmt.Errorf("pgstore: renew: %w", idempotency.ErrLeaseLost)
	}
	return s.casUpdate(ctx, "renew", s.q.renew,
		s.recordID(tok.Key, tok.Identity), tok.Owner, int64(tok.Fence), micros(lease))
}

// casUpdate runs a compare-and-set UPDATE: no row updated means the token
// does not hold the claim. A statement that keeps losing races (40001,
// 40P01) is a store failure, as for any other database error: the caller's
// claim is untouched and its lease runs out as after a crash.
func (s *Store) casUpdate(ctx context.Context, op, sql string, args ...any) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var err error
	for range maxAttempts {
		var tag interface{ RowsAffected() int64 }
		tag, err = s.pool.Exec(ctx, sql, args...)
		if retryable(err) {
			continue
		}
		if err != nil {
			break
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("pgstore: %s: %w", op, idempotency.ErrLeaseLost)
		}
		return nil
	}
	return s.fail(op, err)
}

// micros converts d to whole microseconds, PostgreSQL's resolution,
// rounding up so that a positive lease never becomes zero.
func micros(d time.Duration) int64 {
	return int64((d + time.Microsecond - 1) / time.Microsecond)
}
