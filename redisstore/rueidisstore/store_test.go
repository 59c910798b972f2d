package rueidisstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/redisstore"
	"github.com/idemkit/idempotency/storetest"
	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	newClient(t) // skip at once when there is no server
	storetest.Run(t, newStore, storetest.WithReplicas(newReplicas))
}

func BenchmarkStore(b *testing.B) {
	newClient(b)
	storetest.Benchmark(b, newStore)
}

// TestCompatible: with the same prefix and secret, a record written through
// redisstore is read through this package and the other way round, for
// every step of the protocol.
func TestCompatible(t *testing.T) {
	t.Parallel()
	rc := newClient(t)
	prefix := newPrefix(t, rc)
	gopt, err := redis.ParseURL(redisURL())
	if err != nil {
		t.Fatalf("IDEMPOTENCY_REDIS_URL %q: %v", redisURL(), err)
	}
	gc := redis.NewClient(gopt)
	t.Cleanup(func() { gc.Close() })
	secret := []byte("shared secret")
	ours := New(rc, WithPrefix(prefix), WithSecret(secret))
	theirs := redisstore.New(gc, redisstore.WithPrefix(prefix), redisstore.WithSecret(secret))
	ctx := context.Background()

	stores := []struct {
		name string
		st   idempotency.ClaimStore
	}{{"rueidisstore", ours}, {"redisstore", theirs}}
	for i, w := range stores {
		r := stores[1-i]
		t.Run(w.name+" to "+r.name, func(t *testing.T) {
			key := "k-" + w.name
			req := idempotency.ClaimRequest{Owner: "owner-1", Fingerprint: "fp", Lease: time.Minute}
			cl, err := w.st.Begin(ctx, key, "alice", req)
			if err != nil || cl.Status != idempotency.ClaimAcquired {
				t.Fatalf("%s.Begin = (%+v, %v), want Acquired", w.name, cl, err)
			}
			// The reader sees the writer's claim: in flight for another
			// owner, the same token for the same owner.
			other, err := r.st.Begin(ctx, key, "alice", idempotency.ClaimRequest{Owner: "owner-2", Fingerprint: "fp", Lease: time.Minute})
			if err != nil || other.Status != idempotency.ClaimInFlight {
				t.Fatalf("%s.Begin by another owner = (%+v, %v), want InFlight", r.name, other, err)
			}
			again, err := r.st.Begin(ctx, key, "alice", req)
			if err != nil || again.Status != idempotency.ClaimAcquired || again.Token != cl.Token {
				t.Fatalf("%s.Begin by the same owner = (%+v, %v), want Acquired with %+v", r.name, again, err, cl.Token)
			}
			if err := r.st.Renew(ctx, cl.Token, time.Minute); err != nil {
				t.Fatalf("%s.Renew(writer's token) = %v", r.name, err)
			}
			resp := idempotency.Cached{Status: 201, WireBody: []byte(`{"ok":true}`), TTL: time.Hour,
				Header: map[string][]string{"Location": {"/w/7"}}}
			if err := w.st.Complete(ctx, cl.Token, resp); err != nil {
				t.Fatalf("%s.Complete = %v", w.name, err)
			}
			if err := r.st.Complete(ctx, cl.Token, resp); err != nil {
				t.Errorf("%s.Complete repeated with the writer's token = %v, want nil", r.name, err)
			}
			replay, err := r.st.Begin(ctx, key, "alice", idempotency.ClaimRequest{Owner: "owner-3", Fingerprint: "fp", Lease: time.Minute})
			if err != nil || replay.Status != idempotency.ClaimReplay {
				t.Fatalf("%s.Begin after %s.Complete = (%+v, %v), want Replay", r.name, w.name, replay, err)
			}
			got := replay.Record
			if got.Status != 201 || !bytes.Equal(got.WireBody, resp.WireBody) || got.TTL != time.Hour ||
				got.Fingerprint != "fp" || got.Header["Location"][0] != "/w/7" || got.StoredAt.IsZero() {
				t.Errorf("%s replays %+v, want %+v with fingerprint fp and a StoredAt", r.name, got, resp)
			}
			if hit, ok := r.st.Lookup(ctx, key, "alice"); !ok || !bytes.Equal(hit.WireBody, resp.WireBody) {
				t.Errorf("%s.Lookup = (%+v, %v), want the completed record", r.name, hit, ok)
			}
			// Store through the writer, Lookup through the reader.
			stored := idempotency.Cached{Status: 200, WireBody: []byte("s"), StoredAt: time.Now().Add(-time.Second), TTL: time.Hour}
			if err := w.st.Store(ctx, "s-"+w.name, "alice", stored); err != nil {
				t.Fatalf("%s.Store = %v", w.name, err)
			}
			if hit, ok := r.st.Lookup(ctx, "s-"+w.name, "alice"); !ok || string(hit.WireBody) != "s" || !hit.StoredAt.Equal(stored.StoredAt) {
				t.Errorf("%s.Lookup of a stored record = (%+v, %v), want %+v", r.name, hit, ok, stored)
			}
			// Release through the reader ends the writer's claim.
			cl2, err := w.st.Begin(ctx, "r-"+w.name, "alice", req)
			if err != nil || cl2.Status != idempotency.ClaimAcquired {
				t.Fatalf("%s.Begin = (%+v, %v), want Acquired", w.name, cl2, err)
			}
			if err := r.st.Release(ctx, cl2.Token); err != nil {
				t.Fatalf("%s.Release(writer's token) = %v", r.name, err)
			}
			if err := w.st.Complete(ctx, cl2.Token, resp); !errors.Is(err, idempotency.ErrLeaseLost) {
				t.Errorf("%s.Complete after %s.Release = %v, want ErrLeaseLost", w.name, r.name, err)
			}
		})
	}
}

