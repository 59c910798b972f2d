package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemkit/idempotency"
)

// The fence recipe against a real PostgreSQL downstream. The downstream's
// tables live in the test's schema but belong to "another system": the
// commands write them through the pool, in transactions of their own,
// never in the record's, as a plain handler writes to any system other
// than its idempotency store.

// fenceBank is the downstream: accounts, and one payment row per idempotency
// key (and caller) holding the highest fence that has written it.
type fenceBank struct {
	pool   *pgxpool.Pool
	schema string
}

var errFenceStale = errors.New("bank: refused: a holder with a higher fence has written this key")

func newFenceBank(t *testing.T, pool *pgxpool.Pool, schema string) *fenceBank {
	t.Helper()
	b := &fenceBank{pool: pool, schema: schema}
	_, err := pool.Exec(context.Background(), b.sql(`
CREATE TABLE {s}.accounts (id text PRIMARY KEY, balance bigint NOT NULL);
CREATE TABLE {s}.payments (
    identity text   NOT NULL,
    key      text   NOT NULL,
    fence    bigint NOT NULL,   -- the highest fence that has written this row
    account  text   NOT NULL REFERENCES {s}.accounts,
    amount   bigint NOT NULL,
    status   text   NOT NULL,
    PRIMARY KEY (identity, key)
);
INSERT INTO {s}.accounts VALUES ('acct-1', 1000)`))
	if err != nil {
		t.Fatalf("creating the downstream's tables: %v", err)
	}
	return b
}

func (b *fenceBank) sql(q string) string {
	return strings.ReplaceAll(q, "{s}", pgx.Identifier{b.schema}.Sanitize())
}

// charge debits amount from account once per key, in one downstream
// transaction: the first holder's INSERT makes the payment and the debit;
// a holder whose fence is at least the payment's adopts it (raising the
// fence) without a second debit; a lower fence is refused.
func (b *fenceBank) charge(ctx context.Context, tok idempotency.Token, account string, amount int64) (charged bool, err error) {
	err = pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, b.sql(`INSERT INTO {s}.payments (identity, key, fence, account, amount, status)
VALUES ($1, $2, $3, $4, $5, 'charged') ON CONFLICT (identity, key) DO NOTHING`),
			tok.Identity, tok.Key, int64(tok.Fence), account, amount)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 1 {
			charged = true
			_, err = tx.Exec(ctx, b.sql(`UPDATE {s}.accounts SET balance = balance - $2 WHERE id = $1`), account, amount)
			return err
		}
		tag, err = tx.Exec(ctx, b.sql(`UPDATE {s}.payments SET fence = $3 WHERE identity = $1 AND key = $2 AND fence <= $3`),
			tok.Identity, tok.Key, int64(tok.Fence))
		if err == nil && tag.RowsAffected() == 0 {
			err = errFenceStale
		}
		return err
	})
	return charged, err
}

// settle is a later step: a conditional update, refused for a lower fence.
func (b *fenceBank) settle(ctx context.Context, tok idempotency.Token) error {
	tag, err := b.pool.Exec(ctx, b.sql(`UPDATE {s}.payments SET status = 'settled', fence = $3
WHERE identity = $1 AND key = $2 AND fence <= $3`), tok.Identity, tok.Key, int64(tok.Fence))
	if err == nil && tag.RowsAffected() == 0 {
		err = errFenceStale
	}
	return err
}

// state reads the account's balance and the key's payment.
func (b *fenceBank) state(t *testing.T, key string) (balance int64, fence int64, status string) {
	t.Helper()
	err := b.pool.QueryRow(context.Background(), b.sql(`SELECT a.balance, p.fence, p.status
FROM {s}.accounts a JOIN {s}.payments p ON p.account = a.id WHERE a.id = 'acct-1' AND p.key = $1`), key).
		Scan(&balance, &fence, &status)
	if err != nil {
		t.Fatalf("reading the downstream: %v", err)
	}
	return balance, fence, status
}

// fenceExpireClaims ends the lease of every claim in flight in the store's
// table, by the server's clock: what a holder stalled past its lease (a
// pause, a partition that its renewals did not cross) leaves behind,
// without waiting for it.
func fenceExpireClaims(t *testing.T, pool *pgxpool.Pool, schema string) {
	t.Helper()
	tag, err := pool.Exec(context.Background(),
		"UPDATE "+pgx.Identifier{schema, DefaultTable}.Sanitize()+" SET expires_at = clock_timestamp() WHERE state = 1")
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("expiring the claim: %v (%d rows), want 1 row", err, tag.RowsAffected())
	}
}

