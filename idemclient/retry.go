package idemclient

import (
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// retryableStatus reports whether resp asks to be asked again: 429, 503,
// and a 409 with Retry-After (a key in flight; see the package doc).
func retryableStatus(resp *http.Response) bool {
	switch resp.StatusCode {
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		return true
	case http.StatusConflict:
		return resp.Header.Get("Retry-After") != ""
	}
	return false
}

// retryableError reports whether err is a failure of the connection or a
// timeout, after which the request may or may not have run: re-sending it
// with its key is safe. Other errors (a bad URL, a certificate refused, a
// host that does not exist) would fail again the same way.
func retryableError(err error) bool {
	var dns *net.DNSError
	if errors.As(err, &dns) {
		return !dns.IsNotFound
	}
	var op *net.OpError
	if errors.As(err, &op) {
		return true
	}
	var timeout interface{ Timeout() bool }
	if errors.As(err, &timeout) && timeout.Timeout() {
		return true
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE)
}

// retryAfter is resp's Retry-After as a wait from now: delay-seconds or an
// HTTP date, at most maxRetryAfter; zero when absent or malformed.
func (t *Transport) retryAfter(resp *http.Response) time.Duration {
	v := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if v == "" {
		return 0
	}
	var d time.Duration
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s < 0 {
			return 0
		}
		if s > int64(t.maxRetryAfter/time.Second) {
			return t.maxRetryAfter
		}
		d = time.Duration(s) * time.Second
	} else if when, err := http.ParseTime(v); err == nil {
		d = when.Sub(t.now())
	}
	return min(max(d, 0), t.maxRetryAfter)
}

// backoff is the wait after attempt number attempt failed: a random point
// in the upper half of base·2^(attempt-1), capped at maxDelay.
func (t *Transport) backoff(attempt int) time.Duration {
	d := t.baseDelay
	for i := 1; i < attempt && d < t.maxDelay; i++ {
		d = min(d*2, t.maxDelay)
		if d < 0 { // overflowed: only when maxDelay is near forever
			d = t.maxDelay
		}
	}
	d = min(d, t.maxDelay)
	if d <= 0 {
		return 0
	}
	half := d / 2
	return half + time.Duration(t.jitter(int64(d-half)+1))
}

// errAttemptTimeout is the error of an attempt cut off by
// WithAttemptTimeout; it is a net.Error whose Timeout is true.
var errAttemptTimeout error = attemptTimeoutError{}

type attemptTimeoutError struct{}

func (attemptTimeoutError) Error() string {
	return "idemclient: attempt timed out awaiting response headers"
}
func (attemptTimeoutError) Timeout() bool   { return true }
func (attemptTimeoutError) Temporary() bool { return true }
