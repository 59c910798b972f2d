package reliability

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/dispatcher"
	"github.com/idemkit/idempotency/driver"
	"github.com/idemkit/idempotency/pgstore"
)

// outageLease is the lease of the outage tests: longer than each outage, so
// that a holder cut off from its store while its command runs can still
// record the response when the store comes back.
const outageLease = 2 * time.Second

// work simulates a command's own duration (not a wait for an event).
func work(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// outcomeCounts tallies what the clients of an outage test saw.
type outcomeCounts struct {
	executed, replayed, inFlight, unavailable, recordLost, other atomic.Int64
}

func (c *outcomeCounts) String() string {
	return fmt.Sprintf("executed %d, replayed %d, in flight %d, store unavailable %d, record lost %d, other errors %d",
		c.executed.Load(), c.replayed.Load(), c.inFlight.Load(), c.unavailable.Load(), c.recordLost.Load(), c.other.Load())
}

// client retries (key, identity) on e until it succeeds or ctx ends, as a
// careful caller does: again after 409 (after its Retry-After) and 503,
// never after a success. It returns when it succeeded, or the zero time.
func outageClient(ctx context.Context, e *idempotency.Engine, key, identity string, fn idempotency.Func, counts *outcomeCounts) time.Time {
	for {
		res, err := e.Do(ctx, idempotency.Request{Key: key, Identity: identity, Fingerprint: "fp"}, fn)
		pause := 20 * time.Millisecond
		switch {
		case err == nil:
			if res.Replayed {
				counts.replayed.Add(1)
			} else {
				counts.executed.Add(1)
			}
			if res.RecordErr != nil {
				counts.recordLost.Add(1)
			}
			return time.Now()
		case errors.Is(err, idempotency.ErrInFlight):
			counts.inFlight.Add(1)
			pause = max(pause, time.Second) // the adapters' Retry-After
		case errors.Is(err, idempotency.ErrStoreUnavailable):
			counts.unavailable.Add(1)
		default:
			counts.other.Add(1)
		}
		select {
		case <-ctx.Done():
			return time.Time{}
		case <-time.After(pause):
		}
	}
}

// envelope is the dispatcher's JSON answer.
type envelope struct {
	OK    bool            `json:"ok"`
	Data  json.RawMessage `json:"data"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// probe posts widgets.create with a fresh key and returns the status and
// error code it got (or the transport error).
func probe(client *http.Client, base string) (int, string, error) {
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/commands/widgets.create", strings.NewReader(`{"name":"probe"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", `"probe-`+driver.NewOwner()+`"`)
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var env envelope
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
		return resp.StatusCode, "", fmt.Errorf("decoding the envelope: %w", err)
	}
	code := ""
	if env.Error != nil {
		code = env.Error.Code
	}
	return resp.StatusCode, code, nil
}

// outageFault is one fault of TestStoreOutage: the store's connections
// cut or stalled for length, under commands holding claims of lease.
type outageFault struct {
	name   string
	mode   Mode
	length time.Duration
	lease  time.Duration
}

// outageFaults: two outages shorter than the lease, and one longer.
var outageFaults = []outageFault{
	{"cut", Cut, 400 * time.Millisecond, outageLease},
	{"stall", Stall, time.Second, outageLease},
	{"stall-past-lease", Stall, time.Second, pastLease},
}

// pastLease is the lease of the outage longer than it.
const pastLease = 400 * time.Millisecond

// retryAfter is how long an outage client waits after ErrInFlight: the
// adapters' Retry-After.
const retryAfter = time.Second

// TestStoreOutage runs commands from two replicas (each its own client)
// through a Proxy to Redis or PostgreSQL, two racing callers per key, while
// the store goes away: its connections are cut for 400ms ("cut"), or hang
// for 1s, longer than the Redis client's own timeouts ("stall"), both less
// than the lease (2s), or hang for 1s under a lease of 400ms
// ("stall-past-lease"). Each runs with plain handlers on Redis and
// PostgreSQL and with transactional handlers on PostgreSQL
// ("postgres-tx"), whose effect is a row written in the transaction their
// record commits in.
//
// Pass, for every handler: while the store is gone the dispatcher answers
// 503 store_unavailable; every key ends answered; after the store is back
// no key stays claimed longer than outageStuckBound. For transactional
// handlers, every command's effect happens at most once, exactly once for
// every key a caller saw succeed, and every success is on record, whatever
// the outage's length. For plain handlers that holds only while the store
// serves again within the lease: past it, a holder cannot record its
// response and the key's next claim runs the command again. That limit is
// measured (RELIABILITY.md) and bounded by plainOutageLimit, so the test
// fails if it gets worse.
func TestStoreOutage(t *testing.T) {
	for _, fault := range outageFaults {
		t.Run(fault.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, f *fixture) {
				t.Parallel()
				outage(t, f, fault, false)
			}, redisBackend, postgresBackend)
			t.Run("postgres-tx", func(t *testing.T) {
				t.Parallel()
				f := newFixture(t, postgresBackend)
				f.createLedgerTable(t)
				outage(t, f, fault, true)
			})
		})
	}
}

