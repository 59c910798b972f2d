package reliability

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
	"github.com/idemkit/idempotency/pgstore"
)

// The crash matrix: a holder process (this test binary re-executed, mode
// "crash") runs one Engine.Do against the real store and stops at one
// instant of the execution, its crash point; the test kills it there with
// SIGKILL, retries the same key in this process until it gets an answer,
// and counts the command's effects. RELIABILITY.md's crash table is this
// matrix's expectations.

// crashPoint is an instant of an execution at which the holder is killed.
type crashPoint string

const (
	beforeClaim  crashPoint = "before-claim"  // before Do: nothing claimed
	afterClaim   crashPoint = "after-claim"   // the command's first instant
	inEffect     crashPoint = "in-effect"     // the effect made, the command not returned
	beforeCommit crashPoint = "before-commit" // the command returned; Complete not sent
	commitLost   crashPoint = "commit-lost"   // Complete executed by the server, its reply lost
	beforeAnswer crashPoint = "before-answer" // Complete returned; Do has not
	inHeartbeat  crashPoint = "in-heartbeat"  // a renewal sent, the command running after its effect
	inRelease    crashPoint = "in-release"    // the command failed after its effect; Release not sent
)

var crashPoints = []crashPoint{beforeClaim, afterClaim, inEffect, beforeCommit, commitLost, beforeAnswer, inHeartbeat, inRelease}

// errCommandFailed is the failure of the in-release point's command, after
// its effect: the engine releases the key.
var errCommandFailed = errors.New("the command failed after its effect")

// crashHooks stops the holder at its crash point: it says "at <point>" on
// stdout once, then waits for "go" on stdin (only the commit-lost point
// gets one; the others are killed while they wait).
type crashHooks struct {
	point crashPoint
	goes  chan struct{}
	said  sync.Once // "at <point>", said once (a hung renewal is tried again)
}

func newCrashHooks(point crashPoint, stdin *bufio.Scanner) *crashHooks {
	h := &crashHooks{point: point, goes: make(chan struct{})}
	go func() {
		for stdin.Scan() {
			if stdin.Text() == "go" {
				h.goes <- struct{}{}
			}
		}
		os.Exit(3) // the test is gone
	}()
	return h
}

// at stops the holder if p is its crash point.
func (h *crashHooks) at(p crashPoint) {
	if p != h.point {
		return
	}
	h.said.Do(func() { fmt.Println("at", p) })
	<-h.goes
}

// forever blocks the calling goroutine until the holder is killed.
func (h *crashHooks) forever() { select {} }

func (h *crashHooks) complete(call func() error) error {
	h.at(beforeCommit)
	h.at(commitLost)
	err := call()
	h.at(beforeAnswer)
	return err
}

func (h *crashHooks) renew(call func() error) error {
	err := call()
	h.at(inHeartbeat)
	return err
}

func (h *crashHooks) release(call func() error) error {
	h.at(inRelease)
	return call()
}

// crashStore is a plain claim store with the crash hooks on its calls.
type crashStore struct {
	idempotency.ClaimStore
	h *crashHooks
}

func (s *crashStore) Complete(ctx context.Context, tok idempotency.Token, c idempotency.Cached) error {
	return s.h.complete(func() error { return s.ClaimStore.Complete(ctx, tok, c) })
}

func (s *crashStore) Renew(ctx context.Context, tok idempotency.Token, lease time.Duration) error {
	return s.h.renew(func() error { return s.ClaimStore.Renew(ctx, tok, lease) })
}

func (s *crashStore) Release(ctx context.Context, tok idempotency.Token) error {
	return s.h.release(func() error { return s.ClaimStore.Release(ctx, tok) })
}

// crashTxStore is a transactional store with the crash hooks on its calls:
// crashStore's, over the TxStore, and the TxStore's Again, so that it is an
// idempotency.TxStore.
type crashTxStore struct {
	crashStore
	tx *pgstore.TxStore
}

func (s *crashTxStore) Again(ctx context.Context, tok idempotency.Token, err error, runs int) bool {
	return s.tx.Again(ctx, tok, err, runs)
}

var _ idempotency.TxStore = (*crashTxStore)(nil)