// TestDefaults: the defaults are redisstore's, so that Stores of both
// packages configured alike name records alike.
func TestDefaults(t *testing.T) {
	if DefaultPrefix != redisstore.DefaultPrefix {
		t.Errorf("DefaultPrefix = %q, want redisstore's %q", DefaultPrefix, redisstore.DefaultPrefix)
	}
	st := New(nil, WithDefaultTTL(-1))
	if st.prefix != DefaultPrefix || st.defaultTTL != idempotency.DefaultTTL || st.secret != nil {
		t.Errorf("New(nil) = prefix %q, default TTL %v, secret %q; want %q, %v, nil",
			st.prefix, st.defaultTTL, st.secret, DefaultPrefix, idempotency.DefaultTTL)
	}
	a := New(nil, WithSecret([]byte("s")))
	if a.recordKey("k", "alice") == st.recordKey("k", "alice") {
		t.Errorf("a secret does not change the record key %q", a.recordKey("k", "alice"))
	}
}

// TestDeadAddress: rueidis connects in NewClient, so a client of an address
// nobody listens on is refused there, soon.
func TestDeadAddress(t *testing.T) {
	start := time.Now()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{"127.0.0.1:1"},
		Dialer: net.Dialer{Timeout: 200 * time.Millisecond}, ConnWriteTimeout: 200 * time.Millisecond})
	if err == nil {
		c.Close()
		t.Fatal("rueidis.NewClient(127.0.0.1:1) succeeded, want an error")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("rueidis.NewClient(127.0.0.1:1) took %v to fail", d)
	}
	if _, ok := errors.AsType[*net.OpError](err); !ok {
		t.Errorf("rueidis.NewClient(127.0.0.1:1) = %v (%T), want a *net.OpError", err, err)
	}
}

// proxy forwards TCP connections to addr until it is stopped.
type proxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

func newProxy(t *testing.T, addr string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	p.wg.Go(func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", addr)
			if err != nil {
				in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			p.wg.Go(func() { io.Copy(out, in); out.Close() })
			p.wg.Go(func() { io.Copy(in, out); in.Close() })
		}
	})
	t.Cleanup(p.stop)
	return p
}

