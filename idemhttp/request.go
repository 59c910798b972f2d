package idemhttp

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/idemkit/idempotency"
)

// DefaultIdentity is the identity the middleware uses unless WithIdentity
// replaces it: a SHA-256 digest (hex) of the request's Authorization header
// lines, so that two credentials never share records and the raw credential
// never reaches the store. A request without the header has the anonymous
// identity "": all anonymous callers share one key space.
func DefaultIdentity(r *http.Request) string {
	vs := r.Header.Values("Authorization")
	if len(vs) == 0 {
		return ""
	}
	d := getDigester()
	defer d.put()
	d.buf = append(d.buf[:0], "idemkit/idemhttp/identity/v1\x00"...)
	d.raw(d.buf)
	for _, v := range vs { // length-prefixed, so line boundaries count
		d.partString(v)
	}
	return d.hexSum(sha256.Size)
}

// DefaultFingerprint is the request fingerprint the middleware uses unless
// WithFingerprint replaces it: idempotency.Fingerprint of the method, the
// path, the query string and the body. A JSON body (Content-Type
// application/json or any type ending in +json) is digested in its RFC 8785
// canonical form (idempotency.CanonicalJSON), so white space, member order
// and number spelling do not make two requests differ; a body that is not
// valid JSON is digested as it is.
//
// The query string is included although the key usually travels with a
// POST body: a command that takes its arguments from the query must not
// replay one amount's response for another amount.
func DefaultFingerprint(r *http.Request, body []byte) string {
	form := "raw"
	if isJSON(r.Header.Get("Content-Type")) {
		if c, err := idempotency.CanonicalJSON(body); err == nil {
			body, form = c, "jcs"
		}
	}
	// The same digest as idempotency.Fingerprint(method, path, query, form,
	// body), from a pooled hash: one allocation, the result.
	d := getDigester()
	defer d.put()
	d.partString(r.Method)
	d.partString(r.URL.EscapedPath())
	d.partString(r.URL.RawQuery)
	d.partString(form)
	d.part(body)
	return d.hexSum(16)
}

// isJSON reports whether the media type of a Content-Type value is JSON.
func isJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	return mt == "application/json" || (strings.HasSuffix(mt, "+json") && strings.Contains(mt, "/"))
}

// readBody reads r's body, refusing one longer than limit before reading it
// when its length is declared.
func readBody(r *http.Request, limit int64) ([]byte, *Error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	if r.ContentLength > limit {
		return nil, errBodyTooLarge(limit)
	}
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(r.ContentLength))
	}
	_, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1))
	var tooLarge *http.MaxBytesError // an outer http.MaxBytesReader's limit
	switch {
	case errors.As(err, &tooLarge):
		return nil, errBodyTooLarge(tooLarge.Limit)
	case err != nil:
		return nil, errBodyUnreadable(err)
	case int64(buf.Len()) > limit:
		return nil, errBodyTooLarge(limit)
	}
	return buf.Bytes(), nil
}

// withBody returns a shallow copy of r (already carrying its run context)
// whose body reads body from the start.
func withBody(r *http.Request, body []byte) *http.Request {
	if len(body) == 0 {
		r.Body, r.ContentLength = http.NoBody, 0
		return r
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	return r
}
