package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemkit/idempotency"
)

// outboxEnv is a schema of its own with a migrated Store and Outbox, and
// an Engine on the transactional view.
type outboxEnv struct {
	pool   *pgxpool.Pool
	schema string
	ob     *Outbox
	engine *idempotency.Engine
}

func newOutboxEnv(t *testing.T, opts ...OutboxOption) *outboxEnv {
	t.Helper()
	pool := testPool(t)
	schema := testSchema(t, pool)
	st := newMigrated(t, pool, WithSchema(schema))
	ob, err := NewOutbox(pool, append([]OutboxOption{WithOutboxSchema(schema)}, opts...)...)
	if err != nil {
		t.Fatalf("NewOutbox: %v", err)
	}
	if err := ob.Migrate(context.Background()); err != nil {
		t.Fatalf("Outbox.Migrate: %v", err)
	}
	return &outboxEnv{pool: pool, schema: schema, ob: ob,
		engine: idempotency.NewEngine(st.Transactional(), idempotency.WithObserver(&idempotency.Observer{}))}
}

// pending returns the payloads of the messages in the table, by ID.
func (e *outboxEnv) pending(t *testing.T) []string {
	t.Helper()
	rows, err := e.pool.Query(context.Background(), "SELECT payload FROM "+e.ob.qualified()+" ORDER BY id")
	if err != nil {
		t.Fatalf("reading the outbox: %v", err)
	}
	payloads, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var p []byte
		err := r.Scan(&p)
		return string(p), err
	})
	if err != nil {
		t.Fatalf("reading the outbox: %v", err)
	}
	return payloads
}

// enqueueing is a command that enqueues one message per payload in its
// transaction, then answers status.
func (e *outboxEnv) enqueueing(status int, payloads ...string) func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
	return func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
		for _, p := range payloads {
			if _, err := e.ob.Enqueue(ctx, tx, "widgets", []byte(p)); err != nil {
				return idempotency.Response{}, err
			}
		}
		return idempotency.Response{Status: status, Body: []byte("ok")}, nil
	}
}

func outboxKey(name string) idempotency.Request {
	return idempotency.Request{Key: name, Identity: "alice", Fingerprint: "fp"}
}

// A message exists if and only if the command's record committed: a
// command that succeeds (or answers a 4xx, which is recorded) leaves its
// messages, and its replay adds none; a failed command, a refused response
// (5xx, 429), a run rolled back by a serialization failure and a holder
// whose session ends before its commit leave none.
func TestOutboxCommitsWithRecord(t *testing.T) {
	env := newOutboxEnv(t)
	ctx := context.Background()
	run := func(name string, fn func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error)) (idempotency.Result, error) {
		t.Helper()
		return Run(ctx, env.engine, outboxKey(name), fn)
	}

	if res, err := run("created", env.enqueueing(201, "created-1", "created-2")); err != nil || !res.Recorded {
		t.Fatalf("Run = (%+v, %v), want recorded", res, err)
	}
	if res, err := run("created", env.enqueueing(201, "replay must not enqueue")); err != nil || !res.Replayed {
		t.Fatalf("replay: Run = (%+v, %v), want replayed", res, err)
	}
	if res, err := run("rejected", env.enqueueing(422, "rejected")); err != nil || !res.Recorded {
		t.Fatalf("422: Run = (%+v, %v), want recorded", res, err)
	}
	// A handler that gets its transaction from its context, as idemhttp's
	// and the dispatcher's do.
	if res, err := env.engine.Do(ctx, outboxKey("from-context"), func(ctx context.Context) (idempotency.Response, error) {
		tx, ok := TxFromContext(ctx)
		if !ok {
			return idempotency.Response{}, errors.New("no transaction in the command's context")
		}
		return env.enqueueing(200, "from-context")(ctx, tx)
	}); err != nil || !res.Recorded {
		t.Fatalf("TxFromContext: Do = (%+v, %v), want recorded", res, err)
	}

	errBoom := errors.New("boom")
	if _, err := run("failed", func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
		if _, err := env.enqueueing(201, "failed")(ctx, tx); err != nil {
			return idempotency.Response{}, err
		}
		return idempotency.Response{}, errBoom
	}); !errors.Is(err, errBoom) {
		t.Fatalf("failing command: Run error = %v, want %v", err, errBoom)
	}
	for _, status := range []int{500, 503, 429} {
		name := fmt.Sprintf("status-%d", status)
		if res, err := run(name, env.enqueueing(status, name)); err != nil || res.Recorded {
			t.Fatalf("%d: Run = (%+v, %v), want answered, not recorded", status, res, err)
		}
	}

	// A serialization failure runs the command again in a fresh
	// transaction: only the last run's message commits.
	runs := 0
	if res, err := run("rerun", func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
		runs++
		if _, err := env.ob.Enqueue(ctx, tx, "widgets", []byte(fmt.Sprintf("rerun-%d", runs))); err != nil {
			return idempotency.Response{}, err
		}
		if runs == 1 {
			return idempotency.Response{}, &pgconn.PgError{Code: "40001", Message: "could not serialize access"}
		}
		return idempotency.Response{Status: 201}, nil
	}); err != nil || !res.Recorded || runs != 2 {
		t.Fatalf("rerun: Run = (%+v, %v) after %d runs, want recorded after 2", res, err, runs)
	}

	// The holder's session ends after it enqueued, before its COMMIT.
	pids, wake := make(chan uint32), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		_, err := Run(ctx, env.engine, outboxKey("lost"), func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
			if _, err := env.enqueueing(201, "lost")(ctx, tx); err != nil {
				return idempotency.Response{}, err
			}
			var pid uint32
			if err := tx.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
				return idempotency.Response{}, err
			}
			pids <- pid
			<-wake
			return idempotency.Response{Status: 201}, nil
		})
		done <- err
	}()
	outboxEndSession(t, env.pool, <-pids)
	close(wake)
	if err := <-done; !errors.Is(err, ErrNotCommitted) {
		t.Fatalf("lost session: Run error = %v, want ErrNotCommitted", err)
	}

	want := []string{"created-1", "created-2", "rejected", "from-context", "rerun-2"}
	if got := env.pending(t); !slices.Equal(got, want) {
		t.Errorf("outbox = %q, want %q", got, want)
	}
}