// crashHolder is the holder's "crash" mode: one Engine.Do of key on store,
// stopped at RELIABILITY_CRASH_POINT. A plain command's effect is the line
// "effect <fence>" (the test counts it in its Ledger: once written, it has
// happened). With RELIABILITY_TX=1 the store is PostgreSQL's transactional
// view and the effect is a row of RELIABILITY_LEDGER (run "first") written
// through the command's transaction; "effect" is then only said.
func crashHolder(ctx context.Context, store idempotency.ClaimStore, stdin *bufio.Scanner, key, identity string, lease time.Duration) error {
	h := newCrashHooks(crashPoint(os.Getenv("RELIABILITY_CRASH_POINT")), stdin)
	tx := os.Getenv("RELIABILITY_TX") == "1"
	if tx {
		ps, ok := store.(*pgstore.Store)
		if !ok {
			return fmt.Errorf("RELIABILITY_TX=1 on %T, want a *pgstore.Store", store)
		}
		store = ps.Transactional()
	}
	// A live server has served commands before: its connection is open and
	// its statements prepared, so that at the commit-lost point the
	// Complete itself, not a handshake or a prepare, is what goes
	// unanswered.
	warm := idempotency.NewEngine(store, idempotency.WithLease(lease))
	if _, err := warm.Do(ctx, idempotency.Request{Key: key + "-warm", Identity: identity}, func(context.Context) (idempotency.Response, error) {
		return idempotency.Response{Status: 201}, nil
	}); err != nil {
		return fmt.Errorf("warming up: %w", err)
	}
	h.at(beforeClaim)
	var s idempotency.Store = &crashStore{ClaimStore: store, h: h}
	effect := func(ctx context.Context) error {
		tok, _ := idempotency.TokenFromContext(ctx)
		fmt.Println("effect", tok.Fence)
		return nil
	}
	if tx {
		s = &crashTxStore{crashStore: crashStore{ClaimStore: store, h: h}, tx: store.(*pgstore.TxStore)}
		table := os.Getenv("RELIABILITY_LEDGER")
		effect = func(ctx context.Context) error {
			if err := txEffect(ctx, table, key, "first"); err != nil {
				return err
			}
			tok, _ := idempotency.TokenFromContext(ctx)
			fmt.Println("effect", tok.Fence)
			return nil
		}
	}
	e := idempotency.NewEngine(s, idempotency.WithLease(lease))
	res, err := e.Do(ctx, idempotency.Request{Key: key, Identity: identity, Fingerprint: "fp"}, func(ctx context.Context) (idempotency.Response, error) {
		h.at(afterClaim)
		if err := effect(ctx); err != nil {
			return idempotency.Response{}, err
		}
		h.at(inEffect)
		switch h.point {
		case inHeartbeat: // a long command, working on after its effect
			h.forever()
		case inRelease:
			return idempotency.Response{}, errCommandFailed
		}
		return idempotency.Response{Status: 201, Body: []byte(`"first"`)}, nil
	})
	fmt.Println("done", res.Recorded, err) // not reached when the test kills in time
	return nil
}

// crashCase is one handler kind of the matrix on one store.
type crashCase struct {
	name  string
	kind  backendKind
	tx    bool // a transactional handler (PostgreSQL): its effect is a row of the ledger table
	lease time.Duration
	// expect gives each crash point's expected outcome; a point missing
	// from it does not apply to this case.
	expect map[crashPoint]crashExpect
}

// crashExpect is what a retry after the kill sees.
type crashExpect struct {
	effects int  // effects of the key once the retry has its answer
	replay  bool // the retry replays the holder's response (else it runs the command)
	waits   bool // the retry is refused as in flight until the dead holder's lease runs out
}

// plainExpect is the expectation for a plain handler on a shared store
// (Redis, PostgreSQL): the claim outlives its holder until its lease runs
// out, and an effect made before Complete reached the store runs again.
var plainExpect = map[crashPoint]crashExpect{
	beforeClaim:  {effects: 1},
	afterClaim:   {effects: 1, waits: true},
	inEffect:     {effects: 2, waits: true},
	beforeCommit: {effects: 2, waits: true},
	commitLost:   {effects: 1, replay: true},
	beforeAnswer: {effects: 1, replay: true},
	inHeartbeat:  {effects: 2, waits: true},
	inRelease:    {effects: 2, waits: true},
}