// outageStuckBound is how long after the store came back (or its first
// caller arrived, if later) a key's last caller may wait for its answer: a
// claim whose Begin reached the store late, after its caller gave up (a
// stalled network delivers it when it heals), lives for a lease; a caller
// refused meanwhile asks again after its Retry-After and runs the command;
// the other caller, refused while it ran, replays a Retry-After later; plus
// half a second for the calls on a loaded machine.
func outageStuckBound(lease time.Duration) time.Duration {
	return lease + 2*retryAfter + 500*time.Millisecond
}

// plainOutageLimit bounds what an outage may cost plain handlers in a run
// of n keys (the documented limit): how many effects beyond the first, over
// all keys.
func plainOutageLimit(fault outageFault, n int) int {
	if fault.length < fault.lease {
		// The store served again within the lease in every run measured
		// on 2026-12-01; one is allowed for a store slow to accept
		// connections again (as on 2026-11-27).
		return 1
	}
	// Measured on 2026-12-01: up to 1 (Redis) and 9 (PostgreSQL) in 40.
	return n / 4
}

// outageReport is what one outage run measured.
type outageReport struct {
	doubled    int           // keys whose command ran twice
	worse      int           // keys whose command ran more than twice
	extra      int           // effects beyond each key's first
	unrecorded int           // keys answered with a success that have no record
	slowest    time.Duration // the slowest key, from its caller's arrival or the store's return
}

