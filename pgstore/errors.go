package pgstore

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/idemkit/idempotency"
)

// What a failure of the database means to the store, by its SQLSTATE:
//
//   - a lost race (see retryable): run the statement again;
//   - a misconfiguration (see misconfiguration): the server answered, and
//     will answer the same until someone changes the database or the
//     store's settings, so the error wraps idempotency.ErrStoreMisconfigured;
//   - anything else, and every failure without a SQLSTATE (refused
//     connections, timeouts, a server shutting down, too many connections,
//     a read-only standby during a failover): the store is unavailable for
//     now, and the error wraps idempotency.ErrStoreUnavailable.

// retryable reports whether err is a failure that running the same
// statement again resolves: the statement changed nothing, and the race it
// lost is over.
func retryable(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "40001", // serialization_failure: REPEATABLE READ or SERIALIZABLE lost a race
		"40P01", // deadlock_detected
		"23505": // unique_violation: an insert raced another outside ON CONFLICT's reach
		return true
	}
	return false
}

// fail wraps err, the failure of op, in the error the store returns: one
// matching idempotency.ErrStoreMisconfigured, with what to do about it, when
// the server says the store cannot work as configured, and one matching
// idempotency.ErrStoreUnavailable otherwise. Either way err stays visible
// to errors.Is and errors.As (a context's error, the *pgconn.PgError).
func (s *Store) fail(op string, err error) error {
	if advice := s.misconfiguration(op, err); advice != "" {
		return fmt.Errorf("pgstore: %s: %w: %s: %w", op, idempotency.ErrStoreMisconfigured, advice, err)
	}
	return fmt.Errorf("pgstore: %s: %w: %w", op, idempotency.ErrStoreUnavailable, err)
}

// misconfiguration returns what to do about err, the failure of op, when
// its SQLSTATE says the store cannot work as configured, and "" otherwise.
// Those are:
//
//   - class 42, syntax error or access rule violation: the store's
//     statements do not fit the database as it is, for this role. Among
//     them 42P01 undefined_table (no Migrate yet, or another search_path),
//     42883 undefined_function (the claim function of a table created by an
//     earlier version), 42703 undefined_column and 42804 datatype_mismatch
//     (a table of another shape), 42501 insufficient_privilege;
//   - 3F000 invalid_schema_name;
//   - 3D000 invalid_catalog_name (no such database) and class 28, invalid
//     authorization (no such role, a wrong password), which come with the
//     connection: the server is up and refuses these settings.
//
// 0A000 feature_not_supported is not among them: pgx gets it as "cached plan
// must not change result type" after a schema change, and then prepares
// the statement again. Nor is 25006 read_only_sql_transaction: a pool still
// connected to a demoted primary gets it until a failover completes.
func (s *Store) misconfiguration(op string, err error) string {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return ""
	}
	n := s.names()
	code := pgErr.Code
	switch {
	case code == "3D000" || strings.HasPrefix(code, "28"):
		return "the server refused the connection's database or role: check the connection settings"
	case op == "migrate" && code == "42501":
		return "the database role may not create the store's objects: run Migrate as a role that may, " +
			"or apply SchemaSQL, then grant this role the privileges the store needs on " + n.table
	case op == "migrate" && code == "3F000":
		return "no schema to create " + n.table + " in: use WithSchema, or a search_path that names a schema"
	case op == "migrate" && strings.HasPrefix(code, "42"):
		return "objects under the store's names do not fit its schema: compare them with SchemaSQL"
	case code == "42501":
		return "the database role lacks privileges on " + n.table + ": grant it USAGE on the schema, " +
			"SELECT, INSERT, UPDATE and DELETE on the table, USAGE on " + n.sequence + " and EXECUTE on " + n.claim
	case code == "42P01" || code == "3F000":
		return "table " + n.table + " (or its schema or fence sequence) does not exist: run Migrate or apply SchemaSQL"
	case code == "42883":
		return "the claim function " + n.claim + " does not exist (a table created by an earlier version?): " +
			"run Migrate or apply SchemaSQL"
	case strings.HasPrefix(code, "42"):
		return "table " + n.table + " does not match the schema this version of pgstore uses " +
			"(Migrate does not alter an existing table): compare it with SchemaSQL"
	}
	return ""
}
