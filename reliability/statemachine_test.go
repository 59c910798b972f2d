package reliability

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
)

// fakeClock is a clock the in-memory store reads and the state machine
// advances.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// smRecord is the state machine's model of one record.
type smRecord struct {
	done        bool
	owner       string
	fence       uint64
	fp          string
	leaseUntil  time.Time
	rec         idempotency.Cached // what a replay must return (done)
	expires     time.Time
	fromStore   bool // written by Store, not by a claim
	replacedTok map[idempotency.Token]bool
}

// stateMachine checks one store, call by call, against a sequential model
// of the claim protocol. With a clock it also moves time, so lease and TTL
// expiry are part of the model; without one (Redis, PostgreSQL, which read
// their server's clock) leases and TTLs are long enough not to run out.
type stateMachine struct {
	store  idempotency.ClaimStore
	clock  *fakeClock // nil: real time, nothing expires
	prefix string     // this check's keys, unseen by any other

	recs   map[pairRef]*smRecord
	floor  map[pairRef]uint64 // highest fence handed out per pair
	tokens []idempotency.Token
	owners map[string]string // owner -> the fingerprint it always claims with
	// completedBy marks tokens that completed their record.
	completedBy map[idempotency.Token]bool
}

func (m *stateMachine) now() time.Time {
	if m.clock == nil {
		return time.Time{}
	}
	return m.clock.Now()
}

// live reports whether time t (zero in real time) is before deadline.
func (m *stateMachine) before(deadline time.Time) bool {
	return m.clock == nil || m.clock.Now().Before(deadline)
}

func (m *stateMachine) record(p pairRef) *smRecord {
	r := m.recs[p]
	if r == nil {
		return nil
	}
	if r.done && !m.before(r.expires) {
		delete(m.recs, p)
		return nil
	}
	return r
}

func (m *stateMachine) held(tok idempotency.Token) bool {
	r := m.record(pairRef{tok.Key, tok.Identity})
	return r != nil && !r.done && r.owner == tok.Owner && r.fence == tok.Fence && m.before(r.leaseUntil)
}

var ctxBG = context.Background()

func (m *stateMachine) drawPair(t *rapid.T) pairRef {
	k := rapid.SampledFrom([]string{"a", "b"}).Draw(t, "key")
	id := rapid.SampledFrom([]string{"alice", "bob"}).Draw(t, "identity")
	return pairRef{m.prefix + k, id}
}

func (m *stateMachine) drawLease(t *rapid.T) time.Duration {
	if m.clock == nil {
		return longLease
	}
	return rapid.SampledFrom([]time.Duration{time.Second, 5 * time.Second}).Draw(t, "lease")
}

func (m *stateMachine) drawTTL(t *rapid.T) time.Duration {
	if m.clock == nil {
		return rapid.SampledFrom([]time.Duration{0, time.Hour}).Draw(t, "ttl")
	}
	return rapid.SampledFrom([]time.Duration{0, 3 * time.Second, 7 * time.Second}).Draw(t, "ttl")
}

func (m *stateMachine) drawResponse(t *rapid.T, fp string) idempotency.Cached {
	c := idempotency.Cached{
		Status:      rapid.SampledFrom([]int{200, 201, 409, 422}).Draw(t, "status"),
		WireBody:    []byte(fmt.Sprintf(`{"ok":true,"n":%d}`, rapid.IntRange(0, 1<<20).Draw(t, "body"))),
		TTL:         m.drawTTL(t),
		Fingerprint: fp,
	}
	if rapid.Bool().Draw(t, "header") {
		c.Header = map[string][]string{"Location": {"/w/1"}, "X-Multi": {"1", "2"}}
	}
	return c
}

// expect normalises c into what a replay of it must return.
func (m *stateMachine) expect(c idempotency.Cached) (idempotency.Cached, time.Time) {
	ttl := c.TTL
	if ttl <= 0 {
		ttl = idempotency.DefaultTTL
	}
	c.TTL = ttl
	c.StoredAt = m.now()
	return c, c.StoredAt.Add(ttl)
}

// sameRecord compares what a store returned with what the model expects,
// leaving out StoredAt in real time (the server's clock sets it).
func (m *stateMachine) sameRecord(t *rapid.T, what string, got *idempotency.Cached, want idempotency.Cached) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s: no record, want %+v", what, want)
	}
	diff := got.Status != want.Status || string(got.WireBody) != string(want.WireBody) ||
		got.Fingerprint != want.Fingerprint || got.Tombstone != want.Tombstone || got.TTL != want.TTL ||
		!maps.EqualFunc(got.Header, want.Header, slices.Equal[[]string]) ||
		(m.clock != nil && !got.StoredAt.Equal(want.StoredAt))
	if diff {
		t.Fatalf("%s: record\n got %+v (body %s)\nwant %+v (body %s)", what, *got, got.WireBody, want, want.WireBody)
	}
}

