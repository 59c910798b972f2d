package idemgrpc

import (
	"sync"

	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/idemkit/idempotency"
)

// headerType is the recorded header that names the response message's
// type, so that a replay decodes the body into the handler's own type
// (other interceptors and the generated code may assert it).
const headerType = "idemgrpc-type"

var deterministic = proto.MarshalOptions{Deterministic: true}

func marshal(m proto.Message) ([]byte, error) { return deterministic.Marshal(m) }

// encode turns a handler's response into the record: its deterministic
// encoding and its message type.
func (s *server) encode(resp any) (idempotency.Response, error) {
	m, ok := resp.(proto.Message)
	if !ok {
		return idempotency.Response{}, errNotProto
	}
	body, err := marshal(m)
	if err != nil {
		return idempotency.Response{}, err
	}
	mt := m.ProtoReflect().Type()
	name := s.types.remember(mt)
	return idempotency.Response{Status: int(codes.OK), Header: map[string][]string{headerType: name}, Body: body}, nil
}

// errUnreplayable is the status of a replay whose record cannot be decoded.
var errUnreplayable = grpcstatus.Error(codes.Internal, "idemgrpc: the recorded response cannot be decoded")

// replay rebuilds the recorded answer: the response message, or the
// recorded error status with its details.
func (s *server) replay(r *idempotency.Response) (any, error) {
	if r.Status != int(codes.OK) {
		var st status.Status
		if err := proto.Unmarshal(r.Body, &st); err != nil || st.Code != int32(r.Status) {
			return nil, errUnreplayable
		}
		return nil, grpcstatus.ErrorProto(&st)
	}
	names := r.Header[headerType]
	if len(names) != 1 {
		return nil, errUnreplayable
	}
	mt := s.types.find(names[0])
	if mt == nil {
		return nil, errUnreplayable
	}
	m := mt.New().Interface()
	if err := proto.Unmarshal(r.Body, m); err != nil {
		return nil, errUnreplayable
	}
	return m, nil
}

// typeCache maps message names to the types the handlers answered with in
// this process (a dynamicpb type is in no registry), with the global
// registry behind it for a record another process made. It also keeps the
// one-element name slices the records share.
type typeCache struct {
	m sync.Map // protoreflect.FullName as string -> *typeEntry
}

type typeEntry struct {
	mt   protoreflect.MessageType
	name []string
}

func (c *typeCache) remember(mt protoreflect.MessageType) []string {
	name := string(mt.Descriptor().FullName())
	if v, ok := c.m.Load(name); ok {
		if e := v.(*typeEntry); e.mt == mt {
			return e.name
		}
	}
	e := &typeEntry{mt: mt, name: []string{name}}
	c.m.Store(name, e)
	return e.name
}

func (c *typeCache) find(name string) protoreflect.MessageType {
	if v, ok := c.m.Load(name); ok {
		return v.(*typeEntry).mt
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(name))
	if err != nil {
		return nil
	}
	c.m.Store(name, &typeEntry{mt: mt, name: []string{name}})
	return mt
}
