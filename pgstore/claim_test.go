package pgstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
)

// A store whose server cannot be reached fails closed, with errors that
// match ErrStoreUnavailable (and never ErrLeaseLost, which would read as a
// protocol outcome, nor ErrStoreMisconfigured: the server may come back).
func TestUnreachable(t *testing.T) {
	cfg, err := pgxpool.ParseConfig("postgres://postgres@127.0.0.1:1/test?sslmode=disable&connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	st := newUnmigrated(t, pool)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok := idempotency.Token{Key: "k", Identity: "alice", Owner: "o", Fence: 1}
	ops := []struct {
		name string
		call func() error
	}{
		{"Begin", func() error {
			_, err := st.Begin(ctx, "k", "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Second})
			return err
		}},
		{"Complete", func() error { return st.Complete(ctx, tok, idempotency.Cached{Status: 200}) }},
		{"Release", func() error { return st.Release(ctx, tok) }},
		{"Renew", func() error { return st.Renew(ctx, tok, time.Second) }},
		{"Store", func() error { return st.Store(ctx, "k", "alice", idempotency.Cached{Status: 200}) }},
		{"Migrate", func() error { return st.Migrate(ctx) }},
		{"DeleteExpired", func() error { _, err := st.DeleteExpired(ctx, 10); return err }},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			err := op.call()
			if !errors.Is(err, idempotency.ErrStoreUnavailable) {
				t.Errorf("%s = %v, want ErrStoreUnavailable", op.name, err)
			}
			if errors.Is(err, idempotency.ErrStoreMisconfigured) {
				t.Errorf("%s = %v, which also matches ErrStoreMisconfigured", op.name, err)
			}
			if errors.Is(err, idempotency.ErrLeaseLost) {
				t.Errorf("%s = %v, which also matches ErrLeaseLost", op.name, err)
			}
		})
	}
	if c, ok := st.Lookup(ctx, "k", "alice"); ok || c != nil {
		t.Errorf("Lookup = (%v, %v), want (nil, false)", c, ok)
	}
	// Through the Engine, the handler never runs.
	ran := false
	_, err = idempotency.NewEngine(st).Do(ctx, idempotency.Request{Key: "k", Identity: "alice", Fingerprint: ""}, func(context.Context) (idempotency.Response, error) {
		ran = true
		return idempotency.Response{Status: 200}, nil
	})
	if !errors.Is(err, idempotency.ErrStoreUnavailable) || errors.Is(err, idempotency.ErrStoreMisconfigured) || ran {
		t.Errorf("Engine.Do = %v, handler ran: %v; want ErrStoreUnavailable (not misconfigured) and no run", err, ran)
	}
}

// rowVersion identifies the physical version of a row and its locker.
func rowVersion(t *testing.T, st *Store, key string) string {
	t.Helper()
	var v string
	err := st.pool.QueryRow(context.Background(),
		"SELECT ctid::text || ' ' || xmin::text || ' ' || xmax::text FROM "+st.names().table+" WHERE id = $1",
		st.recordID(key, "alice")).Scan(&v)
	if err != nil {
		t.Fatalf("row version of %q: %v", key, err)
	}
	return v
}

