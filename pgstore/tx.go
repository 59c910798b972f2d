package pgstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
)

// DefaultMaxRuns is how many times a transactional command runs in one
// Engine.Do when its transactions keep ending in serialization failures or
// deadlocks, unless WithMaxRuns says otherwise.
const DefaultMaxRuns = 4

// ErrNotCommitted: a transactional command's transaction did not commit,
// so nothing it wrote through it exists and its record was not written.
// Engine.Do returns it inside a *idempotency.StoreError (Op "commit"),
// which adapters answer like an unavailable store (503: retry with the same
// key). It also wraps idempotency.ErrLeaseLost when the claim was lost
// (the server ended the transaction after it sat idle for a lease, or the
// record was taken while it ran).
var ErrNotCommitted = errors.New("pgstore: the command's transaction did not commit")

// errNoTx is what Run's command gets from an engine whose store is not a
// TxStore.
var errNoTx = errors.New("pgstore: no transaction: the Engine's store is not a TxStore (use Store.Transactional)")

// TxStore is the transactional view of a Store: an idempotency.TxStore.
// An Engine on it runs every command it claims inside a PostgreSQL
// transaction that holds the claim; the command gets the transaction with
// TxFromContext (or as an argument, with Run), and what it writes through
// it commits in the same COMMIT as its record, or not at all. Build it with
// Store.Transactional. Lookup and Store are the Store's.
//
// How a claim works. Begin reads the record, as an ordinary Begin does: a
// replay, a mismatch or a plain claim in flight is answered from that one
// read. Otherwise it opens a transaction on a connection of the pool,
// takes a transaction-level advisory lock on the record (the claim: no
// other Begin, transactional or not, can claim the key while the lock is
// held, and every one that tries is answered "in flight" at once, not after
// waiting on a lock) and reads the row again under it. The command then
// runs; Complete writes the record and sends COMMIT, in one round trip.
// Nothing is written before that: the claim costs no commit of its own,
// and a process that dies at any instant leaves no claim behind, since
// PostgreSQL rolls the transaction back and frees the lock when the
// connection ends. The retry then runs at once, without waiting for a lease.
//
// What differs from the plain Store:
//
//   - The lease bounds how long the transaction may sit idle: Begin sets
//     idle_in_transaction_session_timeout to it for the transaction, so a
//     holder that stops talking to the database (a frozen process, a
//     network partition) has its session ended by the server, its writes
//     rolled back and the key freed. A live holder keeps its claim however
//     long its command runs: the Engine's heartbeat calls Renew every third
//     of the lease, which runs a statement on the claim's connection when
//     the command is not using it (restarting the server's idle timer), and
//     otherwise asks the server, on another connection, whether the
//     holder's session still holds the lock.
//   - A request with another payload, arriving while the command runs, is
//     answered "in flight" by other processes, which cannot see the
//     uncommitted claim, and with ErrMismatch once the record is committed.
//   - Each command holds one connection of the pool from Begin to COMMIT;
//     size the pool for the commands that run at once, plus one for reads.
//   - At REPEATABLE READ or SERIALIZABLE (WithIsolation), a claim made just
//     as the previous holder commits may not see its record; it then fails
//     at the record's write with a serialization failure, which rolls back
//     everything it did, and the next run finds the record.
//
// A failed COMMIT, or one whose reply was lost, is never answered with the
// command's response: Complete learns what happened by waiting for the
// record's lock and reading the record, and the Engine returns an error
// (a *idempotency.StoreError) unless the commit is found.
type TxStore struct {
	*storeBase
	opts    pgx.TxOptions
	maxRuns int
}

// storeBase is Store under another name, so that a TxStore's embedded
// Store is not a field named Store, which would hide the method.
type storeBase = Store

// TxOption configures a TxStore.
type TxOption func(*TxStore)

// WithIsolation sets the isolation level of the commands' transactions.
// The default is the server's default (READ COMMITTED unless configured).
func WithIsolation(level pgx.TxIsoLevel) TxOption {
	return func(t *TxStore) { t.opts.IsoLevel = level }
}

// WithMaxRuns bounds how many times one Engine.Do runs a command whose
// transactions end in serialization failures (40001) or deadlocks (40P01):
// each such failure rolls the run back and runs it again in a fresh
// transaction under the same claim, up to n runs. n <= 0 keeps
// DefaultMaxRuns.
func WithMaxRuns(n int) TxOption {
	return func(t *TxStore) {
		if n > 0 {
			t.maxRuns = n
		}
	}
}

