package idempotency

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
	"unsafe"
)

// The entry's size is the store's memory per record: keep it in the
// 128-byte size class.
func TestMemEntrySize(t *testing.T) {
	if n := unsafe.Sizeof(memEntry{}); n > 128 {
		t.Errorf("memEntry is %d bytes, want at most 128", n)
	}
	if n := unsafe.Sizeof(memExtra{}); n > 32 {
		t.Errorf("memExtra is %d bytes, want at most 32", n)
	}
}

func TestMemHashSeparatesKeyAndIdentity(t *testing.T) {
	s := NewInMemoryStore()
	for _, p := range [][2]recordName{
		{{"ab", "c"}, {"a", "bc"}},
		{{"a", "b"}, {"b", "a"}},
		{{"ab", ""}, {"a", "b"}},
	} {
		if s.hash(p[0].key, p[0].identity) == s.hash(p[1].key, p[1].identity) {
			t.Errorf("hash%v == hash%v", p[0], p[1])
		}
	}
}

// memOp is one step of the collision test: each store under test runs the
// same steps, and all must answer alike.
type memResult struct {
	op     string
	hit    bool
	status ClaimStatus
	body   string
	err    string
	len    int
}

// TestInMemoryHashCollisions runs one random history of operations on a
// store whose names all hash apart and on stores whose hash is narrowed to
// a few bits (so that most names collide), and checks that every answer is
// the same.
func TestInMemoryHashCollisions(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) { runCollisionHistory(t, seed) })
	}
}

func runCollisionHistory(t *testing.T, seed uint64) {
	ctx := context.Background()
	masks := []uint64{^uint64(0), 0, 1, 3}
	var clock = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	now := func() time.Time { return clock }
	stores := make([]*InMemoryStore, len(masks))
	for i, m := range masks {
		stores[i] = NewInMemoryStore(WithClock(now), WithMaxEntries(6), WithMaxBytes(40))
		stores[i].hashMask = m
	}
	names := []recordName{{"ab", "c"}, {"a", "bc"}, {"a", ""}, {"b", ""}, {"c", "x"}, {"c", "y"}, {"ab", ""}, {"d", "c"}, {"e", ""}}
	owners := []string{"o1", "o2"}
	toks := make([][]Token, len(masks)) // tokens handed out so far, per store
	rng := rand.New(rand.NewPCG(seed, 1))
	for step := range 400 {
		n := names[rng.IntN(len(names))]
		op := rng.IntN(8)
		body := fmt.Sprint("b", rng.IntN(30))
		lease := time.Duration(1+rng.IntN(5)) * time.Second
		owner := owners[rng.IntN(len(owners))]
		tokPick := rng.IntN(1 << 20)
		var want memResult
		for i, s := range stores {
			var got memResult
			switch op {
			case 0, 1:
				c, ok := s.Lookup(ctx, n.key, n.identity)
				got = memResult{op: "lookup", hit: ok}
				if ok {
					got.body = string(c.WireBody)
				}
			case 2:
				err := s.Store(ctx, n.key, n.identity, Cached{Status: 200, WireBody: []byte(body), TTL: lease * 2})
				got = memResult{op: "store", err: errString(err)}
			case 3, 4:
				cl, err := s.Begin(ctx, n.key, n.identity, ClaimRequest{Owner: owner, Lease: lease, Fingerprint: body[:2]})
				got = memResult{op: "begin", status: cl.Status, err: errString(err)}
				if cl.Status == ClaimAcquired {
					toks[i] = append(toks[i], cl.Token)
				}
				if cl.Record != nil {
					got.body = string(cl.Record.WireBody)
				}
			case 5:
				if len(toks[i]) > 0 {
					err := s.Complete(ctx, toks[i][tokPick%len(toks[i])], Cached{Status: 201, WireBody: []byte(body)})
					got = memResult{op: "complete", err: errString(err)}
				}
			case 6:
				if len(toks[i]) > 0 {
					tok := toks[i][tokPick%len(toks[i])]
					got = memResult{op: "release/renew", err: errString(errors.Join(s.Release(ctx, tok), s.Renew(ctx, tok, lease)))}
				}
			case 7:
				if i == 0 {
					clock = clock.Add(time.Duration(rng.IntN(3000)) * time.Millisecond)
				}
			}
			got.len = s.Len()
			if i == 0 {
				want = got
			} else if got != want {
				t.Fatalf("step %d, %s on %v: hash mask %#x answered %+v, full hash %+v", step, got.op, n, masks[i], got, want)
			}
		}
	}
	if len(stores[1].collided) == 0 && stores[1].count() > 1 {
		t.Error("with every name hashing alike, no record was kept apart: the collision path went untested")
	}
	for i, s := range stores {
		if got := s.count(); got > 6 {
			t.Errorf("mask %#x: %d records, over the cap 6", masks[i], got)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
