package pgstore_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/pgstore"
)

// A service replica sharing one PostgreSQL table with its peers: each
// command runs once per key and identity, whichever replica gets it.
// It needs a server, so it has no Output and does not run.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()

	store, err := pgstore.New(pool,
		pgstore.WithSecret([]byte(os.Getenv("IDEMPOTENCY_SECRET"))),
		pgstore.WithReaper(time.Minute, 1000),
	)
	if err != nil {
		log.Fatal(err) // an invalid WithSchema or WithTable name
	}
	defer store.Close()
	// A missing table or privilege is reported here (ErrStoreMisconfigured),
	// an unreachable server as ErrStoreUnavailable.
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	engine := idempotency.NewEngine(store)
	body := []byte(`{"name":"sprocket"}`)
	res, err := engine.Do(ctx, idempotency.Request{Key: "9f2c1b7e", Identity: "user-42", Fingerprint: idempotency.Fingerprint([]byte("widgets.create"), body)}, func(ctx context.Context) (idempotency.Response, error) {
		tok, _ := idempotency.TokenFromContext(ctx)
		// Create the widget, passing tok.Fence to systems that reject
		// writes from a stale holder.
		_ = tok.Fence
		return idempotency.Response{Status: 201, Body: []byte(`{"ok":true,"data":{"id":7}}`)}, nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Response.Status, res.Replayed)
}