// Transactional returns the transactional view of s (see TxStore). It
// shares s's table, options and pool; its tables come from the same
// Migrate.
func (s *Store) Transactional(opts ...TxOption) *TxStore {
	t := &TxStore{storeBase: s, maxRuns: DefaultMaxRuns}
	for _, o := range opts {
		o(t)
	}
	return t
}

// TxFromContext returns the transaction of the transactional command
// running with ctx: the ctx an Engine on a TxStore gives the command (and
// what idemhttp and the dispatcher derive from it: a handler's request
// context). Its writes commit with the command's record. Commit and
// Rollback on it return an error; savepoints (Begin) work as usual. Use
// its own methods, not the connection under it (Conn), which the Engine's
// heartbeat also uses between the command's statements. ok is false
// outside such a command.
func TxFromContext(ctx context.Context) (pgx.Tx, bool) {
	tok, ok := idempotency.TokenFromContext(ctx)
	if !ok {
		return nil, false
	}
	c := claimOf(tok)
	if c == nil {
		return nil, false
	}
	tx := c.cmd.Load()
	return tx, tx != nil
}

// Run is Engine.Do for a command that writes through its transaction:
// fn gets the transaction its record commits in. e must be an Engine on a
// TxStore; otherwise fn does not run and Do's error says so.
func Run(ctx context.Context, e *idempotency.Engine, req idempotency.Request,
	fn func(ctx context.Context, tx pgx.Tx) (idempotency.Response, error)) (idempotency.Result, error) {
	return e.Do(ctx, req, func(ctx context.Context) (idempotency.Response, error) {
		tx, ok := TxFromContext(ctx)
		if !ok {
			return idempotency.Response{}, errNoTx
		}
		return fn(ctx, tx)
	})
}

// The transactional claims held by this process, by owner.
var txClaims sync.Map // string → *txClaim

func claimOf(tok idempotency.Token) *txClaim {
	v, ok := txClaims.Load(tok.Owner)
	if !ok {
		return nil
	}
	c := v.(*txClaim)
	if c.tok != tok {
		return nil
	}
	return c
}

// Where a transactional claim's transaction is.
const (
	txOpen       = iota // running the command
	txCommitted         // its record committed
	txRolledBack        // ended without committing
	txUnknown           // COMMIT sent, its reply lost
)

// txClaim is one transactional claim: its connection and transaction.
type txClaim struct {
	s    *TxStore
	tok  idempotency.Token
	id   []byte
	lock int64
	fp   string
	idle int32 // ms

	cmd    atomic.Pointer[cmdTx] // the current run's, for TxFromContext
	seen   atomic.Bool           // a conflict in this run
	pid    atomic.Uint32         // the holder's backend, for Renew
	purged atomic.Bool           // its session ended by Store.Purge
	act    activity

	mu       sync.Mutex // Complete, Release and Again
	conn     *pgxpool.Conn
	tx       pgx.Tx
	state    int
	rerun    bool  // rolled back by a conflict another run can get past
	notDone  error // why it did not commit, once txRolledBack
	finished bool  // unregistered
	watchdog *time.Timer
}

// Begin implements idempotency.ClaimStore (see TxStore for how).
func (t *TxStore) Begin(ctx context.Context, key, identity string, req idempotency.ClaimRequest) (idempotency.Claim, error) {
	if err := driver.ValidateBegin(key, req); err != nil {
		return idempotency.Claim{}, fmt.Errorf("pgstore: %w", err)
	}
	if v, ok := txClaims.Load(req.Owner); ok { // the caller's own claim, asked again
		c := v.(*txClaim)
		if c.tok.Key == key && c.tok.Identity == identity {
			c.mu.Lock()
			open := c.state == txOpen && !c.finished && !c.purged.Load()
			c.mu.Unlock()
			if open {
				return idempotency.Claim{Status: idempotency.ClaimAcquired, Token: c.tok}, nil
			}
		}
	}
	id := t.recordID(key, identity)
	ctx, cancel := t.bound(ctx)
	defer cancel()
	var r beginRow
	if _, err := t.queryBegin(ctx, &r, req.Fingerprint, t.q.peek, id); err != nil {
		return idempotency.Claim{}, t.fail("begin", err)
	}
	if r.live() {
		return t.answer(&r, key, identity, req)
	}
	c := &txClaim{s: t, id: id, lock: lockOf(id), fp: req.Fingerprint, idle: idleMillis(req.Lease),
		tok: idempotency.Token{Key: key, Identity: identity, Owner: req.Owner}}
	c.watchdog = time.AfterFunc(time.Hour, c.watch)
	c.watchdog.Stop()
	r, acquired, err := c.open(ctx, nil)
	if err != nil {
		return idempotency.Claim{}, t.fail("begin", err)
	}
	if !acquired {
		if r.live() {
			return t.answer(&r, key, identity, req)
		}
		return idempotency.Claim{Status: idempotency.ClaimInFlight}, nil
	}
	txClaims.Store(req.Owner, c)
	return idempotency.Claim{Status: idempotency.ClaimAcquired, Token: c.tok}, nil
}

