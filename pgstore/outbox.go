package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemkit/idempotency"
)

// Defaults of an Outbox.
const (
	// DefaultOutboxTable is the table an Outbox uses unless WithOutboxTable
	// says otherwise.
	DefaultOutboxTable = "idempotency_outbox"
	// DefaultRelayBatch is how many messages one Relay claims when it is
	// given a batch that is not positive.
	DefaultRelayBatch = 100
	// DefaultRelayTimeout bounds each Relay unless WithRelayTimeout says
	// otherwise.
	DefaultRelayTimeout = 30 * time.Second
)

// Message is a message of an Outbox, as Relay hands it to send.
type Message struct {
	// ID names the message in its outbox table, the same on every
	// delivery of it: a consumer that has seen an ID has seen the message.
	// IDs are drawn at Enqueue and grow in the order Enqueue is called, not
	// in the order the transactions that hold them commit; a transaction
	// that rolls back leaves a gap.
	ID int64
	// Topic and Payload are Enqueue's arguments.
	Topic   string
	Payload []byte
	// EnqueuedAt is when Enqueue ran, by the database server's clock.
	EnqueuedAt time.Time
}

// Outbox is a table of messages that commit with the transaction that
// writes them, and a relay that hands them on to another system (a
// message broker, a webhook, an e-mail service) after the commit. A
// command that called the other system itself could do so and then roll
// back, or lose its claim and be run again by a retry: the call would
// happen for a command that never committed, or twice. With the outbox the
// call follows the commit:
//
//   - A transactional command (see TxStore) calls Enqueue with its
//     transaction, so the message commits in the same COMMIT as the
//     command's record and its other writes, or not at all. A command that
//     fails, returns a response the record policy refuses (a 5xx), loses
//     its claim, or is rolled back and run again after a serialization
//     failure leaves no message from the runs that did not commit: a
//     command's messages commit if and only if its record does, once, and
//     a replay enqueues nothing.
//   - Relay, run by any number of processes, claims the oldest unsent
//     messages with SELECT ... FOR UPDATE SKIP LOCKED in a transaction of
//     its own, passes them to send, deletes them and commits. Relays
//     running at the same time claim different messages, so in the normal
//     path no message is sent twice.
//
// Delivery is at least once. A relay that stops after send has delivered
// a batch and before its COMMIT (its process killed, its connection or the
// database gone, its context ended, send returning an error after
// delivering part of the batch) leaves the batch in the table, and the next
// Relay sends it again, with the same IDs. Consumers must therefore
// deduplicate by Message.ID (an INSERT ... ON CONFLICT DO NOTHING into a
// table of IDs seen, in the consumer's own transaction, is enough; with
// several outbox tables feeding one consumer, by table and ID).
//
// Order: each batch holds messages in increasing ID order. Nothing more is
// promised: relays running at the same time deliver interleaved batches, a
// batch that fails is delivered again after later ones, and a transaction
// that drew a lower ID but committed later is relayed after higher IDs.
// Consumers that need an order per entity should carry a version in the
// payload.
//
// A message that send cannot deliver keeps its batch from being deleted:
// Relay returns send's error and the batch is offered again at the next
// Relay. send decides what to do with a message that will never go
// through (park it elsewhere and return nil, say).
//
// The table is created by Migrate (or OutboxSchemaSQL, applied with other
// tools). With the default options it is:
//
//	CREATE TABLE IF NOT EXISTS "idempotency_outbox" (
//	    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
//	    topic       text        NOT NULL,
//	    payload     bytea       NOT NULL,
//	    enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp()
//	);
//
// Besides USAGE on the schema, producers need INSERT on the table and
// SELECT on its id column (Enqueue returns the ID); relays need SELECT,
// UPDATE (for FOR UPDATE) and DELETE. Sent messages are deleted, so the
// table holds only the backlog.
//
// An Outbox is safe for concurrent use. Build it with NewOutbox; the zero
// value is not usable.
type Outbox struct {
	pool    *pgxpool.Pool
	schema  string
	table   string
	timeout time.Duration

	enqueue, claim, remove string // the statements, for this table
}

// OutboxOption configures an Outbox.
type OutboxOption func(*Outbox)

// WithOutboxSchema puts the outbox table in schema, which Migrate creates
// if it does not exist. The name must be a plain identifier (letters,
// digits and underscores, not starting with a digit, at most 63 bytes); it
// is quoted, so it is case-sensitive. The default is no schema: the name
// is resolved through the connection's search_path.
func WithOutboxSchema(schema string) OutboxOption {
	return func(o *Outbox) { o.schema = schema }
}

// WithOutboxTable names the outbox table, DefaultOutboxTable
// ("idempotency_outbox") by default. The name must be a plain identifier
// of at most 63 bytes; it is quoted, so it is case-sensitive.
func WithOutboxTable(table string) OutboxOption {
	return func(o *Outbox) { o.table = table }
}

