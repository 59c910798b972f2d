// Command sizing measures the bytes one idempotency record holds in Redis
// and in PostgreSQL, for BENCHMARKS.md's sizing section.
//
// Usage (from the repository root; scripts/sizing.sh runs it):
//
//	go run ./bench/sizing [-n 100000] [-body 256] [-stores redis,pg,pgtx]
//
// It writes -n records through an Engine.Do each, as idemd does: a UUID
// key, a "bearer:" identity of 64 hex digits, a fingerprint computed like
// the dispatcher's, the engine's own owner ids, a 201 with a JSON body of
// -body bytes, no recorded headers (the dispatcher records none) and the
// store's default TTL of 24h. Then:
//
//   - redis: into a logical database that must be empty (-redis, default
//     db 9) under a prefix of its own; it reports MEMORY USAGE (SAMPLES 0)
//     over -sample keys, the used_memory delta of INFO memory divided by
//     -n (it includes the keyspace and expiry dictionaries, and anything
//     else the server allocated meanwhile: the server is shared) and the
//     database's dictionary overhead from MEMORY STATS.
//   - pg, pgtx: into a schema of its own, through the plain Store (claim
//     inserts the row, Complete updates it) and through Transactional()
//     (the row is written once, at commit; what idemd uses). It reports
//     heap, index, TOAST and total relation sizes per row, right after the
//     load (autovacuum is disabled on the table so that this is
//     reproducible) and again after VACUUM (ANALYZE).
//
// Everything it wrote is deleted afterwards (the keys, the schemas). It is
// a program, not a test, so that CI never runs it; it only talks to the
// servers named by -redis and -postgres, loopback by default.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/pgstore"
	"github.com/idemkit/idempotency/redisstore"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

type config struct {
	n, body, workers, sample int
	redisURL, pgURL          string
	stores                   string
}

func main() {
	var cfg config
	flag.IntVar(&cfg.n, "n", 100000, "records to write per store")
	flag.IntVar(&cfg.body, "body", 256, "bytes of each recorded JSON body")
	flag.IntVar(&cfg.workers, "workers", 16, "concurrent writers")
	flag.IntVar(&cfg.sample, "sample", 2000, "Redis keys to run MEMORY USAGE on")
	flag.StringVar(&cfg.redisURL, "redis", "redis://127.0.0.1:6379/9", "Redis URL; its database must be empty")
	flag.StringVar(&cfg.pgURL, "postgres", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "PostgreSQL URL")
	flag.StringVar(&cfg.stores, "stores", "redis,pg,pgtx", "what to measure: redis, pg (plain Store), pgtx (Transactional)")
	flag.Parse()
	ctx := context.Background()
	for _, s := range strings.Split(cfg.stores, ",") {
		var err error
		switch s {
		case "redis":
			err = measureRedis(ctx, cfg)
		case "pg", "pgtx":
			err = measurePostgres(ctx, cfg, s == "pgtx")
		default:
			err = fmt.Errorf("unknown store %q", s)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "sizing:", s+":", err)
			os.Exit(1)
		}
	}
}

// load writes cfg.n records through an Engine on store, as idemd's
// dispatcher does for a fresh key.
func load(ctx context.Context, cfg config, store idempotency.Store) (time.Duration, error) {
	eng := idempotency.NewEngine(store)
	body := jsonBody(cfg.body)
	identity := "bearer:" + hex.EncodeToString(sha256Sum("idemkit/bearer/v1\x00sizing"))
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range cfg.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(cfg.n); i = next.Add(1) {
				payload := `{"name":"widget-` + strconv.FormatInt(i, 10) + `"}`
				req := idempotency.Request{
					Key:         uuid(),
					Identity:    identity,
					Fingerprint: idempotency.Fingerprint([]byte("widgets.create"), []byte(payload)),
				}
				res, err := eng.Do(ctx, req, func(context.Context) (idempotency.Response, error) {
					return idempotency.Response{Status: 201, Body: body}, nil
				})
				if err == nil && res.Replayed {
					err = fmt.Errorf("key %s replayed", req.Key)
				}
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start), firstErr
}

