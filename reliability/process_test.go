package reliability

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
)

// processLease is the lease of the holder-process tests: short, so that
// they wait little real time, long enough for a busy machine to renew it.
const processLease = 400 * time.Millisecond

// stuckBound is how long after its holder died or froze a key may stay
// claimed: the lease, plus one second.
const stuckBound = processLease + time.Second

// retryUntilExecuted runs e.Do for (key, identity) until it executes or
// replays, waiting 20ms after each ErrInFlight, and returns the result,
// when it succeeded and how many attempts were refused as in flight.
func retryUntilExecuted(t *testing.T, e *idempotency.Engine, key, identity string, fn idempotency.Func, deadline time.Duration) (idempotency.Result, time.Time, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	inFlight := 0
	for {
		res, err := e.Do(ctx, idempotency.Request{Key: key, Identity: identity, Fingerprint: "fp"}, fn)
		switch {
		case err == nil:
			return res, time.Now(), inFlight
		case errors.Is(err, idempotency.ErrInFlight):
			inFlight++
		default:
			t.Fatalf("Do: %v", err)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("key still in flight after %v (%d attempts)", deadline, inFlight)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestHolderKilled claims a key in a holder process through the Engine,
// kills the process with SIGKILL while its command runs, and checks that
// the key is taken over (not stuck) within lease + 1s, with a higher fence,
// and that the command's effect happens once.
func TestHolderKilled(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		t.Parallel()
		key, identity := "killed-"+driver.NewOwner(), "alice"
		h := startHolder(t, f, "do", key, identity, processLease)
		fence1 := h.expectFence(t, "running")
		h.signal(t, syscall.SIGKILL)
		killed := time.Now()
		_ = h.cmd.Wait()

		var ledger Ledger
		e := idempotency.NewEngine(f.store, idempotency.WithLease(processLease))
		res, at, refused := retryUntilExecuted(t, e, key, identity, func(ctx context.Context) (idempotency.Response, error) {
			tok, _ := idempotency.TokenFromContext(ctx)
			ledger.RecordFenced(Pair(key, identity), tok.Fence)
			return idempotency.Response{Status: 201, Body: []byte(`"fresh"`)}, nil
		}, 10*time.Second)
		stuck := at.Sub(killed)
		t.Logf("%s: taken over %v after SIGKILL (%d attempts refused as in flight), fence %d -> %d", f.name, stuck.Round(time.Millisecond), refused, fence1, res.Fence)
		if refused == 0 {
			t.Errorf("the key was free right after the kill: the dead holder's claim was not in flight")
		}
		if stuck > stuckBound {
			t.Errorf("key stuck for %v after its holder was killed, want at most lease + 1s = %v", stuck, stuckBound)
		}
		if res.Replayed || res.Fence <= fence1 {
			t.Errorf("takeover: replayed %v, fence %d; want an execution with a fence above %d", res.Replayed, res.Fence, fence1)
		}
		if err := ledger.Check([]string{Pair(key, identity)}); err != nil {
			t.Error(err)
		}
	}, redisBackend, postgresBackend)
}

// TestHolderPaused claims a key in a holder process with the bare claim
// protocol, freezes it with SIGSTOP past its lease, takes the key over and
// completes it, then lets the holder go on: its late Complete must be
// rejected with ErrLeaseLost and the record must stay the new holder's.
func TestHolderPaused(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		t.Parallel()
		key, identity := "paused-"+driver.NewOwner(), "alice"
		h := startHolder(t, f, "claim", key, identity, processLease)
		fence1 := h.expectFence(t, "claimed")
		claimed := time.Now()
		h.signal(t, syscall.SIGSTOP)

		ctx := context.Background()
		req := idempotency.ClaimRequest{Fingerprint: "fp", Owner: driver.NewOwner(), Lease: processLease}
		var cl idempotency.Claim
		refused := 0
		for {
			var err error
			cl, err = f.store.Begin(ctx, key, identity, req)
			if err != nil {
				t.Fatalf("Begin: %v", err)
			}
			if cl.Status == idempotency.ClaimAcquired {
				break
			}
			if cl.Status != idempotency.ClaimInFlight {
				t.Fatalf("Begin: %v, want in flight then acquired", cl.Status)
			}
			refused++
			if time.Since(claimed) > 10*time.Second {
				t.Fatalf("key still in flight 10s after its holder froze")
			}
			time.Sleep(20 * time.Millisecond) // real server time: the lease must run out
		}
		stuck := time.Since(claimed)
		if refused == 0 {
			t.Errorf("the key was free while its holder's lease ran")
		}
		if stuck > stuckBound {
			t.Errorf("key stuck for %v after its holder froze, want at most %v", stuck, stuckBound)
		}
		if cl.Token.Fence <= fence1 {
			t.Errorf("takeover fence %d, want above the frozen holder's %d", cl.Token.Fence, fence1)
		}
		if err := f.store.Complete(ctx, cl.Token, idempotency.Cached{Status: 201, WireBody: []byte(`"fresh"`)}); err != nil {
			t.Fatalf("Complete by the new holder: %v", err)
		}

		h.signal(t, syscall.SIGCONT)
		h.send(t, "complete")
		if got := h.expect(t, "complete", 10*time.Second); got != "lease_lost" {
			t.Errorf("the stale holder's Complete: %q, want lease_lost", got)
		}
		rec, ok := f.store.Lookup(ctx, key, identity)
		if !ok || string(rec.WireBody) != `"fresh"` {
			t.Errorf("record after the stale Complete: %v %v, want the new holder's \"fresh\"", ok, rec)
		}
		t.Logf("%s: taken over %v after the claim (%d refused), fence %d -> %d; stale Complete rejected",
			f.name, stuck.Round(time.Millisecond), refused, fence1, cl.Token.Fence)
	}, redisBackend, postgresBackend)
}