// memoryExpect: the in-memory store dies with its process, claims and
// records alike; the retry (in the restarted process, here a fresh store)
// finds nothing, so every effect made before the kill runs again. Its
// Complete has no reply to lose.
var memoryExpect = map[crashPoint]crashExpect{
	beforeClaim:  {effects: 1},
	afterClaim:   {effects: 1},
	inEffect:     {effects: 2},
	beforeCommit: {effects: 2},
	beforeAnswer: {effects: 2},
	inHeartbeat:  {effects: 2},
	inRelease:    {effects: 2},
}

// txExpect: a transactional claim is the holder's open transaction, which
// PostgreSQL rolls back, with the effect, when the holder's connection
// ends; the retry runs at once. Once the COMMIT has happened, effect and
// record are there together.
var txExpect = map[crashPoint]crashExpect{
	beforeClaim:  {effects: 1},
	afterClaim:   {effects: 1},
	inEffect:     {effects: 1},
	beforeCommit: {effects: 1},
	commitLost:   {effects: 1, replay: true},
	beforeAnswer: {effects: 1, replay: true},
	inHeartbeat:  {effects: 1},
	inRelease:    {effects: 1},
}

// crashLease is the holder's lease in the plain cases: as processLease, so
// that a retry waits little real time for a dead holder's claim.
const crashLease = processLease

// crashTxLease is the transactional holder's lease, its transaction's idle
// timeout: longer than the plain one, so that a retry answered well before
// it did not wait for it.
const crashTxLease = time.Second

// TestCrashMatrix kills a holder process at each crash point, for each
// handler kind and store, and checks what the retry sees and how many
// effects the key has: each row of RELIABILITY.md's crash table. Each row
// runs once, IDEMPOTENCY_SOAK times in the soak.
func TestCrashMatrix(t *testing.T) {
	cases := []crashCase{
		{name: "plain/redis", kind: redisBackend, lease: crashLease, expect: plainExpect},
		{name: "plain/postgres", kind: postgresBackend, lease: crashLease, expect: plainExpect},
		{name: "plain/memory", kind: memoryBackend, lease: crashLease, expect: memoryExpect},
		{name: "tx/postgres", kind: postgresBackend, tx: true, lease: crashTxLease, expect: txExpect},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, c.kind)
			if c.tx {
				f.createLedgerTable(t)
			}
			for _, p := range crashPoints {
				want, ok := c.expect[p]
				if !ok {
					continue
				}
				t.Run(string(p), func(t *testing.T) {
					t.Parallel()
					var st crashStats
					for range soakFactor() {
						st.add(crashRun(t, f, c, p, want))
					}
					t.Logf("%s %s: %s", c.name, p, &st)
				})
			}
		})
	}
}

// crashResult is one run of a row.
type crashResult struct {
	effects int
	replay  bool
	refused int           // retries refused as in flight
	stuck   time.Duration // from the kill to the retry's answer
}

// crashStats sums up a row's runs for the log (and RELIABILITY.md).
type crashStats struct {
	runs, replays      int
	effects, refused   []int
	stuckMin, stuckMax time.Duration
}

func (s *crashStats) add(r crashResult) {
	if s.runs == 0 || r.stuck < s.stuckMin {
		s.stuckMin = r.stuck
	}
	s.stuckMax = max(s.stuckMax, r.stuck)
	s.runs++
	if r.replay {
		s.replays++
	}
	s.effects = append(s.effects, r.effects)
	s.refused = append(s.refused, r.refused)
}

func (s *crashStats) String() string {
	span := func(v []int) string {
		lo, hi := slices.Min(v), slices.Max(v)
		if lo == hi {
			return strconv.Itoa(lo)
		}
		return fmt.Sprintf("%d–%d", lo, hi)
	}
	answer := "executed"
	switch s.replays {
	case 0:
	case s.runs:
		answer = "replayed"
	default:
		answer = fmt.Sprintf("replayed %d times", s.replays)
	}
	return fmt.Sprintf("%d runs: effects %s; retry %s, refused %s times, answered %v–%v after the kill",
		s.runs, span(s.effects), answer, span(s.refused), s.stuckMin.Round(time.Millisecond), s.stuckMax.Round(time.Millisecond))
}