// stop closes the listener and every connection, and waits for the copies.
func (p *proxy) stop() {
	p.ln.Close()
	p.mu.Lock()
	for _, c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestUnavailable: once its server is gone, a Store fails every step with
// an error matching ErrStoreUnavailable, on its own and soon (not by running
// into the caller's deadline), and claims nothing.
func TestUnavailable(t *testing.T) {
	opt := clientOption(t)
	if len(opt.InitAddress) != 1 {
		t.Skipf("IDEMPOTENCY_REDIS_URL names %d addresses; this test needs one", len(opt.InitAddress))
	}
	newClient(t) // skip at once when there is no server
	p := newProxy(t, opt.InitAddress[0])
	opt.InitAddress = []string{p.ln.Addr().String()}
	opt.Dialer = net.Dialer{Timeout: 200 * time.Millisecond}
	opt.ConnWriteTimeout = 200 * time.Millisecond
	c, err := rueidis.NewClient(opt)
	if err != nil {
		t.Fatalf("rueidis.NewClient through the proxy: %v", err)
	}
	t.Cleanup(c.Close)
	st := New(c, WithPrefix(newPrefix(t, newClient(t))))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if got, ok := st.Lookup(ctx, "k", "alice"); ok {
		t.Fatalf("Lookup before the server went away = %+v, want a miss", got)
	}
	p.stop() // the server is gone, and nobody listens on its address

	tok := idempotency.Token{Key: "k", Identity: "alice", Owner: "o", Fence: 1}
	steps := []struct {
		name string
		run  func() error
	}{
		{"Begin", func() error {
			cl, err := st.Begin(ctx, "k", "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Second})
			if err == nil {
				t.Errorf("Begin = %+v, want an error", cl)
			}
			return err
		}},
		{"Complete", func() error { return st.Complete(ctx, tok, idempotency.Cached{Status: 200}) }},
		{"Release", func() error { return st.Release(ctx, tok) }},
		{"Renew", func() error { return st.Renew(ctx, tok, time.Second) }},
		{"Store", func() error { return st.Store(ctx, "k", "alice", idempotency.Cached{Status: 200}) }},
		{"Inspect", func() error { _, err := st.Inspect(ctx, st.RecordID("k", "alice")); return err }},
		{"Purge", func() error { _, err := st.Purge(ctx, st.RecordID("k", "alice")); return err }},
		{"Claims", func() error { _, err := st.Claims(ctx, 0, 0); return err }},
	}
	for _, step := range steps {
		t.Run(step.name, func(t *testing.T) {
			err := step.run()
			if !errors.Is(err, idempotency.ErrStoreUnavailable) {
				t.Fatalf("%s = %v, want an error matching ErrStoreUnavailable", step.name, err)
			}
			if errors.Is(err, idempotency.ErrLeaseLost) {
				t.Errorf("%s = %v, also matches ErrLeaseLost", step.name, err)
			}
			if ctx.Err() != nil {
				t.Fatalf("%s failed only when the test's 10s deadline ran out: %v", step.name, err)
			}
		})
	}
	if got, ok := st.Lookup(ctx, "k", "alice"); ok || got != nil {
		t.Errorf("Lookup = (%v, %v), want a miss", got, ok)
	}
}

func TestFailed(t *testing.T) {
	cases := []struct {
		name string
		err  error
		full bool
	}{
		{"nil reply", rueidis.Nil, false},
		{"network", &net.OpError{Op: "dial", Err: errors.New("refused")}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := failed("begin", tc.err)
			if !errors.Is(err, idempotency.ErrStoreUnavailable) {
				t.Errorf("failed(%v) = %v, want ErrStoreUnavailable", tc.err, err)
			}
			if got := errors.Is(err, idempotency.ErrStoreFull); got != tc.full {
				t.Errorf("failed(%v) matches ErrStoreFull = %v, want %v", tc.err, got, tc.full)
			}
		})
	}
}
