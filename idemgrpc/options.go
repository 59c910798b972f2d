package idemgrpc

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// Option configures UnaryServerInterceptor.
type Option func(*config)

type config struct {
	methods     func(fullMethod string) bool
	key         KeyFunc
	identity    func(ctx context.Context) string
	fingerprint FingerprintFunc
	record      func(codes.Code) bool
	required    bool
	anonymous   bool
}

// KeyFunc returns the idempotency key of a unary call: "" when it carries
// none. info names the method; req is its decoded request message.
type KeyFunc func(ctx context.Context, info *grpc.UnaryServerInfo, req any) string

// FingerprintFunc returns the fingerprint of a unary call (see
// idempotency.Request.Fingerprint). An error refuses the call with
// INVALID_ARGUMENT before anything runs.
type FingerprintFunc func(fullMethod string, req any) (string, error)

// WithMethods limits the interceptor to the methods for which covered
// returns true (it is given the full method name, "/package.Service/Method");
// the others pass through untouched. nil, the default, covers every unary
// method.
func WithMethods(covered func(fullMethod string) bool) Option {
	return func(c *config) { c.methods = covered }
}

// WithKey replaces how the key is found. nil keeps the default,
// KeyFromMetadata: the "idempotency-key" metadata. RequestField reads a field of
// the request message (AIP-155's request_id) first.
func WithKey(f KeyFunc) Option {
	return func(c *config) {
		if f != nil {
			c.key = f
		}
	}
}

// WithIdentity replaces how the caller is identified: f returns an identity
// derived from the call's credentials (a user id from an authentication
// interceptor that ran before this one, a digest of a token; never a raw
// secret, which would reach the store), or "" when the caller is unknown.
// nil keeps the default, DefaultIdentity.
func WithIdentity(f func(ctx context.Context) string) Option {
	return func(c *config) {
		if f != nil {
			c.identity = f
		}
	}
}

// WithFingerprint replaces the request fingerprint. nil keeps the default,
// DefaultFingerprint.
func WithFingerprint(f FingerprintFunc) Option {
	return func(c *config) {
		if f != nil {
			c.fingerprint = f
		}
	}
}

// WithRecordCode decides which error codes a handler returns are recorded
// and replayed; for the others the key is released so that a retry runs the
// handler again. OK is always recorded. nil keeps the default,
// DefaultRecordCode.
func WithRecordCode(record func(codes.Code) bool) Option {
	return func(c *config) {
		if record != nil {
			c.record = record
		}
	}
}

// WithRequired refuses covered calls without a key (INVALID_ARGUMENT)
// instead of running them without deduplication. Off by default.
func WithRequired(required bool) Option {
	return func(c *config) { c.required = required }
}

// WithAnonymous accepts keyed calls whose identity is "" (no credentials):
// they then share one anonymous key space, in which a caller that guesses
// another's key gets its response. Off by default: such a call is refused
// with UNAUTHENTICATED.
func WithAnonymous(anonymous bool) Option {
	return func(c *config) { c.anonymous = anonymous }
}