// outboxEndSession ends the backend pid and waits until it has ended.
func outboxEndSession(t *testing.T, pool *pgxpool.Pool, pid uint32) {
	t.Helper()
	var ended bool
	if err := pool.QueryRow(context.Background(), "SELECT pg_terminate_backend($1, 10000)", int64(pid)).Scan(&ended); err != nil || !ended {
		t.Fatalf("ending backend %d: %v (ended %v)", pid, err, ended)
	}
}

// enqueue commits one message per payload, in one transaction of the
// pool's, and returns their IDs.
func (e *outboxEnv) enqueue(t *testing.T, payloads ...string) []int64 {
	t.Helper()
	var ids []int64
	err := pgx.BeginFunc(context.Background(), e.pool, func(tx pgx.Tx) error {
		for _, p := range payloads {
			id, err := e.ob.Enqueue(context.Background(), tx, "t", []byte(p))
			if err != nil {
				return err
			}
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Enqueue: %v", err)
	}
	return ids
}

func msgPayloads(msgs []Message) []string {
	p := make([]string, len(msgs))
	for i, m := range msgs {
		p[i] = string(m.Payload)
	}
	return p
}

func msgIDs(msgs []Message) []int64 {
	ids := make([]int64, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	return ids
}

// One relay hands the messages on in batches of at most the size asked
// for, each in increasing ID order, with the topic and payload enqueued,
// and deletes what it sent.
func TestOutboxRelayBatches(t *testing.T) {
	env := newOutboxEnv(t)
	ctx := context.Background()
	var want []string
	for i := range 25 {
		want = append(want, fmt.Sprintf("m%02d", i))
	}
	ids := env.enqueue(t, want[:20]...)
	ids = append(ids, env.enqueue(t, want[20:]...)...)

	var got []Message
	var sizes []int
	for {
		n, err := env.ob.Relay(ctx, 10, func(_ context.Context, msgs []Message) error {
			if !slices.IsSortedFunc(msgs, func(a, b Message) int { return int(a.ID - b.ID) }) {
				t.Errorf("batch %v is not in ID order", msgIDs(msgs))
			}
			got = append(got, msgs...)
			sizes = append(sizes, len(msgs))
			return nil
		})
		if err != nil {
			t.Fatalf("Relay: %v", err)
		}
		if n == 0 {
			break
		}
	}
	if !slices.Equal(sizes, []int{10, 10, 5}) {
		t.Errorf("batch sizes = %v, want [10 10 5]", sizes)
	}
	if !slices.Equal(msgPayloads(got), want) || !slices.Equal(msgIDs(got), ids) {
		t.Errorf("relayed %q with IDs %v, want %q with IDs %v", msgPayloads(got), msgIDs(got), want, ids)
	}
	for _, m := range got {
		if m.Topic != "t" || m.EnqueuedAt.IsZero() {
			t.Errorf("message %d: topic %q, enqueued at %v; want topic t and a time", m.ID, m.Topic, m.EnqueuedAt)
			break
		}
	}
	if left := env.pending(t); len(left) != 0 {
		t.Errorf("outbox after relaying = %q, want empty", left)
	}
	if n, err := env.ob.Relay(ctx, 10, func(context.Context, []Message) error {
		t.Error("send called with no message")
		return nil
	}); n != 0 || err != nil {
		t.Errorf("Relay of an empty outbox = (%d, %v), want (0, nil)", n, err)
	}
}

// Three relays and four producers at once: every message a committed
// command enqueued is delivered exactly once (no relay fails, so none is
// sent twice), each batch in ID order.
func TestOutboxConcurrentRelays(t *testing.T) {
	env := newOutboxEnv(t)
	ctx := context.Background()
	const producers, commands, relays = 4, 25, 3

	var mu sync.Mutex
	enqueued := map[int64]string{}
	delivered := map[int64]int{}
	perRelay := make([]int, relays)
	produced := make(chan struct{}, 1) // a nudge for idle relays
	allProduced := make(chan struct{})

	var prod sync.WaitGroup
	errs := make(chan error, producers+relays)
	for p := range producers {
		prod.Go(func() {
			for c := range commands {
				name := fmt.Sprintf("p%d-c%d", p, c)
				var ids []int64
				_, err := Run(ctx, env.engine, outboxKey(name), func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error) {
					ids = ids[:0] // only the last run's
					for i := range 2 {
						id, err := env.ob.Enqueue(ctx, tx, "widgets", []byte(fmt.Sprintf("%s-%d", name, i)))
						if err != nil {
							return idempotency.Response{}, err
						}
						ids = append(ids, id)
					}
					return idempotency.Response{Status: 201}, nil
				})
				if err != nil {
					errs <- fmt.Errorf("%s: %w", name, err)
					return
				}
				mu.Lock()
				for i, id := range ids {
					enqueued[id] = fmt.Sprintf("%s-%d", name, i)
				}
				mu.Unlock()
				select {
				case produced <- struct{}{}:
				default:
				}
			}
		})
	}
	go func() { prod.Wait(); close(allProduced) }()

	var rel sync.WaitGroup
	for r := range relays {
		rel.Go(func() {
			for {
				// A pass begun after the last commit that claims nothing
				// leaves nothing behind: what it skipped is held by relays
				// that will send it.
				finishing := outboxClosed(allProduced)
				n, err := env.ob.Relay(ctx, 7, func(_ context.Context, msgs []Message) error {
					mu.Lock()
					defer mu.Unlock()
					if !slices.IsSortedFunc(msgs, func(a, b Message) int { return int(a.ID - b.ID) }) {
						t.Errorf("relay %d: batch %v not in ID order", r, msgIDs(msgs))
					}
					for _, m := range msgs {
						delivered[m.ID]++
					}
					perRelay[r] += len(msgs)
					return nil
				})
				switch {
				case err != nil:
					errs <- fmt.Errorf("relay %d: %w", r, err)
					return
				case n > 0:
					continue
				case finishing:
					return
				}
				select {
				case <-produced:
				case <-allProduced:
				}
			}
		})
	}
	rel.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	if len(enqueued) != producers*commands*2 {
		t.Fatalf("enqueued %d messages, want %d", len(enqueued), producers*commands*2)
	}
	for id := range enqueued {
		if delivered[id] != 1 {
			t.Errorf("message %d delivered %d times, want once", id, delivered[id])
		}
	}
	for id := range delivered {
		if _, ok := enqueued[id]; !ok {
			t.Errorf("message %d delivered, never enqueued by a committed command", id)
		}
	}
	if left := env.pending(t); len(left) != 0 {
		t.Errorf("outbox after relaying = %q, want empty", left)
	}
	t.Logf("messages per relay: %v", perRelay)
}

// A relay that fails after send and before its COMMIT leaves the batch in
// the table: the next Relay sends it again, with the same IDs, and a
// consumer that deduplicates by ID sees each message once. So does a send
// that fails.
func TestOutboxRedelivery(t *testing.T) {
	cases := []struct {
		name string
		// fail is send's failure, after it has delivered: it returns what
		// send returns.
		fail    func(t *testing.T, env *outboxEnv, cancel context.CancelFunc) error
		wantErr []error
	}{
		{"SendFails", func(*testing.T, *outboxEnv, context.CancelFunc) error { return errOutboxBroker },
			[]error{errOutboxBroker}},
		{"ContextEndsAfterSend", func(_ *testing.T, _ *outboxEnv, cancel context.CancelFunc) error { cancel(); return nil },
			[]error{idempotency.ErrStoreUnavailable, context.Canceled}},
		{"SessionEndsAfterSend", func(t *testing.T, env *outboxEnv, _ context.CancelFunc) error {
			outboxEndSession(t, env.pool, relayBackend(t, env))
			return nil
		}, []error{idempotency.ErrStoreUnavailable}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newOutboxEnv(t)
			ids := env.enqueue(t, "a", "b", "c")
			seen := map[int64]int{} // the consumer: deliveries by ID
			consume := func(msgs []Message) {
				for _, m := range msgs {
					seen[m.ID]++
				}
			}

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var first []Message
			n, err := env.ob.Relay(ctx, 10, func(_ context.Context, msgs []Message) error {
				first = msgs
				consume(msgs)
				return tc.fail(t, env, cancel)
			})
			if n != 0 {
				t.Errorf("failed Relay = %d, want 0", n)
			}
			t.Logf("failed Relay: %v", err)
			for _, want := range tc.wantErr {
				if !errors.Is(err, want) {
					t.Errorf("failed Relay error = %v, want one matching %v", err, want)
				}
			}

			var again []Message
			n, err = env.ob.Relay(context.Background(), 10, func(_ context.Context, msgs []Message) error {
				again = msgs
				consume(msgs)
				return nil
			})
			if n != 3 || err != nil {
				t.Fatalf("next Relay = (%d, %v), want (3, nil)", n, err)
			}
			if !slices.Equal(msgIDs(first), ids) || !slices.Equal(msgIDs(again), ids) ||
				!slices.Equal(msgPayloads(again), []string{"a", "b", "c"}) {
				t.Errorf("delivered %v then %v (%q), want IDs %v twice, payloads a b c", msgIDs(first), msgIDs(again), msgPayloads(again), ids)
			}
			for _, id := range ids {
				if seen[id] != 2 {
					t.Errorf("message %d delivered %d times, want 2 (at least once; the consumer deduplicates by ID)", id, seen[id])
				}
			}
			if left := env.pending(t); len(left) != 0 {
				t.Errorf("outbox = %q, want empty", left)
			}
		})
	}
}

func outboxClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

var errOutboxBroker = errors.New("broker unavailable")

// relayBackend finds the session of the relay whose transaction holds the
// test's outbox rows: the one idle in a transaction whose last statement
// named the test's schema.
func relayBackend(t *testing.T, env *outboxEnv) uint32 {
	t.Helper()
	var pid uint32
	err := env.pool.QueryRow(context.Background(), `SELECT pid FROM pg_stat_activity
WHERE state LIKE 'idle in transaction%' AND strpos(query, $1) > 0 AND pid <> pg_backend_pid()`, env.schema).Scan(&pid)
	if err != nil {
		t.Fatalf("finding the relay's backend: %v", err)
	}
	return pid
}

// A relay that freezes in send for longer than WithRelayTimeout has its
// session ended by the server, so its batch goes to another relay; when it
// wakes, its Relay fails and deletes nothing.
func TestOutboxFrozenRelayGivesItsBatchUp(t *testing.T) {
	env := newOutboxEnv(t, WithRelayTimeout(300*time.Millisecond))
	ids := env.enqueue(t, "x", "y")
	ctx := context.Background()

	inSend, wake := make(chan []Message), make(chan struct{})
	var frozen chan error
	var first []Message
	// The relay's bound is short; on a loaded machine it may run out before
	// send, with nothing claimed: try again then.
	for attempt := 1; first == nil; attempt++ {
		frozen = make(chan error, 1)
		go func() {
			_, err := env.ob.Relay(ctx, 10, func(_ context.Context, msgs []Message) error {
				inSend <- msgs
				<-wake // ignores its context, as a frozen process would
				return nil
			})
			frozen <- err
		}()
		select {
		case first = <-inSend:
		case err := <-frozen:
			if attempt == 5 {
				t.Fatalf("the relay never reached send: %v", err)
			}
		}
	}

	// Wait, on the server, for the frozen relay's transaction to end: a
	// FOR UPDATE without SKIP LOCKED waits for its row locks.
	waitCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := pgx.BeginFunc(waitCtx, env.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(waitCtx, "SELECT id FROM "+env.ob.qualified()+" FOR UPDATE")
		return err
	})
	if err != nil {
		t.Fatalf("waiting for the frozen relay's locks: %v", err)
	}

	other, err := NewOutbox(env.pool, WithOutboxSchema(env.schema)) // another relay, default timeout
	if err != nil {
		t.Fatal(err)
	}
	var second []Message
	if n, err := other.Relay(ctx, 10, func(_ context.Context, msgs []Message) error { second = msgs; return nil }); n != 2 || err != nil {
		t.Fatalf("other relay = (%d, %v), want (2, nil)", n, err)
	}
	close(wake)
	err = <-frozen
	t.Logf("frozen relay: %v", err)
	if !errors.Is(err, idempotency.ErrStoreUnavailable) {
		t.Errorf("frozen relay after waking: error %v, want ErrStoreUnavailable", err)
	}
	if !slices.Equal(msgIDs(first), ids) || !slices.Equal(msgIDs(second), ids) {
		t.Errorf("frozen relay had %v, the other sent %v; want %v both", msgIDs(first), msgIDs(second), ids)
	}
}

