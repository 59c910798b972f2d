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
	claim    string // the function Begin calls to claim a key (see beginSQL)
	unlogged bool
}

// migrateLock is the advisory lock key Migrate holds, so that replicas
// starting together do not race CREATE ... IF NOT EXISTS into a
// unique violation on the system catalogs. ("idemkit" in ASCII.)
const migrateLock = 0x69_64_65_6d_6b_69_74

// SchemaSQL returns the SQL that Migrate runs for a Store configured with
// opts, for users who apply schema changes themselves. Every statement is
// idempotent. With no options it is the schema shown in the package
// documentation. It returns the error New returns for an invalid WithSchema
// or WithTable name (wrapping idempotency.ErrInvalidArgument).
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
    id          bytea       PRIMARY KEY,   -- driver.RecordKey(secret, key, identity)
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
		claimFunction(n),
	)
}

// claimFunction is the CREATE statement of the function that Begin's
// statement calls when the row is absent or dead (see beginSQL): an insert,
// or on conflict a takeover, whose WHERE is checked against the latest
// version of the row under its lock, so that two racing claims cannot both
// win. The fence of a takeover is drawn in the SET list, once the row lock
// is held, so it is greater than the fence of the claim that held the row
// before. It returns the new fence, or NULL when the key was claimed by
// another call first.
func claimFunction(n names) string {
	return "CREATE OR REPLACE FUNCTION " + n.claim + `(p_id bytea, p_owner text, p_fingerprint text, p_lease_us bigint)
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $claim$
DECLARE
    acquired bigint;
BEGIN
    INSERT INTO ` + n.table + ` AS r (id, state, owner, fence, fingerprint, expires_at)
    VALUES (p_id, 1, p_owner, nextval(` + quoteLiteral(n.sequence) + `), p_fingerprint,
        clock_timestamp() + p_lease_us * interval '1 microsecond')
    ON CONFLICT (id) DO UPDATE SET
        state = 1, owner = excluded.owner, fence = nextval(` + quoteLiteral(n.sequence) + `),
        fingerprint = excluded.fingerprint,
        expires_at = clock_timestamp() + p_lease_us * interval '1 microsecond',
        status = NULL, body = NULL, header = NULL, tombstone = false, stored_at = NULL, ttl_ns = NULL
    WHERE r.state = 0 OR r.expires_at <= clock_timestamp()
    RETURNING r.fence INTO acquired;
    RETURN acquired;
END
$claim$`
}

// Migrate creates the store's schema (when WithSchema names one), fence
// sequence, table and expiry index if they do not exist, and creates or
// replaces the claim function Begin calls, in one transaction under an
// advisory lock, so replicas may all call it at start-up. It never alters
// an existing table, so it brings a table created by an earlier version up
// to date (that version had no claim function). The SQL is SchemaSQL's,
// except that a schema which exists is not created again: CREATE SCHEMA IF
// NOT EXISTS needs the CREATE privilege on the database even then, and a
// role given only CREATE on a schema someone else made may still migrate.
//
// It returns an error wrapping idempotency.ErrStoreMisconfigured when the
// server refuses the statements (the role may not create the objects, an
// object of the same name does not fit), and one wrapping
// idempotency.ErrStoreUnavailable when the server cannot be reached.
func (s *Store) Migrate(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrateLock)); err != nil {
			return err
		}
		stmts := schemaStatements(s.names())
		if s.schema != "" {
			var exists bool
			err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", s.schema).Scan(&exists)
			if err != nil {
				return err
			}
			if exists {
				stmts = stmts[1:] // CREATE SCHEMA
			}
		}
		for _, stmt := range stmts {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("%s: %w", strings.SplitN(stmt, " (", 2)[0], err)
			}
		}
		return nil
	})
	if err != nil {
		return s.fail("migrate", err)
	}
	return nil
}