func ExampleSchemaSQL() {
	sql, err := pgstore.SchemaSQL(pgstore.WithSchema("billing"), pgstore.WithTable("idem"), pgstore.WithUnlogged(true))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(sql)
	// Output:
	// CREATE SCHEMA IF NOT EXISTS "billing";
	//
	// CREATE SEQUENCE IF NOT EXISTS "billing"."idem_fence_seq" AS bigint CACHE 1;
	//
	// CREATE UNLOGGED TABLE IF NOT EXISTS "billing"."idem" (
	//     id          bytea       PRIMARY KEY,   -- driver.RecordKey(secret, key, identity)
	//     state       smallint    NOT NULL,      -- 0 released, 1 in flight, 2 completed
	//     owner       text        NOT NULL,      -- ClaimRequest.Owner of the claim; '' after Store
	//     fence       bigint      NOT NULL,      -- from the fence sequence
	//     fingerprint text        NOT NULL,      -- '' means not checked
	//     expires_at  timestamptz NOT NULL,      -- in flight: lease end; completed: stored_at + ttl;
	//                                            -- released: the release; past it, the row is dead
	//     status      integer,                   -- completed only, like the columns below
	//     body        bytea,
	//     header      bytea,                     -- compact encoding, see the package doc
	//     tombstone   boolean     NOT NULL DEFAULT false,
	//     stored_at   timestamptz,
	//     ttl_ns      bigint,                    -- Cached.TTL in nanoseconds
	//     CHECK (state IN (0, 1, 2))
	// );
	//
	// CREATE INDEX IF NOT EXISTS "idem_expires_at_idx" ON "billing"."idem" (expires_at);
	//
	// ALTER TABLE "billing"."idem" ADD COLUMN IF NOT EXISTS claimed_at timestamptz;
	//
	// CREATE OR REPLACE FUNCTION "billing"."idem_claim"(p_id bytea, p_owner text, p_fingerprint text, p_lease_us bigint)
	// RETURNS bigint LANGUAGE plpgsql VOLATILE AS $claim$
	// DECLARE
	//     acquired bigint;
	// BEGIN
	//     INSERT INTO "billing"."idem" AS r (id, state, owner, fence, fingerprint, expires_at, claimed_at)
	//     VALUES (p_id, 1, p_owner, nextval('"billing"."idem_fence_seq"'), p_fingerprint,
	//         clock_timestamp() + p_lease_us * interval '1 microsecond', clock_timestamp())
	//     ON CONFLICT (id) DO UPDATE SET
	//         state = 1, owner = excluded.owner, fence = nextval('"billing"."idem_fence_seq"'),
	//         fingerprint = excluded.fingerprint,
	//         expires_at = clock_timestamp() + p_lease_us * interval '1 microsecond',
	//         claimed_at = excluded.claimed_at,
	//         status = NULL, body = NULL, header = NULL, tombstone = false, stored_at = NULL, ttl_ns = NULL
	//     WHERE r.state = 0 OR r.expires_at <= clock_timestamp()
	//     RETURNING r.fence INTO acquired;
	//     RETURN acquired;
	// END
	// $claim$;
	//
	// CREATE OR REPLACE FUNCTION "billing"."idem_try_claim"(p_id bytea, p_owner text, p_fingerprint text, p_lease_us bigint)
	// RETURNS bigint LANGUAGE plpgsql VOLATILE AS $claim$
	// DECLARE
	//     acquired bigint;
	// BEGIN
	//     IF NOT pg_try_advisory_xact_lock_shared(('x' || encode(substring(p_id from 1 for 8), 'hex'))::bit(64)::bigint) THEN
	//         RETURN -1;
	//     END IF;
	//     INSERT INTO "billing"."idem" AS r (id, state, owner, fence, fingerprint, expires_at, claimed_at)
	//     VALUES (p_id, 1, p_owner, nextval('"billing"."idem_fence_seq"'), p_fingerprint,
	//         clock_timestamp() + p_lease_us * interval '1 microsecond', clock_timestamp())
	//     ON CONFLICT (id) DO UPDATE SET
	//         state = 1, owner = excluded.owner, fence = nextval('"billing"."idem_fence_seq"'),
	//         fingerprint = excluded.fingerprint,
	//         expires_at = clock_timestamp() + p_lease_us * interval '1 microsecond',
	//         claimed_at = excluded.claimed_at,
	//         status = NULL, body = NULL, header = NULL, tombstone = false, stored_at = NULL, ttl_ns = NULL
	//     WHERE r.state = 0 OR r.expires_at <= clock_timestamp()
	//     RETURNING r.fence INTO acquired;
	//     RETURN acquired;
	// END
	// $claim$;
	//
	// CREATE OR REPLACE FUNCTION "billing"."idem_claim_tx"(p_id bytea, p_fence bigint, p_idle_ms integer)
	// RETURNS TABLE (o_state smallint, o_fingerprint text, o_left interval, o_fence bigint,
	//     o_status integer, o_body bytea, o_header bytea, o_tombstone boolean, o_stored_at timestamptz, o_ttl_ns bigint)
	// LANGUAGE plpgsql VOLATILE AS $claim_tx$
	// BEGIN
	//     IF NOT pg_try_advisory_xact_lock(('x' || encode(substring(p_id from 1 for 8), 'hex'))::bit(64)::bigint) THEN
	//         RETURN;
	//     END IF;
	//     PERFORM set_config('idle_in_transaction_session_timeout', p_idle_ms::text, true);
	//     RETURN QUERY
	//     SELECT r.state, r.fingerprint, r.expires_at - n.now,
	//         CASE WHEN coalesce(r.state IN (1, 2) AND r.expires_at > n.now, false) THEN NULL
	//             ELSE coalesce(p_fence, nextval('"billing"."idem_fence_seq"')) END,
	//         r.status, r.body, r.header, r.tombstone, r.stored_at, r.ttl_ns
	//     FROM (SELECT clock_timestamp() AS now) n LEFT JOIN "billing"."idem" r ON r.id = p_id;
	// END
	// $claim_tx$;
	//
	// CREATE OR REPLACE FUNCTION "billing"."idem_record_tx"(p_id bytea, p_owner text, p_fence bigint, p_fingerprint text,
	//     p_status integer, p_body bytea, p_header bytea, p_tombstone boolean, p_stored_at timestamptz, p_ttl_ns bigint)
	// RETURNS void LANGUAGE plpgsql VOLATILE AS $record_tx$
	// DECLARE
	//     t timestamptz := coalesce(p_stored_at, clock_timestamp());
	// BEGIN
	//     INSERT INTO "billing"."idem" AS r (id, state, owner, fence, fingerprint, expires_at,
	//         status, body, header, tombstone, stored_at, ttl_ns)
	//     VALUES (p_id, 2, p_owner, p_fence, p_fingerprint, t + (p_ttl_ns / 1000) * interval '1 microsecond',
	//         p_status, p_body, p_header, p_tombstone, t, p_ttl_ns)
	//     ON CONFLICT (id) DO UPDATE SET
	//         state = 2, owner = excluded.owner, fence = excluded.fence, fingerprint = excluded.fingerprint,
	//         expires_at = excluded.expires_at, status = excluded.status, body = excluded.body,
	//         header = excluded.header, tombstone = excluded.tombstone, stored_at = excluded.stored_at,
	//         ttl_ns = excluded.ttl_ns
	//     WHERE (r.state = 0 OR r.expires_at <= clock_timestamp()) AND r.fence < excluded.fence;
	//     IF NOT FOUND THEN
	//         RAISE EXCEPTION 'idempotency claim lost: the record was taken while the transaction ran'
	//             USING ERRCODE = 'IK001';
	//     END IF;
	// END
	// $record_tx$;
}