// WithRelayTimeout bounds each Relay, send included: Relay's context ends
// after d, and the database server ends the relay's session once its
// transaction has sat idle for d (idle_in_transaction_session_timeout), so
// that a relay whose process hangs or freezes in send gives its batch up
// to the other relays (which send it again: at least once). Choose d longer
// than send takes for a batch. d <= 0 keeps DefaultRelayTimeout (30s).
func WithRelayTimeout(d time.Duration) OutboxOption {
	return func(o *Outbox) {
		if d > 0 {
			o.timeout = d
		}
	}
}

// NewOutbox returns an Outbox on pool, which stays the caller's. Like New,
// it checks only what it can without the database: an invalid
// WithOutboxSchema or WithOutboxTable name is an error wrapping
// idempotency.ErrStoreMisconfigured and idempotency.ErrInvalidArgument.
// The pool must reach the database the commands' transactions write to.
func NewOutbox(pool *pgxpool.Pool, opts ...OutboxOption) (*Outbox, error) {
	o := newOutbox(opts)
	if err := o.checkNames(); err != nil {
		return nil, err
	}
	o.pool = pool
	t := o.qualified()
	o.enqueue = "INSERT INTO " + t + " (topic, payload) VALUES ($1, $2) RETURNING id"
	o.claim = "SELECT id, topic, payload, enqueued_at FROM " + t + " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
	o.remove = "DELETE FROM " + t + " WHERE id = ANY($1)"
	return o, nil
}

func newOutbox(opts []OutboxOption) *Outbox {
	o := &Outbox{table: DefaultOutboxTable, timeout: DefaultRelayTimeout}
	for _, opt := range opts {
		opt(o)
	}
	return o
}

func (o *Outbox) checkNames() error {
	if err := checkOutboxName("table", o.table); err != nil {
		return err
	}
	if o.schema != "" {
		return checkOutboxName("schema", o.schema)
	}
	return nil
}

// checkOutboxName refuses a name that is not a plain identifier of at most
// 63 bytes; what is "table" or "schema", for the message.
func checkOutboxName(what, name string) error {
	if identifier.MatchString(name) && len(name) <= 63 {
		return nil
	}
	return fmt.Errorf("pgstore: %w: %w: outbox %s name %q: want letters, digits and underscores, at most 63 bytes",
		idempotency.ErrStoreMisconfigured, idempotency.ErrInvalidArgument, what, name)
}

// qualified is the table's quoted, possibly schema-qualified name.
func (o *Outbox) qualified() string {
	if o.schema == "" {
		return pgx.Identifier{o.table}.Sanitize()
	}
	return pgx.Identifier{o.schema, o.table}.Sanitize()
}

func (o *Outbox) statements() []string {
	var stmts []string
	if o.schema != "" {
		stmts = append(stmts, "CREATE SCHEMA IF NOT EXISTS "+pgx.Identifier{o.schema}.Sanitize())
	}
	return append(stmts, "CREATE TABLE IF NOT EXISTS "+o.qualified()+` (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic       text        NOT NULL,
    payload     bytea       NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp()
)`)
}

// OutboxSchemaSQL returns the SQL that Migrate runs for an Outbox
// configured with opts, for users who apply schema changes themselves.
// Every statement is idempotent. It returns the error NewOutbox returns for
// an invalid name.
func OutboxSchemaSQL(opts ...OutboxOption) (string, error) {
	o := newOutbox(opts)
	if err := o.checkNames(); err != nil {
		return "", err
	}
	return strings.Join(o.statements(), ";\n\n") + ";\n", nil
}

// Migrate creates the outbox table (and its schema, with
// WithOutboxSchema) unless it exists. It is safe to run from several
// processes at once. Errors wrap idempotency.ErrStoreMisconfigured when
// the role may not create them, idempotency.ErrStoreUnavailable otherwise.
func (o *Outbox) Migrate(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, o.pool, func(tx pgx.Tx) error {
		// The Store's migration lock: CREATE ... IF NOT EXISTS run at once
		// by two sessions can fail on the system catalogs.
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(migrateLock)); err != nil {
			return err
		}
		stmts := o.statements()
		if o.schema != "" {
			var exists bool
			if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)", o.schema).Scan(&exists); err != nil {
				return err
			}
			if exists { // not created again, so a role with CREATE on it suffices
				stmts = stmts[1:]
			}
		}
		for _, stmt := range stmts {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return o.fail("migrate outbox", err)
	}
	return nil
}

// Enqueue writes a message in tx, and returns its ID. The message is
// relayed only once tx commits; if tx rolls back, it never existed. In a
// transactional command, tx is the command's (TxFromContext, or Run's
// argument), so the message commits with the command's record; outside
// such a command TxFromContext has no transaction, and Enqueue with a nil
// tx fails with idempotency.ErrInvalidArgument. Any other transaction
// works too: the message then commits with whatever else tx writes.
//
// Errors wrap idempotency.ErrStoreMisconfigured when the table does not
// exist or the role may not write it, idempotency.ErrStoreUnavailable
// otherwise, and keep the *pgconn.PgError for errors.As. A failed Enqueue
// aborts tx, as a failed statement does in PostgreSQL: a command should
// return the error.
func (o *Outbox) Enqueue(ctx context.Context, tx pgx.Tx, topic string, payload []byte) (int64, error) {
	if tx == nil {
		return 0, fmt.Errorf("pgstore: enqueue: %w: no transaction", idempotency.ErrInvalidArgument)
	}
	if payload == nil {
		payload = []byte{}
	}
	var id int64
	if err := tx.QueryRow(ctx, o.enqueue, topic, payload).Scan(&id); err != nil {
		return 0, o.fail("enqueue", err)
	}
	return id, nil
}

