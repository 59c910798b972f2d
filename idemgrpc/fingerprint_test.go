package idemgrpc_test

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemgrpc"
)

func TestDefaultFingerprint(t *testing.T) {
	big, _ := structpb.NewStruct(map[string]any{"a": 1.0, "b": "two", "c": map[string]any{"d": true, "e": nil}, "f": []any{1.0, "x"}})
	other, _ := structpb.NewStruct(map[string]any{"a": 1.0, "b": "two", "c": map[string]any{"d": true, "e": nil}, "f": []any{1.0, "y"}})
	seen := map[string]string{}
	for name, m := range map[string]proto.Message{"string": wrapperspb.String("x"), "struct": big, "other struct": other, "empty": &structpb.Struct{}} {
		got, err := idemgrpc.DefaultFingerprint(methodCreate, m)
		if err != nil {
			t.Fatal(err)
		}
		want := idempotency.Fingerprint([]byte("idemkit/idemgrpc/v1"), []byte(methodCreate), encoded(t, m))
		if got != want {
			t.Errorf("%s: %s, want idempotency.Fingerprint's %s", name, got, want)
		}
		for range 10 { // map order must not matter
			if again, _ := idemgrpc.DefaultFingerprint(methodCreate, m); again != got {
				t.Fatalf("%s: fingerprint changed: %s, then %s", name, got, again)
			}
		}
		if prev, ok := seen[got]; ok {
			t.Errorf("%s and %s share a fingerprint", name, prev)
		}
		seen[got] = name
		if other, _ := idemgrpc.DefaultFingerprint(methodFail, m); other == got {
			t.Errorf("%s: the same fingerprint for another method", name)
		}
	}
	if _, err := idemgrpc.DefaultFingerprint(methodCreate, "not a message"); err == nil {
		t.Error("a request that is not a message has a fingerprint")
	}
}

func TestDefaultIdentity(t *testing.T) {
	// The identity is a digest: never the credential itself.
	ctx := incoming(t, "authorization", "Bearer secret")
	id := idemgrpc.DefaultIdentity(ctx)
	if id == "" || id == "Bearer secret" || len(id) != 64 {
		t.Errorf("identity %q, want a hex SHA-256 digest", id)
	}
	if other := idemgrpc.DefaultIdentity(incoming(t, "authorization", "Bearer other")); other == id {
		t.Error("two credentials share an identity")
	}
	if two := idemgrpc.DefaultIdentity(incoming(t, "authorization", "Bearer", "authorization", " secret")); two == id {
		t.Error("value boundaries do not count")
	}
	if none := idemgrpc.DefaultIdentity(t.Context()); none != "" {
		t.Errorf("no credentials: identity %q, want none", none)
	}
}

func TestHMACIdentity(t *testing.T) {
	ctx := incoming(t, "authorization", "Bearer secret")
	a, b := idemgrpc.HMACIdentity([]byte("k1")), idemgrpc.HMACIdentity([]byte("k2"))
	if id := a(ctx); id == "" || id == idemgrpc.DefaultIdentity(ctx) || id == b(ctx) || len(id) != 64 {
		t.Errorf("identity %q: want a hex HMAC that depends on the secret", id)
	}
	if a(ctx) != a(ctx) {
		t.Error("the identity is not stable")
	}
	if a(incoming(t, "authorization", "Bearer other")) == a(ctx) {
		t.Error("two credentials share an identity")
	}
	if a(t.Context()) != "" {
		t.Error("no credentials: an identity")
	}
}
