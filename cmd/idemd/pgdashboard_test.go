package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemkit/idempotency/dispatcher"
	"github.com/idemkit/idempotency/pgstore"
)

// pgConfig is idemd's configuration on the PostgreSQL at url.
func pgConfig(url string) config {
	cfg := testConfig()
	cfg.store, cfg.ttl = url, 10*time.Minute
	return cfg
}

// openPG opens idemd's store at url as run does, failing the test on an
// error (postgresURL has already skipped it when the server is away). It
// is closed when t ends, unless closed sooner.
func openPG(t *testing.T, url string) openedStore {
	t.Helper()
	st, err := openStore(context.Background(), pgConfig(url), slog.New(slog.NewTextHandler(t.Output(), nil)))
	if err != nil {
		t.Fatalf("openStore: %v", err)
	}
	t.Cleanup(st.close)
	return st
}

// instance is an in-process idemd that a test can stop before it ends.
type instance struct {
	client
	stop func()
}

// startInstance serves the store and dashboard st on an httptest.Server.
// stop cancels its commands, closes the HTTP server and the store; it also
// runs when t ends.
func startInstance(t *testing.T, st openedStore, configure ...func(*config)) instance {
	t.Helper()
	cfg := testConfig()
	for _, f := range configure {
		f(&cfg)
	}
	s := newServer(cfg, st.store, st.dash, newLogger(cfg.logFormat, cfg.logLevel, t.Output()))
	hs := httptest.NewServer(s.handler)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			s.stopCommands(context.Canceled)
			hs.Close()
			st.close()
		})
	}
	t.Cleanup(stop)
	return instance{client{base: hs.URL, http: hs.Client()}, stop}
}

