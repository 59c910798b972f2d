package idemclient

import (
	"crypto/rand"
	"fmt"
	"net/http"
)

// NewKey returns a fresh random key: a version 4 UUID, in its lowercase
// 36-character form.
func NewKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// Replayed reports whether resp was replayed from the server's record of
// an earlier request with the same key (it carries Idempotent-Replayed:
// true): the command had already run, and this is its recorded answer.
func Replayed(resp *http.Response) bool {
	return resp != nil && resp.Header.Get(HeaderReplayed) == "true"
}

// attemptsKey is the context key of the attempt number on the request of
// each attempt.
type attemptsKey struct{}

// Attempts returns how many attempts resp took (1 when it answered the
// first), or 0 when resp did not come through a Transport.
func Attempts(resp *http.Response) int {
	if resp == nil || resp.Request == nil {
		return 0
	}
	n, _ := resp.Request.Context().Value(attemptsKey{}).(int)
	return n
}

// Key returns the Idempotency-Key that resp's request carried: the
// caller's, or the one the Transport made. "" when it had none.
func Key(resp *http.Response) string {
	if resp == nil || resp.Request == nil {
		return ""
	}
	return resp.Request.Header.Get(HeaderKey)
}
