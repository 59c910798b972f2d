package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/pgstore"
)

// Transactional commands (pgstore.Run over Store.Transactional) against the
// same work done without idempotency, issue 11 item 6:
//
//   - write: a bare transaction (pgx.BeginFunc: BEGIN, INSERT INTO widgets,
//     COMMIT) against pgstore.Run doing the same INSERT under a fresh key;
//   - read: a primary-key SELECT of a completed record row (the columns the
//     transactional Begin reads) against pgstore.Run on a completed key (a
//     replay).
//
// 8 callers on one pgxpool of 9 connections (a transactional command holds
// its connection from the claim to COMMIT). The two contenders of a pair
// run in alternating slices of time (ABBA BAAB, see interleave), so that
// load from the rest of a shared machine falls on both alike, and the
// benchmark reports their throughputs and the ratio: run it with
// -benchtime 1x, in rounds (scripts/bench.sh tx).

const (
	txCallers    = 8
	txPoolConns  = txCallers + 1
	txReplayKeys = 4096
	txSlices     = 16
	txSlice      = 250 * time.Millisecond
)

var txBody = []byte(`{"ok":true,"data":{"name":"widget"}}`)

// txFixture is a schema holding pgstore's tables (migrated) and a widgets
// table, with txReplayKeys completed records.
type txFixture struct {
	schema  string
	widgets string // INSERT INTO widgets
	sel     string // the primary-key SELECT of a record row
	keys    []string
	ids     [][]byte // the record rows of keys
	wid     atomic.Int64
	run     string
	fresh   atomic.Int64
}

func newTxFixture(tb testing.TB, pool *pgxpool.Pool) *txFixture {
	tb.Helper()
	return newTxFixtureIn(tb, pool, newSchema(tb, pool))
}

// newTxFixtureIn is newTxFixture in a schema that the caller drops.
func newTxFixtureIn(tb testing.TB, pool *pgxpool.Pool, schema string) *txFixture {
	tb.Helper()
	ctx := context.Background()
	f := &txFixture{schema: schema, run: strconv.FormatInt(time.Now().UnixNano(), 36)}
	st, err := pgstore.New(pool, pgstore.WithSchema(f.schema))
	if err != nil {
		tb.Fatal(err)
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		tb.Fatal(err)
	}
	q := `"` + f.schema + `".`
	if _, err := pool.Exec(ctx, `CREATE TABLE `+q+`widgets (id bigint PRIMARY KEY, name text NOT NULL)`); err != nil {
		tb.Fatal(err)
	}
	f.widgets = `INSERT INTO ` + q + `widgets (id, name) VALUES ($1, $2)`
	records := q + `"` + pgstore.DefaultTable + `"`
	f.sel = `SELECT state, fingerprint, expires_at, status, body, header, tombstone, stored_at, ttl_ns FROM ` + records + ` WHERE id = $1`
	return f
}

// txTarget is one pgstore.Store's transactional engine on a pool.
type txTarget struct {
	f      *txFixture
	pool   *pgxpool.Pool
	engine *idempotency.Engine
}

func (f *txFixture) target(tb testing.TB, pool *pgxpool.Pool) *txTarget {
	tb.Helper()
	st, err := pgstore.New(pool, pgstore.WithSchema(f.schema))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return &txTarget{f: f, pool: pool, engine: idempotency.NewEngine(st.Transactional())}
}

// preload completes n keys through the transactional engine, from
// txCallers goroutines, and reads their record ids back.
func (t *txTarget) preload(tb testing.TB, n int) {
	tb.Helper()
	ctx := context.Background()
	f := t.f
	f.keys = benchKeys("txreplay", n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, txCallers)
	for range txCallers {
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
				if err := t.fresh(ctx, f.keys[i]); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
	rows, err := t.pool.Query(ctx, `SELECT id FROM "`+f.schema+`"."`+pgstore.DefaultTable+`" WHERE state = 2`)
	if err != nil {
		tb.Fatal(err)
	}
	f.ids, err = pgx.CollectRows(rows, pgx.RowTo[[]byte])
	if err != nil {
		tb.Fatal(err)
	}
	if len(f.ids) != n {
		tb.Fatalf("%d completed records, want %d", len(f.ids), n)
	}
	if _, err := t.pool.Exec(ctx, `ANALYZE "`+f.schema+`"."`+pgstore.DefaultTable+`"`); err != nil {
		tb.Fatal(err)
	}
}

func (f *txFixture) freshKey() string {
	return "txfresh-" + f.run + "-" + strconv.FormatInt(f.fresh.Add(1), 10)
}

// bare is the command without idempotency: BEGIN, INSERT, COMMIT.
func (t *txTarget) bare(ctx context.Context) error {
	id := t.f.wid.Add(1)
	return pgx.BeginFunc(ctx, t.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, t.f.widgets, id, "widget")
		return err
	})
}

var errRan = errors.New("the command ran on a completed key")