// TestHolderPausedEngine is TestHolderPaused with both holders running the
// Engine: the frozen holder's command, resumed after the takeover, must
// neither record its response nor get its effect past a fenced downstream.
func TestHolderPausedEngine(t *testing.T) {
	forEachBackend(t, func(t *testing.T, f *fixture) {
		t.Parallel()
		key, identity := "paused-engine-"+driver.NewOwner(), "alice"
		pair := Pair(key, identity)
		h := startHolder(t, f, "do", key, identity, processLease)
		fence1 := h.expectFence(t, "running")
		running := time.Now()
		h.signal(t, syscall.SIGSTOP)

		var ledger Ledger
		e := idempotency.NewEngine(f.store, idempotency.WithLease(processLease))
		res, at, _ := retryUntilExecuted(t, e, key, identity, func(ctx context.Context) (idempotency.Response, error) {
			tok, _ := idempotency.TokenFromContext(ctx)
			ledger.RecordFenced(pair, tok.Fence)
			return idempotency.Response{Status: 201, Body: []byte(`"fresh"`)}, nil
		}, 10*time.Second)
		if stuck := at.Sub(running); stuck > stuckBound {
			t.Errorf("key stuck for %v after its holder froze, want at most %v", stuck, stuckBound)
		}
		if !res.Recorded {
			t.Fatalf("takeover not recorded: %v", res.RecordErr)
		}

		h.signal(t, syscall.SIGCONT)
		h.send(t, "go")
		for line := range h.lines {
			word, rest, _ := strings.Cut(line, " ")
			switch word {
			case "effect":
				if ledger.RecordFenced(pair, fence1) {
					t.Errorf("the stale holder's effect (fence %d) got past the fenced ledger", fence1)
				}
			case "done":
				if strings.HasPrefix(rest, "recorded") || strings.HasPrefix(rest, "error") {
					t.Errorf("stale holder: %s, want its record refused (record_lost or cancelled)", line)
				}
				t.Logf("%s: stale holder (fence %d): %s", f.name, fence1, line)
			default:
				t.Errorf("holder said %q", line)
			}
		}
		rec, ok := f.store.Lookup(context.Background(), key, identity)
		if !ok || string(rec.WireBody) != `"fresh"` {
			t.Errorf("record after the stale holder resumed: %v %v, want the new holder's \"fresh\"", ok, rec)
		}
		if err := ledger.Check([]string{pair}); err != nil {
			t.Error(err)
		}
	}, redisBackend, postgresBackend)
}
