package reliability

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/idemkit/idempotency/pgstore"
)

// ledgerTableName is the ledger table of transactional handlers, in a
// PostgreSQL fixture's schema: one row per effect, (key, run), written
// through the command's transaction, so that it counts only what committed.
const ledgerTableName = "effects"

// txEffect is a transactional command's effect: a row (key, run) of the
// ledger table, inserted through the command's transaction.
func txEffect(ctx context.Context, table, key, run string) error {
	tx, ok := pgstore.TxFromContext(ctx)
	if !ok {
		return errors.New("no transaction in the command's context")
	}
	_, err := tx.Exec(ctx, "INSERT INTO "+table+" (key, run) VALUES ($1, $2)", key, run)
	return err
}

// ledgerTable is the schema-qualified name of f's ledger table.
func (f *fixture) ledgerTable() string { return f.schema + "." + ledgerTableName }

// createLedgerTable creates f's ledger table (PostgreSQL; dropped with the
// schema).
func (f *fixture) createLedgerTable(tb testing.TB) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := f.pool.Exec(ctx, "CREATE TABLE "+f.ledgerTable()+" (key text NOT NULL, run text NOT NULL, PRIMARY KEY (key, run))"); err != nil {
		tb.Fatalf("creating the ledger table: %v", err)
	}
}

// ledgerRuns returns the runs whose effect on key committed, sorted.
func (f *fixture) ledgerRuns(tb testing.TB, key string) []string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := f.pool.Query(ctx, "SELECT run FROM "+f.ledgerTable()+" WHERE key = $1 ORDER BY run", key)
	if err != nil {
		tb.Fatalf("reading the ledger table: %v", err)
	}
	runs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		tb.Fatalf("reading the ledger table: %v", err)
	}
	return runs
}

// ledgerCounts returns the number of effects committed per key, for the
// keys that start with prefix.
func (f *fixture) ledgerCounts(tb testing.TB, prefix string) map[string]int {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := f.pool.Query(ctx, "SELECT key, count(*) FROM "+f.ledgerTable()+" WHERE starts_with(key, $1) GROUP BY key", prefix)
	if err != nil {
		tb.Fatalf("reading the ledger table: %v", err)
	}
	counts := map[string]int{}
	var key string
	var n int
	_, err = pgx.ForEachRow(rows, []any{&key, &n}, func() error {
		counts[key] = n
		return nil
	})
	if err != nil {
		tb.Fatalf("reading the ledger table: %v", err)
	}
	return counts
}
