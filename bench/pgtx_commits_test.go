package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// rtTracer counts the round trips a pool's connections make (a statement,
// or a batch, is one once its statements are prepared) and, by statement,
// the time from sending to the reply.
type rtTracer struct {
	mu    sync.Mutex
	trips int64
	time  map[string]time.Duration
	count map[string]int64
}

type rtStart struct{}

type rtLabel struct{}

func newRTTracer() *rtTracer {
	return &rtTracer{time: map[string]time.Duration{}, count: map[string]int64{}}
}

// stmtLabel names a statement of the transactional benchmarks.
func stmtLabel(sql string) string {
	s := strings.ToLower(strings.Join(strings.Fields(sql), " "))
	switch {
	case s == "begin" || s == "commit" || s == "rollback":
		return s
	case strings.Contains(s, "_claim_tx"):
		return "claim"
	case strings.Contains(s, "left join"):
		return "peek"
	case strings.HasPrefix(s, "insert into") && strings.Contains(s, "widgets"):
		return "insert"
	case strings.HasPrefix(s, "select state, fingerprint"):
		return "select"
	}
	if len(s) > 40 {
		s = s[:40]
	}
	return s
}

func (t *rtTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	return context.WithValue(context.WithValue(ctx, rtLabel{}, stmtLabel(d.SQL)), rtStart{}, time.Now())
}

func (t *rtTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	label, _ := ctx.Value(rtLabel{}).(string)
	t.add(ctx, label)
}

func (t *rtTracer) add(ctx context.Context, label string) {
	start, _ := ctx.Value(rtStart{}).(time.Time)
	t.mu.Lock()
	t.trips++
	t.time[label] += time.Since(start)
	t.count[label]++
	t.mu.Unlock()
}

func (t *rtTracer) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return context.WithValue(ctx, rtStart{}, time.Now())
}

func (t *rtTracer) TraceBatchQuery(context.Context, *pgx.Conn, pgx.TraceBatchQueryData) {}

func (t *rtTracer) TraceBatchEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchEndData) {
	t.add(ctx, "batch")
}

func (t *rtTracer) reset() {
	t.mu.Lock()
	t.trips = 0
	clear(t.time)
	clear(t.count)
	t.mu.Unlock()
}

