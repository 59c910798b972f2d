package pgstore_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/pgstore"
)

// exampleURL is the server the transactional example uses.
func exampleURL() string {
	if url := os.Getenv("IDEMPOTENCY_POSTGRES_URL"); url != "" {
		return url
	}
	return "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
}

// A charge that must happen once per order, retried by a client that did
// not get its answer. The charge row and the idempotency record commit in
// one transaction: whatever instant the process dies at, either both exist
// (the retry gets the recorded answer) or neither (the retry charges, once).
// It needs a server; TestExampleRun runs it and checks what it prints.
func ExampleRun() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, exampleURL())
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store, err := pgstore.New(pool, pgstore.WithSchema("idem_example"))
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Exec(ctx, `DROP SCHEMA idem_example CASCADE`)
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE idem_example.charges (
		id bigserial PRIMARY KEY, order_id text NOT NULL, cents bigint NOT NULL)`); err != nil {
		log.Fatal(err)
	}

	// Every command this engine claims runs in a transaction of its own.
	engine := idempotency.NewEngine(store.Transactional())
	charge := func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
		var id int64
		err := tx.QueryRow(ctx, `INSERT INTO idem_example.charges (order_id, cents) VALUES ($1, $2) RETURNING id`,
			"order-42", 1999).Scan(&id)
		if err != nil {
			return idempotency.Response{}, err // rolled back, key released: the retry charges
		}
		return idempotency.Response{Status: 201, Body: fmt.Appendf(nil, `{"charge":%d}`, id)}, nil
	}
	req := idempotency.Request{Key: "charge-order-42", Identity: "shop-7"}
	for range 3 { // the first attempt and two retries
		res, err := pgstore.Run(ctx, engine, req, charge)
		if err != nil {
			log.Fatal(err) // e.g. ErrInFlight while the first attempt still runs
		}
		fmt.Println(res.Response.Status, string(res.Response.Body), "replayed:", res.Replayed)
	}
	var n int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM idem_example.charges`).Scan(&n); err != nil {
		log.Fatal(err)
	}
	fmt.Println("charges:", n)
}

// ExampleRun needs a server, so it has no Output comment; this runs it and
// checks what it prints. Without a server it skips, or fails when
// IDEMPOTENCY_REQUIRE_BACKENDS=1.
func TestExampleRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, exampleURL()); err != nil {
		if os.Getenv("IDEMPOTENCY_REQUIRE_BACKENDS") == "1" {
			t.Fatalf("PostgreSQL unreachable: %v", err)
		}
		t.Skipf("PostgreSQL unreachable (%v); set IDEMPOTENCY_POSTGRES_URL", err)
	} else {
		conn.Close(ctx)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	func() {
		defer func() { os.Stdout = stdout }()
		ExampleRun()
	}()
	w.Close()
	got, _ := io.ReadAll(r)
	want := `201 {"charge":1} replayed: false
201 {"charge":1} replayed: true
201 {"charge":1} replayed: true
charges: 1
`
	if string(got) != want {
		t.Fatalf("ExampleRun printed\n%s\nwant\n%s", got, want)
	}
}
