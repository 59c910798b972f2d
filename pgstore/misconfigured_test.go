package pgstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemkit/idempotency"
)

// A store the server answers but cannot serve as configured fails with
// errors that match ErrStoreMisconfigured and not ErrStoreUnavailable (a
// retry would not help), from every method and through the Engine, and
// keeps the server's error (its SQLSTATE) visible to errors.As.
func TestMisconfigured(t *testing.T) {
	pool := testPool(t)
	schema := testSchema(t, pool)
	ctx := context.Background()
	cases := []struct {
		name  string
		store func(t *testing.T) *Store
		code  string // the SQLSTATE every method gets
	}{
		{"no table", func(t *testing.T) *Store {
			return newUnmigrated(t, pool, WithSchema(schema), WithTable("never_migrated"))
		}, "42P01"},
		{"no schema", func(t *testing.T) *Store {
			return newUnmigrated(t, pool, WithSchema(schema+"_absent"))
		}, "42P01"},
		{"a role that does not exist", func(t *testing.T) *Store {
			return newUnmigrated(t, lazyPool(t, pool, func(c *pgconn.Config) { c.User = "idem_test_no_such_role" }))
		}, "28000"},
		{"a database that does not exist", func(t *testing.T) *Store {
			return newUnmigrated(t, lazyPool(t, pool, func(c *pgconn.Config) { c.Database = "idem_test_no_such_db" }))
		}, "3D000"},
		{"a column missing", func(t *testing.T) *Store {
			st := newMigrated(t, pool, WithSchema(schema), WithTable("older"))
			if _, err := pool.Exec(ctx, "ALTER TABLE "+st.names().table+" DROP COLUMN expires_at"); err != nil {
				t.Fatal(err)
			}
			return st
		}, "42703"},
		{"a schema of another role", func(t *testing.T) *Store {
			newMigrated(t, pool, WithSchema(schema), WithTable("theirs"))
			return newUnmigrated(t, poolAs(t, pool, newRole(t, pool)), WithSchema(schema), WithTable("theirs"))
		}, "42501"},
		{"a table of another role", func(t *testing.T) *Store {
			newMigrated(t, pool, WithSchema(schema), WithTable("granted_schema"))
			role := newRole(t, pool)
			if _, err := pool.Exec(ctx, "GRANT USAGE ON SCHEMA "+schema+" TO "+role); err != nil {
				t.Fatal(err)
			}
			return newUnmigrated(t, poolAs(t, pool, role), WithSchema(schema), WithTable("granted_schema"))
		}, "42501"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st := tc.store(t)
			for _, op := range storeOps(st) {
				err := op.call(ctx)
				if !errors.Is(err, idempotency.ErrStoreMisconfigured) || errors.Is(err, idempotency.ErrStoreUnavailable) {
					t.Errorf("%s = %v; want ErrStoreMisconfigured, not ErrStoreUnavailable", op.name, err)
				}
				if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != tc.code {
					t.Errorf("%s = %v; want the server's error, SQLSTATE %s", op.name, err, tc.code)
				}
			}
			if c, ok := st.Lookup(ctx, "k", "alice"); ok || c != nil {
				t.Errorf("Lookup = (%v, %v), want (nil, false)", c, ok)
			}
			ran := false
			_, err := idempotency.NewEngine(st).Do(ctx, idempotency.Request{Key: "k", Identity: "alice", Fingerprint: ""}, func(context.Context) (idempotency.Response, error) {
				ran = true
				return idempotency.Response{Status: 200}, nil
			})
			var se *idempotency.StoreError
			if !errors.As(err, &se) || !errors.Is(err, idempotency.ErrStoreMisconfigured) || errors.Is(err, idempotency.ErrStoreUnavailable) {
				t.Errorf("Engine.Do = %v; want a *StoreError matching ErrStoreMisconfigured, not ErrStoreUnavailable", err)
			}
			if ran {
				t.Errorf("Engine.Do ran the command")
			}
		})
	}
}

