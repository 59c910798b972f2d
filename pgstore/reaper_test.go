package pgstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemkit/idempotency"
)

// countRows returns how many rows st's table holds, expired or not.
func countRows(t *testing.T, st *Store) int64 {
	t.Helper()
	var n int64
	if err := st.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+st.names().table).Scan(&n); err != nil {
		t.Fatalf("count rows: %v", err)
	}
	return n
}

// fillExpired stores n completed records that expired an hour ago (by the
// client's clock, which is the server's on this machine, give or take far
// less than an hour) and returns their keys.
func fillExpired(t *testing.T, st *Store, prefix string, n int) {
	t.Helper()
	old := idempotency.Cached{Status: 200, WireBody: []byte("old"), StoredAt: time.Now().Add(-2 * time.Hour), TTL: time.Hour}
	for i := range n {
		if err := st.Store(context.Background(), fmt.Sprintf("%s-%d", prefix, i), "alice", old); err != nil {
			t.Fatalf("Store: %v", err)
		}
	}
}

func TestDeleteExpired(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	const completedExpired, live = 60, 10
	fillExpired(t, st, "expired", completedExpired)
	for i := range live {
		if err := st.Store(ctx, fmt.Sprintf("live-%d", i), "alice", idempotency.Cached{Status: 200, TTL: time.Hour}); err != nil {
			t.Fatalf("Store: %v", err)
		}
	}
	// Dead claims are reaped too: a released one and one whose lease ran out.
	released, err := st.Begin(ctx, "released", "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Hour})
	if err != nil {
		t.Fatalf("Begin: %v", err)
	}
	if err := st.Release(ctx, released.Token); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if _, err := st.Begin(ctx, "lapsed", "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Microsecond}); err != nil {
		t.Fatalf("Begin: %v", err)
	}
	// A live claim is not.
	if _, err := st.Begin(ctx, "held", "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Hour}); err != nil {
		t.Fatalf("Begin: %v", err)
	}
	const expired = completedExpired + 2
	const kept = live + 1

	// Callers racing over small batches delete every expired row exactly once.
	const callers, batch = 4, 7
	var total atomic.Int64
	errs := make(chan error, callers)
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for {
				n, err := st.DeleteExpired(ctx, batch)
				if err != nil {
					errs <- err
					return
				}
				if n > batch {
					errs <- fmt.Errorf("DeleteExpired(%d) deleted %d rows", batch, n)
					return
				}
				total.Add(n)
				if n == 0 {
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("DeleteExpired: %v", err)
	}
	if got := total.Load(); got != expired {
		t.Errorf("deleted %d rows in all, want %d", got, expired)
	}
	if got := countRows(t, st); got != kept {
		t.Errorf("%d rows left, want %d", got, kept)
	}
	if _, ok := st.Lookup(ctx, "live-0", "alice"); !ok {
		t.Errorf("a live record is gone")
	}
	cl, err := st.Begin(ctx, "held", "alice", idempotency.ClaimRequest{Owner: "other", Lease: time.Hour})
	if err != nil || cl.Status != idempotency.ClaimInFlight {
		t.Errorf("Begin on the live claim = (%v, %v), want in flight", cl.Status, err)
	}
	if n, err := st.DeleteExpired(ctx, 0); n != 0 || err != nil {
		t.Errorf("DeleteExpired with nothing expired = (%d, %v), want (0, nil)", n, err)
	}
}

func TestReaper(t *testing.T) {
	pool := testPool(t)
	schema := testSchema(t, pool)
	const interval = 20 * time.Millisecond
	var reapErrs atomic.Int64
	st := newMigrated(t, pool, WithSchema(schema), WithReaper(interval, 5),
		WithReaperErrorHandler(func(error) { reapErrs.Add(1) }))
	fillExpired(t, st, "expired", 23) // more than a batch: drained in one pass
	if err := st.Store(context.Background(), "live", "alice", idempotency.Cached{Status: 200, TTL: time.Hour}); err != nil {
		t.Fatalf("Store: %v", err)
	}
	// Waiting on the real server's reaper: poll until it is done.
	deadline := time.Now().Add(10 * time.Second)
	for countRows(t, st) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s, %d rows left, want the 1 live record", countRows(t, st))
		}
		time.Sleep(interval)
	}
	if got := reapErrs.Load(); got != 0 {
		t.Errorf("reaper reported %d errors, want 0", got)
	}

	if err := st.Close(); err != nil {
		t.Fatalf("Close = %v, want nil", err)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("second Close = %v, want nil", err)
	}
	// Closed, the reaper deletes nothing more; the store itself still works.
	fillExpired(t, st, "after-close", 1)
	time.Sleep(10 * interval)
	if got := countRows(t, st); got != 2 {
		t.Errorf("%d rows after Close and %v, want 2 (the reaper kept running?)", got, 10*interval)
	}
}

