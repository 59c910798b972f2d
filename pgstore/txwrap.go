package pgstore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// errOwnTx is what a command gets when it tries to end the transaction its
// record commits in.
var errOwnTx = errors.New("pgstore: the transaction commits with the command's record: return from the command instead of ending it (savepoints from Begin may be committed and rolled back)")

// conflict reports whether err is a serialization failure or a deadlock:
// a transaction that another run, in a fresh transaction, can get past.
func conflict(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return pgErr.Code == "40001" || pgErr.Code == "40P01"
}

// cmdTx is the pgx.Tx a transactional command gets. It is the claim's
// transaction with two differences: Commit and Rollback are refused (the
// Engine ends the transaction: it commits with the record, or rolls back
// when the command fails), and every error a statement returns is looked
// at, so that a serialization failure or deadlock the command swallowed
// (answering a 500, say) still makes the store run it again.
type cmdTx struct {
	pgx.Tx
	seen *atomic.Bool // set on a conflict
	act  *activity
	root bool // the claim's transaction, not a savepoint
}

// activity is who uses the claim's connection: the command's statements,
// which may overlap as pgx allows (its rows open while it reads them), and
// the heartbeat's renewal, which runs on the same connection only while no
// statement does, so that it resets the server's idle timer.
type activity struct {
	mu       sync.Mutex
	idle     sync.Cond // signalled when a renewal ends
	busy     int       // statements running
	renewing bool
	last     time.Time // when the connection was last used
}

func (a *activity) enter() {
	a.mu.Lock()
	if a.idle.L == nil {
		a.idle.L = &a.mu
	}
	for a.renewing {
		a.idle.Wait()
	}
	a.busy++
	a.last = time.Now()
	a.mu.Unlock()
}

func (a *activity) leave() {
	a.mu.Lock()
	a.busy--
	a.last = time.Now()
	a.mu.Unlock()
}

// tryRenew starts a renewal if no statement runs: it reports false when one does.
func (a *activity) tryRenew() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.busy > 0 || a.renewing {
		return false
	}
	a.renewing = true
	return true
}

func (a *activity) renewed() {
	a.mu.Lock()
	a.renewing = false
	a.last = time.Now()
	if a.idle.L != nil {
		a.idle.Broadcast()
	}
	a.mu.Unlock()
}

// idleFor reports how long the connection has been idle, or 0 while it is used.
func (a *activity) idleFor() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.busy > 0 || a.renewing {
		return 0
	}
	return time.Since(a.last)
}

func (t *cmdTx) note(err error) error {
	if err != nil && conflict(err) {
		t.seen.Store(true)
	}
	return err
}

// Begin starts a savepoint, which the command may commit or roll back.
func (t *cmdTx) Begin(ctx context.Context) (pgx.Tx, error) {
	t.act.enter()
	defer t.act.leave()
	sp, err := t.Tx.Begin(ctx)
	if err != nil {
		return nil, t.note(err)
	}
	return &cmdTx{Tx: sp, seen: t.seen, act: t.act}, nil
}

// Commit is refused for the claim's transaction; a savepoint is released.
func (t *cmdTx) Commit(ctx context.Context) error {
	if t.root {
		return errOwnTx
	}
	t.act.enter()
	defer t.act.leave()
	return t.note(t.Tx.Commit(ctx))
}

// Rollback is refused for the claim's transaction; a savepoint is rolled back.
func (t *cmdTx) Rollback(ctx context.Context) error {
	if t.root {
		return errOwnTx
	}
	t.act.enter()
	defer t.act.leave()
	return t.note(t.Tx.Rollback(ctx))
}

func (t *cmdTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	t.act.enter()
	defer t.act.leave()
	tag, err := t.Tx.Exec(ctx, sql, args...)
	return tag, t.note(err)
}

func (t *cmdTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	t.act.enter()
	rows, err := t.Tx.Query(ctx, sql, args...)
	if err != nil {
		t.act.leave()
		return rows, t.note(err)
	}
	return &cmdRows{Rows: rows, tx: t}, nil
}

func (t *cmdTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, err := t.Query(ctx, sql, args...)
	return &cmdRow{rows: rows, err: err}
}

func (t *cmdTx) CopyFrom(ctx context.Context, table pgx.Identifier, columns []string, src pgx.CopyFromSource) (int64, error) {
	t.act.enter()
	defer t.act.leave()
	n, err := t.Tx.CopyFrom(ctx, table, columns, src)
	return n, t.note(err)
}

func (t *cmdTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	t.act.enter()
	return &cmdBatch{BatchResults: t.Tx.SendBatch(ctx, b), tx: t}
}

func (t *cmdTx) Prepare(ctx context.Context, name, sql string) (*pgconn.StatementDescription, error) {
	t.act.enter()
	defer t.act.leave()
	d, err := t.Tx.Prepare(ctx, name, sql)
	return d, t.note(err)
}

// cmdRows counts as a statement running until it is closed (a batch's
// rows start closed: the batch counts for them).
type cmdRows struct {
	pgx.Rows
	tx     *cmdTx
	closed bool
}

func (r *cmdRows) Close() {
	r.Rows.Close()
	r.done()
}

func (r *cmdRows) done() {
	if !r.closed {
		r.closed = true
		r.tx.act.leave()
	}
}

func (r *cmdRows) Err() error { return r.tx.note(r.Rows.Err()) }

func (r *cmdRows) Scan(dest ...any) error { return r.tx.note(r.Rows.Scan(dest...)) }

func (r *cmdRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.tx.note(r.Rows.Err())
	r.done() // pgx closed the rows
	return false
}

// cmdRow is pgx's QueryRow over cmdRows: the first row, or pgx.ErrNoRows.
type cmdRow struct {
	rows pgx.Rows
	err  error
}

func (r *cmdRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}

// cmdBatch counts as a statement running until it is closed; its Query
// results are counted by the batch.
type cmdBatch struct {
	pgx.BatchResults
	tx     *cmdTx
	closed bool
}

func (b *cmdBatch) Exec() (pgconn.CommandTag, error) {
	tag, err := b.BatchResults.Exec()
	return tag, b.tx.note(err)
}

func (b *cmdBatch) Query() (pgx.Rows, error) {
	rows, err := b.BatchResults.Query()
	if err != nil {
		return rows, b.tx.note(err)
	}
	return &cmdRows{Rows: rows, tx: b.tx, closed: true}, nil // the batch counts as the statement
}

func (b *cmdBatch) QueryRow() pgx.Row {
	rows, err := b.Query()
	return &cmdRow{rows: rows, err: err}
}

func (b *cmdBatch) Close() error {
	err := b.BatchResults.Close()
	if !b.closed {
		b.closed = true
		b.tx.act.leave()
	}
	return b.tx.note(err)
}