// testPool is a pool of the test's own on url, for reading the tables.
func testPool(t *testing.T, url string) *pgxpool.Pool {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// widgetsInTable reads the dashboard's table as it is committed.
func widgetsInTable(t *testing.T, pool *pgxpool.Pool) []widget {
	t.Helper()
	ws, err := (&pgDashboard{pool: pool}).list(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

// widgetList is widgets.list's data.
type widgetList struct {
	Widgets []widget `json:"widgets"`
	Count   int      `json:"count"`
}

func (c client) widgets(t *testing.T) (widgetList, string) {
	t.Helper()
	r := c.post(t, "widgets.list", `{}`)
	var l widgetList
	r.data(t, http.StatusOK, &l)
	if l.Count != len(l.Widgets) {
		t.Fatalf("widgets.list: count %d but %d widgets", l.Count, len(l.Widgets))
	}
	return l, r.body
}

func (c client) create(t *testing.T, key, name string) widget {
	t.Helper()
	var w widget
	c.post(t, "widgets.create", fmt.Sprintf(`{"name":%q}`, name), "Idempotency-Key", key).data(t, http.StatusCreated, &w)
	return w
}

// Two replicas on one database show one dashboard: what either creates,
// both list, in the order of creation, with the very values the create
// answered.
func TestPostgresReplicasShareTheDashboard(t *testing.T) {
	url := postgresURL(t)
	a, b := startInstance(t, openPG(t, url)), startInstance(t, openPG(t, url))
	var created []widget
	for i := range 6 {
		c := []instance{a, b}[i%2]
		created = append(created, c.create(t, fmt.Sprintf("share-%d", i), fmt.Sprintf("widget %d", i)))
	}
	la, bodyA := a.widgets(t)
	_, bodyB := b.widgets(t)
	if bodyA != bodyB {
		t.Errorf("the replicas list different dashboards:\n%s\n%s", bodyA, bodyB)
	}
	if len(la.Widgets) != len(created) {
		t.Fatalf("listed %d widgets, want %d", len(la.Widgets), len(created))
	}
	for i, w := range la.Widgets {
		if c := created[i]; w.ID != c.ID || w.Name != c.Name || !w.CreatedAt.Equal(c.CreatedAt) {
			t.Errorf("widget %d: listed %+v, created %+v (want the same, oldest first)", i, w, c)
		}
	}
	// A retry on the other replica replays; the dashboard does not change.
	again := b.create(t, "share-0", "widget 0")
	if again != created[0] {
		t.Errorf("retry on the other replica: %+v, want the replay of %+v", again, created[0])
	}
	if n := a.widgetCount(t); n != len(created) {
		t.Errorf("after the retry: %d widgets, want %d", n, len(created))
	}
	// widgets.list reads the table: a row another replica commits shows.
	pool := testPool(t, url)
	if _, err := pool.Exec(context.Background(), "INSERT INTO "+widgetsTable+" (id, name) VALUES ('wgt_fromelsewhere', 'direct')"); err != nil {
		t.Fatal(err)
	}
	if l, _ := b.widgets(t); l.Count != len(created)+1 || l.Widgets[l.Count-1].ID != "wgt_fromelsewhere" {
		t.Errorf("after an INSERT of another replica's: %+v, want it last", l)
	}
}

// A restart keeps the dashboard, and a retry after it replays the widget
// the first process made, without making another.
func TestPostgresRestartKeepsTheDashboard(t *testing.T) {
	url := postgresURL(t)
	first := startInstance(t, openPG(t, url))
	var created []widget
	for i := range 3 {
		created = append(created, first.create(t, fmt.Sprintf("restart-%d", i), "kept"))
	}
	before, body := first.widgets(t)
	first.stop()

	second := startInstance(t, openPG(t, url)) // migrates again: a no-op on existing tables
	after, bodyAfter := second.widgets(t)
	if bodyAfter != body {
		t.Errorf("after the restart:\n%s\nbefore:\n%s", bodyAfter, body)
	}
	if got := second.create(t, "restart-1", "kept"); got != created[1] {
		t.Errorf("retry after the restart: %+v, want the replay of %+v", got, created[1])
	}
	if n := second.widgetCount(t); n != before.Count || after.Count != 3 {
		t.Errorf("widgets: %d after the retry, %d after the restart; want 3", n, after.Count)
	}
}

// hookedDashboard runs hook after a widget is inserted, in the command's
// transaction, before the command returns: a command that fails after its
// effect.
type hookedDashboard struct {
	*pgDashboard
	hook atomic.Pointer[func(ctx context.Context, tx pgx.Tx, w widget) error]
	runs atomic.Int32
}

func (d *hookedDashboard) add(ctx context.Context, name string) (widget, error) {
	d.runs.Add(1)
	w, err := d.pgDashboard.add(ctx, name)
	if err != nil {
		return w, err
	}
	if h := d.hook.Load(); h != nil {
		tx, _ := pgstore.TxFromContext(ctx)
		if err := (*h)(ctx, tx, w); err != nil {
			return widget{}, err
		}
	}
	return w, nil
}

// A widgets.create that fails after its INSERT (an error, a 5xx, a panic,
// its transaction's connection killed before the commit) leaves no widget,
// and releases its key: the retry creates the one widget.
func TestPostgresFailedCreateLeavesNoWidget(t *testing.T) {
	url := postgresURL(t)
	st := openPG(t, url)
	dash := &hookedDashboard{pgDashboard: st.dash.(*pgDashboard)}
	st.dash = dash
	c := startInstance(t, st)
	pool := testPool(t, url)

	// inserted checks that the widget is there in the command's
	// transaction and not outside it (not committed).
	inserted := func(ctx context.Context, tx pgx.Tx, w widget) error {
		var in, out int
		q := "SELECT count(*) FROM " + widgetsTable + " WHERE id = $1"
		if err := tx.QueryRow(ctx, q, w.ID).Scan(&in); err != nil {
			return err
		}
		if err := pool.QueryRow(ctx, q, w.ID).Scan(&out); err != nil {
			return err
		}
		if in != 1 || out != 0 {
			return fmt.Errorf("widget %s: %d in the transaction, %d outside it; want 1 and 0", w.ID, in, out)
		}
		return nil
	}
	tests := []struct {
		name   string
		fail   func(ctx context.Context, tx pgx.Tx, w widget) error
		status int
		code   string
	}{
		{"error", func(context.Context, pgx.Tx, widget) error { return errors.New("forced failure after the INSERT") },
			500, dispatcher.CodeInternal},
		{"5xx", func(context.Context, pgx.Tx, widget) error {
			return dispatcher.Errorf(http.StatusServiceUnavailable, "forced", "forced 503 after the INSERT")
		}, 503, "forced"},
		{"panic", func(context.Context, pgx.Tx, widget) error { panic("forced panic after the INSERT") },
			500, dispatcher.CodeInternal},
		{"connection killed before the commit", func(ctx context.Context, tx pgx.Tx, _ widget) error {
			var pid int32
			if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				return err
			}
			_, err := pool.Exec(ctx, "SELECT pg_terminate_backend($1)", pid)
			return err // nil: the command succeeds, and its commit cannot
		}, 503, dispatcher.CodeStoreUnavailable},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := fmt.Sprintf("fail-%d", i)
			checked := make(chan error, 1)
			hook := func(ctx context.Context, tx pgx.Tx, w widget) error {
				err := inserted(ctx, tx, w)
				checked <- err
				if err != nil {
					return err
				}
				return tt.fail(ctx, tx, w)
			}
			dash.hook.Store(&hook)
			before := len(widgetsInTable(t, pool))
			r := c.post(t, "widgets.create", `{"name":"doomed"}`, "Idempotency-Key", key)
			dash.hook.Store(nil)
			r.wantError(t, tt.status, tt.code)
			select {
			case err := <-checked:
				if err != nil {
					t.Fatalf("inside the command: %v", err)
				}
			default:
				t.Fatal("the command did not reach its INSERT")
			}
			if got := len(widgetsInTable(t, pool)) - before; got != 0 {
				t.Errorf("%d widgets after the failed create, want 0", got)
			}
			// The key was released: the retry runs and makes the one widget.
			w := c.create(t, key, "doomed")
			ws := widgetsInTable(t, pool)
			if len(ws)-before != 1 || ws[len(ws)-1].ID != w.ID {
				t.Errorf("after the retry: %d new widgets, the last %+v; want the one created, %+v", len(ws)-before, ws[len(ws)-1], w)
			}
		})
	}
}

