package rueidisstore

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/redisstore/internal/redistest"
	"github.com/idemkit/idempotency/storetest"
	"github.com/redis/rueidis"
)

// TestClaimsUnderSharedPrefix: Claims lists the claims under its own prefix
// alone, glob characters in the prefix included, and passes over keys under
// it that are not records.
func TestClaimsUnderSharedPrefix(t *testing.T) {
	c := newClient(t)
	ctx := context.Background()
	base := newPrefix(t, c)
	st := New(c, WithPrefix(base+`t[1]*?\:`))
	other := New(c, WithPrefix(base+`t1x\:`)) // what the prefix matches as a glob
	mine, err := st.Begin(ctx, "a", "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Begin(ctx, "b", "alice", idempotency.ClaimRequest{Owner: "o", Lease: time.Minute}); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{st.prefix + "plain", st.prefix + "{not-hex}", st.prefix + "{" + strings.Repeat("AB", 32) + "}"} {
		if err := c.Do(ctx, c.B().Set().Key(k).Value("F"+strings.Repeat("\x00", 40)).Px(time.Minute).Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Do(ctx, c.B().Hset().Key(st.prefix+"{"+strings.Repeat("ef", 32)+"}").FieldValue().FieldValue("f", "v").Build()).Error(); err != nil {
		t.Fatal(err)
	}
	claims, err := st.Claims(ctx, 0, 0)
	if err != nil {
		t.Fatalf("Claims = %v", err)
	}
	if len(claims) != 1 || claims[0].ID != st.RecordID("a", "alice") || claims[0].Fence != mine.Token.Fence {
		t.Fatalf("Claims = %+v, want the one claim of %q", claims, st.prefix)
	}
}

// TestCluster runs the conformance suite against a three-master Redis
// Cluster of its own, and checks that Claims finds claims on every master.
func TestCluster(t *testing.T) {
	t.Parallel()
	addrs := redistest.StartCluster(t, 3)
	newClusterClient := func(tb testing.TB) rueidis.Client {
		c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(c.Close)
		return c
	}
	// The cluster goes with the test: its keys need no cleanup.
	prefix := func() string { return "idemtest:" + rand.Text() + ":" }
	newStore := func(tb testing.TB) idempotency.Store {
		return New(newClusterClient(tb), WithPrefix(prefix()))
	}
	newReplicas := func(tb testing.TB, n int) []idempotency.Store {
		p := prefix()
		var stores []idempotency.Store
		for range n {
			stores = append(stores, New(newClusterClient(tb), WithPrefix(p)))
		}
		return stores
	}
	storetest.Run(t, newStore, storetest.WithReplicas(newReplicas))

	t.Run("ClaimsOnEveryMaster", func(t *testing.T) {
		c := newClusterClient(t)
		st := New(c, WithPrefix(prefix()))
		redistest.ClaimsOnEveryMaster(t, st, func(key string) (string, error) {
			slot, err := c.Do(context.Background(), c.B().ClusterKeyslot().Key(st.recordKey(key, "alice")).Build()).AsInt64()
			// The thirds of the slots redis-cli gives each master.
			return fmt.Sprint(slot * 3 / 16384), err
		})
	})
}
