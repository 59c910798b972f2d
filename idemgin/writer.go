package idemgin

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"

	"github.com/gin-gonic/gin"
)

// responseWriter is the gin.ResponseWriter of the handlers a keyed request
// runs, over the idemhttp recorder. It keeps gin's own rules: the status
// may change until the headers are written (the last WriteHeader wins),
// and Status, Size and Written describe what the handlers wrote.
type responseWriter struct {
	w      http.ResponseWriter // the recorder
	status int
	size   int // -1 until the headers are written
}

var _ gin.ResponseWriter = (*responseWriter)(nil)

var errHijackWritten = errors.New("idemgin: response body already written")

func (rw *responseWriter) reset(w http.ResponseWriter) {
	rw.w, rw.status, rw.size = w, http.StatusOK, -1
}

// Header implements http.ResponseWriter.
func (rw *responseWriter) Header() http.Header { return rw.w.Header() }

// WriteHeader sets the status written with the headers; it changes nothing
// once they are written.
func (rw *responseWriter) WriteHeader(code int) {
	if code > 0 && !rw.Written() {
		rw.status = code
	}
}

// WriteHeaderNow implements gin.ResponseWriter.
func (rw *responseWriter) WriteHeaderNow() {
	if !rw.Written() {
		rw.size = 0
		rw.w.WriteHeader(rw.status)
	}
}

// Write implements http.ResponseWriter.
func (rw *responseWriter) Write(p []byte) (int, error) {
	rw.WriteHeaderNow()
	n, err := rw.w.Write(p)
	rw.size += n
	return n, err
}

// WriteString implements gin.ResponseWriter.
func (rw *responseWriter) WriteString(s string) (int, error) {
	rw.WriteHeaderNow()
	n, err := io.WriteString(rw.w, s)
	rw.size += n
	return n, err
}

// Status implements gin.ResponseWriter.
func (rw *responseWriter) Status() int { return rw.status }

// Size implements gin.ResponseWriter: the body bytes written, -1 before
// the headers are.
func (rw *responseWriter) Size() int { return rw.size }

// Written implements gin.ResponseWriter.
func (rw *responseWriter) Written() bool { return rw.size != -1 }

// Flush sends what was written so far to the client (the whole response is
// still recorded if it fits the engine's cap).
func (rw *responseWriter) Flush() {
	rw.WriteHeaderNow()
	if f, ok := rw.w.(http.Flusher); ok {
		f.Flush()
	}
}

// Hijack takes the connection; a tombstone is recorded instead of the
// response.
func (rw *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if rw.size > 0 {
		return nil, nil, errHijackWritten
	}
	h, ok := rw.w.(http.Hijacker)
	if !ok {
		return nil, nil, http.ErrNotSupported
	}
	if rw.size < 0 {
		rw.size = 0
	}
	return h.Hijack()
}

// CloseNotify implements http.CloseNotifier (as gin.ResponseWriter must).
// The handlers run detached from the client, so it never fires: it returns
// nil, a channel nothing is ever received on.
func (rw *responseWriter) CloseNotify() <-chan bool { return nil }

// Pusher implements gin.ResponseWriter: nil, server push is not recorded.
func (rw *responseWriter) Pusher() http.Pusher { return nil }

// Unwrap returns the recorder, for http.ResponseController.
func (rw *responseWriter) Unwrap() http.ResponseWriter { return rw.w }
