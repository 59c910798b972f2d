package idemhttp

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/idemkit/idempotency"
)

// recorder is the http.ResponseWriter the handler writes to. It buffers the
// response so it can be recorded, and sends it on to the client when the
// handler is done. Three things make it send earlier ("commit"), passing
// what follows straight through:
//
//   - Flush: the handler streams. What it writes still goes into the buffer
//     too, and the whole response is recorded if it fits the cap;
//   - the body outgrowing the cap: the rest passes through unbuffered and a
//     tombstone is recorded instead of the response;
//   - Hijack: the handler takes the connection; a tombstone is recorded.
//
// Header returns the client's own header map, so headers set by outer
// middleware stay visible and are sent as usual. Write errors of the client
// connection are not reported to the handler: it runs to completion either
// way, and its response is recorded for the retry.
type recorder struct {
	w   http.ResponseWriter
	max int        // body bytes recorded at most
	rec *recording // which headers are recorded

	status    int    // 0 until the handler writes a final status
	body      []byte // what is recorded; nil once overflowed
	committed bool   // status and headers went to the client
	overflow  bool   // the body outgrew max: a tombstone is recorded
	hijacked  bool

	header map[string][]string // headers recorded, snapshot at commit
}

var (
	_ http.Flusher  = (*recorder)(nil)
	_ http.Hijacker = (*recorder)(nil)
)

func (rw *recorder) init(w http.ResponseWriter, max int, rec *recording) {
	rw.w, rw.max, rw.rec = w, max, rec
}

// Header implements http.ResponseWriter.
func (rw *recorder) Header() http.Header { return rw.w.Header() }

// WriteHeader implements http.ResponseWriter. Informational statuses (1xx
// but 101) go to the client at once and are not recorded.
func (rw *recorder) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code)) // as net/http does
	}
	if rw.status != 0 || rw.hijacked {
		return
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		rw.w.WriteHeader(code)
		return
	}
	rw.status = code
}

