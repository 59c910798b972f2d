package idemgrpc

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/maphash"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Metadata names.
const (
	// MetadataKey is the metadata that carries the idempotency key.
	MetadataKey = "idempotency-key"
	// MetadataReplayed is the header metadata of a replay: "true".
	MetadataReplayed = "idempotent-replayed"
)

// manyKeys is the sentinel a KeyFunc's answer is compared to: a key no
// valid key equals (it holds a control character), so the engine refuses it.
const manyKeys = "\x00idemgrpc: more than one idempotency-key"

// KeyFromMetadata is the default KeyFunc: the "idempotency-key" incoming
// metadata. A call with several values gets a key that fails validation, so
// it is refused with INVALID_ARGUMENT rather than deduplicated on one of
// them.
func KeyFromMetadata(ctx context.Context, _ *grpc.UnaryServerInfo, _ any) string {
	vs := metadata.ValueFromIncomingContext(ctx, MetadataKey) // no copy of the whole metadata
	switch len(vs) {
	case 0:
		return ""
	case 1:
		return vs[0]
	}
	return manyKeys
}

// RequestField returns a KeyFunc that reads the key from the request
// message's string field of that name, such as AIP-155's "request_id", and,
// when the message has no such field or it is empty, from the metadata
// (KeyFromMetadata). The field is part of the request, so it is also part of
// the fingerprint.
func RequestField(name string) KeyFunc {
	field := protoreflect.Name(name)
	return func(ctx context.Context, info *grpc.UnaryServerInfo, req any) string {
		if m, ok := req.(proto.Message); ok {
			r := m.ProtoReflect()
			fd := r.Descriptor().Fields().ByName(field)
			if fd != nil && fd.Kind() == protoreflect.StringKind && fd.Cardinality() != protoreflect.Repeated {
				if v := r.Get(fd).String(); v != "" {
					return v
				}
			}
		}
		return KeyFromMetadata(ctx, info, req)
	}
}

// DefaultIdentity is the identity unless WithIdentity replaces it: a SHA-256
// digest (hex) of the call's "authorization" metadata values, so that two
// credentials never share records and the raw credential never reaches the
// store. A call without that metadata has no identity (""). The interceptor
// remembers the digests of the last few hundred single-value credentials it
// has seen, with the credentials, in this process's memory (compared whole
// on a hit), so a client sending the same credential again is not hashed
// again.
func DefaultIdentity(ctx context.Context) string {
	return identityDigest(metadata.ValueFromIncomingContext(ctx, "authorization"))
}

func identityDigest(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	d := getDigest()
	defer d.put()
	d.identity("idemkit/idemgrpc/identity/v1\x00", vs)
	sum := sha256.Sum256(d.b)
	return hex.EncodeToString(sum[:])
}

// HMACIdentity returns an identity function for WithIdentity: like
// DefaultIdentity, but an HMAC-SHA-256 (hex) of the "authorization" values
// under secret, so that someone who reads the store cannot test guessed
// credentials against its identities without the secret. Every replica
// must use the same secret; changing it makes every caller a new one (their
// records are not found again).
func HMACIdentity(secret []byte) func(ctx context.Context) string {
	secret = bytes.Clone(secret)
	return func(ctx context.Context) string {
		vs := metadata.ValueFromIncomingContext(ctx, "authorization")
		if len(vs) == 0 {
			return ""
		}
		d := getDigest()
		defer d.put()
		d.identity("idemkit/idemgrpc/identity/hmac/v1\x00", vs)
		m := hmac.New(sha256.New, secret)
		m.Write(d.b)
		return hex.EncodeToString(m.Sum(nil))
	}
}

// identityMemo remembers the identities of the credentials seen last. It is
// direct-mapped (a slot per hash of the credential, the newest wins).
type identityMemo struct {
	seed  maphash.Seed
	slots [256]atomic.Pointer[memoEntry]
}

type memoEntry struct{ credential, identity string }

func newIdentityMemo() *identityMemo { return &identityMemo{seed: maphash.MakeSeed()} }

func (m *identityMemo) identity(ctx context.Context) string {
	vs := metadata.ValueFromIncomingContext(ctx, "authorization")
	if len(vs) != 1 {
		return identityDigest(vs)
	}
	slot := &m.slots[maphash.String(m.seed, vs[0])%uint64(len(m.slots))]
	if e := slot.Load(); e != nil && e.credential == vs[0] {
		return e.identity
	}
	id := identityDigest(vs)
	slot.Store(&memoEntry{vs[0], id})
	return id
}

// errNotProto is why DefaultFingerprint refuses a request that is not a
// protocol buffer message.
var errNotProto = errors.New("idemgrpc: the request is not a protocol buffer message")

// digest is a pooled buffer for the message a digest is taken of.
type digest struct{ b []byte }

var digests = sync.Pool{New: func() any { return &digest{b: make([]byte, 0, 512)} }}

func getDigest() *digest { d := digests.Get().(*digest); d.b = d.b[:0]; return d }

// identity adds the message an identity is a digest of: tag, then each
// credential value length-prefixed, so value boundaries count.
func (d *digest) identity(tag string, vs []string) {
	d.b = append(d.b, tag...)
	for _, v := range vs {
		d.b = binary.AppendUvarint(d.b, uint64(len(v)))
		d.b = append(d.b, v...)
	}
}

func (d *digest) put() {
	if cap(d.b) <= 64<<10 {
		digests.Put(d)
	}
}

// fingerprintTag is the first part of DefaultFingerprint's digest.
const fingerprintTag = "idemkit/idemgrpc/v1"

// DefaultFingerprint is the fingerprint unless WithFingerprint replaces it:
// idempotency.Fingerprint of "idemkit/idemgrpc/v1", the full method name and
// the deterministic protocol buffer encoding of the request (map entries
// sorted), so the same key sent to another method, or with any field
// changed, is a different request. Unknown fields count as they arrived.
func DefaultFingerprint(fullMethod string, req any) (string, error) {
	m, ok := req.(proto.Message)
	if !ok {
		return "", errNotProto
	}
	// idempotency.Fingerprint's digest (each part length-prefixed, the
	// first 16 bytes of SHA-256 in hex), in one pooled buffer: one
	// allocation, the result.
	d := getDigest()
	defer d.put()
	d.b = binary.AppendUvarint(d.b, uint64(len(fingerprintTag)))
	d.b = append(d.b, fingerprintTag...)
	d.b = binary.AppendUvarint(d.b, uint64(len(fullMethod)))
	d.b = append(d.b, fullMethod...)
	n := deterministic.Size(m)
	d.b = binary.AppendUvarint(d.b, uint64(n))
	b, err := proto.MarshalOptions{Deterministic: true, UseCachedSize: true}.MarshalAppend(d.b, m) // sized just above
	if err != nil {
		return "", err
	}
	d.b = b
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16]), nil
}