func measureRedis(ctx context.Context, cfg config) error {
	opts, err := redis.ParseURL(cfg.redisURL)
	if err != nil {
		return err
	}
	client := redis.NewClient(opts)
	defer client.Close()
	if n, err := client.DBSize(ctx).Result(); err != nil {
		return err
	} else if n != 0 {
		return fmt.Errorf("database %d holds %d keys; want an empty one (-redis)", opts.DB, n)
	}
	prefix := "idemsizing:"
	defer func() {
		if err := deleteKeys(context.WithoutCancel(ctx), client, prefix); err != nil {
			fmt.Fprintln(os.Stderr, "sizing: redis: cleaning up:", err)
		}
	}()
	before, err := infoInt(ctx, client, "memory", "used_memory")
	if err != nil {
		return err
	}
	took, err := load(ctx, cfg, redisstore.New(client, redisstore.WithPrefix(prefix), redisstore.WithSecret([]byte("sizing"))))
	if err != nil {
		return err
	}
	after, err := infoInt(ctx, client, "memory", "used_memory")
	if err != nil {
		return err
	}
	keys, err := client.DBSize(ctx).Result()
	if err != nil {
		return err
	}

	var sum, lo, hi, vsum int64
	var seen int
	iter := client.Scan(ctx, 0, prefix+"*", 500).Iterator()
	for seen < cfg.sample && iter.Next(ctx) {
		k := iter.Val()
		u, err := client.MemoryUsage(ctx, k, 0).Result()
		if err != nil {
			return err
		}
		v, err := client.StrLen(ctx, k).Result()
		if err != nil {
			return err
		}
		if seen == 0 || u < lo {
			lo = u
		}
		hi = max(hi, u)
		sum += u
		vsum += v
		seen++
	}
	if err := iter.Err(); err != nil {
		return err
	}
	stats, err := client.Do(ctx, "MEMORY", "STATS").Result()
	if err != nil {
		return err
	}
	dbMain, dbExpires := dbOverhead(stats, opts.DB)

	fmt.Printf("redis: %d records (%d keys) in %v; key %d bytes, value (STRLEN) mean %.1f bytes\n",
		cfg.n, keys, took.Round(time.Millisecond), len(sampleKey(client, ctx, prefix)), float64(vsum)/float64(seen))
	fmt.Printf("redis: MEMORY USAGE SAMPLES 0 over %d keys: mean %.1f min %d max %d bytes\n",
		seen, float64(sum)/float64(seen), lo, hi)
	fmt.Printf("redis: used_memory %d -> %d: %.1f bytes/record\n", before, after, float64(after-before)/float64(cfg.n))
	fmt.Printf("redis: MEMORY STATS db.%d overhead.hashtable.main %d (%.1f/record) overhead.hashtable.expires %d (%.1f/record)\n",
		opts.DB, dbMain, float64(dbMain)/float64(cfg.n), dbExpires, float64(dbExpires)/float64(cfg.n))
	return nil
}

func sampleKey(client *redis.Client, ctx context.Context, prefix string) string {
	keys, _, _ := client.Scan(ctx, 0, prefix+"*", 10).Result()
	if len(keys) == 0 {
		return ""
	}
	return keys[0]
}

// dbOverhead picks db.<n>'s dictionary overheads out of MEMORY STATS (a
// map in RESP3, a flat list in RESP2).
func dbOverhead(stats any, db int) (main, expires int64) {
	fields, _ := field(stats, "db."+strconv.Itoa(db))
	m, _ := field(fields, "overhead.hashtable.main")
	e, _ := field(fields, "overhead.hashtable.expires")
	main, _ = m.(int64)
	expires, _ = e.(int64)
	return main, expires
}

func field(v any, name string) (any, bool) {
	switch v := v.(type) {
	case map[any]any:
		f, ok := v[name]
		return f, ok
	case []any:
		for i := 0; i+1 < len(v); i += 2 {
			if v[i] == name {
				return v[i+1], true
			}
		}
	}
	return nil, false
}

func infoInt(ctx context.Context, client *redis.Client, section, field string) (int64, error) {
	info, err := client.Info(ctx, section).Result()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("INFO %s has no %s", section, field)
}

