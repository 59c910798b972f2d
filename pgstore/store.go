package pgstore

import (
	"context"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
)

// Defaults of a Store.
const (
	// DefaultTable is the table a Store uses unless WithTable says otherwise.
	DefaultTable = "idempotency_records"
	// DefaultReapBatch is how many rows one DeleteExpired statement removes
	// when it is given a batch that is not positive.
	DefaultReapBatch = 1000
	// DefaultTimeout bounds each Lookup, Store, Begin, Complete, Release and
	// Renew unless WithTimeout says otherwise.
	DefaultTimeout = 5 * time.Second
)

// maxAttempts bounds how often a statement is run again after a
// serialization failure (40001), a deadlock (40P01), a unique violation
// (23505) or, for Begin, a snapshot older than the row it lost a race for.
const maxAttempts = 8

// Record states, in the state column.
const (
	stateReleased  = 0 // the claim was released: the row is as good as absent
	stateInFlight  = 1 // a claim in flight; expires_at is the end of its lease
	stateCompleted = 2 // a recorded response; expires_at is stored_at + ttl
)

// Store is an idempotency.ClaimStore on PostgreSQL. It is safe for
// concurrent use, by many goroutines and by many processes sharing the
// table. Build it with New; create its table with Migrate (or apply
// SchemaSQL yourself). The zero value is not usable.
type Store struct {
	pool       *pgxpool.Pool
	schema     string
	table      string
	secret     []byte
	hasher     *driver.RecordHasher
	defaultTTL time.Duration
	timeout    time.Duration
	unlogged   bool
	reapEvery  time.Duration
	reapBatch  int
	onReapErr  func(error)

	q queries // the statements, built once for this table

	closeOnce sync.Once
	stopReap  context.CancelFunc // nil without a reaper
	reapDone  chan struct{}
}

// Option configures a Store.
type Option func(*Store)

// WithSchema puts the table and its sequence in schema, which Migrate
// creates if it does not exist. The name must be a plain identifier
// (letters, digits and underscores, not starting with a digit, at most 63
// bytes; New rejects any other); it is quoted, so it is case-sensitive.
// The default is no schema: names are resolved through the connection's
// search_path, which normally means "public".
func WithSchema(schema string) Option {
	return func(s *Store) { s.schema = schema }
}

// WithTable names the table, DefaultTable ("idempotency_records") by
// default. Its fence sequence is named table+"_fence_seq", its expiry
// index table+"_expires_at_idx" and its functions table+"_claim",
// table+"_try_claim", table+"_claim_tx" and table+"_record_tx".
// The name must be a plain identifier (letters, digits and underscores,
// not starting with a digit) of at most 48 bytes, so that those names fit
// PostgreSQL's 63-byte limit (New rejects any other); it is quoted, so it
// is case-sensitive.
func WithTable(table string) Option {
	return func(s *Store) { s.table = table }
}

// WithSecret sets the HMAC key that names records (see
// driver.RecordKey): with a secret, whoever can write keys but does
// not know the secret cannot make two (key, identity) pairs share a record.
// Every replica sharing a table must use the same secret; changing it
// orphans the records stored under the old one (the reaper removes them
// when they expire). The default is no secret: plain SHA-256 under a fixed
// prefix, which is still injective and never stores raw keys or identities.
func WithSecret(secret []byte) Option {
	return func(s *Store) { s.secret = append([]byte(nil), secret...) }
}

// WithDefaultTTL sets the TTL of records stored or completed without one.
// d <= 0 keeps idempotency.DefaultTTL (24h).
func WithDefaultTTL(d time.Duration) Option {
	return func(s *Store) {
		if d > 0 {
			s.defaultTTL = d
		}
	}
}

// WithTimeout bounds how long each Lookup, Store, Begin, Complete, Release
// and Renew may take, retries included, on top of the caller's context:
// pgx has no read timeout of its own, so without a bound a connection that
// hangs (a stalled network, a frozen server) holds the request until the
// caller gives up, instead of failing with ErrStoreUnavailable. When the
// bound cuts a Begin or Complete short, its effect may or may not have been
// committed, as with a reply lost on the network: the claim protocol
// recovers from both (the lease runs out; Complete is idempotent).
// Migrate and DeleteExpired are bounded by their context only. d <= 0 keeps
// DefaultTimeout (5s): the engine records responses and releases claims with
// contexts that the caller's cancellation does not reach, so every call
// needs a bound of its own.
func WithTimeout(d time.Duration) Option {
	return func(s *Store) {
		if d > 0 {
			s.timeout = d
		}
	}
}