// Relay sends one batch: in a transaction of its own, it claims up to batch
// unsent messages, the lowest IDs first, skipping those other relays hold
// (FOR UPDATE SKIP LOCKED); calls send with them, in increasing ID order;
// and, when send returns nil, deletes them and commits. It returns how many
// messages it sent and deleted: 0 with a nil error when there were none to
// claim. batch <= 0 means DefaultRelayBatch.
//
// send is called only with a non-empty batch. An error from send is
// returned, wrapped, and the batch stays for the next Relay. Any error
// after send has returned nil (the DELETE or the COMMIT failed, its reply
// was lost, ctx ended) means the batch may be sent again: delivery is at
// least once, and consumers deduplicate by Message.ID. Relay is bounded by
// WithRelayTimeout on top of ctx. Database failures wrap
// idempotency.ErrStoreUnavailable, or idempotency.ErrStoreMisconfigured
// (no table: run Migrate; missing privileges).
//
// Relay does not wait for messages: call it in a loop, again at once while
// it returns a full batch, and after a pause when it returns fewer.
func (o *Outbox) Relay(ctx context.Context, batch int, send func(ctx context.Context, msgs []Message) error) (int, error) {
	if send == nil {
		return 0, fmt.Errorf("pgstore: relay: %w: send is nil", idempotency.ErrInvalidArgument)
	}
	if batch <= 0 {
		batch = DefaultRelayBatch
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	// READ COMMITTED whatever the pool's default: a row another relay
	// deleted after this statement's snapshot is then skipped, not a
	// serialization failure.
	tx, err := o.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return 0, o.fail("relay", err)
	}
	defer rollback(tx) // after a COMMIT, a no-op
	msgs, err := o.claimBatch(ctx, tx, batch)
	if err != nil || len(msgs) == 0 {
		return 0, err
	}
	if err := send(ctx, msgs); err != nil {
		return 0, fmt.Errorf("pgstore: relay: send: %w", err)
	}
	ids := make([]int64, len(msgs))
	for i, m := range msgs {
		ids[i] = m.ID
	}
	if _, err := tx.Exec(ctx, o.remove, ids); err != nil {
		return 0, o.fail("relay", fmt.Errorf("sent, not deleted (the batch will be sent again): %w", err))
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, o.fail("relay", fmt.Errorf("sent, commit failed (the batch may be sent again): %w", err))
	}
	return len(msgs), nil
}

// claimBatch bounds how long tx may sit idle, then locks and reads up to
// batch messages, in one round trip.
func (o *Outbox) claimBatch(ctx context.Context, tx pgx.Tx, batch int) ([]Message, error) {
	b := &pgx.Batch{}
	ms := max(1, (o.timeout+time.Millisecond-1)/time.Millisecond) // 0 would mean no bound
	b.Queue("SELECT set_config('idle_in_transaction_session_timeout', $1, true)", strconv.FormatInt(int64(ms), 10))
	b.Queue(o.claim, batch)
	br := tx.SendBatch(ctx, b)
	var msgs []Message
	_, err := br.Exec()
	if err == nil {
		var rows pgx.Rows
		if rows, err = br.Query(); err == nil {
			msgs, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (Message, error) {
				var m Message
				err := row.Scan(&m.ID, &m.Topic, &m.Payload, &m.EnqueuedAt)
				return m, err
			})
		}
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, o.fail("relay", err)
	}
	return msgs, nil
}

// fail wraps err, the failure of op, as Store.fail does, with advice for
// the outbox's table.
func (o *Outbox) fail(op string, err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		advice := ""
		code := pgErr.Code
		switch {
		case code == "3D000" || strings.HasPrefix(code, "28"):
			advice = "the server refused the connection's database or role: check the connection settings"
		case code == "42P01" || code == "3F000":
			advice = "outbox table " + o.qualified() + " (or its schema) does not exist: run Outbox.Migrate or apply OutboxSchemaSQL"
		case code == "42501":
			advice = "the database role lacks privileges on " + o.qualified() +
				": producers need INSERT and SELECT (id), relays SELECT, UPDATE and DELETE (and USAGE on the schema)"
		case strings.HasPrefix(code, "42"):
			advice = "outbox table " + o.qualified() + " does not match the schema this version of pgstore uses: compare it with OutboxSchemaSQL"
		}
		if advice != "" {
			return fmt.Errorf("pgstore: %s: %w: %s: %w", op, idempotency.ErrStoreMisconfigured, advice, err)
		}
	}
	return fmt.Errorf("pgstore: %s: %w: %w", op, idempotency.ErrStoreUnavailable, err)
}
