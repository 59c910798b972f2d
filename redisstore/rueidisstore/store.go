package rueidisstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/driver"
	"github.com/idemkit/idempotency/redisstore/internal/redisrec"
	"github.com/redis/rueidis"
)

// DefaultPrefix is the key prefix used unless WithPrefix says otherwise; it
// is redisstore's.
const DefaultPrefix = "idem:"

// The scripts are redisstore's; Exec runs EVALSHA and falls back to EVAL
// when the server does not have the script yet.
var (
	beginScript    = rueidis.NewLuaScript(redisrec.BeginScript)
	completeScript = rueidis.NewLuaScript(redisrec.CompleteScript)
	releaseScript  = rueidis.NewLuaScript(redisrec.ReleaseScript)
	renewScript    = rueidis.NewLuaScript(redisrec.RenewScript)
	lookupScript   = rueidis.NewLuaScript(redisrec.LookupScript)
	storeScript    = rueidis.NewLuaScript(redisrec.StoreScript)
)

// Store is an idempotency.ClaimStore kept in Redis through a rueidis
// client. It is safe for concurrent use; it holds no state of its own besides
// its configuration, so any number of Stores, of this package or of
// redisstore, in any number of processes, may share one Redis and one
// prefix.
type Store struct {
	client     rueidis.Client
	prefix     string
	secret     []byte
	hasher     *driver.RecordHasher // of secret, set by New
	defaultTTL time.Duration
}

// Option configures a Store.
type Option func(*Store)

// WithPrefix sets the prefix of every key the Store writes. The default is
// DefaultPrefix ("idem:"); "" means none. Stores sharing records, of this
// package or of redisstore, must use the same prefix. Avoid '{' in it: Redis
// Cluster would take the hash tag from the prefix instead of the record's
// hash, and put every record in one slot.
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

// New returns a Store that keeps its records in Redis through client, a
// single-node, Sentinel or Cluster rueidis.Client. The caller owns the
// client and closes it. The server must be Redis 6.2 or later.
func New(client rueidis.Client, opts ...Option) *Store {
	s := &Store{client: client, prefix: DefaultPrefix, defaultTTL: idempotency.DefaultTTL}
	for _, o := range opts {
		o(s)
	}
	s.hasher = driver.NewRecordHasher(s.secret)
	return s
}

// recordKey names the record of (key, identity) as redisstore does.
func (s *Store) recordKey(key, identity string) string {
	return redisrec.Key(s.hasher, s.prefix, key, identity)
}

// run executes script on the record of (key, identity).
func (s *Store) run(ctx context.Context, script *rueidis.Lua, key, identity string, args ...string) rueidis.RedisResult {
	return script.Exec(ctx, s.client, []string{s.recordKey(key, identity)}, args)
}

// Begin implements idempotency.ClaimStore in one round trip; a replay
// carries the recorded response.
func (s *Store) Begin(ctx context.Context, key, identity string, req idempotency.ClaimRequest) (idempotency.Claim, error) {
	if err := driver.ValidateBegin(key, req); err != nil {
		return idempotency.Claim{}, err
	}
	msg, err := s.run(ctx, beginScript, key, identity,
		req.Owner, req.Fingerprint, itoa(redisrec.Micros(req.Lease))).ToMessage()
	if err != nil {
		return idempotency.Claim{}, failed("begin", err)
	}
	switch {
	case msg.IsInt64():
		r, err := msg.AsInt64()
		if err != nil {
			return idempotency.Claim{}, failed("begin", err)
		}
		return redisrec.BeginClaim(key, identity, req.Owner, r), nil
	case msg.IsString():
		v, err := msg.ToString()
		if err != nil {
			return idempotency.Claim{}, failed("begin", err)
		}
		cl, err := redisrec.BeginRecord(v, req.Fingerprint)
		if err != nil {
			return idempotency.Claim{}, failed("begin", err)
		}
		return cl, nil
	}
	return idempotency.Claim{}, failed("begin", fmt.Errorf("unexpected reply %s", msg.String()))
}

