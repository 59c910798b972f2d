package reliability

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
)

// lostReply runs call through proxy with replies dropped: the store
// executes it but the caller never hears back. call's error must say the
// store was unavailable (or that the caller gave up). warm runs first, with
// replies flowing: the same kind of call on another key, so that the
// client has a connection open with the statement prepared and the call
// itself, not a handshake or a prepare, is what goes unanswered.
func lostReply(t *testing.T, proxy *Proxy, what string, warm, call func(ctx context.Context) error) {
	t.Helper()
	if err := warm(context.Background()); err != nil {
		t.Fatalf("warming up for %s: %v", what, err)
	}
	proxy.Set(DropReplies)
	defer proxy.Set(Pass)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := call(ctx)
	if !errors.Is(err, idempotency.ErrStoreUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("%s with its reply lost: %v, want an error matching ErrStoreUnavailable", what, err)
	}
}

// TestLostReply loses the reply of each claim-protocol step after the store
// executed it, and checks that the caller can recover by retrying: a
// retried Begin with the same owner gets its own claim back (instead of
// leaving the key stuck), a retried Complete succeeds (it is idempotent), a
// key whose Release reply was lost is free.
func TestLostReply(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		t.Parallel()
		proxy, s := f.proxied(t)
		ctx := context.Background()
		req := idempotency.ClaimRequest{Fingerprint: "fp", Owner: driver.NewOwner(), Lease: longLease}
		other := idempotency.ClaimRequest{Fingerprint: "fp", Owner: driver.NewOwner(), Lease: longLease}

		t.Run("begin", func(t *testing.T) {
			key := "lost-begin-" + driver.NewOwner()
			begin := func(key string) func(ctx context.Context) error {
				return func(ctx context.Context) error {
					_, err := s.Begin(ctx, key, "alice", req)
					return err
				}
			}
			lostReply(t, proxy, "Begin", begin(key+"-warm"), begin(key))
			if cl, err := f.store.Begin(ctx, key, "alice", other); err != nil || cl.Status != idempotency.ClaimInFlight {
				t.Fatalf("another owner's Begin after the lost reply: %v %v, want in flight (the store executed the claim)", cl.Status, err)
			}
			cl, err := s.Begin(ctx, key, "alice", req)
			if err != nil || cl.Status != idempotency.ClaimAcquired {
				t.Fatalf("the owner's retried Begin: %v %v, want acquired", cl.Status, err)
			}
			if err := s.Complete(ctx, cl.Token, idempotency.Cached{Status: 201, WireBody: []byte(`"x"`)}); err != nil {
				t.Fatalf("Complete after the retried Begin: %v", err)
			}
		})

		t.Run("complete", func(t *testing.T) {
			key := "lost-complete-" + driver.NewOwner()
			cl, err := s.Begin(ctx, key, "alice", req)
			if err != nil || cl.Status != idempotency.ClaimAcquired {
				t.Fatalf("Begin: %v %v", cl.Status, err)
			}
			rec := idempotency.Cached{Status: 201, WireBody: []byte(`"done"`)}
			lostReply(t, proxy, "Complete", func(ctx context.Context) error {
				warm, err := s.Begin(ctx, key+"-warm", "alice", req)
				if err != nil {
					return err
				}
				return s.Complete(ctx, warm.Token, rec)
			}, func(ctx context.Context) error { return s.Complete(ctx, cl.Token, rec) })
			if err := s.Complete(ctx, cl.Token, rec); err != nil {
				t.Fatalf("retried Complete: %v, want nil (Complete is idempotent)", err)
			}
			got, ok := f.store.Lookup(ctx, key, "alice")
			if !ok || string(got.WireBody) != `"done"` {
				t.Fatalf("Lookup after the retried Complete: %v %v", ok, got)
			}
		})

		t.Run("release", func(t *testing.T) {
			key := "lost-release-" + driver.NewOwner()
			cl, err := s.Begin(ctx, key, "alice", req)
			if err != nil || cl.Status != idempotency.ClaimAcquired {
				t.Fatalf("Begin: %v %v", cl.Status, err)
			}
			lostReply(t, proxy, "Release", func(ctx context.Context) error {
				warm, err := s.Begin(ctx, key+"-warm", "alice", req)
				if err != nil {
					return err
				}
				return s.Release(ctx, warm.Token)
			}, func(ctx context.Context) error { return s.Release(ctx, cl.Token) })
			if err := s.Release(ctx, cl.Token); err != nil && !errors.Is(err, idempotency.ErrLeaseLost) {
				t.Fatalf("retried Release: %v, want nil or ErrLeaseLost", err)
			}
			if cl, err := f.store.Begin(ctx, key, "alice", other); err != nil || cl.Status != idempotency.ClaimAcquired {
				t.Fatalf("Begin after the released claim: %v %v, want acquired", cl.Status, err)
			}
		})

		// Through the Engine: a Do whose Begin reply is lost does not run
		// the command; the claim it left behind runs out with its lease and
		// a retrying caller (the Engine picks a new owner for every Do)
		// then runs the command once.
		t.Run("engine", func(t *testing.T) {
			key := "lost-engine-" + driver.NewOwner()
			var ledger Ledger
			fn := func(ctx context.Context) (idempotency.Response, error) {
				tok, _ := idempotency.TokenFromContext(ctx)
				ledger.Record(Pair(tok.Key, tok.Identity))
				return idempotency.Response{Status: 201, Body: []byte(`"ran"`)}, nil
			}
			e := idempotency.NewEngine(s, idempotency.WithLease(outageLease))
			do := func(key string) func(ctx context.Context) error {
				return func(ctx context.Context) error {
					_, err := e.Do(ctx, idempotency.Request{Key: key, Identity: "alice", Fingerprint: "fp"}, fn)
					return err
				}
			}
			lost := time.Now()
			lostReply(t, proxy, "Do", do(key+"-warm"), do(key))
			if n := ledger.Count(Pair(key, "alice")); n != 0 {
				t.Fatalf("the command ran %d times although Begin failed", n)
			}
			res, at, refused := retryUntilExecuted(t, e, key, "alice", fn, 10*time.Second)
			t.Logf("%s: key free %v after the lost Begin (%d refused as in flight)", f.name, at.Sub(lost).Round(time.Millisecond), refused)
			if refused == 0 {
				t.Errorf("the key was free at once: the lost Begin had not claimed it, so the test proved nothing")
			}
			if stuck := at.Sub(lost); stuck > outageLease+time.Second {
				t.Errorf("key stuck %v after a lost Begin reply, want at most lease + 1s = %v", stuck, outageLease+time.Second)
			}
			if res.Replayed {
				t.Errorf("replayed a response no one recorded")
			}
			if err := ledger.Check([]string{Pair(key, "alice")}); err != nil {
				t.Error(err)
			}
		})
	}, redisBackend, postgresBackend)
}

