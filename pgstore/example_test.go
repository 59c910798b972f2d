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
	// CREATE OR REPLACE FUNCTION "billing"."idem_claim"(p_id bytea, p_owner text, p_fingerprint text, p_lease_us bigint)
	// RETURNS bigint LANGUAGE plpgsql VOLATILE AS $claim$
	// DECLARE
	//     acquired bigint;
	// BEGIN
	//     INSERT INTO "billing"."idem" AS r (id, state, owner, fence, fingerprint, expires_at)
	//     VALUES (p_id, 1, p_owner, nextval('"billing"."idem_fence_seq"'), p_fingerprint,
	//         clock_timestamp() + p_lease_us * interval '1 microsecond')
	//     ON CONFLICT (id) DO UPDATE SET
	//         state = 1, owner = excluded.owner, fence = nextval('"billing"."idem_fence_seq"'),
	//         fingerprint = excluded.fingerprint,
	//         expires_at = clock_timestamp() + p_lease_us * interval '1 microsecond',
	//         status = NULL, body = NULL, header = NULL, tombstone = false, stored_at = NULL, ttl_ns = NULL
	//     WHERE r.state = 0 OR r.expires_at <= clock_timestamp()
	//     RETURNING r.fence INTO acquired;
	//     RETURN acquired;
	// END
	// $claim$;
}
