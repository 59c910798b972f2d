package pgstore

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/idemkit/idempotency"
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
	if err := idempotency.ValidateBegin(key, req); err != nil {
		return idempotency.Claim{}, fmt.Errorf("pgstore: %w", err)
	}
	if s.err != nil {
		return idempotency.Claim{}, unavailable("begin", s.err)
	}
	id := s.recordID(key, identity)
	lease := micros(req.Lease)
	ctx, cancel := s.bound(ctx)
	defer cancel()
	for range maxAttempts {
		var r beginRow
		err := s.pool.QueryRow(ctx, s.q.begin, id, req.Owner, req.Fingerprint, lease).Scan(
			&r.acquired, &r.state, &r.owner, &r.fence, &r.fingerprint, &r.live, &r.remaining,
			&r.rec.status, &r.rec.body, &r.rec.header, &r.rec.tombstone, &r.rec.storedAt, &r.rec.ttl)
		if retryable(err) {
			continue
		}
		if err != nil {
			return idempotency.Claim{}, unavailable("begin", err)
		}
		cl, ok, err := r.claim(key, identity, req)
		if err != nil {
			return idempotency.Claim{}, unavailable("begin", err)
		}
		if ok {
			return cl, nil
		}
	}
	return idempotency.Claim{Status: idempotency.ClaimInFlight}, nil
}

// beginRow is the result of beginSQL.
type beginRow struct {
	acquired    pgtype.Int8 // the new fence, when this call claimed the key
	state       pgtype.Int2 // the rest: the row as this call found it, if any
	owner       pgtype.Text
	fence       pgtype.Int8
	fingerprint pgtype.Text
	live        pgtype.Bool // in flight with a live lease, or completed and unexpired
	remaining   pgtype.Int8 // microseconds until the lease ends or the record expires
	rec         record
}

// claim turns the row into Begin's answer. ok is false when the row shows
// that the statement lost a race and must run again.
func (r *beginRow) claim(key, identity string, req idempotency.ClaimRequest) (cl idempotency.Claim, ok bool, err error) {
	token := func(fence int64) idempotency.Token {
		return idempotency.Token{Key: key, Identity: identity, Owner: req.Owner, Fence: uint64(fence)}
	}
	if r.acquired.Valid {
		return idempotency.Claim{Status: idempotency.ClaimAcquired, Token: token(r.acquired.Int64)}, true, nil
	}
	if !r.live.Bool {
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
		if r.owner.String == req.Owner {
			return idempotency.Claim{Status: idempotency.ClaimAcquired, Token: token(r.fence.Int64)}, true, nil
		}
		return idempotency.Claim{Status: idempotency.ClaimInFlight, RetryAfter: time.Duration(r.remaining.Int64) * time.Microsecond}, true, nil
	}
	return idempotency.Claim{}, false, nil
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
	if s.err != nil {
		return unavailable("complete", s.err)
	}
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
	if s.err != nil {
		return unavailable("release", s.err)
	}
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
	if s.err != nil {
		return unavailable("renew", s.err)
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
	return unavailable(op, err)
}

// micros converts d to whole microseconds, PostgreSQL's resolution,
// rounding up so that a positive lease never becomes zero.
func micros(d time.Duration) int64 {
	return int64((d + time.Microsecond - 1) / time.Microsecond)
}