func outage(t *testing.T, f *fixture, fault outageFault, tx bool) {
	name := f.name
	if tx {
		name += "-tx"
	}
	proxy, s1 := f.proxied(t)
	s2 := f.via(t, proxy.Addr())
	var late atomic.Int64
	if tx {
		s1 = s1.(*pgstore.Store).Transactional()
		s2 = s2.(*pgstore.Store).Transactional()
	} else {
		s1 = &lateClaims{ClaimStore: s1, lease: fault.lease, n: &late}
		s2 = &lateClaims{ClaimStore: s2, lease: fault.lease, n: &late}
	}
	e1 := idempotency.NewEngine(s1, idempotency.WithLease(fault.lease))
	e2 := idempotency.NewEngine(s2, idempotency.WithLease(fault.lease))

	// The effect: counted in the ledger by a plain handler, a row of the
	// ledger table written in the transaction by a transactional one.
	var ledger Ledger
	effect := func(ctx context.Context, key, identity string) error {
		ledger.Record(Pair(key, identity))
		return nil
	}
	if tx {
		effect = func(ctx context.Context, key, identity string) error {
			return txEffect(ctx, f.ledgerTable(), key, driver.NewOwner())
		}
	}
	d := dispatcher.New(e1)
	d.Register("widgets.create", func(ctx context.Context, req dispatcher.Request) (dispatcher.Response, error) {
		if err := effect(ctx, req.Key, req.Identity); err != nil {
			return dispatcher.Response{}, err
		}
		return dispatcher.Response{Status: 201, Data: map[string]string{"id": "w"}}, nil
	})
	mux := http.NewServeMux()
	mux.Handle("/v1/commands/{name}", d)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	httpClient := &http.Client{Timeout: 5 * time.Second}

	keys := scaled(40)
	const stagger = 40 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second+time.Duration(keys)*stagger)
	defer cancel()
	var counts outcomeCounts
	var mu sync.Mutex
	succeeded := map[string]time.Time{} // when a key's last caller succeeded
	arrived := map[string]time.Time{}   // when a key's first caller arrived
	var wg sync.WaitGroup
	prefix := "outage-" + driver.NewOwner()[:8]
	for i := range keys {
		key := fmt.Sprintf("%s-%d", prefix, i)
		fn := func(ctx context.Context) (idempotency.Response, error) {
			if err := effect(ctx, key, "alice"); err != nil {
				return idempotency.Response{}, err
			}
			if err := work(ctx, 30*time.Millisecond); err != nil {
				return idempotency.Response{}, err
			}
			return idempotency.Response{Status: 201, Body: []byte(`"done"`)}, nil
		}
		for _, e := range []*idempotency.Engine{e1, e2} {
			wg.Go(func() {
				select { // callers arrive over the whole run
				case <-time.After(time.Duration(i) * stagger):
				case <-ctx.Done():
					return
				}
				mu.Lock()
				if _, ok := arrived[key]; !ok {
					arrived[key] = time.Now()
				}
				mu.Unlock()
				if at := outageClient(ctx, e, key, "alice", fn, &counts); !at.IsZero() {
					mu.Lock()
					if old, ok := succeeded[key]; !ok || at.After(old) {
						succeeded[key] = at
					}
					mu.Unlock()
				}
			})
		}
	}

	// The fault, a third of the way into the run; the sleeps space it in
	// real time.
	time.Sleep(time.Duration(keys) * stagger / 3)
	proxy.Set(fault.mode)
	began := time.Now()
	type answer struct {
		status int
		code   string
		err    error
		after  time.Duration
	}
	probed := make(chan answer, 1)
	go func() {
		status, code, err := probe(httpClient, srv.URL)
		probed <- answer{status, code, err, time.Since(began)}
	}()
	time.Sleep(fault.length)
	proxy.Set(Pass)
	healed := time.Now()
	a := <-probed
	t.Logf("%s: store %v for %v (lease %v): probe answered %d %q after %v (err %v)", name, fault.mode, fault.length, fault.lease,
		a.status, a.code, a.after.Round(time.Millisecond), a.err)
	unavailable := a.status == http.StatusServiceUnavailable && a.code == dispatcher.CodeStoreUnavailable && a.after <= fault.length
	if !unavailable {
		t.Errorf("while the store is %v: probe got %d %q after %v (err %v), want 503 %q before the store came back",
			fault.mode, a.status, a.code, a.after.Round(time.Millisecond), a.err, dispatcher.CodeStoreUnavailable)
	}
	wg.Wait()
	t.Logf("%s, store %v: %d keys, 2 callers each: %s", name, fault.mode, keys, &counts)

	var rep outageReport
	if len(succeeded) != keys {
		t.Errorf("%d of %d keys succeeded", len(succeeded), keys)
	}
	// No key stuck: each key is done soon after its first caller arrived
	// or the store came back, whichever is later.
	var ok []string
	worstKey := ""
	for k, at := range succeeded {
		ok = append(ok, Pair(k, "alice"))
		from := arrived[k]
		if healed.After(from) {
			from = healed
		}
		if d := at.Sub(from); d > rep.slowest {
			rep.slowest, worstKey = d, k
		}
	}
	if bound := outageStuckBound(fault.lease); rep.slowest > bound {
		t.Errorf("key %s stuck: done %v after its caller arrived or the store came back, want at most lease + 2 × Retry-After + 0.5s = %v",
			worstKey, rep.slowest, bound)
	}
	// Every success must also be on record: a retry of any key now
	// replays instead of running again.
	var unrecorded []string
	for k := range succeeded {
		if _, hit := f.store.Lookup(context.Background(), k, "alice"); !hit {
			unrecorded = append(unrecorded, k)
		}
	}
	rep.unrecorded = len(unrecorded)
	if tx { // the effects are the rows that committed
		for key, n := range f.ledgerCounts(t, prefix) {
			for range n {
				ledger.Record(Pair(key, "alice"))
			}
		}
	}
	for n, pairs := range ledger.Histogram() {
		switch {
		case n == 2:
			rep.doubled += pairs
		case n > 2:
			rep.worse += pairs
		}
		rep.extra += (n - 1) * pairs
	}
	t.Logf("%s, store %v for %v, lease %v: %d keys, %d ran twice, %d more often (%d extra effects), %d successes unrecorded; slowest key done %v after its caller arrived or the store came back",
		name, fault.mode, fault.length, fault.lease, keys, rep.doubled, rep.worse, rep.extra, rep.unrecorded, rep.slowest.Round(time.Millisecond))
	ledgerErr := ledger.Check(ok)
	if tx {
		// A transactional command's effect commits with its record or not
		// at all, however long the store is gone.
		if ledgerErr != nil {
			t.Errorf("effects: %v", ledgerErr)
		}
		if len(unrecorded) > 0 {
			t.Errorf("%d keys answered with a success have no record: %v", len(unrecorded), unrecorded)
		}
		return
	}
	// Plain handlers: the documented limit.
	t.Logf("%s, store %v for %v, lease %v: %d claims answered a lease or more after their Begin was sent", name, fault.mode, fault.length, fault.lease, late.Load())
	limit := plainOutageLimit(fault, keys)
	if rep.extra > limit {
		t.Errorf("%d effects beyond each key's first (%d keys ran twice, %d more often), want at most %d (the plain handlers' outage limit): %v",
			rep.extra, rep.doubled, rep.worse, limit, ledgerErr)
	}
	if ledgerErr != nil && rep.extra == 0 {
		t.Errorf("effects: %v", ledgerErr) // a success that never ran
	}
	if rep.unrecorded > limit {
		t.Errorf("%d keys answered with a success have no record (a later retry runs them again), want at most %d (the plain handlers' outage limit): %v",
			rep.unrecorded, limit, unrecorded)
	}
}

