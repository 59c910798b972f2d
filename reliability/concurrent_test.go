package reliability

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
)

// errTransient is a handler failure before its effect: the engine releases
// the key and the caller's retry runs the command again.
var errTransient = errors.New("transient failure before the effect")

// TestConcurrentExactlyOnce fires racing duplicates of many commands at
// three replicas (each its own store client; some replicas wait for the
// first execution, some answer 409 at once) and checks the effect ledger:
// every (key, identity) pair's effect happens exactly once, although
// handlers also fail (before their effect) and answer 5xx at random, which
// releases the key for a retry; and every caller of a pair ends up with the
// same response bytes, those of the one execution.
func TestConcurrentExactlyOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		t.Parallel()
		exactlyOnce(t, []idempotency.Store{f.store, f.replica(t), f.replica(t)})
	})
}

// TestConcurrentExactlyOncePlainStore is TestConcurrentExactlyOnce on a
// seed-style Store without the claim protocol: one Engine (one process),
// where the Engine's in-process claims must deduplicate.
func TestConcurrentExactlyOncePlainStore(t *testing.T) {
	exactlyOnce(t, []idempotency.Store{plainStore{idempotency.NewInMemoryStore()}})
}

// plainStore hides every method of a store but Lookup and Store.
type plainStore struct{ s idempotency.Store }

func (p plainStore) Lookup(ctx context.Context, key, identity string) (*idempotency.Cached, bool) {
	return p.s.Lookup(ctx, key, identity)
}

func (p plainStore) Store(ctx context.Context, key, identity string, c idempotency.Cached) error {
	return p.s.Store(ctx, key, identity, c)
}

func exactlyOnce(t *testing.T, replicas []idempotency.Store) {
	t.Helper()
	var engines []*idempotency.Engine
	for i, s := range replicas {
		engines = append(engines, idempotency.NewEngine(s, idempotency.WithLease(10*time.Second), idempotency.WithWait(i%2 == 1)))
	}
	var ledger Ledger
	var execs atomic.Int64
	const keys, callers = 40, 4
	identities := []string{"alice", "bob"}
	prefix := "once-" + driver.NewOwner()[:8]
	seed := rand.Uint64()

	type answer struct {
		pair string
		body string
		err  error
	}
	answers := make(chan answer, keys*len(identities)*callers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for k := range keys {
		for _, id := range identities {
			key := fmt.Sprintf("%s-%d", prefix, k)
			pair := Pair(key, id)
			for c := range callers {
				e := engines[(k+c)%len(engines)]
				r := rand.New(rand.NewPCG(seed, uint64(k*100+c)))
				wg.Go(func() {
					<-start
					fn := func(ctx context.Context) (idempotency.Response, error) {
						switch r.IntN(5) {
						case 0:
							return idempotency.Response{}, errTransient
						case 1:
							return idempotency.Response{Status: 503, Body: []byte(`"try again"`)}, nil
						}
						ledger.Record(pair)
						n := execs.Add(1)
						return idempotency.Response{Status: 201, Body: fmt.Appendf(nil, `{"exec":%d}`, n)}, nil
					}
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					defer cancel()
					for {
						res, err := e.Do(ctx, idempotency.Request{Key: key, Identity: id, Fingerprint: "fp"}, fn)
						switch {
						case err == nil && res.Response.Status == 201:
							answers <- answer{pair: pair, body: string(res.Response.Body)}
							return
						case err == nil, errors.Is(err, errTransient), errors.Is(err, idempotency.ErrInFlight) && ctx.Err() == nil:
							// a 5xx, a failure, or a duplicate in flight: retry
						default:
							answers <- answer{pair: pair, err: err}
							return
						}
						select {
						case <-ctx.Done():
						case <-time.After(time.Duration(1+r.IntN(5)) * time.Millisecond):
						}
					}
				})
			}
		}
	}
	close(start)
	wg.Wait()
	close(answers)

	bodies := map[string]string{}
	var pairs []string
	for a := range answers {
		if a.err != nil {
			t.Errorf("%s: %v", a.pair, a.err)
			continue
		}
		if b, ok := bodies[a.pair]; !ok {
			bodies[a.pair] = a.body
			pairs = append(pairs, a.pair)
		} else if b != a.body {
			t.Errorf("%s: callers got different responses %s and %s", a.pair, b, a.body)
		}
	}
	if want := keys * len(identities); len(pairs) != want {
		t.Errorf("%d pairs succeeded, want %d", len(pairs), want)
	}
	if err := ledger.Check(pairs); err != nil {
		t.Error(err)
	}
	if ledger.Total() != len(pairs) {
		t.Errorf("ledger total %d for %d pairs", ledger.Total(), len(pairs))
	}
}

// TestConcurrentDispatcher races duplicate HTTP requests through the
// dispatcher (the handler idemd mounts) over each store: four callers per
// key, retrying after 409 as a client does. Every key's widget is created
// once and every caller gets the same response bytes.
func TestConcurrentDispatcher(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		t.Parallel()
		srv, ledger := newDashboard(t, f.store)
		client := srv.Client()
		const keys, callers = 30, 4
		prefix := "http-once-" + driver.NewOwner()[:8]
		type answer struct{ pair, body string }
		answers := make(chan answer, keys*callers)
		failures := make(chan string, keys*callers)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for k := range keys {
			key := fmt.Sprintf("%s-%d", prefix, k)
			for range callers {
				wg.Go(func() {
					<-start
					for attempt := 0; attempt < 200; attempt++ {
						r, err := tryCommand(client, srv.URL, key, "tok", `{"name":"w"}`)
						switch {
						case err != nil:
							failures <- fmt.Sprintf("%s: %v", key, err)
							return
						case r.status == 201:
							answers <- answer{key, r.body}
							return
						case r.status != 409:
							failures <- fmt.Sprintf("%s: %d %s", key, r.status, r.body)
							return
						}
						time.Sleep(5 * time.Millisecond) // a client's backoff after 409
					}
					failures <- key + ": still 409 after 200 attempts"
				})
			}
		}
		close(start)
		wg.Wait()
		close(answers)
		close(failures)
		for msg := range failures {
			t.Error(msg)
		}
		bodies := map[string]string{}
		var pairs []string
		for a := range answers {
			if b, ok := bodies[a.pair]; !ok {
				bodies[a.pair] = a.body
				pairs = append(pairs, a.pair)
			} else if b != a.body {
				t.Errorf("%s: callers got %s and %s", a.pair, b, a.body)
			}
		}
		if len(pairs) != keys {
			t.Errorf("%d keys succeeded, want %d", len(pairs), keys)
		}
		if got := ledger.Total(); got != keys {
			t.Errorf("%d widgets created for %d keys", got, keys)
		}
		if err := ledger.Check(nil); err != nil {
			t.Error(err)
		}
	})
}
