package redisrec

import (
	"cmp"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
)

// What the Redis stores' Inspector methods share: record IDs, the reading
// of a record as a RecordInfo, and the collection of claims found by SCAN.

// IDLen is the length of a record ID: the hex record key.
const IDLen = 64

// ID is the record ID of (key, identity): the hex record key, the part of
// the Redis key inside the braces.
func ID(h *driver.RecordHasher, key, identity string) string {
	sum := h.Sum(key, identity)
	return hex.EncodeToString(sum[:])
}

// KeyOfID returns the Redis key of the record named id, or an error wrapping
// idempotency.ErrInvalidArgument when id is not IDLen lowercase hex digits.
func KeyOfID(prefix, id string) (string, error) {
	if !isID(id) {
		return "", fmt.Errorf("%w: %q is not a record ID of a Redis store (%d lowercase hex digits)",
			idempotency.ErrInvalidArgument, id, IDLen)
	}
	return prefix + "{" + id + "}", nil
}

// IDOfKey is the inverse of KeyOfID: it reports whether the Redis key names
// a record under prefix, and which.
func IDOfKey(prefix, key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok || len(rest) != IDLen+2 || rest[0] != '{' || rest[len(rest)-1] != '}' {
		return "", false
	}
	id := rest[1 : len(rest)-1]
	return id, isID(id)
}

func isID(id string) bool {
	if len(id) != IDLen {
		return false
	}
	for i := range len(id) {
		if c := id[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Pattern is the SCAN MATCH pattern of the records under prefix: the
// prefix with its glob metacharacters escaped, then "{*}".
func Pattern(prefix string) string {
	var b strings.Builder
	for i := range len(prefix) {
		switch c := prefix[i]; c {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteString("{*}")
	return b.String()
}

// header is what the scripts read of a record: its kind, fence, until,
// owner and fingerprint.
type header struct {
	kind      byte
	fence     uint64
	until     int64
	owner, fp string
}

func parseHeader(v string) (header, error) {
	if len(v) < FixedLen || v[0] != KindInFlight && v[0] != KindCompleted {
		return header{}, fmt.Errorf("%w: not a record", ErrCorrupt)
	}
	d := decoder{s: v, off: 1}
	h := header{kind: v[0], fence: d.u64(), until: int64(d.u64())}
	h.owner = d.bytes(int(d.u32()))
	h.fp = d.bytes(int(d.u32()))
	return h, d.err
}

// Info describes the record v (as GET returns it, "" for none) named id, at
// the server's clock now (µs), as Inspector.Inspect does. A claim in flight
// is dated by its fence: see ClaimedAt.
func Info(id, v string, now int64) (idempotency.RecordInfo, error) {
	if v == "" {
		return idempotency.RecordInfo{ID: id}, nil
	}
	h, err := parseHeader(v)
	switch {
	case err != nil:
		return idempotency.RecordInfo{}, err
	case now >= h.until: // released, or past its lease or TTL
		return idempotency.RecordInfo{ID: id}, nil
	case h.kind == KindInFlight:
		return idempotency.RecordInfo{
			ID: id, State: idempotency.RecordInFlight, Fence: h.fence, Owner: h.owner, Fingerprint: h.fp,
			ClaimedAt: ClaimedAt(h.fence), LeaseLeft: time.Duration(h.until-now) * time.Microsecond,
		}, nil
	}
	rec, err := DecodeRecord(v)
	if err != nil {
		return idempotency.RecordInfo{}, err
	}
	info := idempotency.InfoOf(id, rec)
	info.Fence = h.fence
	return info, nil
}

// ClaimedAt dates the claim of fence. A fresh claim draws max(previous
// fence + 1, server clock in µs), so its fence is the clock when it was
// made, unless an earlier fence of the key was ahead of the clock; then
// the date is later than the claim, never earlier, and Claims lists such a
// claim late rather than early.
func ClaimedAt(fence uint64) time.Time {
	return time.UnixMicro(int64(min(fence, MaxMicros)))
}

// ClaimScan collects what Inspector.Claims lists from the records a SCAN
// of Pattern(prefix) finds, node by node. It is safe for concurrent use, so
// that the masters of a cluster may be scanned at once.
type ClaimScan struct {
	prefix    string
	olderThan time.Duration
	mu        sync.Mutex
	claims    []idempotency.RecordInfo
}

// NewClaimScan returns a ClaimScan of the claims under prefix made at
// least olderThan ago.
func NewClaimScan(prefix string, olderThan time.Duration) *ClaimScan {
	return &ClaimScan{prefix: prefix, olderThan: olderThan}
}

// Pattern is Pattern(prefix).
func (c *ClaimScan) Pattern() string { return Pattern(c.prefix) }

// Add looks at the value v of the Redis key key, read when the server's
// clock was now (µs), and keeps it if it is a claim to list. Keys that do
// not name a record and values that are not claims in flight are ignored:
// the prefix may be shared with other data.
func (c *ClaimScan) Add(key, v string, now int64) {
	id, ok := IDOfKey(c.prefix, key)
	if !ok || len(v) == 0 || v[0] != KindInFlight {
		return
	}
	info, err := Info(id, v, now)
	if err != nil || info.State != idempotency.RecordInFlight {
		return
	}
	if info.ClaimedAt.After(time.UnixMicro(now).Add(-c.olderThan)) {
		return
	}
	c.mu.Lock()
	c.claims = append(c.claims, info)
	c.mu.Unlock()
}

// Claims returns the claims kept, oldest first (by ClaimedAt, then fence),
// at most limit of them when limit is positive.
func (c *ClaimScan) Claims(limit int) []idempotency.RecordInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.claims
	slices.SortFunc(out, func(a, b idempotency.RecordInfo) int {
		return cmp.Or(a.ClaimedAt.Compare(b.ClaimedAt), cmp.Compare(a.Fence, b.Fence), strings.Compare(a.ID, b.ID))
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit:limit]
	}
	return out
}