// Complete implements idempotency.ClaimStore in one round trip.
func (s *Store) Complete(ctx context.Context, tok idempotency.Token, c idempotency.Cached) error {
	if tok.Owner == "" { // no claim has an empty owner; records written by Store have one
		return fmt.Errorf("rueidisstore: complete: %w", idempotency.ErrLeaseLost)
	}
	payload, expiry, ttl := redisrec.Encode(&c, s.defaultTTL)
	fence := redisrec.FenceBytes(tok.Fence)
	n, err := s.run(ctx, completeScript, tok.Key, tok.Identity,
		tok.Owner, string(fence[:]), c.Fingerprint, string(payload), itoa(expiry), itoa(ttl)).AsInt64()
	switch {
	case err != nil:
		return failed("complete", err)
	case n == 0:
		return fmt.Errorf("rueidisstore: complete: %w", idempotency.ErrLeaseLost)
	}
	return nil
}

// Release implements idempotency.ClaimStore in one round trip.
func (s *Store) Release(ctx context.Context, tok idempotency.Token) error {
	fence := redisrec.FenceBytes(tok.Fence)
	n, err := s.run(ctx, releaseScript, tok.Key, tok.Identity, tok.Owner, string(fence[:])).AsInt64()
	switch {
	case err != nil:
		return failed("release", err)
	case n == 0:
		return fmt.Errorf("rueidisstore: release: %w", idempotency.ErrLeaseLost)
	}
	return nil
}

// Renew implements idempotency.ClaimStore in one round trip.
func (s *Store) Renew(ctx context.Context, tok idempotency.Token, lease time.Duration) error {
	if lease <= 0 {
		return fmt.Errorf("rueidisstore: renew: %w: lease %v is not positive", idempotency.ErrInvalidArgument, lease)
	}
	fence := redisrec.FenceBytes(tok.Fence)
	n, err := s.run(ctx, renewScript, tok.Key, tok.Identity,
		tok.Owner, string(fence[:]), itoa(redisrec.Micros(lease))).AsInt64()
	switch {
	case err != nil:
		return failed("renew", err)
	case n == 0:
		return fmt.Errorf("rueidisstore: renew: %w", idempotency.ErrLeaseLost)
	}
	return nil
}

// Lookup implements idempotency.Store in one round trip. Any failure is a miss.
func (s *Store) Lookup(ctx context.Context, key, identity string) (*idempotency.Cached, bool) {
	v, err := s.run(ctx, lookupScript, key, identity).ToString()
	if err != nil || v == "" { // a failure, or a miss
		return nil, false
	}
	rec, err := redisrec.DecodeRecord(v)
	if err != nil {
		return nil, false
	}
	return rec, true
}

// Store implements idempotency.Store in one round trip. It replaces whatever
// the record held, a claim in flight included (whose holder then gets
// ErrLeaseLost), and keeps its fence.
func (s *Store) Store(ctx context.Context, key, identity string, c idempotency.Cached) error {
	if err := idempotency.ValidateKey(key); err != nil {
		return fmt.Errorf("rueidisstore: store: %w", err)
	}
	payload, expiry, ttl := redisrec.Encode(&c, s.defaultTTL)
	err := s.run(ctx, storeScript, key, identity,
		c.Fingerprint, string(payload), itoa(expiry), itoa(ttl)).Error()
	if err != nil {
		return failed("store", err)
	}
	return nil
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// failed wraps a failure to reach Redis or to run a script there so that
// it matches idempotency.ErrStoreUnavailable, and also ErrStoreFull when
// Redis is out of memory (maxmemory with the noeviction policy). A nil
// reply (rueidis.Nil) never gets here in normal operation: the scripts
// answer a miss with a value.
func failed(op string, err error) error {
	if rueidis.IsRedisNil(err) {
		err = errors.New("unexpected nil reply")
	}
	// Redis names the class of an error reply by its first word.
	if re, ok := rueidis.IsRedisErr(err); ok && strings.HasPrefix(re.Error(), "OOM ") {
		return fmt.Errorf("rueidisstore: %s: %w (%w): %w", op, idempotency.ErrStoreFull, idempotency.ErrStoreUnavailable, err)
	}
	return fmt.Errorf("rueidisstore: %s: %w: %w", op, idempotency.ErrStoreUnavailable, err)
}

var _ idempotency.ClaimStore = (*Store)(nil)