func deleteKeys(ctx context.Context, client *redis.Client, prefix string) error {
	iter := client.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		if batch = append(batch, iter.Val()); len(batch) == 1000 {
			if err := client.Unlink(ctx, batch...).Err(); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	if len(batch) > 0 {
		if err := client.Unlink(ctx, batch...).Err(); err != nil {
			return err
		}
	}
	return iter.Err()
}

func measurePostgres(ctx context.Context, cfg config, transactional bool) error {
	pcfg, err := pgxpool.ParseConfig(cfg.pgURL)
	if err != nil {
		return err
	}
	pcfg.MaxConns = int32(cfg.workers + 2) // a transactional command holds one until COMMIT
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return err
	}
	defer pool.Close()
	name := "pg"
	if transactional {
		name = "pgtx"
	}
	schema := fmt.Sprintf("idemsizing_%s_%d", name, os.Getpid())
	defer func() {
		if _, err := pool.Exec(context.WithoutCancel(ctx), "DROP SCHEMA IF EXISTS "+schema+" CASCADE"); err != nil {
			fmt.Fprintln(os.Stderr, "sizing:", name+": dropping the schema:", err)
		}
	}()
	s, err := pgstore.New(pool, pgstore.WithSchema(schema), pgstore.WithSecret([]byte("sizing")))
	if err != nil {
		return err
	}
	defer s.Close()
	if err := s.Migrate(ctx); err != nil {
		return err
	}
	table := schema + "." + pgstore.DefaultTable
	if _, err := pool.Exec(ctx, "ALTER TABLE "+table+" SET (autovacuum_enabled = false)"); err != nil {
		return err
	}
	var store idempotency.Store = s
	if transactional {
		store = s.Transactional()
	}
	took, err := load(ctx, cfg, store)
	if err != nil {
		return err
	}
	fmt.Printf("%s: %d records in %v (%s)\n", name, cfg.n, took.Round(time.Millisecond), table)
	if err := pgSizes(ctx, pool, name, table, "after load", cfg.n); err != nil {
		return err
	}
	if err := pgFreeSpace(ctx, pool, name, schema, table, "after load", cfg.n); err != nil {
		return err
	}
	if _, err := pool.Exec(ctx, "VACUUM (ANALYZE) "+table); err != nil {
		return err
	}
	if err := pgSizes(ctx, pool, name, table, "after VACUUM (ANALYZE)", cfg.n); err != nil {
		return err
	}
	return pgFreeSpace(ctx, pool, name, schema, table, "after VACUUM (ANALYZE)", cfg.n)
}

// pgFreeSpace reports, with pgstattuple when the server has it (installed
// in the measurement's schema, so it goes with it), how much of the heap is
// live tuples and how much is free space that later inserts reuse.
func pgFreeSpace(ctx context.Context, pool *pgxpool.Pool, name, schema, table, when string, n int) error {
	if _, err := pool.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pgstattuple SCHEMA "+schema); err != nil {
		fmt.Printf("%s: pgstattuple unavailable (%v): no free-space figures\n", name, err)
		return nil
	}
	var live, dead, free int64
	err := pool.QueryRow(ctx, "SELECT tuple_len, dead_tuple_len, free_space FROM "+schema+".pgstattuple($1::regclass)", table).Scan(&live, &dead, &free)
	if err != nil {
		return err
	}
	per := func(b int64) float64 { return float64(b) / float64(n) }
	fmt.Printf("%s: %s: pgstattuple per record: live tuples %.1f dead %.1f free (reusable) %.1f bytes\n", name, when, per(live), per(dead), per(free))
	return nil
}

func pgSizes(ctx context.Context, pool *pgxpool.Pool, name, table, when string, n int) error {
	var rows, heap, index, toast, total, dead int64
	var width float64
	err := pool.QueryRow(ctx, `
SELECT (SELECT count(*) FROM `+table+`),
       pg_relation_size(c.oid),
       pg_indexes_size(c.oid),
       COALESCE(pg_total_relation_size(NULLIF(c.reltoastrelid, 0)), 0),
       pg_total_relation_size(c.oid),
       COALESCE((SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = c.oid), -1),
       (SELECT avg(pg_column_size(t.*)) FROM `+table+` t)
FROM pg_class c WHERE c.oid = $1::regclass`, table).Scan(&rows, &heap, &index, &toast, &total, &dead, &width)
	if err != nil {
		return err
	}
	per := func(b int64) float64 { return float64(b) / float64(n) }
	fmt.Printf("%s: %s: %d rows, mean row %.1f bytes; per record: heap %.1f index %.1f toast %.1f total %.1f bytes (total %.1f MiB; n_dead_tup %d, as reported)\n",
		name, when, rows, width, per(heap), per(index), per(toast), per(total), float64(total)/(1<<20), dead)
	return nil
}

// jsonBody returns a dispatcher-like envelope of exactly n bytes (at least
// its fixed part).
func jsonBody(n int) []byte {
	const head, tail = `{"data":{"id":"w_0123456789abcdef","name":"`, `"}}`
	pad := max(0, n-len(head)-len(tail))
	return []byte(head + strings.Repeat("x", pad) + tail)
}

func uuid() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func sha256Sum(s string) []byte {
	sum := sha256.Sum256([]byte(s))
	return sum[:]
}
