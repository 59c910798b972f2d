package pgstore_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/pgstore"
)

// A command whose effect reaches another system: it writes its row and
// enqueues the event in its transaction, so both commit with its record
// or neither does; a relay publishes the event after the commit, at least
// once, and the consumer drops a message ID it has seen. It needs a
// server, so it has no Output and does not run.
func ExampleOutbox() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := pgstore.New(pool)
	if err != nil {
		log.Fatal(err)
	}
	outbox, err := pgstore.NewOutbox(pool)
	if err != nil {
		log.Fatal(err)
	}
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	if err := outbox.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	engine := idempotency.NewEngine(store.Transactional())

	// The command: a retry with the same key replays its answer, and
	// enqueues nothing again.
	req := idempotency.Request{Key: "9f2c1b7e", Identity: "user-42", Fingerprint: "widgets.create sprocket"}
	res, err := pgstore.Run(ctx, engine, req, func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
		var id int64
		if err := tx.QueryRow(ctx, "INSERT INTO widgets (name) VALUES ($1) RETURNING id", "sprocket").Scan(&id); err != nil {
			return idempotency.Response{}, err
		}
		event := fmt.Appendf(nil, `{"widget":%d,"name":"sprocket"}`, id)
		if _, err := outbox.Enqueue(ctx, tx, "widget.created", event); err != nil {
			return idempotency.Response{}, err
		}
		return idempotency.Response{Status: 201, Body: fmt.Appendf(nil, `{"ok":true,"data":{"id":%d}}`, id)}, nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Response.Status)

	// The relay, on any number of replicas: again at once after a full
	// batch, after a pause otherwise.
	publish := func(ctx context.Context, msgs []pgstore.Message) error {
		for _, m := range msgs {
			// A broker client; the message ID goes along, so that the
			// consumer can drop a redelivery.
			fmt.Println("publish", m.ID, m.Topic, string(m.Payload))
		}
		return nil
	}
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for {
		n, err := outbox.Relay(ctx, pgstore.DefaultRelayBatch, publish)
		if err != nil {
			log.Print(err) // the batch stays, and is sent again
		}
		if n == pgstore.DefaultRelayBatch {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// The outbox's table, for migrations applied with other tools.
func ExampleOutboxSchemaSQL() {
	sql, err := pgstore.OutboxSchemaSQL(pgstore.WithOutboxSchema("billing"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(sql)
	// Output:
	// CREATE SCHEMA IF NOT EXISTS "billing";
	//
	// CREATE TABLE IF NOT EXISTS "billing"."idempotency_outbox" (
	//     id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	//     topic       text        NOT NULL,
	//     payload     bytea       NOT NULL,
	//     enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp()
	// );
}
