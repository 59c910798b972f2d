package idemhttp

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/idemkit/idempotency/canonicaljson"
)

// DefaultIdentity is the identity the middleware uses unless WithIdentity
// replaces it: a SHA-256 digest (hex) of the request's Authorization header
// lines, so that two credentials never share records and the raw credential
// never reaches the store. A request without the header has no identity
// (""), and the middleware refuses it unless WithAnonymous allows it. The
// digests of
// the last few hundred single-line credentials seen are remembered, with the
// credentials, in this process's memory (a table of 256 slots, compared
// whole on a hit), so a client sending the same credential again is not
// hashed again.
func DefaultIdentity(r *http.Request) string {
	vs := r.Header["Authorization"] // canonical: what Values would read
	switch len(vs) {
	case 0:
		return ""
	case 1:
		return identities.get(vs[0], func(v string) string { return identityDigest([]string{v}) })
	}
	return identityDigest(vs)
}

// CookieIdentity returns an identity function for applications whose
// callers authenticate with a session cookie: a SHA-256 digest (hex) of the
// named cookie's value, so that two sessions never share records and the
// session id never reaches the store. A request without the cookie has no
// identity (""), and the middleware refuses it unless WithAnonymous allows
// it. The middleware must sit after whatever validates the session: a
// forged cookie value is simply another identity, with nothing recorded.
func CookieIdentity(name string) func(r *http.Request) string {
	return func(r *http.Request) string {
		c, err := r.Cookie(name)
		if err != nil || c.Value == "" {
			return ""
		}
		d := getDigester()
		defer d.put()
		d.raw("idemkit/idemhttp/cookie/v1\x00")
		d.partString(name)
		d.partString(c.Value)
		return d.hexSum(sha256.Size)
	}
}

// identityDigest is DefaultIdentity's digest of the Authorization lines vs.
func identityDigest(vs []string) string {
	d := getDigester()
	defer d.put()
	d.raw("idemkit/idemhttp/identity/v1\x00")
	for _, v := range vs { // length-prefixed, so line boundaries count
		d.partString(v)
	}
	return d.hexSum(sha256.Size)
}

// DefaultFingerprint is the request fingerprint the middleware uses unless
// WithFingerprint replaces it: idempotency.Fingerprint of the method, the
// path, the query string and the body. A JSON body (Content-Type
// application/json or any type ending in +json) is digested in its
// exact-value canonical form (canonicaljson.Append), so white space, member
// order, string escapes and the spelling of a number (1.0, 1e0) do not make
// two requests differ, while two numbers that differ in any digit always
// do. A body with no canonical form (not JSON, a duplicate member name, an
// absurd exponent) is digested as it is, under another tag, so that it can
// never share a fingerprint with a canonical one.
//
// The query string is included although the key usually travels with a
// POST body: a command that takes its arguments from the query must not
// replay one amount's response for another amount.
func DefaultFingerprint(r *http.Request, body []byte) string {
	// The same digest as idempotency.Fingerprint(method, path, query, form,
	// body), from a pooled hash and buffers: one allocation, the result.
	d := getDigester()
	defer d.put()
	// The tag says which form the body part is in: raw bytes and a
	// canonical form never share a fingerprint, even when their bytes are
	// equal. (The RFC 8785 form of earlier versions, which read numbers as
	// doubles, was tagged "jcs"; a new tag keeps its records from matching
	// a body they did not hold.)
	form := "raw"
	if isJSON(firstValue(r.Header["Content-Type"])) {
		if c, err := canonicaljson.Append(d.canon[:0], body); err == nil {
			d.canon = c
			body, form = c, "json-exact"
		}
	}
	d.partString(r.Method)
	d.partString(r.URL.EscapedPath())
	d.partString(r.URL.RawQuery)
	d.partString(form)
	d.part(body)
	return d.hexSum(16)
}

// firstValue is what http.Header.Get returns for the lines vs.
func firstValue(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[0]
}

// isJSON reports whether the media type of a Content-Type value is JSON.
func isJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	return mt == "application/json" || (strings.HasSuffix(mt, "+json") && strings.Contains(mt, "/"))
}

// readBody reads r's body, refusing one longer than limit before reading it
// when its length is declared. It reads into scratch when the body fits
// (the caller's own space, which the body then lives in), and otherwise
// into one buffer, sized by the declared length when there is one (plus a
// byte, for the read that sees the end).
func readBody(r *http.Request, limit int64, scratch []byte) ([]byte, *Error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if r.ContentLength > limit {
		return nil, errBodyTooLarge(limit)
	}
	size := int64(bytes.MinRead)
	if r.ContentLength > 0 {
		size = r.ContentLength + 1
	}
	buf := scratch[:0]
	if size = min(size, limit+1); size > int64(cap(buf)) {
		buf = make([]byte, 0, size)
	}
	for int64(len(buf)) <= limit { // reading limit+1 bytes tells a body too large
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, bytes.MinRead)
		}
		n, err := r.Body.Read(buf[len(buf):min(int64(cap(buf)), limit+1)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, readError(err)
		}
	}
	if int64(len(buf)) > limit {
		return nil, errBodyTooLarge(limit)
	}
	return buf, nil
}

// readError answers a failed read of the body: 413 for an outer
// http.MaxBytesReader's limit, 400 otherwise.
func readError(err error) *Error {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return errBodyTooLarge(tooLarge.Limit)
	}
	return errBodyUnreadable(err)
}

// bodyReader serves the body again to the handler. Its methods are those of
// io.NopCloser(bytes.NewReader(body)): Read, WriteTo and Close.
type bodyReader struct{ r bytes.Reader }

func (b *bodyReader) Read(p []byte) (int, error)         { return b.r.Read(p) }
func (b *bodyReader) WriteTo(w io.Writer) (int64, error) { return b.r.WriteTo(w) }
func (b *bodyReader) Close() error                       { return nil }

// attach gives r (a shallow copy already carrying its run context) a body
// that reads body from the start.
func (b *bodyReader) attach(r *http.Request, body []byte) *http.Request {
	if len(body) == 0 {
		r.Body, r.ContentLength = http.NoBody, 0
		return r
	}
	b.r.Reset(body)
	r.Body = b
	r.ContentLength = int64(len(body))
	return r
}
