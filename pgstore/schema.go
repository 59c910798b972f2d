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
	claim    string // the claim function of earlier versions, kept for their replicas
	tryClaim string // the function Begin calls to claim a key (see beginSQL)
	claimTx  string // the function a transactional claim calls (see TxStore)
	recordTx string // the function that writes a transactional claim's record
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
		claimedAtColumn(n),
		claimFunction(n),
		tryClaimFunction(n),
		claimTxFunction(n),
		recordTxFunction(n),
	)
}

// claimedAtColumn is the statement that adds the claimed_at column to a
// table created before it existed: when the claim in flight was made, by
// the server's clock (NULL in rows claimed by a version that did not set
// it). Only Inspector reads it. Migrate skips it when the column exists,
// since ALTER TABLE takes the table's ACCESS EXCLUSIVE lock even then.
func claimedAtColumn(n names) string {
	return "ALTER TABLE " + n.table + " ADD COLUMN IF NOT EXISTS claimed_at timestamptz"
}

// lockKey is the SQL expression of the advisory lock that a claim takes on
// the record p_id: its first 64 bits. The id is an HMAC, so these are as
// good as random; a lock of the application's own on the same number would
// only make a claim answer "in flight" while it is held.
const lockKey = `('x' || encode(substring(p_id from 1 for 8), 'hex'))::bit(64)::bigint`

// claimInsert is the body shared by the claim functions: the insert, or
// the takeover of a dead row, returning the new fence.
func claimInsert(n names) string {
	return `    INSERT INTO ` + n.table + ` AS r (id, state, owner, fence, fingerprint, expires_at, claimed_at)
    VALUES (p_id, 1, p_owner, nextval(` + quoteLiteral(n.sequence) + `), p_fingerprint,
        clock_timestamp() + p_lease_us * interval '1 microsecond', clock_timestamp())
    ON CONFLICT (id) DO UPDATE SET
        state = 1, owner = excluded.owner, fence = nextval(` + quoteLiteral(n.sequence) + `),
        fingerprint = excluded.fingerprint,
        expires_at = clock_timestamp() + p_lease_us * interval '1 microsecond',
        claimed_at = excluded.claimed_at,
        status = NULL, body = NULL, header = NULL, tombstone = false, stored_at = NULL, ttl_ns = NULL
    WHERE r.state = 0 OR r.expires_at <= clock_timestamp()
    RETURNING r.fence INTO acquired;
    RETURN acquired;`
}

// tryClaimFunction is the claim function of this version: claimFunction's
// insert or takeover, attempted only while no transactional claim (see
// claimTxFunction) holds the key. It tells by the record's advisory lock,
// which a transactional claim holds exclusively for its whole transaction
// and this function takes shared, to the end of the calling statement, so
// that plain claims do not exclude each other (the row lock decides
// between them, as before). It returns -1 when a transactional claim holds
// the lock: the key is in flight, and nothing was written.
func tryClaimFunction(n names) string {
	return claimFunctionNamed(n, n.tryClaim, `    IF NOT pg_try_advisory_xact_lock_shared(`+lockKey+`) THEN
        RETURN -1;
    END IF;
`)
}

// claimTxFunction is the CREATE statement of the function a transactional
// claim calls first in its transaction. It takes the record's advisory
// lock for the rest of the transaction, or returns no row when another
// claim holds it. Holding it, it bounds how long the transaction may sit
// idle (p_idle_ms, the lease: past it the server ends the session, which
// rolls the transaction back and frees the key), then reads the row, in a
// statement of its own so that, at READ COMMITTED, it sees whatever the
// previous holder committed before letting the lock go. It returns the row
// as beginSQL does; the fence is p_fence, or a new one from the sequence
// when p_fence is NULL, if the row is absent or dead (the caller holds the
// key), and NULL when the row is live (a record to replay, or another
// caller's plain claim). Other sessions see the claim as the lock, held
// by a session that has read the table (Store.Claims).
func claimTxFunction(n names) string {
	return "CREATE OR REPLACE FUNCTION " + n.claimTx + `(p_id bytea, p_fence bigint, p_idle_ms integer)
RETURNS TABLE (o_state smallint, o_fingerprint text, o_left interval, o_fence bigint,
    o_status integer, o_body bytea, o_header bytea, o_tombstone boolean, o_stored_at timestamptz, o_ttl_ns bigint)
LANGUAGE plpgsql VOLATILE AS $claim_tx$
BEGIN
    IF NOT pg_try_advisory_xact_lock(` + lockKey + `) THEN
        RETURN;
    END IF;
    PERFORM set_config('idle_in_transaction_session_timeout', p_idle_ms::text, true);
    RETURN QUERY
    SELECT r.state, r.fingerprint, r.expires_at - n.now,
        CASE WHEN coalesce(r.state IN (1, 2) AND r.expires_at > n.now, false) THEN NULL
            ELSE coalesce(p_fence, nextval(` + quoteLiteral(n.sequence) + `)) END,
        r.status, r.body, r.header, r.tombstone, r.stored_at, r.ttl_ns
    FROM (SELECT clock_timestamp() AS now) n LEFT JOIN ` + n.table + ` r ON r.id = p_id;
END
$claim_tx$`
}