// answer is Begin's answer from a live row.
func (t *TxStore) answer(r *beginRow, key, identity string, req idempotency.ClaimRequest) (idempotency.Claim, error) {
	r.fence.Valid = false // never the caller's: its claims have no row until they commit
	cl, ok, err := r.claim(key, identity, req)
	if err != nil {
		return idempotency.Claim{}, t.fail("begin", err)
	}
	if !ok {
		return idempotency.Claim{Status: idempotency.ClaimInFlight}, nil
	}
	return cl, nil
}

// lockOf is the advisory lock of record id: lockKey, in Go.
func lockOf(id []byte) int64 { return int64(binary.BigEndian.Uint64(id[:8])) }

// idleMillis is the lease in whole milliseconds, at least 1.
func idleMillis(lease time.Duration) int32 {
	ms := (lease + time.Millisecond - 1) / time.Millisecond
	return int32(max(1, min(ms, math.MaxInt32)))
}

// open acquires a connection, begins a transaction and claims the key in
// it (claimTxSQL), drawing a fence unless fence is given. When the key is
// not acquired it rolls back and gives the connection back; r is then the
// row if the key holds a live one.
func (c *txClaim) open(ctx context.Context, fence *int64) (r beginRow, acquired bool, err error) {
	conn, err := c.s.pool.Acquire(ctx)
	if err != nil {
		return r, false, err
	}
	tx, err := conn.BeginTx(ctx, c.s.opts)
	if err != nil {
		conn.Release()
		return r, false, err
	}
	var f any
	if fence != nil {
		f = *fence
	}
	var found bool
	rows, err := tx.Query(ctx, c.s.q.claimTx, c.id, f, c.idle)
	if err == nil {
		found, err = readBeginRow(rows, &r, c.fp)
	}
	if err != nil || !found || !r.fence.Valid {
		rollback(tx)
		conn.Release()
		return r, false, err
	}
	if fence == nil {
		c.tok.Fence = uint64(r.fence.Int64)
	}
	c.conn, c.tx, c.state = conn, tx, txOpen
	c.seen.Store(false)
	c.pid.Store(conn.Conn().PgConn().PID())
	c.act.mu.Lock()
	c.act.last = time.Now()
	c.act.mu.Unlock()
	c.cmd.Store(&cmdTx{Tx: tx, seen: &c.seen, act: &c.act, root: true})
	c.watchdog.Reset(c.idleLimit())
	return r, true, nil
}

// idleLimit is how long the transaction may sit idle before the watchdog
// gives its connection up: the lease the server enforces, and a little more.
func (c *txClaim) idleLimit() time.Duration {
	d := time.Duration(c.idle) * time.Millisecond
	return d + d/8 + 10*time.Millisecond
}

// watch is the claim's watchdog. A claim that nobody completes or releases
// (its holder abandoned it) has its session ended by the server once the
// transaction sits idle for the lease; the watchdog then closes the
// connection, so that it does not stay out of the pool for good, and
// forgets the claim.
func (c *txClaim) watch() {
	if !c.mu.TryLock() { // Complete, Release or Again is at work on it
		c.watchdog.Reset(c.idleLimit())
		return
	}
	defer c.mu.Unlock()
	if c.state != txOpen || c.conn == nil {
		return
	}
	if idle, limit := c.act.idleFor(), c.idleLimit(); idle < limit {
		c.watchdog.Reset(limit - idle)
		return
	}
	c.state = txRolledBack
	c.notDone = fmt.Errorf("%w: %w: the transaction sat idle for longer than the lease", ErrNotCommitted, idempotency.ErrLeaseLost)
	c.drop(true)
	c.finish()
}