// TestTxCommitsPerOp shows "no extra commit": the durable commits (COMMIT
// records in the WAL, each a WAL flush the caller waits for under
// synchronous_commit = on) per operation of a transactional command and of
// the bare transaction doing the same INSERT, and of a replay and a
// primary-key SELECT; with pg_stat_database's xact_commit (every
// transaction that ends in a commit, read-only ones included) and the
// round trips each sends. It runs in a database of its own, so that other
// sessions' transactions count in neither figure, and counts the WAL with
// pg_waldump (skipped, with a note, when the server's data directory or
// pg_waldump cannot be read from here). Nothing in it is timed.
func TestTxCommitsPerOp(t *testing.T) {
	ctx := context.Background()
	admin := newPool(t, 1)
	db := "idembench_commits_" + strings.ToLower(rand.Text()[:8])
	if _, err := admin.Exec(ctx, `CREATE DATABASE "`+db+`"`); err != nil {
		t.Skipf("CREATE DATABASE: %v (the test needs a database of its own)", err)
	}
	t.Cleanup(func() {
		if _, err := admin.Exec(context.Background(), `DROP DATABASE IF EXISTS "`+db+`" WITH (FORCE)`); err != nil {
			t.Errorf("dropping database %s: %v", db, err)
		}
	})
	cfg := admin.Config().Copy()
	cfg.ConnConfig.Database = db
	cfg.MinConns, cfg.MaxConns = 0, 2
	tracer := newRTTracer()
	cfg.ConnConfig.Tracer = tracer
	open := func() *pgxpool.Pool {
		p, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Backends flush their statistics when they exit: wait for that.
	closeAndSettle := func(p *pgxpool.Pool) {
		p.Close()
		for i := 0; ; i++ {
			var n int
			if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = $1`, db).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
			if i == 500 {
				t.Fatalf("%d sessions still on %s", n, db)
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
	}
	xactCommit := func() int64 {
		var n int64
		if _, err := admin.Exec(ctx, `SELECT pg_stat_clear_snapshot()`); err != nil {
			t.Fatal(err)
		}
		if err := admin.QueryRow(ctx, `SELECT xact_commit FROM pg_stat_database WHERE datname = $1`, db).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	var datoid uint32
	if err := admin.QueryRow(ctx, `SELECT oid FROM pg_database WHERE datname = $1`, db).Scan(&datoid); err != nil {
		t.Fatal(err)
	}
	wal := newWALCounter(t, admin, datoid)

	setup := open()
	f := newTxFixtureIn(t, setup, "idembench") // dropped with the database
	for _, table := range []string{"widgets", "idempotency_records"} {
		if _, err := setup.Exec(ctx, `ALTER TABLE "`+f.schema+`"."`+table+`" SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)`); err != nil {
			t.Fatal(err)
		}
	}
	f.target(t, setup).preload(t, 256)
	closeAndSettle(setup)

	type result struct {
		name             string
		xact, walCommits float64
		walBytes, trips  float64
		rolledBack       string
	}
	kinds := []struct {
		name string
		op   func(t *txTarget, ctx context.Context, i int64) error
	}{
		{"bare transaction (BEGIN, INSERT, COMMIT)", func(t *txTarget, ctx context.Context, _ int64) error { return t.bare(ctx) }},
		{"pgstore.Run, fresh key (same INSERT)", func(t *txTarget, ctx context.Context, _ int64) error { return t.fresh(ctx, t.f.freshKey()) }},
		{"primary-key SELECT of a record row", (*txTarget).selectRow},
		{"pgstore.Run, completed key (replay)", (*txTarget).replay},
	}
	const n1, n2 = 20, 520
	var results []result
	for _, k := range kinds {
		var xact [2]int64
		var lsn0, lsn1 string
		var trips int64
		for j, n := range []int{n1, n2} {
			before := xactCommit()
			if j == 1 {
				lsn0 = wal.lsn()
			}
			p := open()
			tg := f.target(t, p)
			// The first statements of a connection are prepared: leave them
			// out of the round trips by counting the second run's only.
			tracer.reset()
			for i := range n {
				if err := k.op(tg, ctx, int64(i)); err != nil {
					t.Fatalf("%s: %v", k.name, err)
				}
			}
			tracer.mu.Lock()
			trips = tracer.trips
			tracer.mu.Unlock()
			closeAndSettle(p)
			xact[j] = xactCommit() - before // admin's own reads count in its database, not this one
			if j == 1 {
				lsn1 = wal.lsn()
			}
		}
		t.Logf("%s: xact_commit +%d and +%d; WAL %s to %s", k.name, xact[0], xact[1], lsn0, lsn1)
		r := result{name: k.name, xact: float64(xact[1]-xact[0]) / float64(n2-n1), trips: float64(trips) / float64(n2)}
		if wal.ok {
			commits, aborts, bytes := wal.count(t, lsn0, lsn1)
			r.walCommits = float64(commits) / float64(n2)
			r.walBytes = float64(bytes) / float64(n2)
			if aborts > 0 {
				r.rolledBack = fmt.Sprintf(" (%d aborts)", aborts)
			}
		}
		results = append(results, r)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "per operation, %d operations after %d (xact_commit: the difference of the two runs, per extra operation):\n", n2, n1)
	fmt.Fprintf(&b, "%-45s %12s %12s %10s %12s\n", "", "WAL commits", "xact_commit", "WAL bytes", "round trips")
	for _, r := range results {
		wc, wb := "n/a", "n/a"
		if wal.ok {
			wc, wb = fmt.Sprintf("%.3f%s", r.walCommits, r.rolledBack), fmt.Sprintf("%.0f", r.walBytes)
		}
		fmt.Fprintf(&b, "%-45s %12s %12.3f %10s %12.2f\n", r.name, wc, r.xact, wb, r.trips)
	}
	if !wal.ok {
		fmt.Fprintf(&b, "WAL not counted: %s\n", wal.why)
	}
	t.Log("\n" + b.String())
	if wal.ok {
		bare, fresh := results[0].walCommits, results[1].walCommits
		if bare != 1 || fresh != 1 {
			t.Errorf("durable commits per operation: bare %.3f, pgstore.Run %.3f: want 1 each", bare, fresh)
		}
		if results[2].walCommits != 0 || results[3].walCommits != 0 {
			t.Errorf("durable commits per read: SELECT %.3f, replay %.3f: want 0", results[2].walCommits, results[3].walCommits)
		}
	}
}

// walCounter counts, with pg_waldump, the COMMIT records of the
// transactions that wrote to one database between two WAL positions.
type walCounter struct {
	admin  *pgxpool.Pool
	datoid uint32
	dump   string // pg_waldump
	dir    string // pg_wal
	ok     bool
	why    string
}

func newWALCounter(t *testing.T, admin *pgxpool.Pool, datoid uint32) *walCounter {
	w := &walCounter{admin: admin, datoid: datoid}
	ctx := context.Background()
	var dataDir, version string
	if err := admin.QueryRow(ctx, `SELECT current_setting('data_directory'), current_setting('server_version_num')`).Scan(&dataDir, &version); err != nil {
		w.why = err.Error()
		return w
	}
	w.dir = filepath.Join(dataDir, "pg_wal")
	if _, err := os.ReadDir(w.dir); err != nil {
		w.why = "the server's pg_wal is not readable here: " + err.Error()
		return w
	}
	major := version[:len(version)-4]
	for _, c := range []string{filepath.Join("/usr/lib/postgresql", major, "bin", "pg_waldump"), "pg_waldump"} {
		if p, err := exec.LookPath(c); err == nil {
			w.dump = p
			break
		}
	}
	if w.dump == "" {
		w.why = "no pg_waldump"
		return w
	}
	w.ok = true
	return w
}

func (w *walCounter) lsn() string {
	var l string
	if err := w.admin.QueryRow(context.Background(), `SELECT pg_current_wal_flush_lsn()::text`).Scan(&l); err != nil {
		panic(err)
	}
	return l
}

var walLine = regexp.MustCompile(`^rmgr: (\S+)\s+len \(rec/tot\):\s+\d+/\s*(\d+), tx:\s+(\d+), lsn: \S+, prev \S+, desc: (.*)$`)

// count returns the commits and aborts of the transactions that wrote a
// relation of the database between from and to, and the WAL bytes those
// transactions wrote.
func (w *walCounter) count(t *testing.T, from, to string) (commits, aborts, walBytes int64) {
	t.Helper()
	if from == to { // nothing written since
		return 0, 0, 0
	}
	cmd := exec.Command(w.dump, "-p", w.dir, "-s", from, "-e", to)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil && len(out) == 0 {
		t.Fatalf("pg_waldump -s %s -e %s: %v: %s", from, to, err, stderr.Bytes())
	}
	rel := fmt.Sprintf("/%d/", w.datoid)
	db := fmt.Sprintf(" db %d ", w.datoid)
	type rec struct {
		rmgr, desc string
		xid        string
		size       int64
	}
	var recs []rec
	ours := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		m := walLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		size, _ := strconv.ParseInt(m[2], 10, 64)
		r := rec{rmgr: m[1], xid: m[3], desc: m[4], size: size}
		recs = append(recs, r)
		if r.xid != "0" && (strings.Contains(r.desc, rel) || strings.Contains(r.desc+" ", db)) {
			ours[r.xid] = true
		}
	}
	for _, r := range recs {
		if !ours[r.xid] {
			continue
		}
		walBytes += r.size
		if r.rmgr == "Transaction" {
			switch {
			case strings.HasPrefix(r.desc, "COMMIT"):
				commits++
			case strings.HasPrefix(r.desc, "ABORT"):
				aborts++
			}
		}
	}
	return commits, aborts, walBytes
}
