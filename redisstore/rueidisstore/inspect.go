package rueidisstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/redisstore/internal/redisrec"
	"github.com/redis/rueidis"
)

var (
	inspectScript = rueidis.NewLuaScript(redisrec.InspectScript)
	purgeScript   = rueidis.NewLuaScript(redisrec.PurgeScript)
)

// RecordID implements idempotency.Inspector as redisstore does: the hex
// record key, the part of the record's Redis key inside the braces.
func (s *Store) RecordID(key, identity string) string {
	return redisrec.ID(s.hasher, key, identity)
}

// Inspect implements idempotency.Inspector in one round trip. Key and
// Identity are left empty: Redis holds only their digest.
func (s *Store) Inspect(ctx context.Context, id string) (idempotency.RecordInfo, error) {
	return s.inspect(ctx, "inspect", inspectScript, id, "")
}

// Purge implements idempotency.Inspector in one round trip, as redisstore
// does: the next claim draws a greater fence, and the purged claim's holder
// gets ErrLeaseLost.
func (s *Store) Purge(ctx context.Context, id string) (idempotency.RecordInfo, error) {
	return s.inspect(ctx, "purge", purgeScript, id)
}

// inspect runs script, which replies as redisrec.InspectScript, on the
// record named id.
func (s *Store) inspect(ctx context.Context, op string, script *rueidis.Lua, id string, args ...string) (idempotency.RecordInfo, error) {
	key, err := redisrec.KeyOfID(s.prefix, id)
	if err != nil {
		return idempotency.RecordInfo{}, fmt.Errorf("rueidisstore: %s: %w", op, err)
	}
	v, now, err := pair(script.Exec(ctx, s.client, []string{key}, args))
	if err != nil {
		return idempotency.RecordInfo{}, failed(op, err)
	}
	info, err := redisrec.Info(id, v, now)
	if err != nil {
		return idempotency.RecordInfo{}, failed(op, err)
	}
	return info, nil
}

// Claims implements idempotency.Inspector as redisstore does: it SCANs
// every key under the prefix, on every master (client.Nodes, replicas
// skipped), and reads each record with a script, pipelined. Its cost grows
// with the number of keys under the prefix, whatever limit is.
func (s *Store) Claims(ctx context.Context, olderThan time.Duration, limit int) ([]idempotency.RecordInfo, error) {
	scan := redisrec.NewClaimScan(s.prefix, olderThan)
	nodes := s.client.Nodes()
	errs := make([]error, 0, len(nodes))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			if err := scanNode(ctx, n, scan); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, failed("claims", err)
	}
	return scan.Claims(limit), nil
}

// scanBatch is the COUNT of each SCAN, and so the most scripts a pipeline
// holds.
const scanBatch = 1000

// scanNode adds to scan the claims of the node n, unless it is a replica.
func scanNode(ctx context.Context, n rueidis.Client, scan *redisrec.ClaimScan) error {
	role, err := n.Do(ctx, n.B().Role().Build()).ToArray()
	if err != nil {
		return err
	}
	if len(role) == 0 {
		return errors.New("empty ROLE reply")
	}
	if r, err := role[0].ToString(); err != nil || r != "master" {
		return err // a replica holds copies of its master's keys
	}
	pattern := scan.Pattern()
	execs := make([]rueidis.LuaExec, 0, scanBatch)
	arg := []string{string(redisrec.KindInFlight)}
	var cursor uint64
	for {
		e, err := n.Do(ctx, n.B().Scan().Cursor(cursor).Match(pattern).Count(scanBatch).Type("string").Build()).AsScanEntry()
		if err != nil {
			return err
		}
		execs = execs[:0]
		for _, k := range e.Elements {
			execs = append(execs, rueidis.LuaExec{Keys: []string{k}, Args: arg})
		}
		if len(execs) > 0 {
			for i, r := range inspectScript.ExecMulti(ctx, n, execs...) {
				v, now, err := pair(r)
				if err != nil {
					return err
				}
				scan.Add(e.Elements[i], v, now)
			}
		}
		if cursor = e.Cursor; cursor == 0 {
			return nil
		}
	}
}

// pair reads the reply of redisrec.InspectScript: the record and the
// server's clock.
func pair(r rueidis.RedisResult) (string, int64, error) {
	a, err := r.ToArray()
	if err != nil {
		return "", 0, err
	}
	if len(a) != 2 {
		return "", 0, fmt.Errorf("unexpected reply of %d elements", len(a))
	}
	v, err := a[0].ToString()
	if err != nil {
		return "", 0, err
	}
	now, err := a[1].AsInt64()
	if err != nil {
		return "", 0, err
	}
	return v, now, nil
}

var _ idempotency.Inspector = (*Store)(nil)
