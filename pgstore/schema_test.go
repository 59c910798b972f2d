package pgstore

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/idemkit/idempotency"
)

func TestNames(t *testing.T) {
	long := strings.Repeat("t", maxTableLen)
	cases := []struct {
		name  string
		opts  []Option
		table string // quoted, qualified name; "" when the options are invalid
	}{
		{"default", nil, `"idempotency_records"`},
		{"table", []Option{WithTable("Idem_2")}, `"Idem_2"`},
		{"schema", []Option{WithSchema("app")}, `"app"."idempotency_records"`},
		{"longest table", []Option{WithTable(long)}, `"` + long + `"`},
		{"table too long", []Option{WithTable(long + "t")}, ""},
		{"empty table", []Option{WithTable("")}, ""},
		{"quote in table", []Option{WithTable(`a"b`)}, ""},
		{"dot in table", []Option{WithTable("a.b")}, ""},
		{"leading digit", []Option{WithTable("1a")}, ""},
		{"space in schema", []Option{WithSchema("a b")}, ""},
		{"quote in schema", []Option{WithSchema("a'b")}, ""},
		{"schema too long", []Option{WithSchema(strings.Repeat("s", 64))}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, newErr := New(nil, tc.opts...)
			sql, err := SchemaSQL(tc.opts...)
			if tc.table == "" {
				// A configuration error, reported before anything runs.
				if st != nil || !errors.Is(newErr, idempotency.ErrStoreMisconfigured) ||
					!errors.Is(newErr, idempotency.ErrInvalidArgument) || errors.Is(newErr, idempotency.ErrStoreUnavailable) {
					t.Errorf("New = (%v, %v); want no store and ErrStoreMisconfigured, ErrInvalidArgument, not ErrStoreUnavailable", st, newErr)
				}
				if !errors.Is(err, idempotency.ErrInvalidArgument) {
					t.Errorf("SchemaSQL error = %v, want ErrInvalidArgument", err)
				}
				return
			}
			if newErr != nil || err != nil {
				t.Fatalf("New: %v; SchemaSQL: %v; want no error", newErr, err)
			}
			if got := st.names().table; got != tc.table {
				t.Errorf("table = %s, want %s", got, tc.table)
			}
			if !strings.Contains(sql, "TABLE IF NOT EXISTS "+tc.table+" (") {
				t.Errorf("SchemaSQL does not create %s:\n%s", tc.table, sql)
			}
		})
	}
}

// The schema in the package documentation is the one Migrate applies.
func TestDocShowsSchema(t *testing.T) {
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	sql, err := SchemaSQL()
	if err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for line := range strings.Lines(sql) {
		if line == "\n" {
			want.WriteString("//\n")
		} else {
			want.WriteString("//\t" + line)
		}
	}
	if !strings.Contains(string(doc), want.String()) {
		t.Errorf("doc.go does not show SchemaSQL() verbatim; want these lines in it:\n%s", want.String())
	}
}

func TestMigrate(t *testing.T) {
	pool := testPool(t)
	schema := testSchema(t, pool)
	ctx := context.Background()
	// Replicas starting together all migrate the same schema.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() {
			st, err := New(pool, WithSchema(schema+"_new"))
			if err == nil {
				err = st.Migrate(ctx)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP SCHEMA "+schema+"_new CASCADE") })
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Migrate %d = %v", i, err)
		}
	}
	// Migrating again changes nothing and keeps the data.
	st := newMigrated(t, pool, WithSchema(schema))
	if err := st.Store(ctx, "k", "alice", idempotency.Cached{Status: 200}); err != nil {
		t.Fatal(err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatalf("second Migrate = %v", err)
	}
	if _, ok := st.Lookup(ctx, "k", "alice"); !ok {
		t.Errorf("record lost by a second Migrate")
	}
}

