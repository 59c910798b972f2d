package idemhttp_test

import (
	"net/http/httptest"
	"testing"

	"github.com/idemkit/idempotency/idemhttp"
)

// The digests are part of the stored data: a fingerprint or an identity that
// changed between versions would turn every retry across an upgrade into a
// 422 or a second execution. These values pin them. (The JSON fingerprints
// changed once, on purpose, when bodies went from the RFC 8785 form, which
// made numbers that round to one double one request, to the exact-value
// form.)

func TestDefaultFingerprintStable(t *testing.T) {
	tests := []struct {
		method, target, contentType, body string
		want                              string
	}{
		{"POST", "/a", "application/json", `{"x":1,"y":[1,2]}`, "f95bea1ca42ad110f6c0009e2d349349"},
		{"POST", "/a/b%20c?q=1&r=2", "application/json", " {\"y\" : [1, 2.0] ,\n\"x\":1e0} ", "6baa5a918efbd79ad5cc791a35c72428"},
		{"PATCH", "/w", "text/plain", "hello", "a433d94d90a281ce560b25c953c766c8"},
		{"POST", "/w", "", "", "c2acaff2a01b07fe123b99dc8d5e32cd"},
		{"POST", "/w", "application/json", `{bad`, "a74fdeac27d2c9c7042bb6066fe120c8"},
	}
	for _, tt := range tests {
		req := httptest.NewRequest(tt.method, tt.target, nil)
		if tt.contentType != "" {
			req.Header.Set("Content-Type", tt.contentType)
		}
		if got := idemhttp.DefaultFingerprint(req, []byte(tt.body)); got != tt.want {
			t.Errorf("DefaultFingerprint(%s %s, %q, %q) = %q, want %q", tt.method, tt.target, tt.contentType, tt.body, got, tt.want)
		}
	}
}

func TestDefaultIdentityStable(t *testing.T) {
	tests := []struct {
		values []string
		want   string
	}{
		{nil, ""},
		{[]string{"Bearer alice"}, "3d6a90af9e451c3a300582b13dc79896a2a3964cf691b5049579cf4183bf72b6"},
		{[]string{"a", "b"}, "f9d1d89c4eaefd43e27d093b4646cae62bf01e56435734968ab23f0e68c83100"},
		{[]string{""}, "46440e23944612f549f860da5f6dd007ed5ac736531735492f0da060b0579110"},
	}
	for _, tt := range tests {
		req := httptest.NewRequest("POST", "/", nil)
		for _, v := range tt.values {
			req.Header.Add("Authorization", v)
		}
		if got := idemhttp.DefaultIdentity(req); got != tt.want {
			t.Errorf("DefaultIdentity(%q) = %q, want %q", tt.values, got, tt.want)
		}
	}
}