// Write implements http.ResponseWriter.
func (rw *recorder) Write(p []byte) (int, error) {
	if rw.hijacked {
		return 0, http.ErrHijacked
	}
	if rw.status == 0 {
		rw.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(rw.status) {
		return 0, http.ErrBodyNotAllowed
	}
	switch {
	case rw.overflow:
		_, _ = rw.w.Write(p)
	case len(rw.body)+len(p) > rw.max:
		rw.overflow = true
		if rw.committed {
			_, _ = rw.w.Write(p)
		} else {
			rw.body = append(rw.body, p...) // sent whole, so it is sniffed whole
			rw.commit()
		}
		rw.body = nil
	default:
		rw.body = append(rw.body, p...)
		if rw.committed {
			_, _ = rw.w.Write(p)
		}
	}
	return len(p), nil
}

// Flush implements http.Flusher.
func (rw *recorder) Flush() { _ = rw.FlushError() }

// FlushError sends what the handler wrote so far to the client and flushes
// it (http.ResponseController calls it). It reports only that the client's
// writer cannot flush, not a failed write.
func (rw *recorder) FlushError() error {
	if rw.hijacked {
		return http.ErrHijacked
	}
	rw.commit()
	if err := http.NewResponseController(rw.w).Flush(); errors.Is(err, http.ErrNotSupported) {
		return err
	}
	return nil
}

// Hijack implements http.Hijacker, through the client's writer. Once the
// connection is hijacked the response cannot be recorded: a tombstone is.
func (rw *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(rw.w).Hijack()
	if err == nil {
		rw.hijacked, rw.body = true, nil
	}
	return conn, brw, err
}

// Unwrap returns the client's writer, for http.ResponseController. What a
// handler writes to it directly bypasses the recorder and is not recorded.
func (rw *recorder) Unwrap() http.ResponseWriter { return rw.w }

// commit sends the status, the headers and the body buffered so far.
func (rw *recorder) commit() {
	if rw.committed || rw.hijacked {
		return
	}
	rw.committed = true
	if rw.status == 0 {
		rw.status = http.StatusOK
	}
	rw.prepareHeader(false)
	rw.header = rw.rec.header(rw.w.Header())
	rw.w.WriteHeader(rw.status)
	if len(rw.body) > 0 {
		_, _ = rw.w.Write(rw.body)
	}
}

// prepareHeader sets what net/http would derive from the body, so that it is
// recorded and a replay sends the same: the sniffed Content-Type, and, when
// the whole body is known, Content-Length.
func (rw *recorder) prepareHeader(whole bool) {
	h := rw.w.Header()
	if !bodyAllowed(rw.status) {
		return
	}
	_, haveType := h["Content-Type"]
	if !haveType && len(rw.body) > 0 && h.Get("Content-Encoding") == "" && h.Get("Transfer-Encoding") == "" {
		h.Set("Content-Type", http.DetectContentType(rw.body[:min(len(rw.body), 512)]))
	}
	if whole && h.Get("Content-Length") == "" && h.Get("Transfer-Encoding") == "" {
		h["Content-Length"] = contentLength(len(rw.body))
	}
}

// result is the response to record, once the handler has returned.
func (rw *recorder) result() idempotency.Response {
	if rw.status == 0 {
		rw.status = http.StatusOK
	}
	r := idempotency.Response{Status: rw.status}
	if rw.overflow || rw.hijacked {
		r.Streamed = true
		return r
	}
	if !rw.committed {
		rw.prepareHeader(true)
		rw.header = rw.rec.header(rw.w.Header())
	}
	r.Body, r.Header = rw.body, rw.header
	return r
}

// reset empties the recorder for another run of the handler; nothing of
// the response has gone to the client.
func (rw *recorder) reset() {
	rw.status, rw.body, rw.header = 0, rw.body[:0], nil
}

// finish sends the response to the client if it has not gone out yet.
func (rw *recorder) finish() { rw.commit() }

// recording is which response headers a middleware records, and the last
// set of recorded headers it made: most handlers answer with the same
// headers every time (Content-Type: application/json), and records share
// one read-only map for them instead of a copy each.
type recording struct {
	allow []string     // canonical names of the headers recorded
	last  atomic.Value // map[string][]string, the last one recordedHeader made
}

func newRecording(allow []string) *recording { return &recording{allow: allow} }

// header returns the recorded headers of h: the last map made, when h's
// allowed headers are exactly its contents, or a new copy.
func (r *recording) header(h http.Header) map[string][]string {
	if last, _ := r.last.Load().(map[string][]string); last != nil && sameRecorded(last, h, r.allow) {
		return last
	}
	m := recordedHeader(h, r.allow)
	if m != nil {
		r.last.Store(m)
	}
	return m
}

// sameRecorded reports whether recordedHeader(h, allow) would equal m.
func sameRecorded(m map[string][]string, h http.Header, allow []string) bool {
	n := 0
	for _, name := range allow {
		vs := h[name]
		if len(vs) == 0 {
			continue
		}
		if rv, ok := m[name]; !ok || !slices.Equal(rv, vs) {
			return false
		}
		n++
	}
	return n == len(m)
}

// contentLength returns a Content-Length header value for n bytes: shared,
// read-only slices for short bodies, which are most of them.
func contentLength(n int) []string {
	if n < len(smallLengths) {
		return smallLengths[n]
	}
	return []string{strconv.Itoa(n)}
}

var smallLengths = func() (t [1024][]string) {
	for i := range t {
		t[i] = []string{strconv.Itoa(i)}
	}
	return t
}()

// recordedHeader copies the allowed headers of h, their values in one
// backing array.
func recordedHeader(h http.Header, allow []string) map[string][]string {
	n, names := 0, 0
	for _, name := range allow {
		if vs := h[name]; len(vs) > 0 {
			n += len(vs)
			names++
		}
	}
	if names == 0 {
		return nil
	}
	out := make(map[string][]string, names)
	vals := make([]string, 0, n)
	for _, name := range allow {
		if vs := h[name]; len(vs) > 0 {
			i := len(vals)
			vals = append(vals, vs...)
			out[name] = vals[i:len(vals):len(vals)]
		}
	}
	return out
}

// writeRecorded replays a recorded response: its status, its recorded
// headers verbatim, Idempotent-Replayed: true, and its body. The header
// values it sets share one backing array, each capped to its own length.
func writeRecorded(w http.ResponseWriter, c *idempotency.Response) {
	h := w.Header()
	body := bodyAllowed(c.Status)
	n := 1 // Idempotent-Replayed
	if body {
		n++ // Content-Length
	}
	for _, vs := range c.Header {
		n += len(vs)
	}
	vals := make([]string, 0, n)
	set := func(name string, vs ...string) {
		i := len(vals)
		vals = append(vals, vs...)
		h[name] = vals[i:len(vals):len(vals)]
	}
	for k, vs := range c.Header {
		if vs == nil {
			h[k] = nil
			continue
		}
		set(k, vs...)
	}
	if _, ok := c.Header["Content-Type"]; !ok {
		h["Content-Type"] = nil // the original had none: do not sniff one now
	}
	set(HeaderReplayed, "true")
	if body {
		set("Content-Length", strconv.Itoa(len(c.Body)))
	}
	w.WriteHeader(c.Status)
	if len(c.Body) > 0 && body {
		_, _ = w.Write(c.Body) // a client that left needs no answer
	}
}

// bodyAllowed reports whether a response with status may have a body.
func bodyAllowed(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}
