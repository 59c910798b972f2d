package reliability

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/dispatcher"
	"github.com/idemkit/idempotency/driver"
)

// heapAlloc returns the live heap after a full collection.
func heapAlloc() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestMemoryBoundedUnderFlood floods an in-memory store capped at 1,000
// entries and 64 KiB with commands on 100,000 distinct keys, while ten
// claims stay in flight: the entry and byte caps hold at every sample, the
// claims in flight are never evicted (their holders complete them
// afterwards), and the live heap does not grow with the number of keys.
func TestMemoryBoundedUnderFlood(t *testing.T) {
	const maxEntries, maxBytes = 1000, 64 << 10
	store := idempotency.NewInMemoryStore(idempotency.WithMaxEntries(maxEntries), idempotency.WithMaxBytes(maxBytes))
	e := idempotency.NewEngine(store)
	ctx := context.Background()

	var held []idempotency.Token
	for i := range 10 {
		cl, err := store.Begin(ctx, fmt.Sprintf("held-%d", i), "alice",
			idempotency.ClaimRequest{Owner: driver.NewOwner(), Lease: time.Hour})
		if err != nil || cl.Status != idempotency.ClaimAcquired {
			t.Fatalf("Begin: %v %v", cl.Status, err)
		}
		held = append(held, cl.Token)
	}

	body := make([]byte, 200)
	for i := range body {
		body[i] = 'x'
	}
	fn := func(context.Context) (idempotency.Response, error) {
		return idempotency.Response{Status: 201, Body: body}, nil
	}
	var overEntries, overBytes, failures atomic.Int64
	flood := func(round, keys int) {
		const workers = 8
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				for i := w; i < keys; i += workers {
					if _, err := e.Do(ctx, idempotency.Request{Key: fmt.Sprintf("flood-%d-%d", round, i), Identity: "mallory", Fingerprint: ""}, fn); err != nil {
						failures.Add(1)
					}
					if i%64 == 0 {
						if store.Len() > maxEntries {
							overEntries.Add(1)
						}
						if store.Bytes() > maxBytes {
							overBytes.Add(1)
						}
					}
				}
			})
		}
		wg.Wait()
	}
	keys := scaled(50000)
	flood(0, keys/5) // warm up: the store is full from here on
	base := heapAlloc()
	flood(1, keys)
	grown := int64(heapAlloc()) - int64(base)
	t.Logf("%d keys flooded: %d entries, %d bytes held; live heap grew %d KiB", keys+keys/5, store.Len(), store.Bytes(), grown>>10)

	if n := overEntries.Load(); n > 0 || store.Len() > maxEntries {
		t.Errorf("entry cap %d exceeded at %d samples (now %d)", maxEntries, n, store.Len())
	}
	if n := overBytes.Load(); n > 0 || store.Bytes() > maxBytes {
		t.Errorf("byte cap %d exceeded at %d samples (now %d)", maxBytes, n, store.Bytes())
	}
	if n := failures.Load(); n > 0 {
		t.Errorf("%d flood commands failed", n)
	}
	// The heap holds at most the capped records; 4 MiB is far below what
	// keeping every flooded key would take (tens of MiB).
	if grown > 4<<20 {
		t.Errorf("live heap grew %d KiB over %d more keys: memory is not bounded", grown>>10, keys)
	}
	for _, tok := range held {
		if err := store.Complete(ctx, tok, idempotency.Cached{Status: 201, WireBody: []byte(`"late"`)}); err != nil {
			t.Errorf("claim %s in flight during the flood: Complete = %v (evicted?)", tok.Key, err)
		}
	}
}

// TestMemoryFullOfClaims fills an in-memory store with claims in flight
// only: a new key is refused with ErrStoreFull (503 store_unavailable
// through the dispatcher, the handler not run) rather than evicting a claim,
// and once a claim completes, new keys fit again.
func TestMemoryFullOfClaims(t *testing.T) {
	const maxEntries = 50
	store := idempotency.NewInMemoryStore(idempotency.WithMaxEntries(maxEntries))
	ctx := context.Background()
	var held []idempotency.Token
	for i := range maxEntries {
		cl, err := store.Begin(ctx, fmt.Sprintf("held-%d", i), "alice",
			idempotency.ClaimRequest{Owner: driver.NewOwner(), Lease: time.Hour})
		if err != nil || cl.Status != idempotency.ClaimAcquired {
			t.Fatalf("Begin %d: %v %v", i, cl.Status, err)
		}
		held = append(held, cl.Token)
	}
	_, err := store.Begin(ctx, "one-more", "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Hour})
	if !errors.Is(err, idempotency.ErrStoreFull) {
		t.Fatalf("Begin on a store full of claims: %v, want ErrStoreFull", err)
	}
	srv, ledger := newDashboard(t, store)
	r := postCommand(t, srv.Client(), srv.URL, "widgets.create", "one-more", "tok", `{"name":"w"}`)
	if r.status != http.StatusServiceUnavailable || !containsCode(r.body, dispatcher.CodeStoreUnavailable) {
		t.Errorf("dispatch on a full store: %d %s, want 503 %s", r.status, r.body, dispatcher.CodeStoreUnavailable)
	}
	if ledger.Total() != 0 {
		t.Errorf("the handler ran on a full store")
	}
	for _, tok := range held {
		if err := store.Renew(ctx, tok, time.Hour); err != nil {
			t.Fatalf("claim %s after the refusals: %v (evicted?)", tok.Key, err)
		}
	}
	if err := store.Complete(ctx, held[0], idempotency.Cached{Status: 201, WireBody: []byte(`"done"`)}); err != nil {
		t.Fatal(err)
	}
	r = postCommand(t, srv.Client(), srv.URL, "widgets.create", "one-more", "tok", `{"name":"w"}`)
	if r.status != http.StatusCreated {
		t.Errorf("dispatch after a claim completed: %d %s, want 201", r.status, r.body)
	}
}

func containsCode(body, code string) bool {
	return strings.Contains(body, `"code":"`+code+`"`)
}