func lastFence(t *testing.T, st *Store) int64 {
	t.Helper()
	var n int64
	if err := st.pool.QueryRow(context.Background(), "SELECT last_value FROM "+st.names().sequence).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A Begin that replays, reports a claim in flight or a mismatch, or
// re-acquires for the same owner, reads: it neither locks nor rewrites the
// row (xmax and ctid stay) nor draws a fence.
func TestBeginOnLiveRowWritesNothing(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	begin := func(key, owner, fp string) idempotency.Claim {
		t.Helper()
		cl, err := st.Begin(ctx, key, "alice", idempotency.ClaimRequest{Fingerprint: fp, Owner: owner, Lease: time.Hour})
		if err != nil {
			t.Fatalf("Begin: %v", err)
		}
		return cl
	}
	done := begin("done", "o1", "fp")
	if err := st.Complete(ctx, done.Token, idempotency.Cached{Status: 201, WireBody: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	begin("held", "o1", "fp")
	versions := map[string]string{"done": rowVersion(t, st, "done"), "held": rowVersion(t, st, "held")}
	fence := lastFence(t, st)
	cases := []struct {
		key, owner, fp string
		want           idempotency.ClaimStatus
	}{
		{"done", "o2", "fp", idempotency.ClaimReplay},
		{"done", "o2", "other", idempotency.ClaimMismatch},
		{"held", "o2", "fp", idempotency.ClaimInFlight},
		{"held", "o2", "other", idempotency.ClaimMismatch},
		{"held", "o1", "fp", idempotency.ClaimAcquired},
	}
	for _, tc := range cases {
		if got := begin(tc.key, tc.owner, tc.fp).Status; got != tc.want {
			t.Errorf("Begin(%s, owner %s, fp %s) = %v, want %v", tc.key, tc.owner, tc.fp, got, tc.want)
		}
		if got := rowVersion(t, st, tc.key); got != versions[tc.key] {
			t.Errorf("Begin(%s, owner %s, fp %s) changed the row version from %s to %s", tc.key, tc.owner, tc.fp, versions[tc.key], got)
		}
	}
	if got := lastFence(t, st); got != fence {
		t.Errorf("fence sequence moved from %d to %d", fence, got)
	}
}

// Fences are linearizable: an acquiring Begin gets a fence greater than
// every fence handed out by Begins that returned before it started, while
// claims on one key are acquired and released concurrently on several pools
// and expired rows are reaped at the same time.
func TestFenceOrderUnderChurn(t *testing.T) {
	stores := newReplicas(t, 3)
	ctx := context.Background()
	var (
		mu       sync.Mutex
		returned int64 // the greatest fence of a Begin that has returned
	)
	errs := make(chan error, 100)
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	var wg sync.WaitGroup
	for g := range 6 {
		st := stores[g%len(stores)].(*Store)
		wg.Go(func() {
			for i := range 40 {
				mu.Lock()
				floor := returned
				mu.Unlock()
				req := idempotency.ClaimRequest{Owner: fmt.Sprintf("g%d-%d", g, i), Lease: time.Minute}
				cl, err := st.Begin(ctx, "churn", "alice", req)
				if err != nil {
					report(err)
					return
				}
				if cl.Status != idempotency.ClaimAcquired {
					continue
				}
				if int64(cl.Token.Fence) <= floor {
					report(fmt.Errorf("acquired fence %d, but fence %d was handed out before this Begin started", cl.Token.Fence, floor))
				}
				mu.Lock()
				returned = max(returned, int64(cl.Token.Fence))
				mu.Unlock()
				if err := st.Release(ctx, cl.Token); err != nil {
					report(fmt.Errorf("Release of a live claim: %v", err))
				}
			}
		})
	}
	wg.Go(func() {
		for range 100 {
			if _, err := stores[0].(*Store).DeleteExpired(ctx, 10); err != nil {
				report(err)
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if returned == 0 {
		t.Errorf("no Begin acquired the key")
	}
}

// Records are named by RecordKey: raw keys and identities never reach the
// table, and stores with different secrets do not see each other's records.
func TestSecretNamesRecords(t *testing.T) {
	pool := testPool(t)
	schema := testSchema(t, pool)
	ctx := context.Background()
	a := newMigrated(t, pool, WithSchema(schema), WithSecret([]byte("secret a")))
	b := newUnmigrated(t, pool, WithSchema(schema), WithSecret([]byte("secret b")))
	plain := newUnmigrated(t, pool, WithSchema(schema))
	if err := a.Store(ctx, "the-key", "the-identity", idempotency.Cached{Status: 200, WireBody: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.Lookup(ctx, "the-key", "the-identity"); ok {
		t.Errorf("a store with another secret found the record")
	}
	if _, ok := plain.Lookup(ctx, "the-key", "the-identity"); ok {
		t.Errorf("a store without a secret found the record")
	}
	if _, ok := a.Lookup(ctx, "the-key", "the-identity"); !ok {
		t.Errorf("the store that wrote the record missed it")
	}
	var id []byte
	if err := pool.QueryRow(ctx, "SELECT id FROM "+a.names().table).Scan(&id); err != nil {
		t.Fatal(err)
	}
	want := driver.RecordKey([]byte("secret a"), "the-key", "the-identity")
	if !bytes.Equal(id, want[:]) {
		t.Errorf("id = %x, want RecordKey %x", id, want)
	}
}

// A Complete repeated while the first is still running (its reply lost,
// the retry sent on another connection) returns nil once the first commits.
func TestCompleteRetriedConcurrently(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	for i := range 20 {
		key := fmt.Sprintf("k%d", i)
		cl, err := st.Begin(ctx, key, "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for j := range errs {
			wg.Go(func() { errs[j] = st.Complete(ctx, cl.Token, idempotency.Cached{Status: 200, WireBody: []byte(key)}) })
		}
		wg.Wait()
		for j, err := range errs {
			if err != nil {
				t.Errorf("%s: Complete %d = %v, want nil", key, j, err)
			}
		}
		if c, ok := st.Lookup(ctx, key, "alice"); !ok || string(c.WireBody) != key {
			t.Errorf("%s: Lookup = (%v, %v)", key, c, ok)
		}
	}
}

func TestRetryable(t *testing.T) {
	cases := []struct {
		err  error
		want bool
	}{
		{&pgconn.PgError{Code: "40001"}, true},
		{&pgconn.PgError{Code: "40P01"}, true},
		{&pgconn.PgError{Code: "23505"}, true},
		{fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: "40001"}), true},
		{&pgconn.PgError{Code: "42P01"}, false}, // undefined_table
		{&pgconn.PgError{Code: "57014"}, false}, // query_canceled
		{pgx.ErrNoRows, false},
		{context.DeadlineExceeded, false},
		{nil, false},
	}
	for _, tc := range cases {
		if got := retryable(tc.err); got != tc.want {
			t.Errorf("retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// hungServer accepts connections and never answers, like a frozen server
// or a stalled network; it returns its address.
func hungServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// WithTimeout bounds a call even when the caller's context has no deadline
// and the connection hangs.
func TestTimeoutBoundsHungServer(t *testing.T) {
	pool, err := pgxpool.New(context.Background(), "postgres://postgres@"+hungServer(t)+"/test?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	const bound = 200 * time.Millisecond
	st := newUnmigrated(t, pool, WithTimeout(bound))
	tok := idempotency.Token{Key: "k", Identity: "alice", Owner: "o", Fence: 1}
	ops := []struct {
		name string
		call func(context.Context) error
	}{
		{"Begin", func(ctx context.Context) error {
			_, err := st.Begin(ctx, "k", "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Second})
			return err
		}},
		{"Complete", func(ctx context.Context) error { return st.Complete(ctx, tok, idempotency.Cached{Status: 200}) }},
		{"Release", func(ctx context.Context) error { return st.Release(ctx, tok) }},
		{"Renew", func(ctx context.Context) error { return st.Renew(ctx, tok, time.Second) }},
		{"Store", func(ctx context.Context) error { return st.Store(ctx, "k", "alice", idempotency.Cached{Status: 200}) }},
		{"Lookup", func(ctx context.Context) error {
			if _, ok := st.Lookup(ctx, "k", "alice"); ok {
				return errors.New("hit")
			}
			return idempotency.ErrStoreUnavailable
		}},
	}
	for _, op := range ops {
		t.Run(op.name, func(t *testing.T) {
			// A generous outer deadline, only so that a broken bound fails
			// the test instead of hanging it.
			ctx, cancel := context.WithTimeout(context.Background(), 20*bound)
			defer cancel()
			err := op.call(ctx)
			if !errors.Is(err, idempotency.ErrStoreUnavailable) {
				t.Errorf("%s = %v, want ErrStoreUnavailable", op.name, err)
			}
			if ctx.Err() != nil {
				t.Errorf("%s ran until the caller's deadline; want it cut at %v", op.name, bound)
			}
		})
	}
}

func TestTimeoutOption(t *testing.T) {
	cases := []struct {
		name string
		opts []Option
		want time.Duration // 0: no deadline
	}{
		{"default", nil, DefaultTimeout},
		{"zero keeps the default", []Option{WithTimeout(0)}, DefaultTimeout},
		{"set", []Option{WithTimeout(time.Second)}, time.Second},
		{"negative keeps the default", []Option{WithTimeout(-1)}, DefaultTimeout},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := newUnmigrated(t, nil, tc.opts...).bound(context.Background())
			defer cancel()
			deadline, ok := ctx.Deadline()
			switch {
			case tc.want == 0 && ok:
				t.Errorf("deadline %v, want none", deadline)
			case tc.want != 0 && (!ok || time.Until(deadline) > tc.want || time.Until(deadline) < tc.want/2):
				t.Errorf("deadline in %v (set: %v), want about %v", time.Until(deadline), ok, tc.want)
			}
		})
	}
}

// Begin answers alike whichever QueryExecMode the pool uses: with pgx's
// default, Begin decodes the binary row itself; with the others (text
// results, or no prepared statement, as behind a transaction pooler), it
// falls back to Rows.Scan.
func TestBeginExecModes(t *testing.T) {
	modes := []pgx.QueryExecMode{
		pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec,
		pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol,
	}
	ctx := context.Background()
	stored := idempotency.Cached{
		Status: 201, WireBody: []byte(`{"id":7}`), Header: map[string][]string{"Location": {"/widgets/7"}, "X-A": {"1", "2"}},
		StoredAt: time.Date(2026, 11, 26, 12, 0, 0, 123456000, time.UTC), TTL: time.Hour, Fingerprint: "fp", Tombstone: true,
	}
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			pool := testPool(t, func(cfg *pgxpool.Config) { cfg.ConnConfig.DefaultQueryExecMode = mode })
			st := newMigrated(t, pool, WithSchema(testSchema(t, pool)))
			stored.StoredAt = time.Now().Add(-time.Minute).Truncate(time.Microsecond) // so the record is live
			if err := st.Store(ctx, "done", "alice", stored); err != nil {
				t.Fatal(err)
			}
			begin := func(key, owner, fp string) idempotency.Claim {
				t.Helper()
				cl, err := st.Begin(ctx, key, "alice", idempotency.ClaimRequest{Fingerprint: fp, Owner: owner, Lease: time.Hour})
				if err != nil {
					t.Fatalf("Begin(%s, %s, %s): %v", key, owner, fp, err)
				}
				return cl
			}
			replay := begin("done", "o1", "fp")
			if replay.Status != idempotency.ClaimReplay || !sameCached(*replay.Record, stored) {
				t.Errorf("replay = %v %+v, want %+v", replay.Status, replay.Record, stored)
			}
			if c := begin("done", "o1", "").Record; c == nil || c.Fingerprint != "fp" {
				t.Errorf("replay without a fingerprint: record %+v, want the stored fingerprint", c)
			}
			if got := begin("done", "o1", "other").Status; got != idempotency.ClaimMismatch {
				t.Errorf("other fingerprint: %v, want mismatch", got)
			}
			held := begin("held", "o1", "fp")
			if held.Status != idempotency.ClaimAcquired {
				t.Fatalf("fresh key: %v, want acquired", held.Status)
			}
			if again := begin("held", "o1", "fp"); again.Status != idempotency.ClaimAcquired || again.Token != held.Token {
				t.Errorf("same owner again: %v %+v, want acquired %+v", again.Status, again.Token, held.Token)
			}
			if other := begin("held", "o2", "fp"); other.Status != idempotency.ClaimInFlight ||
				other.RetryAfter <= 59*time.Minute || other.RetryAfter > time.Hour {
				t.Errorf("other owner: %v, retry after %v; want in flight, about an hour", other.Status, other.RetryAfter)
			}
		})
	}
}

func sameCached(a, b idempotency.Cached) bool {
	return a.Status == b.Status && bytes.Equal(a.WireBody, b.WireBody) && reflect.DeepEqual(a.Header, b.Header) &&
		a.StoredAt.Equal(b.StoredAt) && a.TTL == b.TTL && a.Fingerprint == b.Fingerprint && a.Tombstone == b.Tombstone
}

// decode reads beginSQL's binary row exactly as Rows.Scan does, for rows
// with every column set and for NULLs.
func TestBeginDecode(t *testing.T) {
	st := newStore(t)
	ctx := context.Background()
	if err := st.Store(ctx, "done", "alice", idempotency.Cached{
		Status: 200, WireBody: []byte("body"), Header: map[string][]string{"A": {"b"}}, Fingerprint: "fp", TTL: time.Hour,
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Begin(ctx, "held", "alice", idempotency.ClaimRequest{Owner: "o", Fingerprint: "fp", Lease: time.Hour}); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"done", "held", "absent"} {
		for _, fp := range []string{"fp", "other"} {
			args := []any{st.recordID(key, "alice"), "o", fp, int64(time.Hour / time.Microsecond)}
			if key == "absent" { // each statement claims it: give each a key of its own
				args[0] = st.recordID(key+" scan "+fp, "alice")
			}
			var scanned, decoded beginRow
			err := st.pool.QueryRow(ctx, st.q.begin, args...).Scan(&scanned.state, &scanned.fingerprint, &scanned.left,
				&scanned.fence, &scanned.rec.status, &scanned.rec.body, &scanned.rec.header, &scanned.rec.tombstone,
				&scanned.rec.storedAt, &scanned.rec.ttl)
			if err != nil {
				t.Fatal(err)
			}
			if key == "absent" {
				args[0] = st.recordID(key+" decode "+fp, "alice")
			}
			rows, err := st.pool.Query(ctx, st.q.begin, args...)
			if err != nil {
				t.Fatal(err)
			}
			if !rows.Next() {
				t.Fatalf("%s: no row: %v", key, rows.Err())
			}
			ok := decoded.decode(rows.FieldDescriptions(), rows.RawValues(), fp)
			rows.Close()
			if !ok {
				t.Fatalf("%s: decode refused the default mode's row", key)
			}
			// The two reads ran at different instants.
			if scanned.left.Valid != decoded.left.Valid || scanned.left.Months != decoded.left.Months {
				t.Errorf("%s: left %+v, decoded %+v", key, scanned.left, decoded.left)
			}
			scanned.left, decoded.left = pgtype.Interval{}, pgtype.Interval{}
			if key == "absent" { // each statement claimed its key, with a fence of its own
				if !scanned.fence.Valid || !decoded.fence.Valid {
					t.Errorf("absent: fence %+v, decoded %+v; want both set", scanned.fence, decoded.fence)
				}
				scanned.fence, decoded.fence = pgtype.Int8{}, pgtype.Int8{}
			}
			if !reflect.DeepEqual(scanned, decoded) {
				t.Errorf("%s, fingerprint %s: Scan read\n%+v\ndecode read\n%+v", key, fp, scanned, decoded)
			}
		}
	}
}