// recordTxFunction is the CREATE statement of the function that writes a
// transactional claim's record, in its transaction, just before COMMIT.
// The row must be absent or dead, by the server's clock, with a lower
// fence: otherwise the key was taken from the claim (a Store overwrote it,
// or a replica of an earlier version, which knows no advisory lock,
// claimed it) and the function raises SQLSTATE IK001, which aborts the
// transaction, so that nothing the command wrote commits. At REPEATABLE
// READ and SERIALIZABLE, a row committed after the transaction's snapshot
// makes the INSERT fail with a serialization failure (40001) instead.
func recordTxFunction(n names) string {
	return "CREATE OR REPLACE FUNCTION " + n.recordTx + `(p_id bytea, p_owner text, p_fence bigint, p_fingerprint text,
    p_status integer, p_body bytea, p_header bytea, p_tombstone boolean, p_stored_at timestamptz, p_ttl_ns bigint)
RETURNS void LANGUAGE plpgsql VOLATILE AS $record_tx$
DECLARE
    t timestamptz := coalesce(p_stored_at, clock_timestamp());
BEGIN
    INSERT INTO ` + n.table + ` AS r (id, state, owner, fence, fingerprint, expires_at,
        status, body, header, tombstone, stored_at, ttl_ns)
    VALUES (p_id, 2, p_owner, p_fence, p_fingerprint, t + (p_ttl_ns / 1000) * interval '1 microsecond',
        p_status, p_body, p_header, p_tombstone, t, p_ttl_ns)
    ON CONFLICT (id) DO UPDATE SET
        state = 2, owner = excluded.owner, fence = excluded.fence, fingerprint = excluded.fingerprint,
        expires_at = excluded.expires_at, status = excluded.status, body = excluded.body,
        header = excluded.header, tombstone = excluded.tombstone, stored_at = excluded.stored_at,
        ttl_ns = excluded.ttl_ns
    WHERE (r.state = 0 OR r.expires_at <= clock_timestamp()) AND r.fence < excluded.fence;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'idempotency claim lost: the record was taken while the transaction ran'
            USING ERRCODE = 'IK001';
    END IF;
END
$record_tx$`
}

// claimFunction is the CREATE statement of the function that Begin's
// statement calls when the row is absent or dead (see beginSQL): an insert,
// or on conflict a takeover, whose WHERE is checked against the latest
// version of the row under its lock, so that two racing claims cannot both
// win. The fence of a takeover is drawn in the SET list, once the row lock
// is held, so it is greater than the fence of the claim that held the row
// before. It returns the new fence, or NULL when the key was claimed by
// another call first.
func claimFunction(n names) string { return claimFunctionNamed(n, n.claim, "") }

// claimFunctionNamed is the CREATE statement of a claim function named
// name: guard (PL/pgSQL statements, or "") and then claimInsert's body.
func claimFunctionNamed(n names, name, guard string) string {
	return "CREATE OR REPLACE FUNCTION " + name + `(p_id bytea, p_owner text, p_fingerprint text, p_lease_us bigint)
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $claim$
DECLARE
    acquired bigint;
BEGIN
` + guard + claimInsert(n) + `
END
$claim$`
}

// Migrate creates the store's schema (when WithSchema names one), fence
// sequence, table and expiry index if they do not exist, adds the
// claimed_at column to a table created without it, and creates or replaces
// the functions Begin and the transactional claims call, in one
// transaction under an advisory lock, so replicas may all call it at
// start-up. So it brings a table created by an earlier version up to date,
// its rows kept. The SQL is SchemaSQL's, except that a schema which exists
// is not created again (CREATE SCHEMA IF NOT EXISTS needs the CREATE
// privilege on the database even then, and a role given only CREATE on a
// schema someone else made may still migrate), and the column is not added
// again: ALTER TABLE takes the table's ACCESS EXCLUSIVE lock even when
// there is nothing to add, which would queue every statement on the table
// behind the longest transaction reading it. The one Migrate that adds the
// column does take that lock, briefly, once.
//
// It returns an error wrapping idempotency.ErrStoreMisconfigured when the
// server refuses the statements (the role may not create the objects, an
// object of the same name does not fit), and one wrapping
// idempotency.ErrStoreUnavailable when the server cannot be reached.
func (s *Store) Migrate(ctx context.Context) error { return s.MigrateWith(ctx, nil) }

// MigrateWith is Migrate, and then more, in the same transaction under the
// same advisory lock: the application's own tables (those its transactional
// commands write, say) come from the same migration as the store's, and
// replicas starting together do not race each other's CREATE statements.
// more's statements should be idempotent (CREATE ... IF NOT EXISTS), as
// Migrate's are; its error rolls the whole migration back and is returned
// as Migrate's are. nil more is Migrate.
func (s *Store) MigrateWith(ctx context.Context, more func(ctx context.Context, tx pgx.Tx) error) error {
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
		var hasClaimedAt bool
		err := tx.QueryRow(ctx, hasClaimedAtSQL, s.names().table).Scan(&hasClaimedAt)
		if err != nil {
			return err
		}
		addColumn := claimedAtColumn(s.names())
		for _, stmt := range stmts {
			if hasClaimedAt && stmt == addColumn {
				continue // not even the lock ALTER TABLE would take
			}
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("%s: %w", strings.SplitN(stmt, " (", 2)[0], err)
			}
		}
		if more != nil {
			return more(ctx, tx)
		}
		return nil
	})
	if err != nil {
		return s.fail("migrate", err)
	}
	return nil
}

// hasClaimedAtSQL: $1 the table's quoted name. False when the table does
// not exist yet.
const hasClaimedAtSQL = `
SELECT EXISTS (SELECT FROM pg_attribute
    WHERE attrelid = to_regclass($1) AND attname = 'claimed_at' AND NOT attisdropped)`
