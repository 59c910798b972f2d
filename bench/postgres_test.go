package bench

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
	"github.com/idemkit/idempotency/pgstore"
)

const (
	pgParallel = 8 // callers, and connections in the pool
	pgPreload  = 1000
)

// pgFixture is pgstore in one schema and the same table, written by raw
// statements, in another, through one pool.
type pgFixture struct {
	pool   *pgxpool.Pool
	store  *pgstore.Store
	async  *pgstore.Store // the same table through sessions with synchronous_commit off
	keys   []string       // completed in both tables
	rawIDs [][]byte
	raw    struct{ sel, ins string }
	body   []byte
}

func newPGFixture(b *testing.B) *pgFixture {
	b.Helper()
	ctx := context.Background()
	f := &pgFixture{pool: newPool(b, pgParallel), body: benchBody()}
	schema := newSchema(b, f.pool)
	var err error
	if f.store, err = pgstore.New(f.pool, pgstore.WithSchema(schema)); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.store.Close() })
	if err := f.store.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	cfg := f.pool.Config()
	cfg.ConnConfig.RuntimeParams["synchronous_commit"] = "off"
	asyncPool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(asyncPool.Close)
	if f.async, err = pgstore.New(asyncPool, pgstore.WithSchema(schema)); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.async.Close() })
	rawSchema := newSchema(b, f.pool)
	ddl, err := pgstore.SchemaSQL(pgstore.WithSchema(rawSchema))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, ddl); err != nil {
		b.Fatal(err)
	}
	table := `"` + rawSchema + `"."` + pgstore.DefaultTable + `"`
	f.raw.sel = `SELECT status, body, header, tombstone, fingerprint, stored_at, ttl_ns FROM ` + table + ` WHERE id = $1`
	f.raw.ins = `INSERT INTO ` + table + ` (id, state, owner, fence, fingerprint, expires_at)
VALUES ($1, 1, $2, nextval('"` + rawSchema + `"."` + pgstore.DefaultTable + `_fence_seq"'), $3, clock_timestamp() + interval '1 minute')
ON CONFLICT DO NOTHING RETURNING fence`
	f.keys = benchKeys("pkey", pgPreload)
	for _, k := range f.keys {
		if err := f.store.Store(ctx, k, "alice", idempotency.Cached{Status: 201, WireBody: f.body, TTL: time.Hour, Fingerprint: "fp"}); err != nil {
			b.Fatal(err)
		}
		id := driver.RecordKey(nil, k, "alice")
		f.rawIDs = append(f.rawIDs, id[:])
	}
	if _, err := f.pool.Exec(ctx, `INSERT INTO `+table+` (id, state, owner, fence, fingerprint, expires_at, status, body, tombstone, stored_at, ttl_ns)
SELECT unnest($1::bytea[]), 2, '', 0, 'fp', clock_timestamp() + interval '1 hour', 201, $2, false, clock_timestamp(), 3600000000000`, f.rawIDs, f.body); err != nil {
		b.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, "ANALYZE "+table); err != nil {
		b.Fatal(err)
	}
	return f
}

// BenchmarkPostgres compares pgstore with raw statements at 8 callers on an
// 8-connection pool: a replaying Begin against a primary-key SELECT, and a
// claiming Begin against INSERT … ON CONFLICT DO NOTHING RETURNING of the same
// columns (fence from a sequence, as pgstore's). A claim through sessions
// with synchronous_commit off shows that trade-off's gain.
func BenchmarkPostgres(b *testing.B) {
	f := newPGFixture(b)
	ctx := context.Background()
	run := time.Now().UnixNano()
	var fresh atomic.Int64
	freshKey := func() string { return fmt.Sprintf("fresh-%d-%016d", run, fresh.Add(1)) }
	claim := idempotency.ClaimRequest{Fingerprint: "fp", Owner: "bench-owner", Lease: time.Minute}
	ops := []struct {
		name string
		op   func(i int64) error
	}{
		{"op=Replay/impl=pgstore", func(i int64) error {
			cl, err := f.store.Begin(ctx, f.keys[i%pgPreload], "alice", claim)
			if err == nil && cl.Status != idempotency.ClaimReplay {
				err = fmt.Errorf("Begin on a completed key: %v", cl.Status)
			}
			return err
		}},
		{"op=Replay/impl=raw-SELECT", func(i int64) error {
			var (
				status   *int32
				body     []byte
				header   []byte
				tomb     *bool
				fp       *string
				storedAt *time.Time
				ttl      *int64
			)
			return f.pool.QueryRow(ctx, f.raw.sel, f.rawIDs[i%pgPreload]).Scan(&status, &body, &header, &tomb, &fp, &storedAt, &ttl)
		}},
		{"op=Claim/impl=pgstore-begin", func(int64) error {
			cl, err := f.store.Begin(ctx, freshKey(), "alice", claim)
			if err == nil && cl.Status != idempotency.ClaimAcquired {
				err = fmt.Errorf("Begin on a fresh key: %v", cl.Status)
			}
			return err
		}},
		{"op=Claim/impl=pgstore-begin-sync-commit-off", func(int64) error {
			cl, err := f.async.Begin(ctx, freshKey(), "alice", claim)
			if err == nil && cl.Status != idempotency.ClaimAcquired {
				err = fmt.Errorf("Begin on a fresh key: %v", cl.Status)
			}
			return err
		}},
		{"op=Claim/impl=raw-INSERT", func(int64) error {
			id := driver.RecordKey(nil, freshKey(), "alice")
			var fence int64
			return f.pool.QueryRow(ctx, f.raw.ins, id[:], "bench-owner", "fp").Scan(&fence)
		}},
	}
	for _, o := range ops {
		b.Run(fmt.Sprintf("%s/par=%d", o.name, pgParallel), func(b *testing.B) { atParallel(b, pgParallel, o.op) })
	}
}

// countingTracer counts the statements a pool sends.
type countingTracer struct{ n atomic.Int64 }

func (t *countingTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	t.n.Add(1)
	return ctx
}

func (t *countingTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TestPostgresStatements checks "one statement per claim" (and per replay
// and per Complete).
func TestPostgresStatements(t *testing.T) {
	ctx := context.Background()
	probe := newPool(t, 1)
	schema := newSchema(t, probe)
	cfg := probe.Config()
	tracer := &countingTracer{}
	cfg.ConnConfig.Tracer = tracer
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s, err := pgstore.New(pool, pgstore.WithSchema(schema))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	req := idempotency.ClaimRequest{Fingerprint: "fp", Owner: "o", Lease: time.Minute}
	var cl idempotency.Claim
	steps := []struct {
		name string
		op   func() error
	}{
		{"claim (Begin on a fresh key)", func() error {
			cl, err = s.Begin(ctx, "k", "alice", req)
			return err
		}},
		{"Complete", func() error {
			return s.Complete(ctx, cl.Token, idempotency.Cached{Status: 201, WireBody: []byte("{}")})
		}},
		{"replay (Begin on a completed key)", func() error {
			got, err := s.Begin(ctx, "k", "alice", req)
			if err == nil && got.Status != idempotency.ClaimReplay {
				err = fmt.Errorf("status %v, want replay", got.Status)
			}
			return err
		}},
	}
	for _, st := range steps {
		before := tracer.n.Load()
		if err := st.op(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := tracer.n.Load() - before; got != 1 {
			t.Errorf("%s sent %d statements, want 1", st.name, got)
		}
	}
}