// Which SQLSTATEs mean misconfigured, and which stay unavailable.
func TestFailClassifies(t *testing.T) {
	st := newUnmigrated(t, nil, WithSchema("app"))
	cases := []struct {
		err           error
		misconfigured bool
	}{
		{&pgconn.PgError{Code: "42P01"}, true}, // undefined_table
		{&pgconn.PgError{Code: "42883"}, true}, // undefined_function
		{&pgconn.PgError{Code: "42703"}, true}, // undefined_column
		{&pgconn.PgError{Code: "42804"}, true}, // datatype_mismatch
		{&pgconn.PgError{Code: "42P10"}, true}, // invalid_column_reference: no unique index for ON CONFLICT
		{&pgconn.PgError{Code: "42501"}, true}, // insufficient_privilege
		{&pgconn.PgError{Code: "3F000"}, true}, // invalid_schema_name
		{&pgconn.PgError{Code: "3D000"}, true}, // invalid_catalog_name
		{&pgconn.PgError{Code: "28000"}, true}, // invalid_authorization_specification
		{&pgconn.PgError{Code: "28P01"}, true}, // invalid_password
		{fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: "42P01"}), true},
		{&pgconn.PgError{Code: "57P01"}, false}, // admin_shutdown
		{&pgconn.PgError{Code: "57P03"}, false}, // cannot_connect_now: starting up
		{&pgconn.PgError{Code: "53300"}, false}, // too_many_connections
		{&pgconn.PgError{Code: "57014"}, false}, // query_canceled
		{&pgconn.PgError{Code: "0A000"}, false}, // feature_not_supported: cached plan must not change result type
		{&pgconn.PgError{Code: "25006"}, false}, // read_only_sql_transaction: a demoted primary
		{&pgconn.PgError{Code: "40001"}, false}, // serialization_failure, after the retries
		{&pgconn.PgError{Code: "08006"}, false}, // connection_failure
		{context.DeadlineExceeded, false},
		{errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), false},
	}
	for _, tc := range cases {
		for _, op := range []string{"begin", "migrate"} {
			err := st.fail(op, tc.err)
			if got := errors.Is(err, idempotency.ErrStoreMisconfigured); got != tc.misconfigured {
				t.Errorf("fail(%q, %v) = %v; misconfigured: %v, want %v", op, tc.err, err, got, tc.misconfigured)
			}
			if got := errors.Is(err, idempotency.ErrStoreUnavailable); got == tc.misconfigured {
				t.Errorf("fail(%q, %v) = %v; unavailable: %v, want %v", op, tc.err, err, got, !tc.misconfigured)
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("fail(%q, %v) = %v, which does not wrap the error", op, tc.err, err)
			}
		}
	}
}

// Migrate run by a role that may not create the store's objects says so.
func TestMigrateWithoutPrivileges(t *testing.T) {
	pool := testPool(t)
	schema := testSchema(t, pool)
	role := poolAs(t, pool, newRole(t, pool))
	cases := []struct {
		name string
		opts []Option
	}{
		{"schema of another role", []Option{WithSchema(schema)}},
		{"new schema", []Option{WithSchema(schema + "_new")}},
		{"search path", nil}, // public, where PostgreSQL 15 lets no one but its owner create
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := newUnmigrated(t, role, tc.opts...).Migrate(context.Background())
			if !errors.Is(err, idempotency.ErrStoreMisconfigured) || errors.Is(err, idempotency.ErrStoreUnavailable) {
				t.Errorf("Migrate = %v; want ErrStoreMisconfigured, not ErrStoreUnavailable", err)
			}
			if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "42501" {
				t.Errorf("Migrate = %v; want the server's error, SQLSTATE 42501", err)
			}
		})
	}
}

