package pgstore

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/idemkit/idempotency"
)

// DeleteExpired deletes at most batch rows whose expires_at has passed by
// the server's clock (completed records past their TTL, claims whose lease
// ran out, released claims) in one DELETE, and reports how many it deleted.
// batch <= 0 means DefaultReapBatch. Rows locked by another caller are
// skipped, not waited for, so callers on several replicas each delete
// different rows. Reads already ignore expired rows; this only reclaims
// their space. Call it until it returns less than batch to empty the
// backlog, or let WithReaper do so.
func (s *Store) DeleteExpired(ctx context.Context, batch int) (int64, error) {
	if batch <= 0 {
		batch = DefaultReapBatch
	}
	tag, err := s.pool.Exec(ctx, s.q.deleteExpired, int64(batch))
	if err != nil {
		return 0, s.fail("delete expired", err)
	}
	return tag.RowsAffected(), nil
}

// reap is the background reaper started by WithReaper. It runs one
// DELETE per interval, and more while they fill their batch; a failure ends
// the interval's pass, so a store that fails costs one statement per
// interval, never a loop.
func (s *Store) reap(ctx context.Context) {
	defer close(s.reapDone)
	t := time.NewTicker(s.reapEvery)
	defer t.Stop()
	var quiet string // the SQLSTATE of the misconfiguration last reported
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for ctx.Err() == nil {
			n, err := s.DeleteExpired(ctx, s.reapBatch)
			if err != nil {
				if ctx.Err() == nil && reportReapError(err, &quiet) && s.onReapErr != nil {
					s.onReapErr(err)
				}
				break
			}
			quiet = ""
			if n < int64(s.reapBatch) {
				break
			}
		}
	}
}

// reportReapError reports whether the reaper passes err on to its error
// handler. It does not for a table or schema that does not exist (a reaper
// runs from New, and Migrate may come after), nor for the misconfiguration
// it reported last, whose SQLSTATE is *quiet: that one is reported once,
// not at every interval, until a pass succeeds or another error comes. A
// store that is unavailable is reported at every interval, as an outage
// goes on.
func reportReapError(err error, quiet *string) bool {
	var pgErr *pgconn.PgError
	if !errors.Is(err, idempotency.ErrStoreMisconfigured) || !errors.As(err, &pgErr) {
		*quiet = ""
		return true
	}
	if pgErr.Code == "42P01" || pgErr.Code == "3F000" || pgErr.Code == *quiet {
		return false
	}
	*quiet = pgErr.Code
	return true
}
