package redisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
	"github.com/idemkit/idempotency/redisstore/internal/redisrec"
	"github.com/redis/go-redis/v9"
)

// DefaultPrefix is the key prefix used unless WithPrefix says otherwise.
const DefaultPrefix = "idem:"

// Store is an idempotency.ClaimStore kept in Redis. It is safe for concurrent
// use; it holds no state of its own besides its configuration, so any number
// of Stores, in any number of processes, may share one Redis and one prefix.
type Store struct {
	client     redis.UniversalClient
	prefix     string
	secret     []byte
	hasher     *driver.RecordHasher // of secret, set by New
	defaultTTL time.Duration
	calls      sync.Pool // of *call
}

// Option configures a Store.
type Option func(*Store)

// WithPrefix sets the prefix of every key the Store writes. The default is
// DefaultPrefix ("idem:"); "" means none. Stores sharing records must use
// the same prefix. Avoid '{' in it: Redis Cluster would take the hash tag from
// the prefix instead of the record's hash, and put every record in one slot.
func WithPrefix(prefix string) Option {
	return func(s *Store) { s.prefix = prefix }
}

// WithSecret sets the HMAC key that names records (see
// driver.RecordKey), so that whoever reads Redis can neither recover
// nor guess the keys and identities behind its records. The default, nil,
// names them by plain SHA-256. Stores sharing records must use the same
// secret; changing it orphans the records written under the old one.
func WithSecret(secret []byte) Option {
	return func(s *Store) { s.secret = append([]byte(nil), secret...) }
}

// WithDefaultTTL sets how long a response stored without a TTL is kept.
// d <= 0 keeps idempotency.DefaultTTL (24h).
func WithDefaultTTL(d time.Duration) Option {
	return func(s *Store) {
		if d > 0 {
			s.defaultTTL = d
		}
	}
}

// New returns a Store that keeps its records in Redis through client: a
// *redis.Client, a Sentinel-backed *redis.Client (redis.NewFailoverClient),
// a *redis.ClusterClient or any other redis.UniversalClient. The caller owns
// the client and closes it. The server must be Redis 6.2 or later.
func New(client redis.UniversalClient, opts ...Option) *Store {
	s := &Store{client: client, prefix: DefaultPrefix, defaultTTL: idempotency.DefaultTTL}
	for _, o := range opts {
		o(s)
	}
	s.hasher = driver.NewRecordHasher(s.secret)
	return s
}

// recordKey names the record of (key, identity): the prefix and the hex
// record key in braces, a Redis Cluster hash tag.
func (s *Store) recordKey(key, identity string) string {
	return redisrec.Key(s.hasher, s.prefix, key, identity)
}

// Begin implements idempotency.ClaimStore in one round trip; a replay
// carries the recorded response.
func (s *Store) Begin(ctx context.Context, key, identity string, req idempotency.ClaimRequest) (idempotency.Claim, error) {
	if err := driver.ValidateBegin(key, req); err != nil {
		return idempotency.Claim{}, err
	}
	c := s.getCall(key, identity)
	c.owner, c.fp, c.lease = req.Owner, req.Fingerprint, micros(req.Lease)
	args := append(c.argv(beginScript), &c.owner, &c.fp, &c.lease)
	v, err := run(ctx, s, beginScript, redis.NewStringCmd, args).Result()
	s.putCall(c)
	if err != nil {
		return idempotency.Claim{}, failed("begin", err)
	}
	// A record starts with its kind; an integer reply comes as its digits.
	if len(v) > 0 && v[0] == redisrec.KindCompleted {
		cl, err := redisrec.BeginRecord(v, req.Fingerprint)
		if err != nil {
			return idempotency.Claim{}, failed("begin", err)
		}
		return cl, nil
	}
	r, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return idempotency.Claim{}, failed("begin", fmt.Errorf("unexpected reply %q", v))
	}
	return redisrec.BeginClaim(key, identity, req.Owner, r), nil
}

// Complete implements idempotency.ClaimStore in one round trip.
func (s *Store) Complete(ctx context.Context, tok idempotency.Token, r idempotency.Cached) error {
	if tok.Owner == "" { // no claim has an empty owner; records written by Store have one
		return fmt.Errorf("redisstore: complete: %w", idempotency.ErrLeaseLost)
	}
	c := s.getCall(tok.Key, tok.Identity)
	c.payload.b, c.expiry, c.ttl = redisrec.AppendEncode(c.payload.b[:0], &r, s.defaultTTL)
	c.owner, c.fence, c.fp = tok.Owner, redisrec.FenceBytes(tok.Fence), r.Fingerprint
	args := append(c.argv(completeScript), &c.owner, &c.fence, &c.fp, &c.payload, &c.expiry, &c.ttl)
	n, err := run(ctx, s, completeScript, redis.NewIntCmd, args).Result()
	s.putCall(c)
	switch {
	case err != nil:
		return failed("complete", err)
	case n == 0:
		return fmt.Errorf("redisstore: complete: %w", idempotency.ErrLeaseLost)
	}
	return nil
}