// WithUnlogged makes Migrate create the table UNLOGGED. The default, false,
// is a normal (logged) table.
//
// An unlogged table skips the write-ahead log, so writes are cheaper, but
// PostgreSQL empties it after any crash of the server and does not
// replicate it to standbys: after a crash or a failover every claim and
// every recorded response is gone, and retries of commands that already ran
// run them again. Choose it only when a repeated execution after a database
// crash is acceptable. It only affects a table Migrate creates: an existing
// table keeps its persistence (ALTER TABLE ... SET UNLOGGED/LOGGED changes
// it, rewriting the table). The fence sequence is always logged, so fences
// stay monotonic across crashes either way.
func WithUnlogged(unlogged bool) Option {
	return func(s *Store) { s.unlogged = unlogged }
}

// WithReaper starts a background goroutine that deletes expired rows every
// interval, in statements of at most batch rows (batch <= 0 means
// DefaultReapBatch), until Close is called. A pass that fills a whole batch
// is followed at once by another. Several replicas may each run a reaper on
// the same table: DeleteExpired skips rows another reaper holds. The
// default is no reaper (interval <= 0): expired rows are ignored by every
// read, and something must call DeleteExpired to reclaim their space.
func WithReaper(interval time.Duration, batch int) Option {
	return func(s *Store) {
		s.reapEvery, s.reapBatch = interval, batch
	}
}

// WithReaperErrorHandler sets a function the background reaper calls with
// the errors of DeleteExpired (it tries again at the next interval): each
// error of a store that is unavailable, and each misconfiguration
// (idempotency.ErrStoreMisconfigured, such as missing privileges) once, not
// again at every interval until a pass succeeds or the error changes. It
// is not called for a table or schema that does not exist yet (a reaper
// runs from New, and Migrate may come after). It is called from the
// reaper's goroutine. nil, the default, discards the errors.
func WithReaperErrorHandler(f func(error)) Option {
	return func(s *Store) { s.onReapErr = f }
}

// New returns a Store on pool. The pool is the caller's: Close does not
// close it. With WithReaper, New starts the reaper goroutine; call Close to
// stop it.
//
// New checks what it can without the database: an invalid WithSchema or
// WithTable name is an error wrapping both idempotency.ErrStoreMisconfigured
// and idempotency.ErrInvalidArgument, and no Store. New does not touch the
// database; what only the database knows (the table does not exist yet, the
// role lacks privileges) is reported by Migrate, which is meant to run at
// start-up, and by every call after it, with errors wrapping
// idempotency.ErrStoreMisconfigured (see the package documentation).
func New(pool *pgxpool.Pool, opts ...Option) (*Store, error) {
	s := &Store{
		pool:       pool,
		table:      DefaultTable,
		defaultTTL: idempotency.DefaultTTL,
		timeout:    DefaultTimeout,
	}
	for _, o := range opts {
		o(s)
	}
	if err := s.checkNames(); err != nil {
		return nil, err
	}
	s.hasher = driver.NewRecordHasher(s.secret)
	if s.reapBatch <= 0 {
		s.reapBatch = DefaultReapBatch
	}
	s.q = buildQueries(s.names())
	if s.reapEvery > 0 {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopReap, s.reapDone = cancel, make(chan struct{})
		go s.reap(ctx)
	}
	return s, nil
}

// Close stops the background reaper, if there is one, and waits for it to
// finish. It does not close the pool. It is safe to call more than once
// and always returns nil (it satisfies io.Closer).
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if s.stopReap != nil {
			s.stopReap()
			<-s.reapDone
		}
	})
	return nil
}

var identifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// maxTableLen leaves room for the longest suffix, "_expires_at_idx", under
// PostgreSQL's 63-byte identifiers.
const maxTableLen = 63 - len("_expires_at_idx")

func (s *Store) checkNames() error {
	if !identifier.MatchString(s.table) || len(s.table) > maxTableLen {
		return fmt.Errorf("pgstore: %w: %w: table name %q: want letters, digits and underscores, at most %d bytes",
			idempotency.ErrStoreMisconfigured, idempotency.ErrInvalidArgument, s.table, maxTableLen)
	}
	if s.schema != "" && (!identifier.MatchString(s.schema) || len(s.schema) > 63) {
		return fmt.Errorf("pgstore: %w: %w: schema name %q: want letters, digits and underscores, at most 63 bytes",
			idempotency.ErrStoreMisconfigured, idempotency.ErrInvalidArgument, s.schema)
	}
	return nil
}

