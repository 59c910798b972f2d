package redisstore

import "github.com/idemkit/idempotency/redisstore/internal/redisrec"

// Records, their layout and their codec are in package redisrec, shared
// with rueidisstore. These names keep this package's code and tests short.
const (
	kindCompleted = redisrec.KindCompleted
	flagStamped   = redisrec.FlagStamped
	flagHeader    = redisrec.FlagHeader
	fixedLen      = redisrec.FixedLen
)

var (
	errCorrupt    = redisrec.ErrCorrupt
	appendPayload = redisrec.AppendPayload
	payloadLen    = redisrec.PayloadLen
	decodeRecord  = redisrec.DecodeRecord
	fenceBytes    = redisrec.FenceBytes
)
