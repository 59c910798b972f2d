package redisstore

import (
	"github.com/idemkit/idempotency/redisstore/internal/redisrec"
	"github.com/redis/go-redis/v9"
)

// The scripts, one per protocol step, and how they keep fences increasing,
// are described in package redisrec, which rueidisstore shares.
var (
	beginScript    = redis.NewScript(redisrec.BeginScript)
	completeScript = redis.NewScript(redisrec.CompleteScript)
	releaseScript  = redis.NewScript(redisrec.ReleaseScript)
	renewScript    = redis.NewScript(redisrec.RenewScript)
	lookupScript   = redis.NewScript(redisrec.LookupScript)
	storeScript    = redis.NewScript(redisrec.StoreScript)
)
