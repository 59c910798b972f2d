package pgstore

import (
	"testing"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/storetest"
)

// The transactional view passes the same suite: its claims are
// transactions, its leases their idle timeouts.
func TestTxConformance(t *testing.T) {
	storetest.Run(t, func(tb testing.TB) idempotency.Store { return newStore(tb).Transactional() },
		storetest.WithReplicas(func(tb testing.TB, n int) []idempotency.Store {
			stores := newReplicas(tb, n)
			for i, s := range stores {
				stores[i] = s.(*Store).Transactional()
			}
			return stores
		}))
}