func TestCloseWithoutReaper(t *testing.T) {
	st, err := New(nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Errorf("Close = %v, want nil", err)
	}
}

// A reaper started before Migrate (New starts it) does not report the
// missing table as an error; it starts reaping once the table exists.
func TestReaperBeforeMigrate(t *testing.T) {
	pool := testPool(t)
	schema := testSchema(t, pool)
	const interval = 5 * time.Millisecond
	var reapErrs atomic.Int64
	st := newUnmigrated(t, pool, WithSchema(schema), WithReaper(interval, 5),
		WithReaperErrorHandler(func(err error) { reapErrs.Add(1); t.Logf("reaper error: %v", err) }))
	// Let the reaper run against the missing table for a few intervals.
	deadline := time.Now().Add(10 * interval)
	for time.Now().Before(deadline) {
		time.Sleep(interval)
	}
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if got := reapErrs.Load(); got != 0 {
		t.Errorf("reaper reported %d errors before Migrate, want 0", got)
	}
}

// A reaper whose role may not touch the table reports that once, not at
// every interval, and keeps trying; once a pass succeeds (the privileges
// granted) a new failure (revoked) is reported again.
func TestReaperReportsMisconfigurationOnce(t *testing.T) {
	pool := testPool(t)
	schema := testSchema(t, pool)
	table := newMigrated(t, pool, WithSchema(schema)).names().table
	role := newRole(t, pool)
	ctx := context.Background()
	passes := &passTracer{sql: newUnmigrated(t, nil, WithSchema(schema)).q.deleteExpired, ends: make(chan error, 1024)}
	rolePool := poolAs(t, pool, role, func(cfg *pgxpool.Config) { cfg.ConnConfig.Tracer = passes })
	var reported atomic.Int64
	st := newUnmigrated(t, rolePool, WithSchema(schema), WithReaper(time.Millisecond, 5),
		WithReaperErrorHandler(func(err error) {
			if !errors.Is(err, idempotency.ErrStoreMisconfigured) {
				t.Errorf("reaper error %v, want ErrStoreMisconfigured", err)
			}
			reported.Add(1)
		}))
	// await waits for n more passes that fail (ok false) or succeed. The
	// handler has run for every pass but the last one awaited.
	await := func(n int, ok bool) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for n > 0 {
			select {
			case err := <-passes.ends:
				if (err == nil) == ok {
					n--
				}
			case <-timeout:
				t.Fatalf("after 10s, still waiting for %d passes (succeeding: %v)", n, ok)
			}
		}
	}
	exec := func(sql string) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}

	await(5, false) // permission denied for schema
	if got := reported.Load(); got != 1 {
		t.Errorf("after 5 failed passes, %d errors reported, want 1", got)
	}
	exec("GRANT USAGE ON SCHEMA " + schema + " TO " + role)
	exec("GRANT SELECT, UPDATE, DELETE ON " + table + " TO " + role)
	await(1, true)
	exec("REVOKE ALL ON " + table + " FROM " + role)
	await(5, false) // permission denied for table: the same SQLSTATE
	if got := reported.Load(); got != 2 {
		t.Errorf("after a pass succeeded and 5 more failed, %d errors reported, want 2", got)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if got := reported.Load(); got != 2 {
		t.Errorf("after Close, %d errors reported, want 2", got)
	}
}

// passTracer sends the error of each statement sql run to ends (nil for
// success), dropping what ends has no room for.
type passTracer struct {
	sql  string
	ends chan error
}

type passKey struct{}

func (p *passTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	return context.WithValue(ctx, passKey{}, data.SQL == p.sql)
}

func (p *passTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	if pass, _ := ctx.Value(passKey{}).(bool); pass {
		select {
		case p.ends <- data.Err:
		default:
		}
	}
}