// A role given USAGE and CREATE on a schema another role made may migrate
// in it, without the CREATE privilege on the database that CREATE SCHEMA
// IF NOT EXISTS asks for, and then use the store.
func TestMigrateInGrantedSchema(t *testing.T) {
	pool := testPool(t)
	schema := testSchema(t, pool)
	role := newRole(t, pool)
	if _, err := pool.Exec(context.Background(), "GRANT USAGE, CREATE ON SCHEMA "+schema+" TO "+role); err != nil {
		t.Fatal(err)
	}
	st := newMigrated(t, poolAs(t, pool, role), WithSchema(schema))
	cl, err := st.Begin(context.Background(), "k", "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Minute})
	if err != nil || cl.Status != idempotency.ClaimAcquired {
		t.Errorf("Begin = %+v, %v; want acquired", cl, err)
	}
}

// storeOps are the store's methods that return an error, on a key that
// does not matter.
func storeOps(st *Store) []struct {
	name string
	call func(context.Context) error
} {
	tok := idempotency.Token{Key: "k", Identity: "alice", Owner: "o", Fence: 1}
	return []struct {
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
		{"DeleteExpired", func(ctx context.Context) error { _, err := st.DeleteExpired(ctx, 10); return err }},
	}
}

// newRole creates a role that may log in and holds no privileges beyond
// PUBLIC's, dropped when tb ends. It skips tb when the test's user may not
// create roles.
func newRole(tb testing.TB, pool *pgxpool.Pool) string {
	tb.Helper()
	role := "idem_test_role_" + strings.ToLower(rand.Text())
	if _, err := pool.Exec(context.Background(), "CREATE ROLE "+role+" LOGIN"); err != nil {
		if pgErr := (*pgconn.PgError)(nil); errors.As(err, &pgErr) && pgErr.Code == "42501" && os.Getenv("IDEMPOTENCY_REQUIRE_BACKENDS") != "1" {
			tb.Skipf("the test's user may not create roles, and this test needs a role without privileges: %v", err)
		}
		tb.Fatalf("CREATE ROLE: %v", err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// DROP OWNED revokes what the test granted the role.
		if _, err := pool.Exec(ctx, "DROP OWNED BY "+role); err != nil {
			tb.Errorf("DROP OWNED BY %s: %v", role, err)
		}
		if _, err := pool.Exec(ctx, "DROP ROLE "+role); err != nil {
			tb.Errorf("DROP ROLE %s: %v", role, err)
		}
	})
	return role
}

// poolAs returns a pool like pool's, connected as role, closed when tb ends
// (before role is dropped). configure, if any, adjust its configuration.
// It skips tb when role cannot log in without a password (the server does
// not trust local connections).
func poolAs(tb testing.TB, pool *pgxpool.Pool, role string, configure ...func(*pgxpool.Config)) *pgxpool.Pool {
	tb.Helper()
	cfg := pool.Config()
	cfg.ConnConfig.User, cfg.ConnConfig.Password = role, ""
	for _, f := range configure {
		f(cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p, err := pgxpool.NewWithConfig(ctx, cfg)
	if err == nil {
		if err = p.Ping(ctx); err != nil {
			p.Close()
		}
	}
	if err != nil {
		if os.Getenv("IDEMPOTENCY_REQUIRE_BACKENDS") != "1" {
			tb.Skipf("cannot connect as a new role without a password (this test needs trust authentication): %v", err)
		}
		tb.Fatalf("connect as %s: %v", role, err)
	}
	tb.Cleanup(p.Close)
	return p
}

// lazyPool returns a pool like pool's with its connection settings changed
// by configure, closed when tb ends. It does not connect until first used.
func lazyPool(tb testing.TB, pool *pgxpool.Pool, configure func(*pgconn.Config)) *pgxpool.Pool {
	tb.Helper()
	cfg := pool.Config()
	configure(&cfg.ConnConfig.Config)
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(p.Close)
	return p
}