// A serialization failure after the INSERT runs the command again in a
// fresh transaction: the first run's widget is rolled back with it, and
// the answer is the second run's widget, the only one.
func TestPostgresRerunLeavesOneWidget(t *testing.T) {
	url := postgresURL(t)
	st := openPG(t, url)
	dash := &hookedDashboard{pgDashboard: st.dash.(*pgDashboard)}
	st.dash = dash
	c := startInstance(t, st)
	var first atomic.Pointer[widget]
	hook := func(ctx context.Context, tx pgx.Tx, w widget) error {
		if !first.CompareAndSwap(nil, &w) {
			return nil // the second run goes through
		}
		_, err := tx.Exec(ctx, `DO $$ BEGIN RAISE EXCEPTION 'forced' USING ERRCODE = '40001'; END $$`)
		return err
	}
	dash.hook.Store(&hook)
	w := c.create(t, "rerun-1", "once")
	if n := dash.runs.Load(); n != 2 {
		t.Errorf("the command ran %d times, want 2 (a serialization failure, then a fresh run)", n)
	}
	ws := widgetsInTable(t, testPool(t, url))
	switch {
	case len(ws) != 1:
		t.Errorf("%d widgets, want 1: %+v", len(ws), ws)
	case ws[0] != w:
		t.Errorf("the widget is %+v, the answer %+v: want the same", ws[0], w)
	case first.Load().ID == w.ID:
		t.Errorf("the second run answered the first run's id %s", w.ID)
	}
}

// Replicas starting together all migrate: the advisory lock keeps their
// CREATE ... IF NOT EXISTS statements from racing.
func TestPostgresReplicasMigrateTogether(t *testing.T) {
	url := postgresURL(t)
	const n = 6
	errs := make([]error, n)
	stores := make([]openedStore, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			stores[i], errs[i] = openStore(context.Background(), pgConfig(url), slog.New(slog.DiscardHandler))
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("replica %d: %v", i, err)
		} else {
			stores[i].close()
		}
	}
	c := startInstance(t, openPG(t, url))
	c.create(t, "migrated", "w")
	if n := c.widgetCount(t); n != 1 {
		t.Errorf("%d widgets, want 1", n)
	}
}

// The pool is sized for one connection per running command, unless the
// URL says otherwise.
func TestPostgresPoolSize(t *testing.T) {
	url := postgresURL(t)
	for _, tt := range []struct {
		param string
		want  int32
	}{{"", defaultPGMaxConns}, {"&pool_max_conns=7", 7}} {
		st := openPG(t, url+tt.param)
		if got := st.dash.(*pgDashboard).pool.Config().MaxConns; got != tt.want {
			t.Errorf("%q: MaxConns %d, want %d", tt.param, got, tt.want)
		}
		st.close()
	}
}

// A command that runs for longer than the lease keeps its transaction (the
// heartbeat keeps it from sitting idle past the lease), and its record
// commits.
func TestPostgresSlowCommandOutlivesTheLease(t *testing.T) {
	url := postgresURL(t)
	c := startInstance(t, openPG(t, url), func(cfg *config) { cfg.lease = 300 * time.Millisecond })
	first := c.post(t, "reports.generate", `{"ms":1000}`, "Idempotency-Key", "slow-report")
	var rep struct {
		ReportID string `json:"report_id"`
	}
	first.data(t, http.StatusOK, &rep)
	again := c.post(t, "reports.generate", `{"ms":1000}`, "Idempotency-Key", "slow-report")
	if again.body != first.body || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("retry: %d %s, want the replay of %s", again.status, again.body, first.body)
	}
}