func (m *stateMachine) Begin(t *rapid.T) {
	p := m.drawPair(t)
	var owner, fp string
	if len(m.owners) > 0 && rapid.Bool().Draw(t, "retry") {
		owner = rapid.SampledFrom(slices.Sorted(maps.Keys(m.owners))).Draw(t, "owner")
		fp = m.owners[owner]
	} else {
		owner = fmt.Sprintf("o%d", len(m.owners))
		fp = rapid.SampledFrom([]string{"", "f1", "f2"}).Draw(t, "fp")
		m.owners[owner] = fp
	}
	lease := m.drawLease(t)
	cl, err := m.store.Begin(ctxBG, p.key, p.identity, idempotency.ClaimRequest{Fingerprint: fp, Owner: owner, Lease: lease})
	if err != nil {
		t.Fatalf("Begin(%v, %s): %v", p, owner, err)
	}
	r := m.record(p)
	switch {
	case r != nil && r.done:
		if mismatch(r.rec.Fingerprint, fp) {
			m.status(t, "Begin on a completed record", cl, idempotency.ClaimMismatch)
			return
		}
		m.status(t, "Begin on a completed record", cl, idempotency.ClaimReplay)
		m.sameRecord(t, "replay", cl.Record, r.rec)
		return
	case r != nil && m.before(r.leaseUntil):
		switch {
		case mismatch(r.fp, fp):
			m.status(t, "Begin on a claim in flight", cl, idempotency.ClaimMismatch)
		case r.owner == owner:
			m.status(t, "the holder's Begin", cl, idempotency.ClaimAcquired)
			if want := (idempotency.Token{Key: p.key, Identity: p.identity, Owner: owner, Fence: r.fence}); cl.Token != want {
				t.Fatalf("the holder's Begin: token %+v, want %+v", cl.Token, want)
			}
		default:
			m.status(t, "Begin on another's claim in flight", cl, idempotency.ClaimInFlight)
			if m.clock != nil && cl.RetryAfter != r.leaseUntil.Sub(m.now()) {
				t.Fatalf("RetryAfter = %v, want %v", cl.RetryAfter, r.leaseUntil.Sub(m.now()))
			}
		}
		return
	}
	m.status(t, "Begin on a free record", cl, idempotency.ClaimAcquired)
	tok := cl.Token
	if tok.Key != p.key || tok.Identity != p.identity || tok.Owner != owner || tok.Fence <= m.floor[p] {
		t.Fatalf("new claim's token %+v: want key %q identity %q owner %q and a fence above %d",
			tok, p.key, p.identity, owner, m.floor[p])
	}
	m.floor[p] = tok.Fence
	m.recs[p] = &smRecord{owner: owner, fence: tok.Fence, fp: fp, leaseUntil: m.now().Add(lease)}
	m.tokens = append(m.tokens, tok)
}

func (m *stateMachine) status(t *rapid.T, what string, cl idempotency.Claim, want idempotency.ClaimStatus) {
	t.Helper()
	if cl.Status != want {
		t.Fatalf("%s: status %v, want %v", what, cl.Status, want)
	}
}

func (m *stateMachine) drawToken(t *rapid.T) idempotency.Token {
	if len(m.tokens) == 0 {
		t.Skip("no token yet")
	}
	return rapid.SampledFrom(m.tokens).Draw(t, "token")
}

func (m *stateMachine) Complete(t *rapid.T) {
	tok := m.drawToken(t)
	p := pairRef{tok.Key, tok.Identity}
	r := m.record(p)
	fp := ""
	if r != nil && !r.done && rapid.Bool().Draw(t, "with fingerprint") {
		fp = r.fp
	}
	c := m.drawResponse(t, fp)
	err := m.store.Complete(ctxBG, tok, c)
	switch {
	case m.held(tok):
		if err != nil {
			t.Fatalf("Complete by the holder: %v", err)
		}
		if c.Fingerprint == "" {
			c.Fingerprint = r.fp
		}
		rec, exp := m.expect(c)
		m.recs[p] = &smRecord{done: true, owner: tok.Owner, fence: tok.Fence, rec: rec, expires: exp}
		m.completedBy[tok] = true
	case r != nil && r.done && !r.fromStore && r.owner == tok.Owner && r.fence == tok.Fence:
		if err != nil {
			t.Fatalf("repeated Complete by the token that completed the record: %v, want nil", err)
		}
	case m.completedBy[tok] && (r == nil || r.done):
		// The record this token completed was replaced by Store or has
		// expired: a repeated Complete may say nil or ErrLeaseLost, as
		// long as it changes nothing (the next Lookup or Begin checks).
		if err != nil && !errors.Is(err, idempotency.ErrLeaseLost) {
			t.Fatalf("repeated Complete after the record was replaced or expired: %v", err)
		}
	default:
		if !errors.Is(err, idempotency.ErrLeaseLost) {
			t.Fatalf("Complete by a token that does not hold the claim: %v, want ErrLeaseLost", err)
		}
	}
}

