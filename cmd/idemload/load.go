package main

import (
	"context"
	crand "crypto/rand"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in microseconds, from 1µs to a minute, with three
// significant digits.
const (
	histMin     = 1
	histMax     = int64(time.Minute / time.Microsecond)
	histSigFigs = 3
)

func newHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histSigFigs) }

// keyGen hands out keys: a new one, or with probability dup one of the
// window most recently issued.
type keyGen struct {
	prefix string
	dup    float64

	mu     sync.Mutex
	issued int64
	window []string // ring of the most recent keys
}

func newKeyGen(dup float64, window int) *keyGen {
	// A run id in the prefix keeps runs against one server apart.
	return &keyGen{prefix: "idemload-" + strings.ToLower(crand.Text()[:10]) + "-", dup: dup, window: make([]string, window)}
}

func (g *keyGen) next(rng *rand.Rand) string {
	reuse := rng.Float64() < g.dup
	g.mu.Lock()
	defer g.mu.Unlock()
	if reuse && g.issued > 0 {
		return g.window[rng.Int64N(min(g.issued, int64(len(g.window))))]
	}
	k := g.prefix + strconv.FormatInt(g.issued, 10)
	g.window[g.issued%int64(len(g.window))] = k
	g.issued++
	return k
}

// keyState is what the answers for one key said.
type keyState struct {
	succeeded bool
	body      uint64 // hash of the first 2xx body
	mismatch  bool   // a later 2xx body differed
}

// tracker remembers every key's answers, for the exactly-once check.
type tracker struct {
	mu   sync.Mutex
	keys map[string]*keyState
}

func (t *tracker) record(key string, a answer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.keys[key]
	if st == nil {
		st = new(keyState)
		t.keys[key] = st
	}
	if a.outcome != executed && a.outcome != replayed {
		return
	}
	switch {
	case !st.succeeded:
		st.succeeded, st.body = true, a.body
	case st.body != a.body:
		st.mismatch = true
	}
}

// results is what a load run measured.
type results struct {
	workers  int
	elapsed  time.Duration
	hists    [numOutcomes]*hdrhistogram.Histogram
	errKinds map[string]int64
	keys     *tracker

	settled, unresolved int // keys retried after the load; still without a 2xx
}

// worker is one load loop's private state: no locks on the hot path but the
// key generator's and the tracker's.
type worker struct {
	hists    [numOutcomes]*hdrhistogram.Histogram
	errKinds map[string]int64
}

// load sends requests with cfg.workers workers until cfg.requests have been
// sent or cfg.duration has passed (or ctx ends), and returns what it measured.
func load(ctx context.Context, cfg config, c *client, progressOut io.Writer) *results {
	gen := newKeyGen(cfg.dup, cfg.keys)
	res := &results{workers: cfg.workers, errKinds: map[string]int64{}, keys: &tracker{keys: map[string]*keyState{}}}
	for o := range res.hists {
		res.hists[o] = newHistogram()
	}
	var sent, done, errs atomic.Int64
	start := time.Now()
	deadline := start.Add(cfg.duration)
	more := func() bool {
		if ctx.Err() != nil {
			return false
		}
		if cfg.requests > 0 {
			return sent.Add(1) <= cfg.requests
		}
		return time.Now().Before(deadline)
	}
	prog := startProgress(cfg, progressOut, start, &done, &errs)

	workers := make([]*worker, cfg.workers)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{errKinds: map[string]int64{}}
		for o := range w.hists {
			w.hists[o] = newHistogram()
		}
		workers[i] = w
		seed := cfg.seed
		if seed == 0 {
			seed = rand.Uint64()
		}
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		wg.Go(func() {
			for more() {
				key := gen.next(rng)
				t0 := time.Now()
				a := c.send(ctx, key)
				_ = w.hists[a.outcome].RecordValue(max(time.Since(t0).Microseconds(), histMin))
				if a.outcome == failed {
					w.errKinds[a.errKind]++
					errs.Add(1)
				}
				res.keys.record(key, a)
				done.Add(1)
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	prog.stop()
	for _, w := range workers {
		for o := range w.hists {
			res.hists[o].Merge(w.hists[o])
		}
		for k, n := range w.errKinds {
			res.errKinds[k] += n
		}
	}
	return res
}

// settle retries, one at a time, every key that never got a 2xx answer (its
// requests all met 409s or errors), until each has one or cfg.settle has
// passed: a key's command may have run although no answer said so, and the
// exactly-once check can only count keys whose fate is known. The retries are
// not part of the measured load.
func (r *results) settle(ctx context.Context, cfg config, c *client) {
	var pending []string
	r.keys.mu.Lock()
	for k, st := range r.keys.keys {
		if !st.succeeded {
			pending = append(pending, k)
		}
	}
	r.keys.mu.Unlock()
	r.settled = len(pending)
	if len(pending) == 0 || cfg.settle <= 0 {
		r.unresolved = len(pending)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.settle)
	defer cancel()
	for len(pending) > 0 && ctx.Err() == nil {
		key := pending[0]
		a := c.send(ctx, key)
		r.keys.record(key, a)
		switch a.outcome {
		case executed, replayed:
			pending = pending[1:]
			continue
		default: // 409 (the first request still runs) or a failure: try again soon
			sleep(ctx, 20*time.Millisecond)
		}
	}
	r.unresolved = len(pending)
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
