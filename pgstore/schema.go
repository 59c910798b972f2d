package pgstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// names are the quoted, possibly schema-qualified names of a Store's objects.
type names struct {
	schema   string // "" when the search_path decides
	table    string
	sequence string
	index    string // unqualified: an index lives in its table's schema
	unlogged bool
}

// migrateLock is the advisory lock key Migrate holds, so that replicas
// starting together do not race CREATE ... IF NOT EXISTS into a
// unique violation on the system catalogs. ("idemkit" in ASCII.)
const migrateLock = 0x69_64_65_6d_6b_69_74

// SchemaSQL returns the SQL that Migrate runs for a Store configured with
// opts, for users who apply schema changes themselves. Every statement is
// idempotent. With no options it is the schema shown in the package
// documentation. It returns an error wrapping idempotency.ErrInvalidArgument
// for an invalid WithSchema or WithTable name.
func SchemaSQL(opts ...Option) (string, error) {
	s := &Store{table: DefaultTable}
	for _, o := range opts {
		o(s)
	}
	if err := s.checkNames(); err != nil {
		return "", err
	}
	return strings.Join(schemaStatements(s.names()), ";\n\n") + ";\n", nil
}

func schemaStatements(n names) []string {
	var stmts []string
	if n.schema != "" {
		stmts = append(stmts, "CREATE SCHEMA IF NOT EXISTS "+n.schema)
	}
	persistence := ""
	if n.unlogged {
		persistence = "UNLOGGED "
	}
	return append(stmts,
		// CACHE 1 is what makes fences monotonic across sessions: with a
		// per-session cache, a later claim could draw a smaller number.
		"CREATE SEQUENCE IF NOT EXISTS "+n.sequence+" AS bigint CACHE 1",
		"CREATE "+persistence+"TABLE IF NOT EXISTS "+n.table+` (
    id          bytea       PRIMARY KEY,   -- idempotency.RecordKey(secret, key, identity)
    state       smallint    NOT NULL,      -- 0 released, 1 in flight, 2 completed
    owner       text        NOT NULL,      -- ClaimRequest.Owner of the claim; '' after Store
    fence       bigint      NOT NULL,      -- from the fence sequence
    fingerprint text        NOT NULL,      -- '' means not checked
    expires_at  timestamptz NOT NULL,      -- in flight: lease end; completed: stored_at + ttl;
                                           -- released: the release; past it, the row is dead
    status      integer,                   -- completed only, like the columns below
    body        bytea,
    header      bytea,                     -- compact encoding, see the package doc
    tombstone   boolean     NOT NULL DEFAULT false,
    stored_at   timestamptz,
    ttl_ns      bigint,                    -- Cached.TTL in nanoseconds
    CHECK (state IN (0, 1, 2))
)`,
		"CREATE INDEX IF NOT EXISTS "+n.index+" ON "+n.table+" (expires_at)",
	)
}

// Migrate creates the store's schema (when WithSchema names one), fence
// sequence, table and expiry index if they do not exist, in one
// transaction under an advisory lock, so replicas may all call it at
// start-up. It never alters an existing table. The SQL is SchemaSQL's.
func (s *Store) Migrate(ctx context.Context) error {
	if s.err != nil {
		return s.err
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrateLock)); err != nil {
			return err
		}
		for _, stmt := range schemaStatements(s.names()) {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("%s: %w", strings.SplitN(stmt, " (", 2)[0], err)
			}
		}
		return nil
	})
	if err != nil {
		return unavailable("migrate", err)
	}
	return nil
}
