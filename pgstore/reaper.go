package pgstore

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
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

// reap is the background reaper started by WithReaper.
func (s *Store) reap(ctx context.Context) {
	defer close(s.reapDone)
	t := time.NewTicker(s.reapEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for ctx.Err() == nil {
			n, err := s.DeleteExpired(ctx, s.reapBatch)
			if err != nil {
				if ctx.Err() == nil && s.onReapErr != nil && !notMigrated(err) {
					s.onReapErr(err)
				}
				break
			}
			if n < int64(s.reapBatch) {
				break
			}
		}
	}
}

// notMigrated reports an error saying the table (or its schema) does not
// exist yet: a reaper started by New before Migrate has nothing to reap, and
// that is not worth reporting.
func notMigrated(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000")
}