// Before Migrate, Enqueue and Relay fail as misconfigured (retrying cannot
// help), and say what to do; arguments that cannot work are refused.
func TestOutboxMisconfigured(t *testing.T) {
	pool := testPool(t)
	schema := testSchema(t, pool)
	ob, err := NewOutbox(pool, WithOutboxSchema(schema))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	check := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, idempotency.ErrStoreMisconfigured) || errors.Is(err, idempotency.ErrStoreUnavailable) ||
			!strings.Contains(err.Error(), "Outbox.Migrate") {
			t.Errorf("%s before Migrate: %v, want ErrStoreMisconfigured saying to run Outbox.Migrate", what, err)
		}
	}
	_, err = ob.Relay(ctx, 0, func(context.Context, []Message) error { return nil })
	check("Relay", err)
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := ob.Enqueue(ctx, tx, "t", nil)
		return err
	})
	check("Enqueue", err)

	// Migrate from several processes at once, and again: no error.
	var wg sync.WaitGroup
	migErrs := make(chan error, 3)
	for range 3 {
		wg.Go(func() { migErrs <- ob.Migrate(ctx) })
	}
	wg.Wait()
	close(migErrs)
	for err := range migErrs {
		if err != nil {
			t.Errorf("concurrent Migrate: %v", err)
		}
	}
	if err := ob.Migrate(ctx); err != nil {
		t.Errorf("Migrate again: %v", err)
	}

	if _, err := ob.Enqueue(ctx, nil, "t", nil); !errors.Is(err, idempotency.ErrInvalidArgument) {
		t.Errorf("Enqueue without a transaction: %v, want ErrInvalidArgument", err)
	}
	if _, err := ob.Relay(ctx, 1, nil); !errors.Is(err, idempotency.ErrInvalidArgument) {
		t.Errorf("Relay without send: %v, want ErrInvalidArgument", err)
	}
	// A nil payload is an empty one.
	env := &outboxEnv{pool: pool, schema: schema, ob: ob}
	env.enqueue(t, "")
	if _, err := ob.Relay(ctx, 1, func(_ context.Context, msgs []Message) error {
		if len(msgs) != 1 || msgs[0].Payload == nil || len(msgs[0].Payload) != 0 {
			t.Errorf("relayed %+v, want one message with an empty payload", msgs)
		}
		return nil
	}); err != nil {
		t.Errorf("Relay: %v", err)
	}
}