// fresh is the same command through pgstore.Run under key.
func (t *txTarget) fresh(ctx context.Context, key string) error {
	id := t.f.wid.Add(1)
	res, err := pgstore.Run(ctx, t.engine, idempotency.Request{Key: key, Identity: "alice", Fingerprint: "fp"},
		func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
			_, err := tx.Exec(ctx, t.f.widgets, id, "widget")
			return idempotency.Response{Status: 201, Body: txBody}, err
		})
	if err == nil && (res.Replayed || !res.Recorded) {
		err = fmt.Errorf("fresh key %s: replayed %v, recorded %v", key, res.Replayed, res.Recorded)
	}
	return err
}

// selectRow is the primary-key SELECT of record row i.
func (t *txTarget) selectRow(ctx context.Context, i int64) error {
	var (
		state    int16
		fp       string
		expires  time.Time
		status   *int32
		body     []byte
		header   []byte
		tomb     bool
		storedAt *time.Time
		ttl      *int64
	)
	return t.pool.QueryRow(ctx, t.f.sel, t.f.ids[i%int64(len(t.f.ids))]).
		Scan(&state, &fp, &expires, &status, &body, &header, &tomb, &storedAt, &ttl)
}

// replay is pgstore.Run on completed key i.
func (t *txTarget) replay(ctx context.Context, i int64) error {
	res, err := pgstore.Run(ctx, t.engine, idempotency.Request{Key: t.f.keys[i%int64(len(t.f.keys))], Identity: "alice", Fingerprint: "fp"},
		func(context.Context, pgx.Tx) (idempotency.Response, error) { return idempotency.Response{}, errRan })
	if err == nil && (!res.Replayed || res.Response.Status != 201) {
		err = fmt.Errorf("replay: replayed %v, status %d", res.Replayed, res.Response.Status)
	}
	return err
}

// txPool is a pool of txPoolConns connections (txPoolN: size) (all opened) to
// IDEMPOTENCY_POSTGRES_URL, with the given session settings and an
// application_name of its own, so that its backends can be found.
func txPool(tb testing.TB, params map[string]string) (*pgxpool.Pool, string) {
	return txPoolN(tb, txPoolConns, params)
}

func txPoolN(tb testing.TB, size int32, params map[string]string) (*pgxpool.Pool, string) {
	tb.Helper()
	probe := newPool(tb, 1) // skips when the server is unreachable
	cfg := probe.Config()
	probe.Close()
	app := "idembench-tx-" + strings.ToLower(rand.Text()[:8])
	cfg.ConnConfig.RuntimeParams["application_name"] = app
	for k, v := range params {
		cfg.ConnConfig.RuntimeParams[k] = v
	}
	cfg.MaxConns, cfg.MinConns = size, size
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(pool.Close)
	// Open every connection now.
	conns := make([]*pgxpool.Conn, 0, size)
	for range size {
		c, err := pool.Acquire(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		c.Release()
	}
	return pool, app
}

// cpuMeter reads the CPU time used so far by this process and by the
// PostgreSQL backends of one application_name (from /proc: zero when it
// cannot be read, on another host or without permission). The backends'
// time is their own, not the WAL writer's or other server processes'.
type cpuMeter struct {
	pids []int
	tick float64 // seconds per clock tick
}

func newCPUMeter(tb testing.TB, pool *pgxpool.Pool, app string) *cpuMeter {
	rows, err := pool.Query(context.Background(), `SELECT pid FROM pg_stat_activity WHERE application_name = $1`, app)
	if err != nil {
		tb.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		tb.Fatal(err)
	}
	m := &cpuMeter{tick: 0.01} // USER_HZ is 100 on Linux
	for _, p := range pids {
		m.pids = append(m.pids, int(p))
	}
	return m
}

// read returns the client's and the backends' CPU time so far.
func (m *cpuMeter) read() (client, server time.Duration) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		client = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	for _, pid := range m.pids {
		// schedstat's first field is the time on a CPU, in ns, exact;
		// stat's utime and stime are sampled at each clock tick.
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/schedstat"); err == nil {
			if f := strings.Fields(string(b)); len(f) > 0 {
				if ns, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					server += time.Duration(ns)
					continue
				}
			}
		}
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			s = s[i+2:]
		}
		fields := strings.Fields(s) // from field 3 (state) on
		if len(fields) > 12 {
			u, _ := strconv.ParseInt(fields[11], 10, 64) // utime, field 14
			k, _ := strconv.ParseInt(fields[12], 10, 64) // stime, field 15
			server += time.Duration(float64(u+k) * m.tick * float64(time.Second))
		}
	}
	return client, server
}

// txSide is one contender of a pair: its loop and what it used.
type txSide struct {
	name           string
	op             func(ctx context.Context, i int64) error
	seq            atomic.Int64
	ops            int64
	client, server time.Duration
}

func (s *txSide) reset() { s.ops, s.client, s.server = 0, 0, 0 }