// names returns the quoted names of the schema, table, sequence and index.
func (s *Store) names() names {
	qualify := func(name string) string {
		if s.schema == "" {
			return pgx.Identifier{name}.Sanitize()
		}
		return pgx.Identifier{s.schema, name}.Sanitize()
	}
	n := names{
		table:    qualify(s.table),
		sequence: qualify(s.table + "_fence_seq"),
		index:    pgx.Identifier{s.table + "_expires_at_idx"}.Sanitize(),
		claim:    qualify(s.table + "_claim"),
		tryClaim: qualify(s.table + "_try_claim"),
		claimTx:  qualify(s.table + "_claim_tx"),
		recordTx: qualify(s.table + "_record_tx"),
		unlogged: s.unlogged,
	}
	if s.schema != "" {
		n.schema = pgx.Identifier{s.schema}.Sanitize()
	}
	return n
}

// recordID names the record of (key, identity) in the id column.
func (s *Store) recordID(key, identity string) []byte {
	id := s.hasher.Sum(key, identity)
	return id[:]
}

// bound applies the store's timeout to ctx, unless ctx ends sooner anyway.
func (s *Store) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= s.timeout {
		return ctx, noCancel
	}
	return context.WithTimeout(ctx, s.timeout)
}

func noCancel() {}

// Lookup implements idempotency.Store. It reads one row and returns a hit
// only for a completed record whose expires_at is still ahead of the
// server's clock. A miss, a claim in flight and any failure return
// (nil, false).
func (s *Store) Lookup(ctx context.Context, key, identity string) (*idempotency.Cached, bool) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var r record
	err := s.pool.QueryRow(ctx, s.q.lookup, s.recordID(key, identity)).
		Scan(&r.status, &r.body, &r.header, &r.tombstone, &r.fingerprint, &r.storedAt, &r.ttl)
	if err != nil { // pgx.ErrNoRows included: a miss
		return nil, false
	}
	c, err := r.cached()
	if err != nil {
		return nil, false
	}
	return c, true
}

// Store implements idempotency.Store: one INSERT ... ON CONFLICT that
// replaces whatever the row held, a claim in flight included (its holder
// then gets ErrLeaseLost). A zero c.StoredAt becomes the server's
// clock_timestamp() and a TTL <= 0 the store's default. It returns an error
// wrapping idempotency.ErrInvalidKey for a key that fails ValidateKey.
func (s *Store) Store(ctx context.Context, key, identity string, c idempotency.Cached) error {
	if err := idempotency.ValidateKey(key); err != nil {
		return fmt.Errorf("pgstore: store: %w", err)
	}
	header, err := encodeHeader(c.Header)
	if err != nil {
		return fmt.Errorf("pgstore: store: %w", err)
	}
	args := []any{s.recordID(key, identity), int32(c.Status), []byte(c.WireBody), header,
		c.Tombstone, c.Fingerprint, storedAt(c.StoredAt), int64(s.ttl(c.TTL))}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	for range maxAttempts {
		_, err = s.pool.Exec(ctx, s.q.store, args...)
		if !retryable(err) {
			break
		}
	}
	if err != nil {
		return s.fail("store", err)
	}
	return nil
}

func (s *Store) ttl(d time.Duration) time.Duration {
	if d <= 0 {
		return s.defaultTTL
	}
	return d
}

// storedAt is the stored_at parameter: NULL (the server's clock) when t is zero.
func storedAt(t time.Time) pgtype.Timestamptz {
	return pgtype.Timestamptz{Time: t, Valid: !t.IsZero()}
}

// record is the response part of a row, as scanned.
type record struct {
	status      pgtype.Int4
	body        []byte
	header      []byte
	tombstone   pgtype.Bool
	fingerprint pgtype.Text
	storedAt    pgtype.Timestamptz
	ttl         pgtype.Int8
}

func (r *record) cached() (*idempotency.Cached, error) {
	h, err := decodeHeader(r.header)
	if err != nil {
		return nil, err
	}
	return &idempotency.Cached{
		Status:      int(r.status.Int32),
		WireBody:    r.body,
		StoredAt:    r.storedAt.Time,
		TTL:         time.Duration(r.ttl.Int64),
		Header:      h,
		Fingerprint: r.fingerprint.String,
		Tombstone:   r.tombstone.Bool,
	}, nil
}

var _ idempotency.ClaimStore = (*Store)(nil)
