package redisstore

import (
	"context"
	"fmt"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/redisstore/internal/redisrec"
	"github.com/redis/go-redis/v9"
)

// RecordID implements idempotency.Inspector: the hex record key, the part
// of the record's Redis key inside the braces (64 lowercase hex digits).
func (s *Store) RecordID(key, identity string) string {
	return redisrec.ID(s.hasher, key, identity)
}

// Inspect implements idempotency.Inspector in one round trip. Key and
// Identity are left empty: Redis holds only their digest.
func (s *Store) Inspect(ctx context.Context, id string) (idempotency.RecordInfo, error) {
	return s.inspect(ctx, "inspect", inspectScript, id, "")
}

// Purge implements idempotency.Inspector in one round trip. The record's
// key is deleted, or, when its fence is ahead of the server's clock, kept
// as a released claim until the clock has passed the fence, as Release
// does; either way the next claim draws a greater fence, and the purged
// claim's holder gets ErrLeaseLost.
func (s *Store) Purge(ctx context.Context, id string) (idempotency.RecordInfo, error) {
	return s.inspect(ctx, "purge", purgeScript, id)
}

// inspect runs sc, which replies as redisrec.InspectScript, on the record
// named id.
func (s *Store) inspect(ctx context.Context, op string, sc *script, id string, argv ...any) (idempotency.RecordInfo, error) {
	key, err := redisrec.KeyOfID(s.prefix, id)
	if err != nil {
		return idempotency.RecordInfo{}, fmt.Errorf("redisstore: %s: %w", op, err)
	}
	args := append([]any{argEvalSha, sc.sha, argOneKey, key}, argv...)
	reply, err := run(ctx, s, sc, redis.NewSliceCmd, args).Result()
	if err != nil {
		return idempotency.RecordInfo{}, failed(op, err)
	}
	v, now, err := pair(reply)
	if err != nil {
		return idempotency.RecordInfo{}, failed(op, err)
	}
	info, err := redisrec.Info(id, v, now)
	if err != nil {
		return idempotency.RecordInfo{}, failed(op, err)
	}
	return info, nil
}

// Claims implements idempotency.Inspector. It SCANs every key under the
// prefix, on every master of a cluster, and reads each record there with a
// script, pipelined: its cost grows with the number of keys under the
// prefix, whatever limit is. ClaimedAt is read from the claim's fence, as
// the package documentation (Inspection) explains.
func (s *Store) Claims(ctx context.Context, olderThan time.Duration, limit int) ([]idempotency.RecordInfo, error) {
	scan := redisrec.NewClaimScan(s.prefix, olderThan)
	node := func(ctx context.Context, c *redis.Client) error { return scanNode(ctx, c, scan) }
	var err error
	switch c := s.client.(type) {
	case *redis.ClusterClient:
		err = c.ForEachMaster(ctx, node)
	case *redis.Ring:
		err = c.ForEachShard(ctx, node)
	default:
		err = scanNode(ctx, c, scan)
	}
	if err != nil {
		return nil, failed("claims", err)
	}
	return scan.Claims(limit), nil
}

// scanBatch is the COUNT of each SCAN, and so the most scripts a pipeline
// holds.
const scanBatch = 1000

// scanNode adds to scan the claims of the node c.
func scanNode(ctx context.Context, c redis.Cmdable, scan *redisrec.ClaimScan) error {
	// Loaded once per node, so that the pipelines need no EVAL fallback.
	sha, err := c.ScriptLoad(ctx, redisrec.InspectScript).Result()
	if err != nil {
		return err
	}
	pattern := scan.Pattern()
	var cursor uint64
	cmds := make([]*redis.Cmd, 0, scanBatch)
	for {
		keys, next, err := c.ScanType(ctx, cursor, pattern, scanBatch, "string").Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			pipe := c.Pipeline()
			cmds = cmds[:0]
			for _, k := range keys {
				cmds = append(cmds, pipe.EvalSha(ctx, sha, []string{k}, string(redisrec.KindInFlight)))
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
			for i, cmd := range cmds {
				v, now, err := pair(cmd.Val())
				if err != nil {
					return err
				}
				scan.Add(keys[i], v, now)
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// pair reads the reply of redisrec.InspectScript: the record and the
// server's clock.
func pair(reply any) (string, int64, error) {
	if r, ok := reply.([]any); ok && len(r) == 2 {
		v, ok1 := r[0].(string)
		now, ok2 := r[1].(int64)
		if ok1 && ok2 {
			return v, now, nil
		}
	}
	return "", 0, fmt.Errorf("unexpected reply %v", reply)
}

var _ idempotency.Inspector = (*Store)(nil)
