package redisstore

import "github.com/idemkit/idempotency/redisstore/internal/redistest"

// Servers of the tests' own, shared with rueidisstore's tests.
var (
	unreachable      = redistest.Unreachable
	startRedis       = redistest.StartRedis
	startCluster     = redistest.StartCluster
	freeClusterPorts = redistest.FreeClusterPorts
)
