package idemhttp_test

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/idemkit/idempotency/idemhttp"
)

func TestDefaultIdentity(t *testing.T) {
	id := func(values ...string) string {
		req := httptest.NewRequest("POST", "/", nil)
		for _, v := range values {
			req.Header.Add("Authorization", v)
		}
		return idemhttp.DefaultIdentity(req)
	}
	if got := id(); got != "" {
		t.Errorf("identity without Authorization = %q, want the anonymous \"\"", got)
	}
	alice, bob := id("Bearer alice-token"), id("Bearer bob-token")
	if alice == "" || alice == bob {
		t.Errorf("identities alice %q, bob %q: want two distinct non-empty ones", alice, bob)
	}
	if alice != id("Bearer alice-token") {
		t.Error("identity is not stable")
	}
	if strings.Contains(alice, "alice") {
		t.Errorf("identity %q contains the raw token", alice)
	}
	if id("a", "b") == id("a\nb") || id("a", "b") == id("ab") || id("") == "" {
		t.Error("identity encoding is ambiguous")
	}
}

func TestDefaultFingerprint(t *testing.T) {
	fp := func(method, target, contentType, body string) string {
		req := httptest.NewRequest(method, target, nil)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		return idemhttp.DefaultFingerprint(req, []byte(body))
	}
	base := fp("POST", "/a", "application/json", `{"x":1,"y":[1,2]}`)
	tests := []struct {
		name        string
		method      string
		target      string
		contentType string
		body        string
		same        bool
	}{
		{"same", "POST", "/a", "application/json", `{"x":1,"y":[1,2]}`, true},
		{"reordered, spaced", "POST", "/a", "application/json", " {\"y\" : [1, 2.0] ,\n\"x\":1e0} ", true},
		{"charset parameter", "POST", "/a", "Application/JSON; charset=utf-8", `{"y":[1,2],"x":1}`, true},
		{"+json type", "POST", "/a", "application/merge-patch+json", `{"y":[1,2],"x":1}`, true},
		{"other value", "POST", "/a", "application/json", `{"x":2,"y":[1,2]}`, false},
		{"other method", "PATCH", "/a", "application/json", `{"x":1,"y":[1,2]}`, false},
		{"other path", "POST", "/b", "application/json", `{"x":1,"y":[1,2]}`, false},
		{"query", "POST", "/a?x=1", "application/json", `{"x":1,"y":[1,2]}`, false},
		{"not JSON type, reordered", "POST", "/a", "text/plain", `{"y":[1,2],"x":1}`, false},
		{"no type, reordered", "POST", "/a", "", `{"y":[1,2],"x":1}`, false},
		{"invalid JSON", "POST", "/a", "application/json", `{"x":1,"y":[1,2]`, false},
	}
	for _, tt := range tests {
		got := fp(tt.method, tt.target, tt.contentType, tt.body)
		if (got == base) != tt.same {
			t.Errorf("%s: same fingerprint = %v, want %v", tt.name, got == base, tt.same)
		}
	}
	// Invalid JSON falls back to its bytes: equal bytes, equal fingerprints.
	if fp("POST", "/a", "application/json", `{bad`) != fp("POST", "/a", "application/json", `{bad`) {
		t.Error("invalid JSON bodies with equal bytes differ")
	}
	if fp("POST", "/a", "application/json", `{bad`) == fp("POST", "/a", "application/json", `{bad }`) {
		t.Error("invalid JSON bodies with different bytes are equal")
	}
}