func (m *stateMachine) Release(t *rapid.T) {
	tok := m.drawToken(t)
	err := m.store.Release(ctxBG, tok)
	if m.held(tok) {
		if err != nil {
			t.Fatalf("Release by the holder: %v", err)
		}
		delete(m.recs, pairRef{tok.Key, tok.Identity})
		return
	}
	if !errors.Is(err, idempotency.ErrLeaseLost) {
		t.Fatalf("Release by a token that does not hold the claim: %v, want ErrLeaseLost", err)
	}
}

func (m *stateMachine) Renew(t *rapid.T) {
	tok := m.drawToken(t)
	lease := m.drawLease(t)
	err := m.store.Renew(ctxBG, tok, lease)
	if m.held(tok) {
		if err != nil {
			t.Fatalf("Renew by the holder: %v", err)
		}
		m.recs[pairRef{tok.Key, tok.Identity}].leaseUntil = m.now().Add(lease)
		return
	}
	if !errors.Is(err, idempotency.ErrLeaseLost) {
		t.Fatalf("Renew by a token that does not hold the claim: %v, want ErrLeaseLost", err)
	}
}

func (m *stateMachine) Store(t *rapid.T) {
	p := m.drawPair(t)
	c := m.drawResponse(t, rapid.SampledFrom([]string{"", "f1", "f2"}).Draw(t, "fp"))
	if err := m.store.Store(ctxBG, p.key, p.identity, c); err != nil {
		t.Fatalf("Store(%v): %v", p, err)
	}
	rec, exp := m.expect(c)
	m.recs[p] = &smRecord{done: true, fromStore: true, rec: rec, expires: exp}
}

func (m *stateMachine) Lookup(t *rapid.T) {
	p := m.drawPair(t)
	got, ok := m.store.Lookup(ctxBG, p.key, p.identity)
	r := m.record(p)
	if r == nil || !r.done {
		if ok {
			t.Fatalf("Lookup(%v) = %+v, want a miss", p, *got)
		}
		return
	}
	if !ok {
		t.Fatalf("Lookup(%v) missed, want %+v", p, r.rec)
	}
	m.sameRecord(t, "Lookup", got, r.rec)
}

func (m *stateMachine) Advance(t *rapid.T) {
	if m.clock == nil {
		t.Skip("real time")
	}
	m.clock.Advance(time.Duration(rapid.IntRange(1, 40).Draw(t, "tenths")) * 100 * time.Millisecond)
}

func (m *stateMachine) actions() map[string]func(*rapid.T) {
	return map[string]func(*rapid.T){
		"Begin": m.Begin, "Complete": m.Complete, "Release": m.Release, "Renew": m.Renew,
		"Store": m.Store, "Lookup": m.Lookup, "Advance": m.Advance,
	}
}

// TestStateMachine checks each store against a sequential model of the
// claim protocol with rapid: random sequences of Begin (new owners and
// retries, matching and mismatched fingerprints), Complete, Release and
// Renew (by holders and by stale tokens), Store and Lookup, every answer
// compared with the model's, headers and TTLs included. The in-memory
// store runs on a fake clock, so expiry of leases and records is part of
// the model.
func TestStateMachine(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		t.Parallel()
		var clock *fakeClock
		store := f.store
		if f.name == "memory" {
			clock = &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
			store = idempotency.NewInMemoryStore(idempotency.WithClock(clock.Now))
		}
		n := 0
		rapid.Check(t, func(t *rapid.T) {
			n++
			m := &stateMachine{
				store: store, clock: clock, prefix: fmt.Sprintf("sm%d-%s-", n, driver.NewOwner()[:6]),
				recs: map[pairRef]*smRecord{}, floor: map[pairRef]uint64{}, owners: map[string]string{},
				completedBy: map[idempotency.Token]bool{},
			}
			t.Repeat(m.actions())
		})
	})
}
