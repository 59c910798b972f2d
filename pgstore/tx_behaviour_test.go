package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/dispatcher"
	"github.com/idemkit/idempotency/idemhttp"
)

// txFixture is a TxStore in a schema of its own, with a widgets table for
// the commands' effects.
type txFixture struct {
	pool   *pgxpool.Pool
	schema string
	store  *Store
	tx     *TxStore
}

func newTxFixture(t *testing.T, opts ...TxOption) *txFixture {
	t.Helper()
	pool := testPool(t, func(c *pgxpool.Config) { c.MaxConns = 16 })
	schema := testSchema(t, pool)
	st := newMigrated(t, pool, WithSchema(schema))
	f := &txFixture{pool: pool, schema: schema, store: st, tx: st.Transactional(opts...)}
	f.exec(t, `CREATE TABLE `+f.widgets()+` (id bigserial PRIMARY KEY, key text NOT NULL, name text NOT NULL)`)
	f.exec(t, `CREATE TABLE `+schema+`.counters (id int PRIMARY KEY, n int NOT NULL)`)
	f.exec(t, `INSERT INTO `+schema+`.counters VALUES (1, 0), (2, 0)`)
	return f
}

func (f *txFixture) widgets() string { return f.schema + ".widgets" }

func (f *txFixture) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := f.pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// count is how many widgets key has.
func (f *txFixture) count(t *testing.T, key string) int {
	t.Helper()
	var n int
	if err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM `+f.widgets()+` WHERE key = $1`, key).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// create is a command that inserts a widget for key and answers 201.
func (f *txFixture) create(key string) func(context.Context, pgx.Tx) (idempotency.Response, error) {
	return func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
		var id int64
		if err := tx.QueryRow(ctx, `INSERT INTO `+f.widgets()+` (key, name) VALUES ($1, 'w') RETURNING id`, key).Scan(&id); err != nil {
			return idempotency.Response{}, err
		}
		return idempotency.Response{Status: 201, Body: fmt.Appendf(nil, `{"id":%d}`, id)}, nil
	}
}

func TestTxEffectCommitsWithRecord(t *testing.T) {
	f := newTxFixture(t)
	e := idempotency.NewEngine(f.tx)
	ctx := context.Background()
	req := idempotency.Request{Key: "order-1", Identity: "alice", Fingerprint: "fp"}
	first, err := Run(ctx, e, req, f.create("order-1"))
	if err != nil || !first.Recorded || first.Replayed || first.Fence == 0 {
		t.Fatalf("first Run = %+v, %v; want a recorded execution with a fence", first, err)
	}
	for range 3 {
		again, err := Run(ctx, e, req, f.create("order-1"))
		if err != nil || !again.Replayed || string(again.Response.Body) != string(first.Response.Body) || again.Response.Status != 201 {
			t.Fatalf("retry = %+v, %v; want the replay of %s", again, err, first.Response.Body)
		}
	}
	if n := f.count(t, "order-1"); n != 1 {
		t.Fatalf("widgets for the key = %d, want exactly 1", n)
	}
	// Another payload under the key is refused, once committed.
	if _, err := Run(ctx, e, idempotency.Request{Key: "order-1", Identity: "alice", Fingerprint: "other"}, f.create("order-1")); !errors.Is(err, idempotency.ErrMismatch) {
		t.Fatalf("other payload = %v, want ErrMismatch", err)
	}
	// A plain Store on the same table replays the same record.
	if cl, err := f.store.Begin(ctx, "order-1", "alice", idempotency.ClaimRequest{Owner: "plain", Lease: time.Minute, Fingerprint: "fp"}); err != nil ||
		cl.Status != idempotency.ClaimReplay || string(cl.Record.WireBody) != string(first.Response.Body) {
		t.Fatalf("plain Begin = %+v, %v; want the replay", cl, err)
	}
}

func TestTxFailureLeavesNoEffect(t *testing.T) {
	f := newTxFixture(t)
	e := idempotency.NewEngine(f.tx)
	ctx := context.Background()
	boom := errors.New("boom")
	cases := []struct {
		name   string
		answer func() (idempotency.Response, error)
	}{
		{"error", func() (idempotency.Response, error) { return idempotency.Response{}, boom }},
		{"503", func() (idempotency.Response, error) { return idempotency.Response{Status: 503}, nil }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			key := "fail-" + c.name
			_, err := Run(ctx, e, idempotency.Request{Key: key}, func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
				if _, err := f.create(key)(ctx, tx); err != nil {
					return idempotency.Response{}, err
				}
				return c.answer()
			})
			if c.name == "error" && !errors.Is(err, boom) {
				t.Fatalf("Run = %v, want the command's error", err)
			}
			if n := f.count(t, key); n != 0 {
				t.Fatalf("widgets after a failed command = %d, want 0", n)
			}
			// The key was released: the retry runs, once.
			if res, err := Run(ctx, e, idempotency.Request{Key: key}, f.create(key)); err != nil || res.Replayed {
				t.Fatalf("retry = %+v, %v; want a fresh run", res, err)
			}
			if n := f.count(t, key); n != 1 {
				t.Fatalf("widgets after the retry = %d, want 1", n)
			}
		})
	}
}

// A duplicate arriving while the transaction is open is answered in flight
// at once, by a replica on another pool and by a plain Store; with WithWait
// it waits and gets the replay.
func TestTxDuplicateInFlightAtOnce(t *testing.T) {
	f := newTxFixture(t)
	ctx := context.Background()
	e := idempotency.NewEngine(f.tx)
	replica := newMigrated(t, testPool(t), WithSchema(f.schema))
	other := idempotency.NewEngine(replica.Transactional())
	waiter := idempotency.NewEngine(replica.Transactional(), idempotency.WithWait(true))
	req := idempotency.Request{Key: "slow", Identity: "alice", Fingerprint: "fp"}

	inside, release := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, e, req, func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
			res, err := f.create("slow")(ctx, tx)
			close(inside)
			<-release
			return res, err
		})
		done <- err
	}()
	<-inside
	// The first command is still running (release is not closed): every
	// answer below came without waiting for it.
	if _, err := Run(ctx, other, req, f.create("slow")); !errors.Is(err, idempotency.ErrInFlight) {
		t.Fatalf("duplicate on a replica = %v, want ErrInFlight", err)
	}
	cl, err := replica.Begin(ctx, "slow", "alice", idempotency.ClaimRequest{Owner: "plain", Lease: time.Minute, Fingerprint: "fp"})
	if err != nil || cl.Status != idempotency.ClaimInFlight {
		t.Fatalf("plain Begin = %+v, %v; want in flight", cl, err)
	}
	waited := make(chan idempotency.Result, 1)
	go func() {
		res, err := Run(ctx, waiter, req, f.create("slow"))
		if err != nil {
			t.Errorf("waiting duplicate = %v", err)
		}
		waited <- res
	}()
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("first Run = %v", err)
	}
	if res := <-waited; !res.Replayed {
		t.Fatalf("waiting duplicate = %+v, want the replay", res)
	}
	if n := f.count(t, "slow"); n != 1 {
		t.Fatalf("widgets = %d, want 1", n)
	}
}

// If the record is taken while the command runs (a Store overwrote it),
// nothing the command wrote commits, and the caller gets no success.
func TestTxClaimTakenNothingCommits(t *testing.T) {
	f := newTxFixture(t)
	ctx := context.Background()
	e := idempotency.NewEngine(f.tx)
	res, err := Run(ctx, e, idempotency.Request{Key: "taken"}, func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
		if _, err := f.create("taken")(ctx, tx); err != nil {
			return idempotency.Response{}, err
		}
		if err := f.store.Store(ctx, "taken", "", idempotency.Cached{Status: 200, WireBody: []byte("other")}); err != nil {
			return idempotency.Response{}, err
		}
		return idempotency.Response{Status: 201, Body: []byte("mine")}, nil
	})
	var se *idempotency.StoreError
	if !errors.As(err, &se) || se.Op != "commit" || !errors.Is(err, ErrNotCommitted) || !errors.Is(err, idempotency.ErrLeaseLost) {
		t.Fatalf("Run = %+v, %v; want a commit StoreError wrapping ErrNotCommitted and ErrLeaseLost", res, err)
	}
	if res.Response.Body != nil {
		t.Fatalf("Run returned the response %q of a command that did not commit", res.Response.Body)
	}
	if n := f.count(t, "taken"); n != 0 {
		t.Fatalf("widgets = %d, want 0", n)
	}
	if c, ok := f.store.Lookup(ctx, "taken", ""); !ok || string(c.WireBody) != "other" {
		t.Fatalf("record = %+v, %v; want the one Store wrote", c, ok)
	}
}

// outcomes counts the Engine's executions by outcome.
type outcomes struct {
	mu sync.Mutex
	n  map[idempotency.Outcome]int
}

func (o *outcomes) observer() *idempotency.Observer {
	o.n = map[idempotency.Outcome]int{}
	return &idempotency.Observer{Done: func(_ context.Context, x idempotency.Execution) {
		o.mu.Lock()
		o.n[x.Outcome]++
		o.mu.Unlock()
	}}
}

// firstRunsMeet returns meet, which makes the first runs of two commands
// overlap: the first call of meet(i) by command i (0 or 1) returns once
// both have made theirs; later runs' calls return at once.
func firstRunsMeet() (meet func(i int)) {
	var barrier sync.WaitGroup
	barrier.Add(2)
	var once [2]sync.Once
	return func(i int) { once[i].Do(func() { barrier.Done(); barrier.Wait() }) }
}

// Two commands that read and write the same counter at SERIALIZABLE, made
// to overlap in their first runs: one fails with a serialization failure,
// runs again in a fresh transaction, and both end executed, the counter
// counting each once.
func TestTxSerializationFailureRunsAgain(t *testing.T) {
	f := newTxFixture(t, WithIsolation(pgx.Serializable))
	var obs outcomes
	e := idempotency.NewEngine(f.tx, idempotency.WithObserver(obs.observer()))
	ctx := context.Background()
	var runs atomic.Int32
	meet := firstRunsMeet()
	command := func(i int) func(context.Context, pgx.Tx) (idempotency.Response, error) {
		return func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
			runs.Add(1)
			var n int
			if err := tx.QueryRow(ctx, `SELECT n FROM `+f.schema+`.counters WHERE id = 1`).Scan(&n); err != nil {
				return idempotency.Response{}, err
			}
			meet(i) // both have read before either writes
			if _, err := tx.Exec(ctx, `UPDATE `+f.schema+`.counters SET n = $1 WHERE id = 1`, n+1); err != nil {
				return idempotency.Response{}, err
			}
			return idempotency.Response{Status: 200, Body: fmt.Appendf(nil, "%d", n+1)}, nil
		}
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() {
			_, errs[i] = Run(ctx, e, idempotency.Request{Key: fmt.Sprintf("ser-%d", i)}, command(i))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("command %d = %v", i, err)
		}
	}
	var n int
	if err := f.pool.QueryRow(ctx, `SELECT n FROM `+f.schema+`.counters WHERE id = 1`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("counter = %d, want 2 (each command once)", n)
	}
	if r := runs.Load(); r < 3 {
		t.Fatalf("commands ran %d times, want at least 3 (one serialization failure run again)", r)
	}
	if obs.n[idempotency.OutcomeExecuted] != 2 || len(obs.n) != 1 {
		t.Fatalf("outcomes = %v, want 2 executed and nothing else", obs.n)
	}
}

// Two commands locking two rows in opposite orders deadlock; PostgreSQL
// aborts one (40P01), which runs again; the command even swallows the
// error (answering 500), and is still run again.
func TestTxDeadlockRunsAgain(t *testing.T) {
	f := newTxFixture(t)
	e := idempotency.NewEngine(f.tx)
	ctx := context.Background()
	var runs atomic.Int32
	meet := firstRunsMeet()
	command := func(i int) func(context.Context, pgx.Tx) (idempotency.Response, error) {
		first, second := 1+i, 2-i
		return func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
			runs.Add(1)
			if _, err := tx.Exec(ctx, `UPDATE `+f.schema+`.counters SET n = n + 1 WHERE id = $1`, first); err != nil {
				return idempotency.Response{}, err
			}
			meet(i)
			if _, err := tx.Exec(ctx, `UPDATE `+f.schema+`.counters SET n = n + 1 WHERE id = $1`, second); err != nil {
				return idempotency.Response{Status: 500}, nil // swallowed
			}
			return idempotency.Response{Status: 200}, nil
		}
	}
	var wg sync.WaitGroup
	results := make([]idempotency.Result, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() {
			results[i], errs[i] = Run(ctx, e, idempotency.Request{Key: fmt.Sprintf("dl-%d", i)}, command(i))
		})
	}
	wg.Wait()
	for i := range 2 {
		if errs[i] != nil || results[i].Response.Status != 200 || !results[i].Recorded {
			t.Fatalf("command %d = %+v, %v; want a recorded 200", i, results[i], errs[i])
		}
	}
	var total int
	if err := f.pool.QueryRow(ctx, `SELECT sum(n) FROM `+f.schema+`.counters`).Scan(&total); err != nil {
		t.Fatal(err)
	}
	if total != 4 || runs.Load() != 3 {
		t.Fatalf("counters sum %d after %d runs; want 4 after 3 (one deadlock victim run again)", total, runs.Load())
	}
}

// The bound on runs: a command that always conflicts ends with its error.
func TestTxMaxRuns(t *testing.T) {
	f := newTxFixture(t, WithMaxRuns(2))
	e := idempotency.NewEngine(f.tx)
	var runs int
	_, err := Run(context.Background(), e, idempotency.Request{Key: "k"}, func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
		runs++
		_, err := tx.Exec(ctx, `DO $$ BEGIN RAISE EXCEPTION 'forced' USING ERRCODE = '40001'; END $$`)
		return idempotency.Response{}, err
	})
	if !conflict(err) || runs != 2 {
		t.Fatalf("Run = %v after %d runs; want the serialization failure after 2", err, runs)
	}
}

func TestTxCommandCannotEndItsTransaction(t *testing.T) {
	f := newTxFixture(t)
	e := idempotency.NewEngine(f.tx)
	res, err := Run(context.Background(), e, idempotency.Request{Key: "k"}, func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
		if err := tx.Commit(ctx); !errors.Is(err, errOwnTx) {
			return idempotency.Response{}, fmt.Errorf("Commit = %v, want refused", err)
		}
		if err := tx.Rollback(ctx); !errors.Is(err, errOwnTx) {
			return idempotency.Response{}, fmt.Errorf("Rollback = %v, want refused", err)
		}
		// A savepoint works: its rolled-back write is gone, the rest commits.
		sp, err := tx.Begin(ctx)
		if err != nil {
			return idempotency.Response{}, err
		}
		if _, err := f.create("k")(ctx, sp); err != nil {
			return idempotency.Response{}, err
		}
		if err := sp.Rollback(ctx); err != nil {
			return idempotency.Response{}, err
		}
		return f.create("k")(ctx, tx)
	})
	if err != nil || !res.Recorded {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if n := f.count(t, "k"); n != 1 {
		t.Fatalf("widgets = %d, want 1", n)
	}
}

func TestRunNeedsTxStore(t *testing.T) {
	ran := false
	_, err := Run(context.Background(), idempotency.NewEngine(idempotency.NewInMemoryStore()), idempotency.Request{Key: "k"},
		func(context.Context, pgx.Tx) (idempotency.Response, error) {
			ran = true
			return idempotency.Response{}, nil
		})
	if !errors.Is(err, errNoTx) || ran {
		t.Fatalf("Run on a plain engine = %v (ran %v), want errNoTx without running", err, ran)
	}
	if _, ok := TxFromContext(context.Background()); ok {
		t.Fatal("TxFromContext outside a command = ok")
	}
}

// A COMMIT whose reply was lost is resolved by reading the record, after
// waiting for the old transaction to end; never by running the command.
func TestTxLostCommitReplyResolved(t *testing.T) {
	f := newTxFixture(t)
	ctx := context.Background()
	req := idempotency.ClaimRequest{Owner: "holder", Lease: time.Minute, Fingerprint: "fp"}

	// Committed: the resolution, started while the transaction still runs,
	// waits for its lock and finds the record.
	cl, err := f.tx.Begin(ctx, "k", "alice", req)
	if err != nil || cl.Status != idempotency.ClaimAcquired {
		t.Fatalf("Begin = %+v, %v", cl, err)
	}
	c := claimOf(cl.Token)
	lost := &txClaim{s: f.tx, tok: c.tok, id: c.id, lock: c.lock, state: txUnknown}
	resolved := make(chan error, 1)
	go func() { resolved <- lost.resolve(ctx) }()
	waitForLockWaiter(t, f.pool)
	if err := f.tx.Complete(ctx, cl.Token, idempotency.Cached{Status: 201, WireBody: []byte("done")}); err != nil {
		t.Fatal(err)
	}
	if err := <-resolved; err != nil || lost.state != txCommitted {
		t.Fatalf("resolve of a committed claim = %v (state %d), want nil", err, lost.state)
	}

	// Not committed: the connection dies with the COMMIT unanswered.
	cl, err = f.tx.Begin(ctx, "k2", "alice", req)
	if err != nil || cl.Status != idempotency.ClaimAcquired {
		t.Fatalf("Begin = %+v, %v", cl, err)
	}
	c = claimOf(cl.Token)
	c.mu.Lock()
	c.state = txUnknown
	c.drop(true)
	c.mu.Unlock()
	err = f.tx.Complete(ctx, cl.Token, idempotency.Cached{Status: 201})
	if !errors.Is(err, ErrNotCommitted) || !errors.Is(err, idempotency.ErrLeaseLost) {
		t.Fatalf("Complete after the lost reply = %v, want ErrNotCommitted and ErrLeaseLost", err)
	}
	if _, ok := f.store.Lookup(ctx, "k2", "alice"); ok {
		t.Fatal("a record exists for the transaction that did not commit")
	}
}

// waitForLockWaiter polls the server until a session waits for an advisory lock.
func waitForLockWaiter(t *testing.T, pool *pgxpool.Pool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		if err := pool.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		time.Sleep(5 * time.Millisecond) // polling the server, not waiting for a goroutine
	}
	t.Fatal("no session waits for the record's lock")
}

// Through idemhttp, a handler takes its transaction from the request's
// context; a deadlock it swallows (answering 500) runs it again, with the
// headers of outer middleware kept and its own not doubled.
func TestTxThroughIdemhttp(t *testing.T) {
	f := newTxFixture(t)
	e := idempotency.NewEngine(f.tx)
	var runs atomic.Int32
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := runs.Add(1)
		tx, ok := TxFromContext(r.Context())
		if !ok {
			http.Error(w, "no tx", 500)
			return
		}
		w.Header().Add("X-Handler", "yes")
		if n == 1 { // a conflict the handler swallows
			if _, err := tx.Exec(r.Context(), `DO $$ BEGIN RAISE EXCEPTION 'forced' USING ERRCODE = '40P01'; END $$`); err != nil {
				http.Error(w, "conflict", 500)
				return
			}
		}
		res, err := f.create(r.Header.Get("Idempotency-Key"))(r.Context(), tx)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(res.Status)
		_, _ = w.Write(res.Body)
	})
	outer := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Outer", "kept")
			next.ServeHTTP(w, r)
		})
	}
	srv := httptest.NewServer(outer(idemhttp.New(e, idemhttp.WithAnonymous(true))(handler)))
	defer srv.Close()
	post := func() *http.Response {
		req, _ := http.NewRequest("POST", srv.URL+"/widgets", strings.NewReader(`{"name":"w"}`))
		req.Header.Set("Idempotency-Key", "http-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := post()
	resp.Body.Close()
	if resp.StatusCode != 201 || len(resp.Header.Values("X-Handler")) != 1 || resp.Header.Get("X-Outer") != "kept" {
		t.Fatalf("first answer %d, headers %v; want 201 with one X-Handler and X-Outer", resp.StatusCode, resp.Header)
	}
	resp = post()
	resp.Body.Close()
	if resp.StatusCode != 201 || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry %d %v, want the replayed 201", resp.StatusCode, resp.Header)
	}
	if n := f.count(t, "http-1"); n != 1 || runs.Load() != 2 {
		t.Fatalf("widgets %d after %d runs; want 1 after 2", n, runs.Load())
	}
}

// Through the dispatcher, a handler takes its transaction from its context.
func TestTxThroughDispatcher(t *testing.T) {
	f := newTxFixture(t)
	d := dispatcher.New(idempotency.NewEngine(f.tx))
	d.Register("widgets.create", func(ctx context.Context, req dispatcher.Request) (dispatcher.Response, error) {
		tx, ok := TxFromContext(ctx)
		if !ok {
			return dispatcher.Response{}, errors.New("no transaction")
		}
		res, err := f.create(req.Key)(ctx, tx)
		if err != nil {
			return dispatcher.Response{}, err
		}
		return dispatcher.Response{Status: res.Status, Data: json.RawMessage(res.Body)}, nil
	})
	ctx := context.Background()
	cmd := dispatcher.Command{Name: "widgets.create", Key: "d-1", Identity: "alice", Payload: json.RawMessage(`{}`)}
	s1, b1 := d.Dispatch(ctx, cmd)
	s2, b2 := d.Dispatch(ctx, cmd)
	if s1 != 201 || s2 != 201 || string(b1) != string(b2) {
		t.Fatalf("answers %d %s / %d %s; want the same 201 twice", s1, b1, s2, b2)
	}
	if n := f.count(t, "d-1"); n != 1 {
		t.Fatalf("widgets = %d, want 1", n)
	}
}

// A live holder keeps its claim however long its command works away from
// the database: the heartbeat's renewals restart the server's idle timer,
// which would otherwise end the session after one lease.
func TestTxLongCommandKeepsItsClaim(t *testing.T) {
	f := newTxFixture(t)
	lease := 300 * time.Millisecond
	e := idempotency.NewEngine(f.tx, idempotency.WithLease(lease))
	res, err := Run(context.Background(), e, idempotency.Request{Key: "long"}, func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
		res, err := f.create("long")(ctx, tx)
		if err != nil {
			return res, err
		}
		select { // work elsewhere for three leases
		case <-time.After(3 * lease):
		case <-ctx.Done():
			return idempotency.Response{}, context.Cause(ctx)
		}
		return res, nil
	})
	if err != nil || !res.Recorded {
		t.Fatalf("Run = %+v, %v; want a recorded answer after three leases of work", res, err)
	}
	if n := f.count(t, "long"); n != 1 {
		t.Fatalf("widgets = %d, want 1", n)
	}
}