type fenceResult struct {
	res idempotency.Result
	err error
}

// fenceStall runs fn on e in a goroutine: before (if not nil), then its token
// on claimed, then, after wake, after. Do's result arrives on the channel
// returned.
func fenceStall(e *idempotency.Engine, req idempotency.Request, claimed chan<- idempotency.Token, wake <-chan struct{},
	before func(ctx context.Context) error, after idempotency.Func) <-chan fenceResult {
	done := make(chan fenceResult, 1)
	go func() {
		res, err := e.Do(context.Background(), req, func(ctx context.Context) (idempotency.Response, error) {
			if before != nil {
				if err := before(ctx); err != nil {
					return idempotency.Response{}, err
				}
			}
			tok, _ := idempotency.TokenFromContext(ctx)
			claimed <- tok
			<-wake
			return after(ctx)
		})
		done <- fenceResult{res, err}
	}()
	return done
}

func TestFencePlainHandler(t *testing.T) {
	pool := testPool(t)
	schema := testSchema(t, pool)
	st := newMigrated(t, pool, WithSchema(schema))
	bk := newFenceBank(t, pool, schema)
	ctx := context.Background()
	// A minute's lease, so that the stale holder's heartbeat does not
	// notice the takeover during the test; the Observer keeps its record
	// error out of the log.
	replicaA := idempotency.NewEngine(st, idempotency.WithLease(time.Minute), idempotency.WithObserver(&idempotency.Observer{}))
	replicaB := idempotency.NewEngine(st)

	chargeCmd := func(ctx context.Context) (idempotency.Response, error) {
		tok, _ := idempotency.TokenFromContext(ctx)
		if _, err := bk.charge(ctx, tok, "acct-1", 100); err != nil {
			return idempotency.Response{}, err
		}
		if err := bk.settle(ctx, tok); err != nil {
			return idempotency.Response{}, err
		}
		return idempotency.Response{Status: 201, Body: []byte("paid")}, nil
	}

	// takeover runs req on A with before and after (see fenceStall), lets
	// A's lease run out while it stalls, has B take the key over and
	// record, then wakes A and checks that A's write (what) is refused.
	// It returns B's result.
	takeover := func(t *testing.T, req idempotency.Request, before func(context.Context) error, after idempotency.Func, what string) idempotency.Result {
		t.Helper()
		claimed, wake := make(chan idempotency.Token), make(chan struct{})
		doneA := fenceStall(replicaA, req, claimed, wake, before, after)
		stale := <-claimed
		fenceExpireClaims(t, pool, schema)
		resB, err := replicaB.Do(ctx, req, chargeCmd)
		if err != nil || !resB.Recorded || resB.Fence <= stale.Fence {
			t.Fatalf("takeover: Do = (%+v, %v), want recorded with a fence > %d", resB, err, stale.Fence)
		}
		close(wake)
		if got := <-doneA; !errors.Is(got.err, errFenceStale) {
			t.Errorf("stale holder: Do error = %v, want its %s refused (errFenceStale)", got.err, what)
		}
		return resB
	}

	t.Run("StaleBeforeItsEffect", func(t *testing.T) {
		// A claims and stalls past its lease before charging; B takes the
		// key over, charges, settles and answers; A's charge, after B's,
		// is refused.
		req := idempotency.Request{Key: "order-1", Identity: "alice", Fingerprint: "fp"}
		resB := takeover(t, req, nil, chargeCmd, "charge")
		balance, fence, status := bk.state(t, req.Key)
		if balance != 900 || fence != int64(resB.Fence) || status != "settled" {
			t.Errorf("downstream: balance %d, fence %d, status %q; want 900 (one charge), %d, settled", balance, fence, status, resB.Fence)
		}
	})

	t.Run("StaleAfterItsEffect", func(t *testing.T) {
		// A charges, then stalls past its lease before settling; B takes
		// the key over and adopts A's charge instead of charging again; A's
		// settle, after B's, is refused.
		req := idempotency.Request{Key: "order-2", Identity: "alice", Fingerprint: "fp"}
		before := func(ctx context.Context) error {
			tok, _ := idempotency.TokenFromContext(ctx)
			if charged, err := bk.charge(ctx, tok, "acct-1", 100); err != nil || !charged {
				return fmt.Errorf("first holder's charge = (%v, %v), want a charge", charged, err)
			}
			return nil
		}
		resB := takeover(t, req, before, func(ctx context.Context) (idempotency.Response, error) {
			tok, _ := idempotency.TokenFromContext(ctx)
			if err := bk.settle(ctx, tok); err != nil {
				return idempotency.Response{}, err
			}
			return idempotency.Response{Status: 201, Body: []byte("paid by the stale holder")}, nil
		}, "settle")
		balance, fence, status := bk.state(t, req.Key)
		if balance != 800 || fence != int64(resB.Fence) || status != "settled" {
			t.Errorf("downstream: balance %d, fence %d, status %q; want 800 (one more charge), %d, settled", balance, fence, status, resB.Fence)
		}
		replay, err := replicaA.Do(ctx, req, chargeCmd)
		if err != nil || !replay.Replayed || string(replay.Response.Body) != "paid" {
			t.Errorf("retry = (%+v, %v), want B's response replayed", replay, err)
		}
	})
}