// loop runs op from txCallers goroutines until the deadline, and adds what
// it did and used to the side's totals.
func (s *txSide) loop(tb testing.TB, m *cpuMeter) func(until time.Time) int64 {
	return func(until time.Time) int64 {
		ctx := context.Background()
		c0, s0 := m.read()
		var n atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, txCallers)
		for range txCallers {
			wg.Go(func() {
				for time.Now().Before(until) {
					if err := s.op(ctx, s.seq.Add(1)); err != nil {
						errs <- fmt.Errorf("%s: %w", s.name, err)
						return
					}
					n.Add(1)
				}
			})
		}
		wg.Wait()
		c1, s1 := m.read()
		close(errs)
		for err := range errs {
			tb.Fatal(err)
		}
		s.client += c1 - c0
		s.server += s1 - s0
		s.ops += n.Load()
		return n.Load()
	}
}

// pair runs a and b interleaved and reports both throughputs, the ratio
// b/a, and the CPU each used per operation (client: this process, which
// runs only the benchmark; server: the pool's backends).
func txPair(b *testing.B, m *cpuMeter, a, z *txSide) {
	la, lz := a.loop(b, m), z.loop(b, m)
	// Warm up: every connection has prepared both sides' statements.
	la(time.Now().Add(100 * time.Millisecond))
	lz(time.Now().Add(100 * time.Millisecond))
	a.reset()
	z.reset()
	na, nz, ta, tz := interleave(txSlices, txSlice, la, lz)
	ra, rz := float64(na)/ta.Seconds(), float64(nz)/tz.Seconds()
	b.ReportMetric(ra, a.name+"-op/s")
	b.ReportMetric(rz, z.name+"-op/s")
	b.ReportMetric(rz/ra, "ratio")
	for _, s := range []*txSide{a, z} {
		if s.ops > 0 {
			b.ReportMetric(float64(s.client.Microseconds())/float64(s.ops), s.name+"-client-µs/op")
			b.ReportMetric(float64(s.server.Microseconds())/float64(s.ops), s.name+"-server-µs/op")
		}
	}
}

// BenchmarkTxInterleaved is issue 11's speed comparison (see the top of
// this file). pair=write: bare transaction against pgstore.Run on a fresh
// key ("ratio" = pgstore's throughput ÷ the bare transaction's, goal
// ≥ 0.8); pair=read: primary-key SELECT against a replay (goal ≥ 0.9); both
// with the server's synchronous_commit (on by default), and pair=write
// again through sessions with synchronous_commit=off, where no commit waits
// for a WAL flush, for reference.
func BenchmarkTxInterleaved(b *testing.B) {
	pool, app := txPool(b, nil)
	f := newTxFixture(b, pool)
	t := f.target(b, pool)
	t.preload(b, txReplayKeys)
	m := newCPUMeter(b, pool, app)

	b.Run("pair=write/sync=default", func(b *testing.B) {
		txPair(b, m,
			&txSide{name: "bare", op: func(ctx context.Context, _ int64) error { return t.bare(ctx) }},
			&txSide{name: "pgstore", op: func(ctx context.Context, _ int64) error { return t.fresh(ctx, f.freshKey()) }})
	})
	b.Run("pair=read/sync=default", func(b *testing.B) {
		txPair(b, m,
			&txSide{name: "select", op: t.selectRow},
			&txSide{name: "pgstore", op: t.replay})
	})
	b.Run("pair=write/sync=off", func(b *testing.B) {
		apool, aapp := txPool(b, map[string]string{"synchronous_commit": "off"})
		at := f.target(b, apool)
		txPair(b, newCPUMeter(b, apool, aapp),
			&txSide{name: "bare", op: func(ctx context.Context, _ int64) error { return at.bare(ctx) }},
			&txSide{name: "pgstore", op: func(ctx context.Context, _ int64) error { return at.fresh(ctx, f.freshKey()) }})
	})
}

// BenchmarkTx is the same four operations as plain benchmarks (8 callers
// through atParallel, run them with -cpu 2), one after the other: for
// benchstat -col /impl and for CPU profiles of one operation
// (scripts/bench.sh profile). BenchmarkTxInterleaved is the comparison.
func BenchmarkTx(b *testing.B) {
	pool, _ := txPool(b, nil)
	f := newTxFixture(b, pool)
	t := f.target(b, pool)
	t.preload(b, txReplayKeys)
	ctx := context.Background()
	for _, c := range []struct {
		name string
		op   func(i int64) error
	}{
		{"op=write/impl=bare", func(int64) error { return t.bare(ctx) }},
		{"op=write/impl=pgstore", func(int64) error { return t.fresh(ctx, f.freshKey()) }},
		{"op=read/impl=select", func(i int64) error { return t.selectRow(ctx, i) }},
		{"op=read/impl=pgstore", func(i int64) error { return t.replay(ctx, i) }},
	} {
		b.Run(c.name, func(b *testing.B) { atParallel(b, txCallers, c.op) })
	}
}
