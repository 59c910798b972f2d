package main

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/idemkit/idempotency/idemhttp"
)

// The upstream's headers travel in a record packed into one field,
// because idemhttp records an allow-list of headers and an arbitrary API's
// are not known in advance: the recording proxy packs them (readAhead),
// and replayWriter unpacks them on a replay.

// recordedHeadersField carries, inside a record, the upstream's headers
// that idemhttp does not record itself; it never reaches a client.
const recordedHeadersField = "Idemd-Upstream-Headers"

// Response headers never replayed: connection-level (hop-by-hop) headers,
// cookies, credentials, and what is recomputed for each answer. idemhttp
// records Content-Type, Content-Encoding and Location itself.
var notReplayed = map[string]bool{
	"Set-Cookie": true, "Set-Cookie2": true, "Authorization": true,
	"Proxy-Authorization": true, "Proxy-Authenticate": true,
	"Content-Length": true, "Date": true, idemhttp.HeaderReplayed: true,
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Content-Type": true, "Content-Encoding": true, "Location": true,
	recordedHeadersField: true,
}

// pack encodes the headers of h that are replayed and that idemhttp does not
// record itself: name=value pairs, query-escaped, joined by "&".
func (s *sidecar) pack(h http.Header) string {
	var b strings.Builder
	for name, vs := range h {
		if s.skip[name] {
			continue
		}
		for _, v := range vs {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(url.QueryEscape(name))
			b.WriteByte('=')
			b.WriteString(url.QueryEscape(v))
		}
	}
	return b.String()
}

// unpack sets the headers packed into v on h, but never one of skip.
func unpack(h http.Header, v string, skip map[string]bool) {
	set := make(map[string]bool)
	for pair := range strings.SplitSeq(v, "&") {
		k, val, _ := strings.Cut(pair, "=")
		name, err1 := url.QueryUnescape(k)
		value, err2 := url.QueryUnescape(val)
		if err1 != nil || err2 != nil || name == "" || skip[name] {
			continue
		}
		if !set[name] {
			set[name] = true
			h[name] = nil
		}
		h[name] = append(h[name], value)
	}
}

// replayWriter is the client's writer under idemhttp: on a replay it turns
// the recorded field back into the upstream's headers; on a first answer
// it drops the field.
type replayWriter struct {
	http.ResponseWriter
	skip  map[string]bool // headers never replayed
	fresh bool            // the handler ran: the headers are the upstream's own
	done  bool
	abort bool
}

func (w *replayWriter) WriteHeader(code int) {
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.expand()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *replayWriter) Write(p []byte) (int, error) {
	w.expand()
	return w.ResponseWriter.Write(p)
}

func (w *replayWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *replayWriter) expand() {
	if w.done {
		return
	}
	w.done = true
	h := w.ResponseWriter.Header()
	vs, ok := h[recordedHeadersField]
	if !ok {
		return
	}
	delete(h, recordedHeadersField)
	if !w.fresh && len(vs) == 1 {
		unpack(h, vs[0], w.skip)
	}
}

// findReplayWriter finds the replayWriter under the writers idemhttp wraps it in.
func findReplayWriter(w http.ResponseWriter) *replayWriter {
	for w != nil {
		if rw, ok := w.(*replayWriter); ok {
			return rw
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return nil
		}
		w = u.Unwrap()
	}
	return nil
}