// Release implements idempotency.ClaimStore in one round trip.
func (s *Store) Release(ctx context.Context, tok idempotency.Token) error {
	c := s.getCall(tok.Key, tok.Identity)
	c.owner, c.fence = tok.Owner, redisrec.FenceBytes(tok.Fence)
	args := append(c.argv(releaseScript), &c.owner, &c.fence)
	n, err := run(ctx, s, releaseScript, redis.NewIntCmd, args).Result()
	s.putCall(c)
	switch {
	case err != nil:
		return failed("release", err)
	case n == 0:
		return fmt.Errorf("redisstore: release: %w", idempotency.ErrLeaseLost)
	}
	return nil
}

// Renew implements idempotency.ClaimStore in one round trip.
func (s *Store) Renew(ctx context.Context, tok idempotency.Token, lease time.Duration) error {
	if lease <= 0 {
		return fmt.Errorf("redisstore: renew: %w: lease %v is not positive", idempotency.ErrInvalidArgument, lease)
	}
	c := s.getCall(tok.Key, tok.Identity)
	c.owner, c.fence, c.lease = tok.Owner, redisrec.FenceBytes(tok.Fence), micros(lease)
	args := append(c.argv(renewScript), &c.owner, &c.fence, &c.lease)
	n, err := run(ctx, s, renewScript, redis.NewIntCmd, args).Result()
	s.putCall(c)
	switch {
	case err != nil:
		return failed("renew", err)
	case n == 0:
		return fmt.Errorf("redisstore: renew: %w", idempotency.ErrLeaseLost)
	}
	return nil
}

// Lookup implements idempotency.Store in one round trip. Any failure is a miss.
func (s *Store) Lookup(ctx context.Context, key, identity string) (*idempotency.Cached, bool) {
	c := s.getCall(key, identity)
	v, err := run(ctx, s, lookupScript, redis.NewStringCmd, c.argv(lookupScript)).Result()
	s.putCall(c)
	if err != nil || v == "" { // a failure, or a miss
		return nil, false
	}
	rec, err := decodeRecord(v)
	if err != nil {
		return nil, false
	}
	return rec, true
}

// Store implements idempotency.Store in one round trip. It replaces whatever
// the record held, a claim in flight included (whose holder then gets
// ErrLeaseLost), and keeps its fence.
func (s *Store) Store(ctx context.Context, key, identity string, r idempotency.Cached) error {
	if err := idempotency.ValidateKey(key); err != nil {
		return fmt.Errorf("redisstore: store: %w", err)
	}
	c := s.getCall(key, identity)
	c.payload.b, c.expiry, c.ttl = redisrec.AppendEncode(c.payload.b[:0], &r, s.defaultTTL)
	c.fp = r.Fingerprint
	args := append(c.argv(storeScript), &c.fp, &c.payload, &c.expiry, &c.ttl)
	err := run(ctx, s, storeScript, redis.NewIntCmd, args).Err()
	s.putCall(c)
	if err != nil {
		return failed("store", err)
	}
	return nil
}

// micros rounds d up to whole microseconds, capped at 100 years.
func micros(d time.Duration) int64 { return redisrec.Micros(d) }

// failed wraps a failure to reach Redis or to run a script there so that
// it matches idempotency.ErrStoreUnavailable, and also ErrStoreFull when
// Redis is out of memory (maxmemory with the noeviction policy). redis.Nil
// never gets here: the scripts answer a miss with a value.
func failed(op string, err error) error {
	if errors.Is(err, redis.Nil) {
		err = errors.New("unexpected nil reply")
	}
	if redis.IsOOMError(err) {
		return fmt.Errorf("redisstore: %s: %w (%w): %w", op, idempotency.ErrStoreFull, idempotency.ErrStoreUnavailable, err)
	}
	return fmt.Errorf("redisstore: %s: %w: %w", op, idempotency.ErrStoreUnavailable, err)
}

var _ idempotency.ClaimStore = (*Store)(nil)
