package dispatcher

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/idemkit/idempotency/idemhttp"
)

// AnonymousIdentity is BearerIdentity's answer for a request without an
// Authorization header. It cannot collide with a hashed identity.
const AnonymousIdentity = "anonymous"

// BearerIdentity is the default identity of ServeHTTP: for
// "Authorization: Bearer <token>", "bearer:" and a SHA-256 digest of the
// token, so raw tokens never reach the store; for another scheme, a digest of
// the whole header under another prefix; without the header,
// AnonymousIdentity (all anonymous callers share one key space).
func BearerIdentity(r *http.Request) string {
	v := strings.Join(r.Header.Values("Authorization"), "\n")
	if v == "" {
		return AnonymousIdentity
	}
	h := sha256.New()
	prefix := "authorization:"
	if scheme, token, ok := strings.Cut(v, " "); ok && strings.EqualFold(scheme, "Bearer") {
		prefix = "bearer:"
		h.Write([]byte("idemkit/bearer/v1\x00"))
		h.Write([]byte(strings.TrimSpace(token)))
	} else {
		h.Write([]byte("idemkit/authorization/v1\x00"))
		h.Write([]byte(v))
	}
	return prefix + hex.EncodeToString(h.Sum(nil))
}

// ServeHTTP serves "POST /v1/commands/{name}": mount the Dispatcher on a
// pattern with a {name} wildcard, for example
//
//	mux.Handle("/v1/commands/{name}", d)
//
// The payload is the request body (at most WithMaxBodyBytes, else 413), the
// key the Idempotency-Key header (a quoted structured-field string, or bare),
// the identity WithIdentity's (default BearerIdentity). The answer is the
// envelope of Dispatch as application/json. A replay carries
// "Idempotent-Replayed: true"; the dispatcher's 409 and 503 carry Retry-After
// (seconds).
// Methods other than POST get 405; a Content-Type other than JSON
// (application/json or a +json type; none at all is taken as JSON) gets 415. Headers a handler sets in Response.Header
// go with this execution's answer only.
//
// The command runs detached from the request (see WithCommandContext): a
// client that disconnects does not cancel it, so it is still recorded.
func (d *Dispatcher) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		d.refuse(w, r, name, errMethodNotAllowed)
		return
	}
	if !jsonContentType(r.Header.Get("Content-Type")) {
		d.refuse(w, r, name, errUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, d.maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		f := errInvalidJSON
		if errors.As(err, &tooBig) {
			f = errPayloadTooLarge
			f.message = fmt.Sprintf("the payload is larger than %d bytes", d.maxBody)
		} else {
			f.message = "the request body could not be read"
		}
		d.refuse(w, r, name, f)
		return
	}
	key, badKey := headerKey(r.Header)
	ctx, cancel := d.detach(r.Context())
	defer cancel()
	rep := d.dispatch(ctx, Command{Name: name, Payload: body, Key: key, Identity: d.identity(r)}, badKey)
	writeReply(w, rep)
}

// jsonContentType reports whether a request's Content-Type admits a JSON
// body: none at all, application/json, or a +json type, with any parameters.
func jsonContentType(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// refuse answers a request ServeHTTP rejects before dispatching it.
func (d *Dispatcher) refuse(w http.ResponseWriter, r *http.Request, name string, f failure) {
	ev := Event{Command: name, Key: r.Header.Get("Idempotency-Key")}
	rep := fail(f, &ev)
	ev.Status = rep.status
	d.notify(r.Context(), ev)
	writeReply(w, rep)
}

// detach returns a context for a command: the request's values, not its
// cancellation, ended by the command context instead.
func (d *Dispatcher) detach(parent context.Context) (context.Context, func()) {
	ctx := context.WithoutCancel(parent)
	if d.commandCtx == nil {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	if d.commandCtx.Err() != nil {
		cancel(context.Cause(d.commandCtx))
		return ctx, func() {}
	}
	stop := context.AfterFunc(d.commandCtx, func() { cancel(context.Cause(d.commandCtx)) })
	return ctx, func() {
		stop()
		cancel(nil)
	}
}

// headerKey reads the Idempotency-Key header with idemhttp.ParseKey, so
// that both adapters read a key the same way: ("", false) when absent, and
// bad set when it is present but malformed (then key is the raw value, for
// the observer).
func headerKey(h http.Header) (key string, bad bool) {
	vs := h.Values(idemhttp.HeaderKey)
	k, err := idemhttp.ParseKey(vs)
	switch {
	case errors.Is(err, idemhttp.ErrKeyMissing):
		return "", false
	case err != nil:
		return strings.Join(vs, ", "), true
	}
	return k, false
}

// Headers a handler may not set: the dispatcher's own and hop-by-hop ones.
var reservedHeaders = map[string]bool{
	"Content-Type": true, "Content-Length": true, "Idempotent-Replayed": true,
	"Retry-After": true, "Connection": true, "Keep-Alive": true,
	"Transfer-Encoding": true, "Upgrade": true, "Trailer": true, "Te": true,
	"Proxy-Connection": true,
}

func writeReply(w http.ResponseWriter, rep reply) {
	h := w.Header()
	for k, vs := range rep.header {
		if k = http.CanonicalHeaderKey(k); !reservedHeaders[k] {
			h[k] = append([]string(nil), vs...)
		}
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(rep.body)))
	h.Set("Cache-Control", "no-store")
	if rep.replayed {
		h.Set("Idempotent-Replayed", "true")
	}
	if rep.retry {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(rep.status)
	_, _ = w.Write(rep.body) // the client may be gone; the command was recorded anyway
}