// TestReleaseRetriedAfterLostReply loses the reply of a Release that Redis
// executed, then lets the network heal before go-redis retries the script.
// The retry finds the claim gone and may answer ErrLeaseLost: the contract
// of ClaimStore.Release allows that (ErrLeaseLost says the token holds
// nothing now). What must hold is that the claim is released: another
// owner's Begin acquires the key at once, with a greater fence.
func TestReleaseRetriedAfterLostReply(t *testing.T) {
	f := newFixture(t, redisBackend)
	proxy, s := f.proxied(t)
	ctx := context.Background()
	key := "release-retry-" + driver.NewOwner()
	req := idempotency.ClaimRequest{Fingerprint: "fp", Owner: driver.NewOwner(), Lease: longLease}
	// Warm up: a connection open, the scripts loaded.
	warm, err := s.Begin(ctx, key+"-warm", "alice", req)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Release(ctx, warm.Token); err != nil {
		t.Fatal(err)
	}
	cl, err := s.Begin(ctx, key, "alice", req)
	if err != nil || cl.Status != idempotency.ClaimAcquired {
		t.Fatalf("Begin: %v %v", cl.Status, err)
	}
	sum := driver.RecordKey(nil, key, "alice")
	name := f.prefix + "{" + hex.EncodeToString(sum[:]) + "}"

	proxy.Set(DropReplies)
	released := make(chan error, 1)
	go func() { released <- s.Release(ctx, cl.Token) }()
	// Heal as soon as Redis has released the claim (the record is gone or
	// its lease zeroed), before the client's read timeout makes it retry.
	deadline := time.Now().Add(250 * time.Millisecond)
	for {
		v, err := f.rdb.Get(ctx, name).Bytes()
		if errors.Is(err, redis.Nil) || (err == nil && len(v) >= 17 && bytes.Equal(v[9:17], make([]byte, 8))) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Redis did not release the claim within 250ms")
		}
		time.Sleep(5 * time.Millisecond) // polling the server's state
	}
	proxy.Set(Pass)
	if err := <-released; err != nil && !errors.Is(err, idempotency.ErrLeaseLost) {
		t.Errorf("Release, executed by Redis, answered %v after the client's retry; want nil or ErrLeaseLost", err)
	}
	other := req
	other.Owner = driver.NewOwner()
	next, err := s.Begin(ctx, key, "alice", other)
	if err != nil || next.Status != idempotency.ClaimAcquired || next.Token.Fence <= cl.Token.Fence {
		t.Fatalf("Begin after the released claim = (%v, fence %d, %v), want acquired with a fence > %d",
			next.Status, next.Token.Fence, err, cl.Token.Fence)
	}
}