// A table created by the earliest version of the schema (no claimed_at
// column, no functions) is brought up to date by Migrate, its rows kept;
// until then Begin fails closed, saying the store is misconfigured (a retry
// would not help, Migrate does).
func TestMigrateFromPreviousVersion(t *testing.T) {
	pool := testPool(t)
	schema := testSchema(t, pool)
	ctx := context.Background()
	st := newUnmigrated(t, pool, WithSchema(schema))
	stmts := schemaStatements(st.names())
	// Later versions added the claimed_at column and four functions; the
	// earliest had none of them.
	previous := stmts[:len(stmts)-5]
	if next := stmts[len(previous)]; next != claimedAtColumn(st.names()) {
		t.Fatalf("the first statement after the earliest schema does not add claimed_at: %s", next)
	}
	if next := stmts[len(previous)+1]; !strings.HasPrefix(next, "CREATE OR REPLACE FUNCTION "+st.names().claim+"(") {
		t.Fatalf("the second statement after the earliest schema is not the claim function: %s", next)
	}
	for _, stmt := range previous {
		if _, err := pool.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Store(ctx, "k", "alice", idempotency.Cached{Status: 201, WireBody: []byte("kept")}); err != nil {
		t.Fatal(err)
	}
	// A claim in flight, made as that version made them.
	_, err := pool.Exec(ctx, "INSERT INTO "+st.names().table+" (id, state, owner, fence, fingerprint, expires_at) "+
		"VALUES ($1, 1, 'old', nextval("+quoteLiteral(st.names().sequence)+"), '', clock_timestamp() + interval '1 minute')",
		st.recordID("old", "alice"))
	if err != nil {
		t.Fatal(err)
	}
	req := idempotency.ClaimRequest{Owner: "o", Lease: time.Minute}
	_, err = st.Begin(ctx, "fresh", "alice", req)
	if !errors.Is(err, idempotency.ErrStoreMisconfigured) || errors.Is(err, idempotency.ErrStoreUnavailable) {
		t.Errorf("Begin before Migrate = %v; want ErrStoreMisconfigured, not ErrStoreUnavailable", err)
	}
	if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "42883" {
		t.Errorf("Begin before Migrate = %v; want SQLSTATE 42883 (undefined_function)", err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if cl, err := st.Begin(ctx, "k", "alice", req); err != nil || cl.Status != idempotency.ClaimReplay || string(cl.Record.WireBody) != "kept" {
		t.Errorf("Begin on the kept record = %+v, %v; want its replay", cl, err)
	}
	if cl, err := st.Begin(ctx, "fresh", "alice", req); err != nil || cl.Status != idempotency.ClaimAcquired {
		t.Errorf("Begin on a fresh key = %+v, %v; want acquired", cl, err)
	}
	// The old claim is listed whatever its age (it has no date); the
	// fresh one, dated by the column Migrate added, only when young
	// claims are asked for.
	old := st.RecordID("old", "alice")
	if got, err := st.Claims(ctx, time.Hour, 0); err != nil || len(got) != 1 || got[0].ID != old || got[0].Owner != "old" || !got[0].ClaimedAt.IsZero() {
		t.Errorf("Claims(1h) = %+v, %v; want the old claim alone, undated", got, err)
	}
	if got, err := st.Claims(ctx, 0, 0); err != nil || len(got) != 2 || got[0].ID != old || got[1].ClaimedAt.IsZero() {
		t.Errorf("Claims(0) = %+v, %v; want the old claim, then the fresh one, dated", got, err)
	}
	if err := st.Migrate(ctx); err != nil {
		t.Fatalf("Migrate again = %v", err)
	}
}

func TestUnlogged(t *testing.T) {
	pool := testPool(t)
	schema := testSchema(t, pool)
	cases := []struct {
		name string
		opts []Option
		want string // pg_class.relpersistence: p permanent, u unlogged
	}{
		{"default is logged", nil, "p"},
		{"WithUnlogged(false)", []Option{WithTable("explicitly_logged"), WithUnlogged(false)}, "p"},
		{"WithUnlogged(true)", []Option{WithTable("unlogged_records"), WithUnlogged(true)}, "u"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := newMigrated(t, pool, append([]Option{WithSchema(schema)}, tc.opts...)...)
			var got string
			err := pool.QueryRow(context.Background(),
				"SELECT relpersistence::text FROM pg_class WHERE oid = $1::regclass", st.names().table).Scan(&got)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("relpersistence = %q, want %q", got, tc.want)
			}
			// The fence sequence stays logged: fences must survive a crash.
			err = pool.QueryRow(context.Background(),
				"SELECT relpersistence::text FROM pg_class WHERE oid = $1::regclass", st.names().sequence).Scan(&got)
			if err != nil {
				t.Fatal(err)
			}
			if got != "p" {
				t.Errorf("sequence relpersistence = %q, want %q", got, "p")
			}
		})
	}
}

// MigrateWith runs the application's statements in Migrate's transaction:
// both commit, or, when the application's fail, neither.
func TestMigrateWith(t *testing.T) {
	pool := testPool(t)
	schema := testSchema(t, pool)
	ctx := context.Background()
	exists := func(name string) bool {
		var ok bool
		if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", schema+"."+name).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	st := newUnmigrated(t, pool, WithSchema(schema))
	boom := errors.New("boom")
	err := st.MigrateWith(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "CREATE TABLE "+schema+".app_rows (id int)"); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) || exists(DefaultTable) || exists("app_rows") {
		t.Fatalf("MigrateWith failing = %v; tables: store %v, app %v; want the error and neither table", err, exists(DefaultTable), exists("app_rows"))
	}
	err = st.MigrateWith(ctx, func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "CREATE TABLE IF NOT EXISTS "+schema+".app_rows (id int)")
		return err
	})
	if err != nil || !exists(DefaultTable) || !exists("app_rows") {
		t.Fatalf("MigrateWith = %v; want both tables", err)
	}
}