// rollback rolls the claim's transaction back, once no renewal uses it.
func (c *txClaim) rollback() error {
	c.act.enter()
	defer c.act.leave()
	return rollback(c.tx)
}

// rollback ends tx, on its own bound: a connection that cannot say
// ROLLBACK is closed by pgx, which ends the transaction on the server.
func rollback(tx pgx.Tx) error {
	ctx, cancel := context.WithTimeout(context.Background(), DefaultTimeout)
	defer cancel()
	return tx.Rollback(ctx)
}

// drop gives the connection back (after a COMMIT or ROLLBACK; the pool
// destroys one that is closed or still in a transaction) or, when what
// happened on it is unknown, closes it, so that the server rolls back
// whatever it still holds.
func (c *txClaim) drop(close bool) {
	if c.conn == nil {
		return
	}
	c.cmd.Store(nil)
	c.watchdog.Stop()
	if close {
		_ = c.conn.Hijack().PgConn().Conn().Close()
	} else {
		c.conn.Release()
	}
	c.conn, c.tx = nil, nil
}

// finish forgets the claim: its execution is over.
func (c *txClaim) finish() {
	if !c.finished {
		c.finished = true
		txClaims.CompareAndDelete(c.tok.Owner, c)
	}
}

// Complete implements idempotency.ClaimStore: for a transactional claim it
// writes the record in the claim's transaction (recordTxFunction) and
// commits, in one round trip. It returns nil once the commit is known to
// have happened (also when repeated); an error wrapping ErrNotCommitted
// when it is known not to have happened; and one wrapping
// idempotency.ErrStoreUnavailable when the reply was lost and the record
// could not be read to learn which (the Engine asks again). For a token
// that holds no transactional claim of this process, it is Store.Complete.
func (t *TxStore) Complete(ctx context.Context, tok idempotency.Token, c idempotency.Cached) error {
	cl := claimOf(tok)
	if cl == nil {
		return t.storeBase.Complete(ctx, tok, c)
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	switch cl.state {
	case txCommitted:
		return nil
	case txRolledBack:
		return cl.notDone
	case txUnknown:
		return cl.resolve(ctx)
	}
	if cl.purged.Load() {
		cl.state = txRolledBack
		cl.notDone = errPurged
		cl.drop(true)
		return cl.notDone
	}
	header, err := encodeHeader(c.Header)
	if err != nil {
		return fmt.Errorf("pgstore: complete: %w", err)
	}
	fp := c.Fingerprint
	if fp == "" {
		fp = cl.fp
	}
	ctx, cancel := t.bound(ctx)
	defer cancel()
	b := &pgx.Batch{}
	b.Queue(t.q.recordTx, cl.id, tok.Owner, int64(tok.Fence), fp, int32(c.Status), []byte(c.WireBody), header,
		c.Tombstone, storedAt(c.StoredAt), int64(t.ttl(c.TTL)))
	b.Queue("COMMIT")
	cl.act.enter() // not while a renewal uses the connection
	br := cl.tx.SendBatch(ctx, b)
	_, err = br.Exec()
	if err == nil {
		_, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	cl.act.leave()
	if err == nil {
		cl.state = txCommitted
		cl.drop(false)
		cl.finish()
		return nil
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) { // no answer: the COMMIT may have happened
		cl.state = txUnknown
		cl.drop(true)
		return cl.resolve(ctx)
	}
	// The server answered: nothing committed.
	cl.rolledBack(err)
	if cl.conn != nil && cl.conn.Conn().PgConn().TxStatus() != 'I' {
		cl.rollback()
	}
	cl.drop(false)
	return cl.notDone
}

// rolledBack records that the transaction ended without committing, and why.
func (c *txClaim) rolledBack(err error) {
	c.state = txRolledBack
	var pgErr *pgconn.PgError
	switch {
	case c.purged.Load():
		c.notDone = fmt.Errorf("%w: %w", errPurged, err)
	case errors.As(err, &pgErr) && (pgErr.Code == "IK001" || pgErr.Code == "25P03" || pgErr.Code == "57P01"):
		// IK001: recordTxFunction found the record taken; 25P03: the server
		// ended the session after it sat idle for the lease; 57P01: someone
		// ended it (Store.Purge, or a server shutting down). Either way the
		// transaction rolled back and the key is free.
		c.notDone = fmt.Errorf("%w: %w: %w", ErrNotCommitted, idempotency.ErrLeaseLost, err)
	case conflict(err) || c.seen.Load():
		c.rerun = true
		c.notDone = fmt.Errorf("%w: %w", ErrNotCommitted, err)
	default:
		if advice := c.s.misconfiguration("commit", err); advice != "" {
			c.notDone = fmt.Errorf("%w: %w: %s: %w", ErrNotCommitted, idempotency.ErrStoreMisconfigured, advice, err)
		} else {
			c.notDone = fmt.Errorf("%w: %w", ErrNotCommitted, err)
		}
	}
}

// resolve learns whether a COMMIT whose reply was lost happened: it waits
// for the record's lock (held until the old transaction ends, by a COMMIT
// or, once the server sees the connection gone or idle for the lease, a
// rollback) and reads the record.
func (c *txClaim) resolve(ctx context.Context) error {
	ctx, cancel := c.s.bound(ctx)
	defer cancel()
	var owner string
	var fence int64
	var state int16
	err := pgx.BeginFunc(ctx, c.s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", c.lock); err != nil {
			return err
		}
		return tx.QueryRow(ctx, c.s.q.resolveTx, c.id).Scan(&owner, &fence, &state)
	})
	switch {
	case err == nil && owner == c.tok.Owner && fence == int64(c.tok.Fence) && state == stateCompleted:
		c.state = txCommitted
		c.finish()
		return nil
	case err == nil || errors.Is(err, pgx.ErrNoRows):
		c.state = txRolledBack
		c.notDone = fmt.Errorf("%w: %w: the COMMIT's reply was lost, and the record is not there", ErrNotCommitted, idempotency.ErrLeaseLost)
		return c.notDone
	}
	return c.s.fail("commit", fmt.Errorf("the COMMIT's reply was lost, and reading the record failed: %w", err))
}

