package redisstore

import (
	"context"
	"errors"

	"github.com/idemkit/idempotency/redisstore/internal/redisrec"
	"github.com/redis/go-redis/v9"
)

// A script is one of redisrec's scripts, with its SHA-1 and source boxed
// once, so that sending them allocates nothing.
type script struct {
	sha, src any // strings
}

func newScript(src string) *script {
	return &script{sha: redis.NewScript(src).Hash(), src: src}
}

// The scripts, one per protocol step, and how they keep fences increasing,
// are described in package redisrec, which rueidisstore shares.
var (
	beginScript    = newScript(redisrec.BeginScript)
	completeScript = newScript(redisrec.CompleteScript)
	releaseScript  = newScript(redisrec.ReleaseScript)
	renewScript    = newScript(redisrec.RenewScript)
	lookupScript   = newScript(redisrec.LookupScript)
	storeScript    = newScript(redisrec.StoreScript)
	inspectScript  = newScript(redisrec.InspectScript)
	purgeScript    = newScript(redisrec.PurgeScript)
)

// A call holds the arguments of one script run. Stores keep calls in a
// pool and hand go-redis pointers into them (*string, *int64 and
// encoding.BinaryMarshaler, which it writes without converting), so that a
// run allocates its command and its reply, and nothing else: redis.Script.Run
// would box every argument and copy them into a new slice. A call goes back
// to the pool once go-redis has returned the reply, and with it every
// argument: a hook that keeps a command's Args after the command has run
// sees them change. (A hook that prints a command shows the key, and the
// other arguments as pointers.)
type call struct {
	args               [10]any
	key, payload       bytesArg
	fence              fenceArg
	owner, fp          string
	lease, expiry, ttl int64
}

// maxPooled is the largest buffer (key and payload) a call keeps when it
// goes back to the pool; a larger response's buffer is left to the GC.
const maxPooled = 64 << 10

// bytesArg is a []byte argument; *bytesArg is one word, so it fits in an
// interface without allocating.
type bytesArg struct{ b []byte }

func (a *bytesArg) MarshalBinary() ([]byte, error) { return a.b, nil }

// String is for go-redis's cluster and ring routing, which read the key
// argument through fmt.
func (a *bytesArg) String() string { return string(a.b) }

// fenceArg is a fence, sent as the 8 bytes records keep.
type fenceArg [8]byte

func (a *fenceArg) MarshalBinary() ([]byte, error) { return a[:], nil }

func (s *Store) getCall(key, identity string) *call {
	c, _ := s.calls.Get().(*call)
	if c == nil {
		c = new(call)
	}
	c.key.b = redisrec.AppendKey(c.key.b[:0], s.hasher, s.prefix, key, identity)
	return c
}

func (s *Store) putCall(c *call) {
	if cap(c.key.b) > maxPooled || cap(c.payload.b) > maxPooled {
		return
	}
	c.args = [len(c.args)]any{}
	c.owner, c.fp = "", ""
	s.calls.Put(c)
}

// Arguments boxed once.
var (
	argEvalSha any = "evalsha"
	argEval    any = "eval"
	argOneKey  any = "1"
)

// argv fills c.args with the head of an EVALSHA of sc on c's key and
// returns it; the caller appends ARGV, up to len(c.args).
func (c *call) argv(sc *script) []any {
	c.args[0], c.args[1], c.args[2], c.args[3] = argEvalSha, sc.sha, argOneKey, &c.key
	return c.args[:4]
}

// run sends args (made by argv) through s's client as a command made by
// newCmd, as redis.Script.Run does: EVALSHA, then EVAL when the server does
// not have the script yet.
func run[C redis.Cmder](ctx context.Context, s *Store, sc *script, newCmd func(context.Context, ...any) C, args []any) C {
	cmd := newCmd(ctx, args...)
	cmd.SetFirstKeyPos(3)
	_ = s.client.Process(ctx, cmd)
	if err := cmd.Err(); err != nil && isNoScript(err) {
		args[0], args[1] = argEval, sc.src
		cmd = newCmd(ctx, args...)
		cmd.SetFirstKeyPos(3)
		_ = s.client.Process(ctx, cmd)
	}
	return cmd
}

// isNoScript reports a NOSCRIPT reply, as redis.Script.Run tests it.
func isNoScript(err error) bool {
	return errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT")
}
