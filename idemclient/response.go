package idemclient

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
)

// NewKey returns a fresh random key: a version 4 UUID, in its lowercase
// 36-character form.
func NewKey() string {
	var u [16]byte
	_, _ = rand.Read(u[:])  // crypto/rand.Read never fails (Go 1.24+)
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // variant 10
	var b [36]byte
	hex.Encode(b[0:8], u[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:])
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
