package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemkit/idempotency/pgstore"
)

// widgetsTable is the dashboard's table on a postgres:// store. Like
// pgstore's table it is not schema-qualified: the connection's search_path
// (a search_path parameter in the -store URL) picks the schema of both.
const widgetsTable = "idemd_widgets"

// dashboardSchema is idemd's part of the start-up migration: every
// statement is idempotent.
var dashboardSchema = []string{
	`CREATE TABLE IF NOT EXISTS ` + widgetsTable + ` (
    seq        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- the order of creation
    id         text        NOT NULL UNIQUE,                          -- "wgt_" and 16 random characters
    name       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()        -- the server's clock
)`,
}

// migrateDashboard creates the dashboard's table if it does not exist. It
// runs inside pgstore's Migrate transaction (Store.MigrateWith), under its
// advisory lock, so that replicas starting together never race two CREATE
// TABLE IF NOT EXISTS into a unique violation on the system catalogs.
func migrateDashboard(ctx context.Context, tx pgx.Tx) error {
	for _, stmt := range dashboardSchema {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("the dashboard's table: %w", err)
		}
	}
	return nil
}

// pgDashboard keeps the widgets in PostgreSQL, in widgetsTable: every
// replica on the same database and search_path shows the same dashboard,
// and a restart keeps it. widgets.create writes through the transaction its
// record commits in (pgstore.TxFromContext), so a widget exists exactly
// when its command's record does.
type pgDashboard struct {
	pool    *pgxpool.Pool // for widgets.list, which runs outside any command's transaction
	timeout time.Duration // bounds widgets.list (0: its context only)
}

var errNoTx = errors.New("no transaction: the command does not run on pgstore's transactional store")

const (
	insertWidgetSQL = `INSERT INTO ` + widgetsTable + ` (id, name) VALUES ($1, $2) RETURNING created_at`
	listWidgetsSQL  = `SELECT id, name, created_at FROM ` + widgetsTable + ` ORDER BY seq`
)

// add inserts the widget in the command's transaction. A run that does not
// commit (the command fails, the process dies, a serialization failure
// runs it again) leaves nothing behind, so the id is drawn afresh each run.
func (db *pgDashboard) add(ctx context.Context, name string) (widget, error) {
	tx, ok := pgstore.TxFromContext(ctx)
	if !ok {
		return widget{}, errNoTx
	}
	w := widget{ID: newID("wgt_"), Name: name}
	if err := tx.QueryRow(ctx, insertWidgetSQL, w.ID, w.Name).Scan(&w.CreatedAt); err != nil {
		return widget{}, fmt.Errorf("inserting the widget: %w", err)
	}
	w.CreatedAt = w.CreatedAt.UTC()
	return w, nil
}

func (*pgDashboard) where() string { return dashInPostgres }

// list reads every committed widget, oldest first.
func (db *pgDashboard) list(ctx context.Context) ([]widget, error) {
	if db.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = bound(ctx, db.timeout)
		defer cancel()
	}
	rows, err := db.pool.Query(ctx, listWidgetsSQL)
	if err != nil {
		return nil, fmt.Errorf("reading the widgets: %w", err)
	}
	ws, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (widget, error) { // [] for none
		var w widget
		err := row.Scan(&w.ID, &w.Name, &w.CreatedAt)
		w.CreatedAt = w.CreatedAt.UTC()
		return w, err
	})
	if err != nil {
		return nil, fmt.Errorf("reading the widgets: %w", err)
	}
	return ws, nil
}