// The privileges the documentation names are enough, and a role without
// them is told which it lacks.
func TestOutboxPrivileges(t *testing.T) {
	env := newOutboxEnv(t)
	ctx := context.Background()
	producer, relay := newRole(t, env.pool), newRole(t, env.pool)
	table := env.ob.qualified()
	for _, grant := range []string{
		"GRANT USAGE ON SCHEMA " + env.schema + " TO " + producer + ", " + relay,
		"GRANT INSERT, SELECT (id) ON " + table + " TO " + producer,
		"GRANT SELECT, UPDATE, DELETE ON " + table + " TO " + relay,
	} {
		if _, err := env.pool.Exec(ctx, grant); err != nil {
			t.Fatal(err)
		}
	}
	as := func(role string) *Outbox {
		ob, err := NewOutbox(poolAs(t, env.pool, role), WithOutboxSchema(env.schema))
		if err != nil {
			t.Fatal(err)
		}
		return ob
	}
	prod, rel := as(producer), as(relay)
	enqueue := func(ob *Outbox) error {
		return pgx.BeginFunc(ctx, ob.pool, func(tx pgx.Tx) error {
			_, err := ob.Enqueue(ctx, tx, "t", []byte("p"))
			return err
		})
	}
	send := func(context.Context, []Message) error { return nil }
	if err := enqueue(prod); err != nil {
		t.Errorf("producer's Enqueue: %v", err)
	}
	if n, err := rel.Relay(ctx, 10, send); n != 1 || err != nil {
		t.Errorf("relay's Relay = (%d, %v), want (1, nil)", n, err)
	}
	denied := func(what string, err error) {
		t.Helper()
		if pgErr := (*pgconn.PgError)(nil); !errors.Is(err, idempotency.ErrStoreMisconfigured) ||
			!errors.As(err, &pgErr) || pgErr.Code != "42501" || !strings.Contains(err.Error(), "privileges") {
			t.Errorf("%s: %v, want ErrStoreMisconfigured (42501) naming the privileges", what, err)
		}
	}
	_, err := prod.Relay(ctx, 10, send)
	denied("producer's Relay", err)
	denied("relay's Enqueue", enqueue(rel))
}

