// Package redisrec is what the Redis stores (redisstore and rueidisstore)
// share, whatever their client: the Lua scripts that run each protocol step,
// the encoding of records, the naming of keys and the encoding of the
// scripts' arguments. Two stores with the same prefix and secret, one of each
// package, read and write the same records.
package redisrec

import (
	"encoding/binary"
	"encoding/hex"
	"slices"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
)

// MaxDuration caps leases and TTLs (100 years) so that the scripts' sums of
// microseconds stay exact in Lua's doubles.
const MaxDuration = 100 * 365 * 24 * time.Hour

// MaxMicros caps absolute times handed to the scripts: 2^53 µs, the year 2255.
const MaxMicros = 1<<53 - 1

// Key names the record of (key, identity): the prefix and the hex record
// key (h.Sum) in braces, a Redis Cluster hash tag.
func Key(h *driver.RecordHasher, prefix, key, identity string) string {
	var buf [128]byte
	return string(AppendKey(buf[:0], h, prefix, key, identity))
}

// AppendKey appends Key(h, prefix, key, identity) to dst.
func AppendKey(dst []byte, h *driver.RecordHasher, prefix, key, identity string) []byte {
	sum := h.Sum(key, identity)
	dst = append(dst, prefix...)
	dst = append(dst, '{')
	dst = hex.AppendEncode(dst, sum[:])
	return append(dst, '}')
}

// Encode fills c's TTL with defaultTTL when it has none and returns the
// complete and store scripts' arguments: the payload, the expiry in µs (-1:
// the server's clock plus ttl, when StoredAt is zero) and the TTL in µs.
func Encode(c *idempotency.Cached, defaultTTL time.Duration) (payload []byte, expiry, ttl int64) {
	return AppendEncode(nil, c, defaultTTL)
}

// AppendEncode is Encode appending the payload to dst (grown once, to
// PayloadLen(c)).
func AppendEncode(dst []byte, c *idempotency.Cached, defaultTTL time.Duration) (payload []byte, expiry, ttl int64) {
	if c.TTL <= 0 {
		c.TTL = defaultTTL
	}
	stamped := c.StoredAt.IsZero()
	payload = AppendPayload(slices.Grow(dst, PayloadLen(c)), c, stamped)
	expiry = -1
	if !stamped {
		end := c.StoredAt.Add(min(c.TTL, MaxDuration))
		expiry = end.UnixMicro()
		if end.Nanosecond()%1000 != 0 {
			expiry++ // round up: expired means now >= StoredAt + TTL
		}
		expiry = max(0, min(expiry, MaxMicros))
	}
	return payload, expiry, Micros(c.TTL)
}

// Micros rounds d up to whole microseconds, capped at MaxDuration.
func Micros(d time.Duration) int64 {
	d = min(d, MaxDuration)
	return int64((d + time.Microsecond - 1) / time.Microsecond)
}

// FenceBytes is the big-endian encoding of a fence, as records keep it.
func FenceBytes(f uint64) [8]byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], f)
	return b
}

// BeginClaim turns the integer reply of BeginScript into the claim it
// means: a fence (> 0) acquired by owner, 0 a mismatch, and -1 - µs the
// remaining lease of another owner's claim in flight. (A string reply is a
// record to replay: DecodeRecord.)
func BeginClaim(key, identity, owner string, r int64) idempotency.Claim {
	switch {
	case r > 0:
		tok := idempotency.Token{Key: key, Identity: identity, Owner: owner, Fence: uint64(r)}
		return idempotency.Claim{Status: idempotency.ClaimAcquired, Token: tok}
	case r == 0:
		return idempotency.Claim{Status: idempotency.ClaimMismatch}
	}
	return idempotency.Claim{Status: idempotency.ClaimInFlight, RetryAfter: time.Duration(-1-r) * time.Microsecond}
}
