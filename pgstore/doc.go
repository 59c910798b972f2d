// Package pgstore is the PostgreSQL backend of the idempotency package: a
// Store and ClaimStore on github.com/jackc/pgx/v5 (pgxpool) that many
// replicas of a service can share, and, with Transactional, a TxStore whose
// commands write through the transaction their record commits in, so that
// a command's effect happens exactly once (see Transactional commands).
//
//	pool, err := pgxpool.New(ctx, "postgres://app@db/app")
//	...
//	store, err := pgstore.New(pool, pgstore.WithSecret(secret), pgstore.WithReaper(time.Minute, 1000))
//	if err != nil { ... } // an invalid WithSchema or WithTable name
//	defer store.Close()
//	if err := store.Migrate(ctx); err != nil { ... }
//	engine := idempotency.NewEngine(store)
//
// # Guarantees
//
// Every protocol step is one SQL statement, atomic on its own, so the claim
// protocol holds across any number of processes sharing the table:
//
//   - Begin claims a key for exactly one caller at a time. A caller retrying
//     its own Begin (same Owner, lease still live) gets its token back.
//   - Complete, Release and Renew are compare-and-set on (owner, fence) and
//     succeed only while the lease is live, so a holder whose lease ran out
//     cannot overwrite the new holder's work. Complete repeated by the token
//     that succeeded returns nil and changes nothing.
//   - Fences come from a sequence (CACHE 1). A takeover draws its fence while
//     it holds the row lock, so it is greater than the fence of every earlier
//     holder of the key, including holders of records that have since
//     expired. (A Begin that creates the row draws its fence an instant
//     before inserting it; only if, within that instant, another claim on
//     the same key were made, ended and its row deleted by the reaper could
//     the new fence be the lower one. Released rows are kept until the
//     reaper runs for exactly this reason.)
//   - Leases and TTLs are judged by the server's clock_timestamp(), never the
//     clients' clocks, so replicas with skewed clocks agree.
//   - A mismatch, a replay and an in-flight answer change nothing.
//   - Records are named by driver.RecordKey (HMAC-SHA-256 with
//     WithSecret): raw keys and identities never reach the database.
//   - Races the database reports as serialization failures (40001),
//     deadlocks (40P01) or unique violations (23505) are retried inside the
//     store a bounded number of times. A Begin that keeps losing them answers
//     ClaimInFlight (others are claiming the key right now), so they never
//     turn into a 503. A Complete, Release or Renew that keeps losing them
//     reports ErrStoreUnavailable and changes nothing; the Engine does not
//     fail the request for those (a failed Complete is Result.RecordErr, a
//     failed Renew is retried within what remains of the lease, and the
//     command is cancelled with ErrLeaseExpired when none succeeds in time).
//   - Failures of the database (connection refused, timeouts, a server
//     shutting down or out of connections) return errors wrapping
//     idempotency.ErrStoreUnavailable, which adapters answer with 503; the
//     command does not run. A store that cannot work as configured (a
//     missing table, missing privileges) fails with
//     idempotency.ErrStoreMisconfigured instead: see Configuration errors.
//     Lookup reports every failure as a miss.
//   - Every request-path call is bounded in time (WithTimeout, 5s by
//     default), so a hung connection fails closed with a 503 instead of
//     holding the request: pgx has no read timeout of its own.
//
// The statements run in autocommit at the session's isolation level; READ
// COMMITTED (PostgreSQL's default) never needs the retries above, stricter
// levels may.
//
// # Schema
//
// Migrate creates the table, its fence sequence, its expiry index and the
// functions the claims call, and adds the claimed_at column to a table
// created before it; SchemaSQL returns the same SQL for other
// options, for users who apply migrations with their own tools. With the
// default options it is:
//
//	CREATE SEQUENCE IF NOT EXISTS "idempotency_records_fence_seq" AS bigint CACHE 1;
//
//	CREATE TABLE IF NOT EXISTS "idempotency_records" (
//	    id          bytea       PRIMARY KEY,   -- driver.RecordKey(secret, key, identity)
//	    state       smallint    NOT NULL,      -- 0 released, 1 in flight, 2 completed
//	    owner       text        NOT NULL,      -- ClaimRequest.Owner of the claim; '' after Store
//	    fence       bigint      NOT NULL,      -- from the fence sequence
//	    fingerprint text        NOT NULL,      -- '' means not checked
//	    expires_at  timestamptz NOT NULL,      -- in flight: lease end; completed: stored_at + ttl;
//	                                           -- released: the release; past it, the row is dead
//	    status      integer,                   -- completed only, like the columns below
//	    body        bytea,
//	    header      bytea,                     -- compact encoding, see the package doc
//	    tombstone   boolean     NOT NULL DEFAULT false,
//	    stored_at   timestamptz,
//	    ttl_ns      bigint,                    -- Cached.TTL in nanoseconds
//	    CHECK (state IN (0, 1, 2))
//	);
//
//	CREATE INDEX IF NOT EXISTS "idempotency_records_expires_at_idx" ON "idempotency_records" (expires_at);
//
//	ALTER TABLE "idempotency_records" ADD COLUMN IF NOT EXISTS claimed_at timestamptz;
//
//	CREATE OR REPLACE FUNCTION "idempotency_records_claim"(p_id bytea, p_owner text, p_fingerprint text, p_lease_us bigint)
//	RETURNS bigint LANGUAGE plpgsql VOLATILE AS $claim$
//	DECLARE
//	    acquired bigint;
//	BEGIN
//	    INSERT INTO "idempotency_records" AS r (id, state, owner, fence, fingerprint, expires_at, claimed_at)
//	    VALUES (p_id, 1, p_owner, nextval('"idempotency_records_fence_seq"'), p_fingerprint,
//	        clock_timestamp() + p_lease_us * interval '1 microsecond', clock_timestamp())
//	    ON CONFLICT (id) DO UPDATE SET
//	        state = 1, owner = excluded.owner, fence = nextval('"idempotency_records_fence_seq"'),
//	        fingerprint = excluded.fingerprint,
//	        expires_at = clock_timestamp() + p_lease_us * interval '1 microsecond',
//	        claimed_at = excluded.claimed_at,
//	        status = NULL, body = NULL, header = NULL, tombstone = false, stored_at = NULL, ttl_ns = NULL
//	    WHERE r.state = 0 OR r.expires_at <= clock_timestamp()
//	    RETURNING r.fence INTO acquired;
//	    RETURN acquired;
//	END
//	$claim$;
//
//	CREATE OR REPLACE FUNCTION "idempotency_records_try_claim"(p_id bytea, p_owner text, p_fingerprint text, p_lease_us bigint)
//	RETURNS bigint LANGUAGE plpgsql VOLATILE AS $claim$
//	DECLARE
//	    acquired bigint;
//	BEGIN
//	    IF NOT pg_try_advisory_xact_lock_shared(('x' || encode(substring(p_id from 1 for 8), 'hex'))::bit(64)::bigint) THEN
//	        RETURN -1;
//	    END IF;
//	    INSERT INTO "idempotency_records" AS r (id, state, owner, fence, fingerprint, expires_at, claimed_at)
//	    VALUES (p_id, 1, p_owner, nextval('"idempotency_records_fence_seq"'), p_fingerprint,
//	        clock_timestamp() + p_lease_us * interval '1 microsecond', clock_timestamp())
//	    ON CONFLICT (id) DO UPDATE SET
//	        state = 1, owner = excluded.owner, fence = nextval('"idempotency_records_fence_seq"'),
//	        fingerprint = excluded.fingerprint,
//	        expires_at = clock_timestamp() + p_lease_us * interval '1 microsecond',
//	        claimed_at = excluded.claimed_at,
//	        status = NULL, body = NULL, header = NULL, tombstone = false, stored_at = NULL, ttl_ns = NULL
//	    WHERE r.state = 0 OR r.expires_at <= clock_timestamp()
//	    RETURNING r.fence INTO acquired;
//	    RETURN acquired;
//	END
//	$claim$;
//
//	CREATE OR REPLACE FUNCTION "idempotency_records_claim_tx"(p_id bytea, p_fence bigint, p_idle_ms integer)
//	RETURNS TABLE (o_state smallint, o_fingerprint text, o_left interval, o_fence bigint,
//	    o_status integer, o_body bytea, o_header bytea, o_tombstone boolean, o_stored_at timestamptz, o_ttl_ns bigint)
//	LANGUAGE plpgsql VOLATILE AS $claim_tx$
//	BEGIN
//	    IF NOT pg_try_advisory_xact_lock(('x' || encode(substring(p_id from 1 for 8), 'hex'))::bit(64)::bigint) THEN
//	        RETURN;
//	    END IF;
//	    PERFORM set_config('idle_in_transaction_session_timeout', p_idle_ms::text, true);
//	    RETURN QUERY
//	    SELECT r.state, r.fingerprint, r.expires_at - n.now,
//	        CASE WHEN coalesce(r.state IN (1, 2) AND r.expires_at > n.now, false) THEN NULL
//	            ELSE coalesce(p_fence, nextval('"idempotency_records_fence_seq"')) END,
//	        r.status, r.body, r.header, r.tombstone, r.stored_at, r.ttl_ns
//	    FROM (SELECT clock_timestamp() AS now) n LEFT JOIN "idempotency_records" r ON r.id = p_id;
//	END
//	$claim_tx$;
//
//	CREATE OR REPLACE FUNCTION "idempotency_records_record_tx"(p_id bytea, p_owner text, p_fence bigint, p_fingerprint text,
//	    p_status integer, p_body bytea, p_header bytea, p_tombstone boolean, p_stored_at timestamptz, p_ttl_ns bigint)
//	RETURNS void LANGUAGE plpgsql VOLATILE AS $record_tx$
//	DECLARE
//	    t timestamptz := coalesce(p_stored_at, clock_timestamp());
//	BEGIN
//	    INSERT INTO "idempotency_records" AS r (id, state, owner, fence, fingerprint, expires_at,
//	        status, body, header, tombstone, stored_at, ttl_ns)
//	    VALUES (p_id, 2, p_owner, p_fence, p_fingerprint, t + (p_ttl_ns / 1000) * interval '1 microsecond',
//	        p_status, p_body, p_header, p_tombstone, t, p_ttl_ns)
//	    ON CONFLICT (id) DO UPDATE SET
//	        state = 2, owner = excluded.owner, fence = excluded.fence, fingerprint = excluded.fingerprint,
//	        expires_at = excluded.expires_at, status = excluded.status, body = excluded.body,
//	        header = excluded.header, tombstone = excluded.tombstone, stored_at = excluded.stored_at,
//	        ttl_ns = excluded.ttl_ns
//	    WHERE (r.state = 0 OR r.expires_at <= clock_timestamp()) AND r.fence < excluded.fence;
//	    IF NOT FOUND THEN
//	        RAISE EXCEPTION 'idempotency claim lost: the record was taken while the transaction ran'
//	            USING ERRCODE = 'IK001';
//	    END IF;
//	END
//	$record_tx$;
//
// A completed record keeps the owner and fence of the claim that completed
// it, which is how a repeated Complete is recognised. A released claim stays
// as a dead row (state 0) until the reaper removes it, so that a Begin
// racing the release takes the row over under its lock rather than
// inserting a fresh one. The header column holds the recorded response
// headers as a count of names followed by, for each name in sorted order,
// the name, the count of its values and the values, every string
// length-prefixed and every number an unsigned varint; NULL when there are
// none.
//
// The try-claim function is the write half of Begin (see below); the
// claim function before it is the one earlier versions call, kept so that
// replicas of an earlier version keep working during an upgrade; the
// claim_tx and record_tx functions are a transactional claim's (see
// Transactional commands). Each came with a version of the schema: a table
// created by an earlier version needs only Migrate to run again (or the
// functions' CREATE OR REPLACE FUNCTION statements from SchemaSQL to be
// applied); the table, its rows and its index stay as they are. Until then
// every Begin fails with an error wrapping idempotency.ErrStoreMisconfigured
// (the function does not exist, SQLSTATE 42883). The claimed_at column,
// which only inspection reads, came later still: rows claimed before it
// existed, or by a replica still running an earlier version, have none.
//
// # Transactional commands
//
// The claim protocol alone guarantees that one execution at a time holds a
// key, not that a command's effect happens once: a process killed after
// its effect and before Complete (or one whose lease ran out in an outage)
// leaves the retry to run the command again. When the effect is a write
// to the same PostgreSQL database, Transactional closes that hole:
//
//	engine := idempotency.NewEngine(store.Transactional())
//	res, err := pgstore.Run(ctx, engine, req, func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
//		_, err := tx.Exec(ctx, `INSERT INTO charges (order_id, cents) VALUES ($1, $2)`, orderID, cents)
//		...
//	})
//
// The claim, the command's writes through tx and the record are one
// transaction: a crash at any instant leaves all of them or none, and a
// retry either replays the record or runs the command for the first time.
// With idemhttp or the dispatcher, a handler takes the transaction from its
// context with TxFromContext. A command that fails, or whose response the
// record policy refuses (a 5xx), is rolled back with its writes; a
// serialization failure or deadlock runs it again in a fresh transaction
// (WithMaxRuns); a COMMIT that fails, or whose reply is lost and which
// cannot be found by reading the record, is never reported as the
// command's answer (Engine.Do returns a *idempotency.StoreError, 503 in
// the adapters). See TxStore for how the claim works and what differs from
// a plain claim.
//
// Choose it when the command's effects are writes to this database (an
// order, a ledger entry, an outbox message that a relay sends on later).
// Keep the plain Store when the command's effect is elsewhere (a call to
// another service, a message broker): no transaction of this database can
// undo those, so a transactional claim would only hold a connection open
// for the command's duration. Such effects need the fence (Token.Fence)
// checked by the downstream, which then refuses a stale holder's write; or,
// for messages to other systems, an Outbox: messages enqueued in the
// command's transaction, which commit with its record, and relayed later,
// at least once.
//
// # Inspection
//
// Store and TxStore implement idempotency.Inspector, for an operator's
// tools (idemd's admin API): Inspect describes one record, Purge deletes
// one, Claims lists the claims in flight for longer than a given time. A
// record's ID (RecordID) is its id column in lowercase hexadecimal: the
// table keeps no key or identity, so RecordInfo's Key and Identity are
// empty, and Claims is how an operator finds the IDs.
//
// A plain claim is its row: Inspect reads owner, fence, fingerprint, the
// lease left and claimed_at. A transactional claim has no row until it
// commits, and the claim writes nothing and sets nothing that others
// could read (the claim costs nothing for inspection's sake): what other
// sessions see of it is its advisory lock, held exclusively (pg_locks),
// by a session that has read this store's table, and that session
// (pg_stat_activity). Its ClaimedAt is when its transaction began. Its
// Owner, Fence, Fingerprint and LeaseLeft (what remains of the idle
// timeout that is its lease) are known only to the process that holds it:
// there Claims names it by its record's ID; elsewhere by a short ID, the
// first 16 hex digits of that ID (the lock), which Inspect and Purge take
// too, with those fields zero. An exclusive advisory lock that a command
// takes in its own transaction is listed as a claim as well. Sessions of
// another role show pg_stat_activity's times only to members of
// pg_read_all_stats: without it, their claims are listed undated.
//
// Purge deletes the row in one DELETE; a plain claim's holder then finds
// nothing to compare its token with, and gets idempotency.ErrLeaseLost.
// A transactional claim's session is ended with pg_terminate_backend,
// which rolls back its transaction (nothing the command wrote commits)
// and frees the key; Purge waits for it to end (which takes PostgreSQL 14
// or later), and the holder's Complete, Release and Renew return
// ErrLeaseLost. Ending another session takes the same role or membership
// in pg_signal_backend; without it Purge fails, as it does when the
// record's lock is held by a session that has not read this store's
// table (a lock the application holds for reasons of its own): it never
// ends a session it cannot tell is a claim.
//
// Costs: nothing on the request path. Inspect and Purge read pg_locks,
// which briefly takes every lock-manager partition lock of the server;
// Claims reads pg_locks and pg_stat_activity once each, and every live row
// of the table (no index tells claims from records: one more index would
// cost every claim and renewal a write). They are meant for an operator,
// not for the request path.
//
// # Configuration errors
//
// A store that is reachable but cannot work as configured fails with
// errors wrapping idempotency.ErrStoreMisconfigured, which do not match
// ErrStoreUnavailable, and neither does the *idempotency.StoreError that
// Engine.Do returns for them: retrying cannot help, someone must change the
// database or the store's options, and HTTP adapters answer 500, not 503.
// Each is reported where it can first be known:
//
//   - New: an invalid WithSchema or WithTable name (also
//     idempotency.ErrInvalidArgument). New returns no Store then.
//   - Migrate, meant to run at start-up: the role may not create the schema,
//     the table or the function (42501), or there is no schema to create them
//     in (3F000). A schema that exists is not created again, so a role given
//     CREATE on a schema someone else made may migrate in it.
//   - Every call, the reaper's included: the server's SQLSTATE says so.
//     That is class 42 (syntax error or access rule violation), which
//     covers 42P01 undefined_table (Migrate has not run, or the search_path
//     is another), 42883 undefined_function (the claim function of a table
//     created by an earlier version), 42703 undefined_column and 42804
//     datatype_mismatch (a table of another shape, which Migrate does not
//     alter) and 42501 insufficient_privilege; 3F000 invalid_schema_name;
//     and, when connecting, 3D000 invalid_catalog_name (no such database)
//     and class 28 (no such role, a wrong password).
//
// The message says what to do (run Migrate, grant which privileges), and
// the *pgconn.PgError stays available to errors.As. Every other failure is
// ErrStoreUnavailable, 0A000 and 25006 included: pgx meets "cached plan
// must not change result type" (0A000) after a schema change and prepares
// again, and a pool still connected to a demoted primary meets
// read_only_sql_transaction (25006) until a failover completes. Lookup,
// which has no error to return, answers a miss. The reaper reports a
// misconfiguration to its error handler once, not at every interval, and
// keeps trying (one statement per interval), so it starts reaping once the
// table is fixed.
//
// # Statements per operation
//
// Each operation is one round trip and one statement:
//
//   - Begin: one SELECT of the row by primary key that, only when the row
//     is absent or dead, calls the try-claim function, whose INSERT ... ON
//     CONFLICT (id) DO UPDATE ... WHERE (takeover allowed) ... RETURNING
//     claims the key, all in the statement's one transaction (first taking
//     the key's advisory lock shared: while a transactional claim holds it,
//     the function returns -1 and Begin answers ClaimInFlight). When the row
//     is live (a replay, a claim in flight, a mismatch, the caller's own
//     claim), the function is not called: the statement is a plain read by
//     primary key, which takes no lock, draws no fence, is given no
//     transaction id and writes no WAL (so its commit waits for no flush),
//     and it returns the recorded response. (The INSERT is in a function
//     rather than in a WITH next to the read because PostgreSQL sets up a
//     data-modifying WITH, and opens the table's indexes for it, whether or
//     not it inserts anything: that made a replay cost about 1.6 times the
//     server time of the read alone.)
//     When the row is absent or dead the function runs; its takeover
//     condition is checked again on the latest row version under the row
//     lock. If it loses that race to another Begin, the row the statement
//     read is older than the winner's (the read uses the statement's
//     snapshot); Begin then runs the statement again, with a new snapshot,
//     and answers from the winner's row. That second round trip happens
//     only to a Begin that lost a race for the same key.
//   - Complete, Release, Renew: one UPDATE each, with the owner and fence
//     compare-and-set and the lease check in its WHERE clause.
//   - Lookup: one SELECT. Store: one INSERT ... ON CONFLICT DO UPDATE.
//   - DeleteExpired: one DELETE per batch.
//
// # Expiry and the reaper
//
// Every read honours expires_at against clock_timestamp(): an expired record
// is a miss and a dead claim is taken over, whether or not its row has been
// deleted yet. Deleting expired rows is never on the request path.
// DeleteExpired removes a batch in one statement:
//
//	DELETE FROM t WHERE id IN (
//	    SELECT id FROM t WHERE expires_at < clock_timestamp() LIMIT $1 FOR UPDATE SKIP LOCKED)
//
// so that reapers on several replicas split the work instead of waiting on
// each other, and a row renewed or taken over meanwhile is left alone.
// WithReaper runs it in a background goroutine every interval until Close;
// run it on one replica, several, or call DeleteExpired from a cron job.
// Without any reaper the table only grows, though reads stay correct.
//
// # Durability
//
// The table is LOGGED by default: an acknowledged Begin or Complete survives
// a crash of the database server, so a command that was claimed or recorded
// is not run again after recovery. WithUnlogged trades that away (see its
// documentation): an UNLOGGED table is emptied by crash recovery and absent
// on standbys after a failover.
//
// A middle ground is synchronous_commit = off for the store's sessions
// only, set for example with ALTER ROLE ... SET synchronous_commit = off for
// a role the store alone uses, or through the pool's
// ConnConfig.RuntimeParams["synchronous_commit"] = "off". The gain: a Begin
// that claims and a Complete no longer wait for their WAL to be flushed to
// disk (or, with synchronous replication, confirmed by a standby), which is
// most of their latency on a busy or slow disk. Replays and lookups do not
// change: they write nothing. The loss: when the database server crashes
// (PostgreSQL, the OS or the machine), transactions acknowledged in the last
// moments before the crash (up to three times wal_writer_delay, 600ms by
// default) are lost, atomically, as if they had never happened. A lost claim
// lets a retry run the command while the first execution may still be
// running; a lost Complete turns the record back into its claim, whose
// lease then runs out, so a retry runs the command again; fences drawn in
// that window may be handed out again after recovery, so a downstream
// system that saw one may see it twice. The database stays consistent
// (unlike with fsync = off), and a crash of the application alone loses
// nothing. Keep synchronous_commit on where a repeated execution after a
// database crash is not acceptable.
package pgstore
