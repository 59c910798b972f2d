package reliability

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/redis/go-redis/v9"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
)

// longLease outlives any history recorded here: ClaimModel has no clock.
const longLease = time.Minute

// pairRef is one (key, identity) record of a workload.
type pairRef struct{ key, identity string }

func (p pairRef) name() string { return Pair(p.key, p.identity) }

// workload drives random claim-protocol calls at a store from several
// goroutines and records them in a History.
type workload struct {
	h       *History
	store   idempotency.ClaimStore
	faulty  bool          // faults are injected: Lookup misses say nothing
	timeout time.Duration // bound of every call

	// retriedRelease, when set, is the client's read timeout: a Release
	// that answers ErrLeaseLost after at least that long may have been
	// retried by the client after it had released the claim (which
	// ClaimStore.Release allows), so its outcome is recorded as unknown.
	retriedRelease time.Duration

	mu     sync.Mutex
	tokens map[pairRef][]idempotency.Token // every token handed out, per pair
	errs   []error
}

func newWorkload(store idempotency.ClaimStore, faulty bool) *workload {
	return &workload{h: NewHistory(), store: store, faulty: faulty, timeout: 2 * time.Second,
		tokens: make(map[pairRef][]idempotency.Token)}
}

func (w *workload) fail(err error) {
	w.mu.Lock()
	w.errs = append(w.errs, err)
	w.mu.Unlock()
}

func (w *workload) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return errors.Join(w.errs...)
}

func (w *workload) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), w.timeout)
}

func (w *workload) begin(client int, p pairRef, owner, fp string) {
	c := Call{Op: OpBegin, Pair: p.name(), Owner: owner, Fingerprint: fp}
	w.h.Record(client, c, func() Outcome {
		ctx, cancel := w.ctx()
		defer cancel()
		cl, err := w.store.Begin(ctx, p.key, p.identity, idempotency.ClaimRequest{Fingerprint: fp, Owner: owner, Lease: longLease})
		o, err := BeginOutcome(cl, err)
		if err != nil {
			w.fail(fmt.Errorf("begin(%s): %w", c.Pair, err))
			return Outcome{Unknown: true}
		}
		if o.Status == idempotency.ClaimAcquired {
			w.mu.Lock()
			w.tokens[p] = append(w.tokens[p], cl.Token)
			w.mu.Unlock()
		}
		return o
	})
}

// token returns a random token handed out for p, or false.
func (w *workload) token(r *rand.Rand, p pairRef) (idempotency.Token, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	ts := w.tokens[p]
	if len(ts) == 0 {
		return idempotency.Token{}, false
	}
	// Mostly the newest (a holder finishing), sometimes an older one (a
	// stale holder).
	if r.IntN(4) > 0 {
		return ts[len(ts)-1], true
	}
	return ts[r.IntN(len(ts))], true
}

func (w *workload) tokenCall(client int, op Op, tok idempotency.Token, body, fp string) {
	c := Call{Op: op, Pair: Pair(tok.Key, tok.Identity), Owner: tok.Owner, Fence: tok.Fence, Body: body, Fingerprint: fp}
	w.h.Record(client, c, func() Outcome {
		ctx, cancel := w.ctx()
		defer cancel()
		var err error
		start := time.Now()
		switch op {
		case OpComplete:
			err = w.store.Complete(ctx, tok, idempotency.Cached{Status: 201, WireBody: []byte(body), Fingerprint: fp})
		case OpRelease:
			err = w.store.Release(ctx, tok)
		case OpRenew:
			err = w.store.Renew(ctx, tok, longLease)
		}
		o, err := TokenOutcome(err)
		if err != nil {
			w.fail(fmt.Errorf("%v(%s): %w", op, c.Pair, err))
			return Outcome{Unknown: true}
		}
		if op == OpRelease && o.LeaseLost && w.retriedRelease > 0 && time.Since(start) >= w.retriedRelease {
			return Outcome{Unknown: true}
		}
		return o
	})
}

func (w *workload) lookup(client int, p pairRef) {
	w.h.Record(client, Call{Op: OpLookup, Pair: p.name()}, func() Outcome {
		ctx, cancel := w.ctx()
		defer cancel()
		c, ok := w.store.Lookup(ctx, p.key, p.identity)
		return LookupOutcome(c, ok, w.faulty)
	})
}

// client runs ops random calls on pairs as client number id.
func (w *workload) client(id int, seed uint64, pairs []pairRef, ops int) {
	r := rand.New(rand.NewPCG(seed, uint64(id)))
	type last struct{ owner, fp string }
	mine := make(map[pairRef]last) // this client's last Begin per pair, to retry it
	for n := range ops {
		p := pairs[r.IntN(len(pairs))]
		switch x := r.IntN(100); {
		case x < 40:
			l, ok := mine[p]
			if !ok || r.IntN(4) > 0 { // mostly a new execution, sometimes a retried Begin
				l = last{owner: fmt.Sprintf("c%d-%d", id, n), fp: "fpA"}
				if r.IntN(10) == 0 {
					l.fp = "fpB" // the same key with another payload
				}
				if r.IntN(10) == 0 {
					l.fp = "" // no fingerprint: never a mismatch
				}
				mine[p] = l
			}
			w.begin(id, p, l.owner, l.fp)
		case x < 65:
			if tok, ok := w.token(r, p); ok {
				fp := ""
				if r.IntN(2) == 0 {
					fp = "fpA"
				}
				w.tokenCall(id, OpComplete, tok, fmt.Sprintf("body-c%d-%d", id, n), fp)
			}
		case x < 75:
			if tok, ok := w.token(r, p); ok {
				w.tokenCall(id, OpRelease, tok, "", "")
			}
		case x < 85:
			if tok, ok := w.token(r, p); ok {
				w.tokenCall(id, OpRenew, tok, "", "")
			}
		default:
			w.lookup(id, p)
		}
	}
}

