package bench

import (
	"context"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemkit/idempotency/driver"
	"github.com/idemkit/idempotency/pgstore"
)

// Sketches of the transactional claim's statement sequence in raw pgx (not
// idemkit code): what pgstore.Run would cost with fewer round trips, and
// the floor of any design that writes a record row in the command's
// transaction. Each inserts the widget as the bare transaction does and
// writes the record row that pgstore writes, in the same table, through
// pgstore's own SQL functions (schema.go) unless said otherwise.

type txSketch struct {
	f                             *txFixture
	pool                          *pgxpool.Pool
	peek, claim, record, plainIns string
	lock, read, simplePeek        string
}

func newTxSketch(f *txFixture, pool *pgxpool.Pool) *txSketch {
	q := `"` + f.schema + `"."` + pgstore.DefaultTable
	table := q + `"`
	return &txSketch{
		f: f, pool: pool,
		// pgstore's peekSQL, claimTxSQL and recordTxSQL (tx.go).
		peek: `
SELECT r.state, r.fingerprint, r.expires_at - n.now, NULL::bigint,
    r.status, r.body, r.header, r.tombstone, r.stored_at, r.ttl_ns
FROM (SELECT clock_timestamp() AS now) n LEFT JOIN ` + table + ` r ON r.id = $1`,
		claim:  `SELECT * FROM ` + q + `_claim_tx"($1, $2, $3)`,
		record: `SELECT ` + q + `_record_tx"($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
		// The claim function's two statements, as plain SQL: the lock and
		// the lease, then (a statement of its own, so that at READ
		// COMMITTED it sees what the lock's previous holder committed) the
		// row, drawing a fence unless the row is live.
		lock: `SELECT pg_try_advisory_xact_lock($1), set_config('idle_in_transaction_session_timeout', $2, true)`,
		read: `
SELECT r.state, r.fingerprint, r.expires_at - n.now,
    CASE WHEN coalesce(r.state IN (1, 2) AND r.expires_at > n.now, false) THEN NULL
        ELSE nextval('` + q + `_fence_seq"') END,
    r.status, r.body, r.header, r.tombstone, r.stored_at, r.ttl_ns
FROM (SELECT clock_timestamp() AS now) n LEFT JOIN ` + table + ` r ON r.id = $1`,
		// The peek without the join: no row when there is no record.
		simplePeek: `SELECT state, fingerprint, expires_at - clock_timestamp(), NULL::bigint,
    status, body, header, tombstone, stored_at, ttl_ns FROM ` + table + ` WHERE id = $1`,
		// The record row written by a plain INSERT: no function, lock,
		// fence sequence or check.
		plainIns: `INSERT INTO ` + table + ` (id, state, owner, fence, fingerprint, expires_at,
    status, body, header, tombstone, stored_at, ttl_ns)
VALUES ($1, 2, $2, $3, $4, $9::timestamptz + ($10::bigint / 1000) * interval '1 microsecond', $5, $6, $7, $8, $9, $10)`,
	}
}

const txTTL = int64(24 * time.Hour)

// claimRow is what the peek and the claim function return.
type claimRow struct {
	state    *int16
	fp       *string
	left     *time.Duration
	fence    *int64
	status   *int32
	body     []byte
	header   []byte
	tomb     *bool
	storedAt *time.Time
	ttl      *int64
}

func (r *claimRow) dest() []any {
	return []any{&r.state, &r.fp, &r.left, &r.fence, &r.status, &r.body, &r.header, &r.tomb, &r.storedAt, &r.ttl}
}

func (s *txSketch) id() []byte {
	id := driver.RecordKey(nil, s.f.freshKey(), "alice")
	return id[:]
}

// recordArgs are recordTxSQL's (and plainIns's) arguments.
func recordArgs(id []byte, fence int64) []any {
	return []any{id, "sketch-owner", fence, "fp", int32(201), txBody, []byte(nil), false, time.Now(), txTTL}
}

// same sends pgstore's statements, one round trip each as pgstore does:
// peek; BEGIN; claim; INSERT; record and COMMIT in one batch (5).
func (s *txSketch) same(ctx context.Context) error {
	id := s.id()
	var r claimRow
	if err := s.pool.QueryRow(ctx, s.peek, id).Scan(r.dest()...); err != nil {
		return err
	}
	if r.state != nil {
		return fmt.Errorf("peek found a row")
	}
	return s.withConn(ctx, func(conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, "begin"); err != nil {
			return err
		}
		if err := conn.QueryRow(ctx, s.claim, id, nil, int32(60000)).Scan(r.dest()...); err != nil {
			return err
		}
		if r.fence == nil {
			return fmt.Errorf("claim: no fence")
		}
		return s.finish(ctx, conn, id, *r.fence)
	})
}

// finish is the command's INSERT, then the record and COMMIT in one batch.
func (s *txSketch) finish(ctx context.Context, conn *pgx.Conn, id []byte, fence int64) error {
	if _, err := conn.Exec(ctx, s.f.widgets, s.f.wid.Add(1), "widget"); err != nil {
		return err
	}
	b := &pgx.Batch{}
	b.Queue(s.record, recordArgs(id, fence)...)
	b.Queue("COMMIT")
	return conn.SendBatch(ctx, b).Close()
}

// claimBatch sends BEGIN and the claim function in one batch, and reads
// the claim's row.
func (s *txSketch) claimBatch(ctx context.Context, conn *pgx.Conn, id []byte) (claimRow, error) {
	var r claimRow
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(s.claim, id, nil, int32(60000))
	br := conn.SendBatch(ctx, b)
	_, err := br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(r.dest()...)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err == nil && r.fence == nil {
		err = fmt.Errorf("claim: no fence")
	}
	return r, err
}

// withConn runs fn on a connection and rolls back whatever fn left open.
func (s *txSketch) withConn(ctx context.Context, fn func(*pgx.Conn) error) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	err = fn(conn.Conn())
	if conn.Conn().PgConn().TxStatus() != 'I' {
		_, _ = conn.Exec(ctx, "ROLLBACK")
	}
	return err
}

// peekPipelined: peek; BEGIN and claim in one batch; INSERT; record and
// COMMIT in one batch (4 round trips; replays as today, 1).
func (s *txSketch) peekPipelined(ctx context.Context) error {
	id := s.id()
	var r claimRow
	if err := s.pool.QueryRow(ctx, s.peek, id).Scan(r.dest()...); err != nil {
		return err
	}
	return s.withConn(ctx, func(conn *pgx.Conn) error {
		r, err := s.claimBatch(ctx, conn, id)
		if err != nil {
			return err
		}
		return s.finish(ctx, conn, id, *r.fence)
	})
}

// noPeek: BEGIN and claim in one batch; INSERT; record and COMMIT in one
// batch (3 round trips, the bare transaction's; a replay would then be a
// transaction too).
func (s *txSketch) noPeek(ctx context.Context) error {
	id := s.id()
	return s.withConn(ctx, func(conn *pgx.Conn) error {
		r, err := s.claimBatch(ctx, conn, id)
		if err != nil {
			return err
		}
		return s.finish(ctx, conn, id, *r.fence)
	})
}

// optimized: peek; BEGIN, the lock and the read in one batch, as plain
// statements; INSERT; the record (a plain INSERT when the claim found no
// row, the function otherwise: a unique violation then means the record
// was taken, as IK001 does) and COMMIT in one batch (4 round trips).
func (s *txSketch) optimized(ctx context.Context, peek bool) error {
	id := s.id()
	if peek {
		var r claimRow
		if err := s.pool.QueryRow(ctx, s.simplePeek, id).Scan(r.dest()...); err != nil && err != pgx.ErrNoRows {
			return err
		}
	}
	return s.withConn(ctx, func(conn *pgx.Conn) error { return s.optimizedOn(ctx, conn, id) })
}

// optimizedSameConn is optimized with the peek on the connection the
// transaction then runs on: one pool checkout and one backend per command.
func (s *txSketch) optimizedSameConn(ctx context.Context) error {
	id := s.id()
	return s.withConn(ctx, func(conn *pgx.Conn) error {
		var r claimRow
		if err := conn.QueryRow(ctx, s.simplePeek, id).Scan(r.dest()...); err != nil && err != pgx.ErrNoRows {
			return err
		}
		return s.optimizedOn(ctx, conn, id)
	})
}

func (s *txSketch) optimizedOn(ctx context.Context, conn *pgx.Conn, id []byte) error {
	r, locked, err := s.claimStatements(ctx, conn, id)
	if err != nil {
		return err
	}
	if !locked || r.fence == nil {
		return fmt.Errorf("claim: not acquired")
	}
	if _, err := conn.Exec(ctx, s.f.widgets, s.f.wid.Add(1), "widget"); err != nil {
		return err
	}
	rec := s.record
	if r.state == nil {
		rec = s.plainIns
	}
	b := &pgx.Batch{}
	b.Queue(rec, recordArgs(id, *r.fence)...)
	b.Queue("COMMIT")
	return conn.SendBatch(ctx, b).Close()
}

// claimStatements sends BEGIN and the claim function's two statements (the
// lock, with the idle timeout, and the read) in one batch, and reads
// whether the lock was taken and the claim's row.
func (s *txSketch) claimStatements(ctx context.Context, conn *pgx.Conn, id []byte) (r claimRow, locked bool, err error) {
	var old string
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(s.lock, int64(binary.BigEndian.Uint64(id[:8])), "60000")
	b.Queue(s.read, id)
	br := conn.SendBatch(ctx, b)
	_, err = br.Exec()
	if err == nil {
		err = br.QueryRow().Scan(&locked, &old)
	}
	if err == nil {
		err = br.QueryRow().Scan(r.dest()...)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return r, locked, err
}

// floor: the bare transaction plus the record row, written by a plain
// INSERT in the COMMIT's batch: BEGIN; INSERT; record INSERT and COMMIT
// (3 round trips). No claim: what any design that writes a record row in
// the command's transaction costs at least.
func (s *txSketch) floor(ctx context.Context) error {
	return s.floorWith(ctx, false)
}

// floorWith is floor, after the (simple) peek when peek is set: the floor
// of a design whose replays stay one primary-key read (4 round trips).
func (s *txSketch) floorWith(ctx context.Context, peek bool) error {
	return s.floorInto(ctx, peek, s.plainIns)
}

// floorInto is floorWith, the record row written by ins.
func (s *txSketch) floorInto(ctx context.Context, peek bool, ins string) error {
	id := s.id()
	if peek {
		var r claimRow
		if err := s.pool.QueryRow(ctx, s.simplePeek, id).Scan(r.dest()...); err != nil && err != pgx.ErrNoRows {
			return err
		}
	}
	return s.withConn(ctx, func(conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
			return err
		}
		if _, err := conn.Exec(ctx, s.f.widgets, s.f.wid.Add(1), "widget"); err != nil {
			return err
		}
		b := &pgx.Batch{}
		b.Queue(ins, recordArgs(id, 1)...)
		b.Queue("COMMIT")
		return conn.SendBatch(ctx, b).Close()
	})
}

// pkOnlyTable creates a copy of the record table with its primary key
// only (no expires_at index), and returns the plain INSERT into it.
func (s *txSketch) pkOnlyTable(tb testing.TB) string {
	tb.Helper()
	t := `"` + s.f.schema + `".records_pk_only`
	if _, err := s.pool.Exec(context.Background(), `CREATE TABLE `+t+` (LIKE "`+s.f.schema+`"."`+pgstore.DefaultTable+`" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)`); err != nil {
		tb.Fatal(err)
	}
	if _, err := s.pool.Exec(context.Background(), `ALTER TABLE `+t+` ADD PRIMARY KEY (id)`); err != nil {
		tb.Fatal(err)
	}
	return strings.Replace(s.plainIns, `"`+s.f.schema+`"."`+pgstore.DefaultTable+`"`, t, 1)
}

// interleaveN runs each loop for slices/len(loops) slices of d, in the
// order ABC…, then …CBA, and so on, and returns what each did and the time
// each ran.
func interleaveN(slices int, d time.Duration, loops []func(until time.Time) int64) (ops []int64, took []time.Duration) {
	n := len(loops)
	ops, took = make([]int64, n), make([]time.Duration, n)
	for i := range slices {
		j := i % n
		if (i/n)%2 == 1 {
			j = n - 1 - j
		}
		start := time.Now()
		ops[j] += loops[j](start.Add(d))
		took[j] += time.Since(start)
	}
	return ops, took
}

// BenchmarkTxSketch runs the bare transaction (pair=write) or the
// primary-key SELECT (pair=read), pgstore.Run and the sketches above,
// interleaved (8 callers, one pool of 9), and reports each one's
// throughput as a ratio to the first's, and its CPU per operation (client:
// this process; server: the pool's backends).
func BenchmarkTxSketch(b *testing.B) {
	pool, app := txPool(b, nil)
	f := newTxFixture(b, pool)
	t := f.target(b, pool)
	t.preload(b, txReplayKeys)
	s := newTxSketch(f, pool)
	m := newCPUMeter(b, pool, app)
	fresh := func(op func(ctx context.Context) error) func(context.Context, int64) error {
		return func(ctx context.Context, _ int64) error { return op(ctx) }
	}
	pkOnly := s.pkOnlyTable(b)
	b.Run("pair=write", func(b *testing.B) {
		txSketchRun(b, m, []*txSide{
			{name: "bare", op: fresh(t.bare)},
			{name: "pgstore", op: fresh(func(ctx context.Context) error { return t.fresh(ctx, f.freshKey()) })},
			{name: "sketch-same-5rt", op: fresh(s.same)},
			{name: "sketch-peek-pipelined-4rt", op: fresh(s.peekPipelined)},
			{name: "sketch-optimized-4rt", op: fresh(func(ctx context.Context) error { return s.optimized(ctx, true) })},
			{name: "sketch-nopeek-3rt", op: fresh(s.noPeek)},
			{name: "sketch-optimized-nopeek-3rt", op: fresh(func(ctx context.Context) error { return s.optimized(ctx, false) })},
			{name: "sketch-optimized-sameconn-4rt", op: fresh(s.optimizedSameConn)},
			{name: "sketch-floor-peek-4rt", op: fresh(func(ctx context.Context) error { return s.floorWith(ctx, true) })},
			{name: "sketch-floor-3rt", op: fresh(s.floor)},
			{name: "sketch-floor-pk-only-3rt", op: fresh(func(ctx context.Context) error { return s.floorInto(ctx, false, pkOnly) })},
		})
	})
	b.Run("pair=read", func(b *testing.B) {
		peek := func(sql string) func(context.Context, int64) error {
			return func(ctx context.Context, i int64) error {
				var r claimRow
				return pool.QueryRow(ctx, sql, f.ids[i%int64(len(f.ids))]).Scan(r.dest()...)
			}
		}
		txSketchRun(b, m, []*txSide{
			{name: "select", op: t.selectRow},
			{name: "pgstore", op: t.replay},
			{name: "sketch-peek-sql", op: peek(s.peek)},
			{name: "sketch-peek-sql-bounded", op: func(ctx context.Context, i int64) error {
				bctx, cancel := context.WithTimeout(ctx, pgstore.DefaultTimeout)
				defer cancel()
				return peek(s.peek)(bctx, i)
			}},
			{name: "sketch-simple-peek-sql", op: peek(s.simplePeek)},
		})
	})
}

func txSketchRun(b *testing.B, m *cpuMeter, sides []*txSide) {
	loops := make([]func(time.Time) int64, len(sides))
	for i, sd := range sides {
		loops[i] = sd.loop(b, m)
		loops[i](time.Now().Add(100 * time.Millisecond)) // warm up
		sd.reset()
	}
	ops, took := interleaveN(4*len(sides), 200*time.Millisecond, loops)
	base := float64(ops[0]) / took[0].Seconds()
	b.ReportMetric(base, sides[0].name+"-op/s")
	for i, sd := range sides {
		if i > 0 {
			b.ReportMetric(float64(ops[i])/took[i].Seconds()/base, sd.name+"-ratio")
		}
		b.ReportMetric(float64(sd.client.Microseconds())/float64(sd.ops), sd.name+"-client-µs/op")
		b.ReportMetric(float64(sd.server.Microseconds())/float64(sd.ops), sd.name+"-server-µs/op")
	}
}

// BenchmarkTxSteps is where one operation's time goes, at one caller (no
// contention, no group commit): the time from sending each statement (or
// batch) to its reply, by statement, and what the operation took in all;
// the rest is the client's own work (the engine, pgx, the store). Metrics
// are µs per operation; "ops" is how many were run.
func BenchmarkTxSteps(b *testing.B) {
	probe := newPool(b, 1)
	cfg := probe.Config().Copy()
	probe.Close()
	tracer := newRTTracer()
	cfg.ConnConfig.Tracer = tracer
	cfg.MaxConns, cfg.MinConns = 2, 2
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	f := newTxFixture(b, pool)
	t := f.target(b, pool)
	t.preload(b, 1024)
	ctx := context.Background()
	const n = 2000
	for _, c := range []struct {
		name string
		op   func(i int64) error
	}{
		{"op=bare", func(int64) error { return t.bare(ctx) }},
		{"op=pgstore-fresh", func(int64) error { return t.fresh(ctx, f.freshKey()) }},
		{"op=select", func(i int64) error { return t.selectRow(ctx, i) }},
		{"op=pgstore-replay", func(i int64) error { return t.replay(ctx, i) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			for i := range 200 { // warm up
				if err := c.op(int64(i)); err != nil {
					b.Fatal(err)
				}
			}
			tracer.reset()
			start := time.Now()
			for i := range n {
				if err := c.op(int64(i)); err != nil {
					b.Fatal(err)
				}
			}
			total := time.Since(start)
			tracer.mu.Lock()
			defer tracer.mu.Unlock()
			var traced time.Duration
			labels := make([]string, 0, len(tracer.time))
			for l, d := range tracer.time {
				labels = append(labels, l)
				traced += d
			}
			for _, l := range labels {
				name := l
				if l == "batch" {
					name = "record+commit" // pgstore's only batch
				}
				b.ReportMetric(float64(tracer.time[l].Microseconds())/n, strings.ReplaceAll(name, " ", "_")+"-µs/op")
				if tracer.count[l] != n {
					b.Logf("%s: %.2f per op", name, float64(tracer.count[l])/n)
				}
			}
			b.ReportMetric(float64(total.Microseconds())/n, "total-µs/op")
			b.ReportMetric(float64((total-traced).Microseconds())/n, "client-µs/op")
			b.ReportMetric(float64(tracer.trips)/n, "round-trips/op")
		})
	}
}

// BenchmarkTxCosts is what each piece of the transactional claim costs the
// server and the client, at one caller: the bare transaction with one
// piece added at a time, on one connection, each variant run n times in a
// row. Metrics per operation: server-µs (the backend's CPU, from /proc),
// client-µs (this process's CPU), wall-µs.
func BenchmarkTxCosts(b *testing.B) {
	// synchronous_commit=off: no commit waits for the WAL flush, which
	// costs no CPU and would only make the run longer.
	pool, app := txPoolN(b, 2, map[string]string{"synchronous_commit": "off"})
	f := newTxFixture(b, pool)
	t := f.target(b, pool)
	s := newTxSketch(f, pool)
	m := newCPUMeter(b, pool, app)
	ctx := context.Background()
	seq := `"` + f.schema + `"."` + pgstore.DefaultTable + `_fence_seq"`
	upsert := `INSERT INTO "` + f.schema + `"."` + pgstore.DefaultTable + `" AS r (id, state, owner, fence, fingerprint, expires_at,
    status, body, header, tombstone, stored_at, ttl_ns)
VALUES ($1, 2, $2, $3, $4, $9::timestamptz + ($10::bigint / 1000) * interval '1 microsecond', $5, $6, $7, $8, $9, $10)
ON CONFLICT (id) DO UPDATE SET
    state = 2, owner = excluded.owner, fence = excluded.fence, fingerprint = excluded.fingerprint,
    expires_at = excluded.expires_at, status = excluded.status, body = excluded.body,
    header = excluded.header, tombstone = excluded.tombstone, stored_at = excluded.stored_at,
    ttl_ns = excluded.ttl_ns
WHERE (r.state = 0 OR r.expires_at <= clock_timestamp()) AND r.fence < excluded.fence`
	exec := func(c *pgx.Conn, sql string, args ...any) error { _, err := c.Exec(ctx, sql, args...); return err }
	insert := func(c *pgx.Conn) error { return exec(c, f.widgets, f.wid.Add(1), "widget") }
	commitWith := func(c *pgx.Conn, sql string, args ...any) error {
		bt := &pgx.Batch{}
		bt.Queue(sql, args...)
		bt.Queue("COMMIT")
		return c.SendBatch(ctx, bt).Close()
	}
	// bareWith is the bare transaction with extra statements after BEGIN.
	bareWith := func(extra func(c *pgx.Conn) error) func(c *pgx.Conn) error {
		return func(c *pgx.Conn) error {
			if err := exec(c, "begin"); err != nil {
				return err
			}
			if err := extra(c); err != nil {
				return err
			}
			if err := insert(c); err != nil {
				return err
			}
			return exec(c, "commit")
		}
	}
	// bareRecord is the bare transaction whose COMMIT is batched with a record write.
	bareRecord := func(sql string) func(c *pgx.Conn) error {
		return func(c *pgx.Conn) error {
			if err := exec(c, "begin"); err != nil {
				return err
			}
			if err := insert(c); err != nil {
				return err
			}
			return commitWith(c, sql, recordArgs(s.id(), 1)...)
		}
	}
	var lockKey int64
	variants := []struct {
		name string
		op   func(c *pgx.Conn) error
	}{
		{"bare", bareWith(func(*pgx.Conn) error { return nil })},
		{"bare+select-1", bareWith(func(c *pgx.Conn) error { return exec(c, "SELECT 1") })},
		{"bare+advisory-lock", bareWith(func(c *pgx.Conn) error {
			lockKey++
			return exec(c, "SELECT pg_try_advisory_xact_lock($1)", lockKey)
		})},
		{"bare+set-config", bareWith(func(c *pgx.Conn) error {
			return exec(c, "SELECT set_config('idle_in_transaction_session_timeout', '60000', true)")
		})},
		{"bare+nextval", bareWith(func(c *pgx.Conn) error { return exec(c, "SELECT nextval('"+seq+"')") })},
		{"bare+claim-function", bareWith(func(c *pgx.Conn) error {
			var r claimRow
			return c.QueryRow(ctx, s.claim, s.id(), nil, int32(60000)).Scan(r.dest()...)
		})},
		{"bare+claim-statements-batched-with-begin", func(c *pgx.Conn) error {
			if _, _, err := s.claimStatements(ctx, c, s.id()); err != nil {
				return err
			}
			if err := insert(c); err != nil {
				return err
			}
			return exec(c, "commit")
		}},
		{"bare+peek", func(c *pgx.Conn) error {
			var r claimRow
			if err := c.QueryRow(ctx, s.peek, s.id()).Scan(r.dest()...); err != nil {
				return err
			}
			return bareWith(func(*pgx.Conn) error { return nil })(c)
		}},
		{"bare+record-insert", bareRecord(s.plainIns)},
		{"bare+record-upsert", bareRecord(upsert)},
		{"bare+record-function", bareRecord(s.record)},
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Release()
	c := conn.Conn()
	type cost struct {
		name           string
		op             func(i int64) error
		client, server time.Duration
		wall           time.Duration
		ops            int64
	}
	var writes []*cost
	for _, v := range variants {
		writes = append(writes, &cost{name: v.name, op: func(int64) error { return v.op(c) }})
	}
	// The whole sequences, on the pool (its other connection is idle).
	writes = append(writes,
		&cost{name: "sketch-pgstore-statements", op: func(int64) error { return s.same(ctx) }},
		&cost{name: "sketch-optimized-4rt", op: func(int64) error { return s.optimized(ctx, true) }},
		&cost{name: "sketch-optimized-nopeek-3rt", op: func(int64) error { return s.optimized(ctx, false) }},
		&cost{name: "pgstore.Run", op: func(int64) error { return t.fresh(ctx, f.freshKey()) }},
	)
	// Reads of a completed record.
	t.preload(b, 1024)
	readWith := func(sql string) func(i int64) error {
		return func(i int64) error {
			var r claimRow
			return c.QueryRow(ctx, sql, f.ids[i%int64(len(f.ids))]).Scan(r.dest()...)
		}
	}
	// pgstore bounds each call with context.WithTimeout (Store.bound),
	// which also makes pgx watch the context.
	readBounded := func(sql string) func(i int64) error {
		return func(i int64) error {
			bctx, cancel := context.WithTimeout(ctx, pgstore.DefaultTimeout)
			defer cancel()
			var r claimRow
			return c.QueryRow(bctx, sql, f.ids[i%int64(len(f.ids))]).Scan(r.dest()...)
		}
	}
	reads := []*cost{
		{name: "read:select", op: func(i int64) error {
			var (
				state        int16
				fp           string
				expires      time.Time
				status       *int32
				body, header []byte
				tomb         bool
				storedAt     *time.Time
				ttl          *int64
			)
			return c.QueryRow(ctx, f.sel, f.ids[i%int64(len(f.ids))]).Scan(&state, &fp, &expires, &status, &body, &header, &tomb, &storedAt, &ttl)
		}},
		{name: "read:peek-sql", op: readWith(s.peek)},
		{name: "read:peek-sql-bounded", op: readBounded(s.peek)},
		{name: "read:simple-peek-sql", op: readWith(s.simplePeek)},
		{name: "read:pgstore-replay", op: func(i int64) error { return t.replay(ctx, i) }},
	}
	// Each variant runs n operations in all, in passes: every pass runs
	// each variant n/passes times, in an order that reverses from one pass
	// to the next, so that load from the rest of the machine falls on all
	// alike.
	measure := func(group []*cost, n, warm int) {
		for _, v := range group {
			for i := range warm { // prepare, plan, cache the functions; set hint bits
				if err := v.op(int64(i)); err != nil {
					b.Fatalf("%s: %v", v.name, err)
				}
			}
		}
		const passes = 10
		var seq int64
		for p := range passes {
			for k := range group {
				if p%2 == 1 {
					k = len(group) - 1 - k
				}
				v := group[k]
				c0, s0 := m.read()
				start := time.Now()
				for range n / passes {
					seq++
					if err := v.op(seq); err != nil {
						b.Fatalf("%s: %v", v.name, err)
					}
				}
				v.wall += time.Since(start)
				c1, s1 := m.read()
				v.client += c1 - c0
				v.server += s1 - s0
				v.ops += int64(n / passes)
			}
		}
	}
	// /proc counts CPU in 10 ms ticks: thousands of operations each.
	measure(writes, 3000, 50)
	measure(reads, 20000, 2048)
	for _, v := range append(writes, reads...) {
		b.Run("op="+v.name, func(b *testing.B) {
			b.ReportMetric(float64(v.server.Microseconds())/float64(v.ops), "server-µs/op")
			b.ReportMetric(float64(v.client.Microseconds())/float64(v.ops), "client-µs/op")
			b.ReportMetric(float64(v.wall.Microseconds())/float64(v.ops), "wall-µs/op")
		})
	}
}