// A transactional command needs no fence for what it writes in the
// record's database: its claim is its transaction (the record's advisory
// lock, held until the transaction ends), so no other holder can take the
// key over before that transaction is over, and once it is over, it
// commits nothing more. Here the holder's session is ended under it (what
// the server does when the transaction sits idle for the lease, or a
// partition or failover does) after it wrote a row with no fence at all;
// the new holder writes its own; the stale holder's row never commits, and
// neither does its record.
func TestFenceNotNeededInTheRecordsTransaction(t *testing.T) {
	pool := testPool(t)
	schema := testSchema(t, pool)
	txs := newMigrated(t, pool, WithSchema(schema)).Transactional()
	ctx := context.Background()
	widgets := pgx.Identifier{schema, "widgets"}.Sanitize()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+widgets+" (name text NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	replicaA := idempotency.NewEngine(txs, idempotency.WithLease(time.Minute), idempotency.WithObserver(&idempotency.Observer{}))
	replicaB := idempotency.NewEngine(txs)
	req := idempotency.Request{Key: "widget-1", Identity: "alice", Fingerprint: "fp"}
	insert := func(name string) func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
		return func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
			if _, err := tx.Exec(ctx, "INSERT INTO "+widgets+" (name) VALUES ($1)", name); err != nil {
				return idempotency.Response{}, err
			}
			return idempotency.Response{Status: 201, Body: []byte(name)}, nil
		}
	}

	pids, wake := make(chan uint32), make(chan struct{})
	doneA := make(chan fenceResult, 1)
	go func() {
		res, err := Run(ctx, replicaA, req, func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
			if _, err := insert("stale")(ctx, tx); err != nil {
				return idempotency.Response{}, err
			}
			var pid uint32
			if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				return idempotency.Response{}, err
			}
			pids <- pid
			<-wake // its effect made, before its COMMIT
			return idempotency.Response{Status: 201, Body: []byte("stale")}, nil
		})
		doneA <- fenceResult{res, err}
	}()
	pid := <-pids
	var ended bool
	if err := pool.QueryRow(ctx, "SELECT pg_terminate_backend($1, 10000)", int64(pid)).Scan(&ended); err != nil || !ended {
		t.Fatalf("ending the holder's session: %v (ended %v)", err, ended)
	}

	resB, err := Run(ctx, replicaB, req, insert("new"))
	if err != nil || !resB.Recorded {
		t.Fatalf("takeover: Run = (%+v, %v), want recorded", resB, err)
	}
	close(wake)
	gotA := <-doneA
	if !errors.Is(gotA.err, ErrNotCommitted) {
		t.Errorf("stale holder: Run = (%+v, %v), want ErrNotCommitted", gotA.res, gotA.err)
	}
	rows, err := pool.Query(ctx, "SELECT name FROM "+widgets)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(names) != 1 || names[0] != "new" {
		t.Errorf("widgets = %q (%v), want only the new holder's", names, err)
	}
	replay, err := replicaA.Do(ctx, req, func(context.Context) (idempotency.Response, error) {
		t.Error("the command ran again after its record committed")
		return idempotency.Response{}, nil
	})
	if err != nil || !replay.Replayed || string(replay.Response.Body) != "new" {
		t.Errorf("retry = (%+v, %v), want the new holder's response replayed", replay, err)
	}
}