// run runs rounds of clients goroutines, each round on fresh pairs (so
// that every round sees records go through their whole life) and checks
// the history.
func (w *workload) run(t *testing.T, rounds, clients, ops int) {
	t.Helper()
	w.runFor(t, rounds, 0, clients, ops)
}

// runFor is run with at least rounds rounds, and more until d has passed.
func (w *workload) runFor(t *testing.T, rounds int, d time.Duration, clients, ops int) {
	t.Helper()
	seed := rand.Uint64()
	prefix := "lin-" + driver.NewOwner()[:8]
	start := time.Now()
	for r := 0; r < rounds || time.Since(start) < d; r++ {
		k1, k2 := fmt.Sprintf("%s-%d-a", prefix, r), fmt.Sprintf("%s-%d-b", prefix, r)
		// Two identities on one key, and a key whose bytes could be
		// confused with the other pair's if keys and identities were
		// joined with a separator.
		pairs := []pairRef{{k1, "alice"}, {k1, "bob"}, {k2, "alice"}, {k2 + ":alice", ""}}
		var wg sync.WaitGroup
		for c := range clients {
			wg.Go(func() { w.client(c, seed+uint64(r), pairs, ops) })
		}
		wg.Wait()
	}
	if err := w.err(); err != nil {
		t.Fatalf("calls failed unexpectedly (seed %d): %v", seed, err)
	}
	checkHistory(t, w.h)
}

// checkHistory checks h against ClaimModel and, when it is not
// linearizable, writes porcupine's visualisation next to the test.
func checkHistory(t *testing.T, h *History) {
	t.Helper()
	res, info := h.Check(60 * time.Second)
	t.Logf("%s: %d calls (%d with unknown outcome): %s", t.Name(), h.Len(), h.Unknown(), res)
	switch res {
	case porcupine.Ok:
		return
	case porcupine.Unknown:
		t.Fatalf("porcupine could not decide within its time limit")
	}
	path := filepath.Join(os.TempDir(), fmt.Sprintf("idem-%s.html", sanitize(t.Name())))
	if err := porcupine.VisualizePath(ClaimModel(), info, path); err == nil {
		t.Errorf("visualisation of the history: %s", path)
	}
	t.Fatalf("history is not linearizable against ClaimModel")
}

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// TestConcurrentLinearizable records concurrent Begin, Complete, Release,
// Renew and Lookup calls against each store, with stale tokens, retried
// Begins and mismatched fingerprints, and checks the history with porcupine.
func TestConcurrentLinearizable(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		t.Parallel()
		newWorkload(f.store, false).run(t, scaled(20), 6, 8)
	})
}

// TestLinearizableUnderFaults runs the same workload through a Proxy that
// keeps cutting, stalling and dropping the replies of the connections to
// Redis and PostgreSQL; calls that fail are recorded with an unknown
// outcome. Then the network heals and every pair is probed once more.
func TestLinearizableUnderFaults(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		t.Parallel()
		proxy, store := f.proxied(t)
		w := newWorkload(store, true)
		w.timeout = 400 * time.Millisecond
		if f.name == "redis" {
			// go-redis retries a Release whose reply was lost; the retry may
			// answer ErrLeaseLost although the first attempt released the
			// claim (ClaimStore.Release allows it), so slow Releases that
			// answer ErrLeaseLost are recorded as unknown.
			w.retriedRelease = faultyRedisOptions(&redis.Options{}, "").ReadTimeout
		}
		stop := make(chan struct{})
		var chaos sync.WaitGroup
		chaos.Go(func() { flap(proxy, stop, rand.Uint64()) })
		w.runFor(t, 10, scaledDuration(2*time.Second), 4, 8)
		close(stop)
		chaos.Wait()
		if w.h.Unknown() == 0 {
			t.Errorf("no call had an unknown outcome: the faults did not bite")
		}
	}, redisBackend, postgresBackend)
}

// flap switches proxy between its modes at random intervals until stop
// is closed, then heals it.
func flap(proxy *Proxy, stop <-chan struct{}, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 1))
	modes := []Mode{Pass, Pass, Cut, Stall, DropReplies}
	for {
		t := time.NewTimer(time.Duration(20+r.IntN(120)) * time.Millisecond)
		select {
		case <-stop:
			t.Stop()
			proxy.Set(Pass)
			return
		case <-t.C:
			proxy.Set(modes[r.IntN(len(modes))])
		}
	}
}