// lateClaims counts the claims its store acquires whose Begin was answered
// a lease or more after it was sent: the engine's own estimate of such a
// claim's lease has run out before its command starts.
type lateClaims struct {
	idempotency.ClaimStore
	lease time.Duration
	n     *atomic.Int64
}

func (s *lateClaims) Begin(ctx context.Context, key, identity string, req idempotency.ClaimRequest) (idempotency.Claim, error) {
	sent := time.Now()
	cl, err := s.ClaimStore.Begin(ctx, key, identity, req)
	if err == nil && cl.Status == idempotency.ClaimAcquired && time.Since(sent) >= s.lease {
		s.n.Add(1)
	}
	return cl, err
}

// TestOutageWhileCompleting cuts the store while a command runs and lets
// the command finish during the outage, which is shorter than the lease.
// The engine holds a live lease and Complete is idempotent, so the response
// must still be recorded once the store is back, and a racing duplicate
// must replay it instead of running the command a second time.
func TestOutageWhileCompleting(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		t.Parallel()
		proxy, s := f.proxied(t)
		e := idempotency.NewEngine(s, idempotency.WithLease(outageLease))
		key := "completing-" + driver.NewOwner()
		pair := Pair(key, "alice")
		var ledger Ledger
		running, proceed := make(chan struct{}), make(chan struct{})
		fn := func(ctx context.Context) (idempotency.Response, error) {
			ledger.Record(pair)
			close(running)
			<-proceed
			return idempotency.Response{Status: 201, Body: []byte(`"done"`)}, nil
		}
		type result struct {
			res idempotency.Result
			err error
		}
		done := make(chan result, 1)
		go func() {
			res, err := e.Do(context.Background(), idempotency.Request{Key: key, Identity: "alice", Fingerprint: "fp"}, fn)
			done <- result{res, err}
		}()
		<-running
		proxy.Set(Cut)
		close(proceed)
		time.Sleep(300 * time.Millisecond) // the outage: the command ends inside it
		proxy.Set(Pass)
		r := <-done
		if r.err != nil {
			t.Fatalf("Do: %v", r.err)
		}
		if !r.res.Recorded {
			t.Errorf("response not recorded after an outage shorter than the lease: %v", r.res.RecordErr)
		}
		// A duplicate on another replica, retrying as a client does.
		e2 := idempotency.NewEngine(f.store, idempotency.WithLease(outageLease))
		res, _, _ := retryUntilExecuted(t, e2, key, "alice", func(ctx context.Context) (idempotency.Response, error) {
			ledger.Record(pair)
			return idempotency.Response{Status: 201, Body: []byte(`"again"`)}, nil
		}, 10*time.Second)
		if !res.Replayed {
			t.Errorf("the duplicate ran the command again instead of replaying")
		}
		if err := ledger.Check([]string{pair}); err != nil {
			t.Error(err)
		}
	}, redisBackend, postgresBackend)
}