// crashRun runs one row once: a holder killed at p, then the retry.
func crashRun(t *testing.T, f *fixture, c crashCase, p crashPoint, want crashExpect) crashResult {
	t.Helper()
	key, identity := "crash-"+driver.NewOwner(), "alice"
	pair := Pair(key, identity)
	var env []string
	var proxy *Proxy
	if p == commitLost {
		var err error
		if proxy, err = NewProxy(f.target); err != nil {
			t.Fatal(err)
		}
		defer proxy.Close()
		env = append(env, "RELIABILITY_ADDR="+proxy.Addr())
	}
	env = append(env, "RELIABILITY_CRASH_POINT="+string(p))
	if c.tx {
		env = append(env, "RELIABILITY_TX=1", "RELIABILITY_LEDGER="+f.ledgerTable())
	}
	h := startHolderEnv(t, f, "crash", key, identity, c.lease, env...)

	var ledger Ledger                 // the plain handlers' effects
	count := func(line string) bool { // counts an effect line; false for any other line
		if _, found := strings.CutPrefix(line, "effect "); found {
			if !c.tx { // a transactional effect is counted in its table
				ledger.Record(pair)
			}
			return true
		}
		return false
	}
	h.await(t, "at "+string(p), count)
	if p == commitLost {
		proxy.Set(DropReplies)
		h.send(t, "go")
		waitRecorded(t, f, key, identity)
	}
	h.signal(t, syscall.SIGKILL)
	killed := time.Now()
	for line := range h.lines { // what it wrote before it died
		if !count(line) {
			t.Errorf("holder said %q after its crash point", line)
		}
	}
	_ = h.cmd.Wait()

	var store idempotency.Store = f.store
	effect := func(ctx context.Context) error {
		ledger.Record(pair)
		return nil
	}
	switch {
	case c.kind == memoryBackend:
		store = idempotency.NewInMemoryStore() // the restarted process's
	case c.tx:
		store = f.store.(*pgstore.Store).Transactional()
		effect = func(ctx context.Context) error { return txEffect(ctx, f.ledgerTable(), key, "retry") }
	}
	e := idempotency.NewEngine(store, idempotency.WithLease(c.lease))
	res, at, refused := retryUntilExecuted(t, e, key, identity, func(ctx context.Context) (idempotency.Response, error) {
		if err := effect(ctx); err != nil {
			return idempotency.Response{}, err
		}
		return idempotency.Response{Status: 201, Body: []byte(`"retry"`)}, nil
	}, 10*time.Second)
	r := crashResult{effects: ledger.Count(pair), replay: res.Replayed, refused: refused, stuck: at.Sub(killed)}

	wantBody, wantRun := `"retry"`, "retry"
	if want.replay {
		wantBody, wantRun = `"first"`, "first"
	}
	if c.tx {
		runs := f.ledgerRuns(t, key)
		r.effects = len(runs)
		if len(runs) == 1 && runs[0] != wantRun {
			t.Errorf("%s: the effect committed is run %q's, want %q's", p, runs[0], wantRun)
		}
	}
	if r.effects != want.effects {
		t.Errorf("%s: %d effects, want %d", p, r.effects, want.effects)
	}
	if r.replay != want.replay || string(res.Response.Body) != wantBody {
		t.Errorf("%s: the retry got %s (replayed %v), want %s (replayed %v)", p, res.Response.Body, r.replay, wantBody, want.replay)
	}
	switch {
	case want.waits && refused == 0:
		t.Errorf("%s: the retry ran at once; want it refused while the dead holder's lease lived", p)
	case want.waits && r.stuck > c.lease+time.Second:
		t.Errorf("%s: the retry answered %v after the kill, want at most lease + 1s = %v", p, r.stuck, c.lease+time.Second)
	case !want.waits && r.stuck >= c.lease:
		t.Errorf("%s: the retry answered %v after the kill (%d refused), want it at once (before a lease, %v)", p, r.stuck, refused, c.lease)
	}
	return r
}

// waitRecorded waits (at most 10s) until key's record is visible in f's
// store: the holder's Complete, whose reply the proxy drops, has been
// executed.
func waitRecorded(t *testing.T, f *fixture, key, identity string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, ok := f.store.Lookup(context.Background(), key, identity); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the holder's Complete never reached the store")
		}
		time.Sleep(5 * time.Millisecond) // polling the server's state
	}
}
