package idemgrpc

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/idemkit/idempotency"
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
	md, _ := metadata.FromIncomingContext(ctx)
	vs := md[MetadataKey] // incoming keys are lower case
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
// store. A call without that metadata has no identity ("").
func DefaultIdentity(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	vs := md["authorization"]
	if len(vs) == 0 {
		return ""
	}
	h := sha256.New()
	h.Write([]byte("idemkit/idemgrpc/identity/v1\x00"))
	var n [binary.MaxVarintLen64]byte
	for _, v := range vs { // length-prefixed, so value boundaries count
		h.Write(n[:binary.PutUvarint(n[:], uint64(len(v)))])
		h.Write([]byte(v))
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0]))
}

// errNotProto is why DefaultFingerprint refuses a request that is not a
// protocol buffer message.
var errNotProto = errors.New("idemgrpc: the request is not a protocol buffer message")

var marshalBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// DefaultFingerprint is the fingerprint unless WithFingerprint replaces it:
// idempotency.Fingerprint of the full method name and the deterministic
// protocol buffer encoding of the request (map entries sorted), so the same
// key sent to another method, or with any field changed, is a different
// request. Unknown fields count as they arrived.
func DefaultFingerprint(fullMethod string, req any) (string, error) {
	m, ok := req.(proto.Message)
	if !ok {
		return "", errNotProto
	}
	bp := marshalBuffers.Get().(*[]byte)
	defer marshalBuffers.Put(bp)
	b, err := proto.MarshalOptions{Deterministic: true}.MarshalAppend((*bp)[:0], m)
	if err != nil {
		return "", err
	}
	if cap(b) <= 64<<10 {
		*bp = b[:0]
	}
	return idempotency.Fingerprint([]byte("idemkit/idemgrpc/v1"), []byte(fullMethod), b), nil
}