func TestOutboxNames(t *testing.T) {
	cases := []struct {
		name  string
		opts  []OutboxOption
		table string // quoted, qualified; "" when invalid
	}{
		{"default", nil, `"idempotency_outbox"`},
		{"schema and table", []OutboxOption{WithOutboxSchema("app"), WithOutboxTable("Out_1")}, `"app"."Out_1"`},
		{"longest table", []OutboxOption{WithOutboxTable(strings.Repeat("t", 63))}, `"` + strings.Repeat("t", 63) + `"`},
		{"table too long", []OutboxOption{WithOutboxTable(strings.Repeat("t", 64))}, ""},
		{"empty table", []OutboxOption{WithOutboxTable("")}, ""},
		{"quote in table", []OutboxOption{WithOutboxTable(`a"b`)}, ""},
		{"dot in schema", []OutboxOption{WithOutboxSchema("a.b")}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ob, newErr := NewOutbox(nil, tc.opts...)
			sql, err := OutboxSchemaSQL(tc.opts...)
			if tc.table == "" {
				if ob != nil || !errors.Is(newErr, idempotency.ErrInvalidArgument) || !errors.Is(newErr, idempotency.ErrStoreMisconfigured) {
					t.Errorf("NewOutbox = (%v, %v), want no outbox, ErrInvalidArgument and ErrStoreMisconfigured", ob, newErr)
				}
				if !errors.Is(err, idempotency.ErrInvalidArgument) {
					t.Errorf("OutboxSchemaSQL error = %v, want ErrInvalidArgument", err)
				}
				return
			}
			if newErr != nil || err != nil {
				t.Fatalf("NewOutbox: %v; OutboxSchemaSQL: %v", newErr, err)
			}
			if got := ob.qualified(); got != tc.table {
				t.Errorf("table = %s, want %s", got, tc.table)
			}
			if !strings.Contains(sql, "CREATE TABLE IF NOT EXISTS "+tc.table+" (") {
				t.Errorf("OutboxSchemaSQL does not create %s:\n%s", tc.table, sql)
			}
		})
	}
}