// Release implements idempotency.ClaimStore: for a transactional claim it
// rolls the transaction back, with everything the command wrote. For a
// token that holds no transactional claim of this process, it is
// Store.Release.
func (t *TxStore) Release(ctx context.Context, tok idempotency.Token) error {
	cl := claimOf(tok)
	if cl == nil {
		return t.storeBase.Release(ctx, tok)
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	defer cl.finish()
	if cl.state != txOpen {
		return fmt.Errorf("pgstore: release: %w", idempotency.ErrLeaseLost)
	}
	err := cl.rollback()
	cl.state = txRolledBack
	cl.drop(false)
	if cl.purged.Load() || err != nil {
		// The session had ended (Store.Purge, the idle timeout) or could
		// not be told: either way the server ends the transaction, not
		// this Release.
		cl.notDone = fmt.Errorf("%w: %w: the claim's session ended before its release", ErrNotCommitted, idempotency.ErrLeaseLost)
		return fmt.Errorf("pgstore: release: %w: the claim's session ended before its release", idempotency.ErrLeaseLost)
	}
	cl.notDone = fmt.Errorf("%w: released", ErrNotCommitted)
	return nil
}

// Renew implements idempotency.ClaimStore: for a transactional claim it
// asks the server whether the holder's session still holds the record's
// lock (the lease itself is the transaction's idle timeout, set at Begin).
// For a token that holds no transactional claim of this process, it is
// Store.Renew.
func (t *TxStore) Renew(ctx context.Context, tok idempotency.Token, lease time.Duration) error {
	cl := claimOf(tok)
	if cl == nil {
		return t.storeBase.Renew(ctx, tok, lease)
	}
	if lease <= 0 {
		return fmt.Errorf("pgstore: renew: %w: lease %v is not positive", idempotency.ErrInvalidArgument, lease)
	}
	if cl.purged.Load() {
		return fmt.Errorf("pgstore: renew: %w: the claim was purged", idempotency.ErrLeaseLost)
	}
	ctx, cancel := t.bound(ctx)
	defer cancel()
	var pingErr error
	if cl.act.tryRenew() {
		// The connection is idle: a statement on it shows the session alive
		// (and the lock with it) and restarts the server's idle timer.
		pingErr = cl.ping(ctx)
		cl.act.renewed()
		var pgErr *pgconn.PgError
		switch {
		case pingErr == nil:
			return nil
		case errors.Is(pingErr, errClaimGone), errors.As(pingErr, &pgErr):
			return fmt.Errorf("pgstore: renew: %w: %w", idempotency.ErrLeaseLost, pingErr)
		}
		// No answer on the claim's connection, which pgx has now closed:
		// the session is lost if the server no longer shows it holding the
		// lock (Store.Purge ended it, say), and the store unavailable if it
		// cannot be asked.
	}
	// Ask the server, on another connection, whether the holder's session
	// still holds the lock (a statement of the command's may be running).
	hi, lo := lockHalves(cl.lock)
	var held bool
	err := t.pool.QueryRow(ctx, heldTxSQL, int64(cl.pid.Load()), hi, lo).Scan(&held)
	if err != nil {
		return t.fail("renew", err)
	}
	if !held {
		return fmt.Errorf("pgstore: renew: %w: the holder's session no longer holds the claim", idempotency.ErrLeaseLost)
	}
	if pingErr != nil {
		return t.fail("renew", pingErr)
	}
	return nil
}

var errClaimGone = errors.New("the claim's transaction has ended")

// errPurged is what a transactional claim's Complete returns once
// Store.Purge has ended its session.
var errPurged = fmt.Errorf("%w: %w: the claim was purged", ErrNotCommitted, idempotency.ErrLeaseLost)

// ping runs a statement on the claim's own connection, which tryRenew
// has reserved (so nothing else uses or drops it meanwhile). It must not
// take c.mu: Complete may hold it, waiting for the renewal to end.
func (c *txClaim) ping(ctx context.Context) error {
	cmd := c.cmd.Load() // nil once the connection is given up (drop)
	if cmd == nil {
		return errClaimGone
	}
	_, err := cmd.Tx.Exec(ctx, "SELECT 1")
	return err
}

// Again implements idempotency.TxStore: after a serialization failure or a
// deadlock (in any statement of the command, even one it swallowed, or at
// COMMIT), and until the command has run WithMaxRuns times, it rolls the
// run back and claims the key again in a fresh transaction, keeping the
// token; it returns false when the failure was anything else or the key
// could not be claimed again.
func (t *TxStore) Again(ctx context.Context, tok idempotency.Token, err error, runs int) bool {
	cl := claimOf(tok)
	if cl == nil {
		return false
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	rerun := cl.seen.Load() || conflict(err) || (cl.state == txRolledBack && cl.rerun)
	if !rerun || runs >= t.maxRuns || cl.state == txCommitted {
		if cl.state != txOpen {
			cl.finish() // Complete failed: the Engine ends the execution
		}
		return false
	}
	if cl.state == txOpen {
		cl.rollback()
		cl.drop(false)
	}
	ctx, cancel := t.bound(ctx)
	defer cancel()
	fence := int64(tok.Fence)
	if _, acquired, err := cl.open(ctx, &fence); err != nil || !acquired {
		cl.state = txRolledBack
		cl.finish()
		return false
	}
	cl.rerun, cl.notDone = false, nil
	return true
}

// The transactional claim's statements besides the functions (see schema.go).
const (
	// peekSQL: $1 id. beginSQL without the claim: the row as it is, if any.
	peekSQL = `
SELECT state, fingerprint, expires_at - clock_timestamp(), NULL::bigint,
    status, body, header, tombstone, stored_at, ttl_ns
FROM {table} WHERE id = $1`

	// claimTxSQL: $1 id, $2 fence (NULL: draw one), $3 idle timeout in ms.
	claimTxSQL = `SELECT * FROM {claim_tx}($1, $2, $3)`

	// recordTxSQL: $1 id, $2 owner, $3 fence, $4 fingerprint, $5 status,
	// $6 body, $7 header, $8 tombstone, $9 stored_at (NULL: now), $10 ttl_ns.
	recordTxSQL = `SELECT {record_tx}($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`

	// resolveTxSQL: $1 id.
	resolveTxSQL = `SELECT owner, fence, state FROM {table} WHERE id = $1`

	// heldTxSQL: $1 backend pid, $2 and $3 the lock's high and low 32 bits.
	heldTxSQL = `
SELECT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1
    AND pid = $1 AND classid::bigint = $2 AND objid::bigint = $3)`
)

var _ idempotency.TxStore = (*TxStore)(nil)
