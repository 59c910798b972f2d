package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/dispatcher"
	"github.com/idemkit/idempotency/idemhttp"
	"github.com/idemkit/idempotency/pgstore"
)

// The admin API: on a listener of its own (-admin-addr), off unless
// -admin-token is set, every call logged.
//
//	GET    /admin/v1/records?key=K&identity=I   the record of (K, I)
//	DELETE /admin/v1/records?key=K&identity=I   purge it (a claim in flight is taken over)
//	GET    /admin/v1/claims?older-than=30s      claims in flight for at least that long
//
// A record may be named by id=ID (as /admin/v1/claims lists it) instead of
// key and identity; the identity may be given as credential=C, the value
// of the header idemd tells callers apart by, from which idemd derives the
// identity as it does for a request.

// minAdminToken is the shortest -admin-token accepted, in bytes.
const minAdminToken = 16

// defaultClaimsLimit and maxClaimsLimit bound /admin/v1/claims's answer.
const (
	defaultClaimsLimit = 100
	maxClaimsLimit     = 10000
)

// adminAPI serves the admin endpoints on the server's store.
type adminAPI struct {
	store    idempotency.Inspector // nil: the store cannot be inspected
	token    [sha256.Size]byte     // digest of -admin-token: compared in constant time, whatever its length
	identity func(credential string) string
	log      *slog.Logger
	timeout  time.Duration // bounds each store call
}

func newAdminAPI(s *server, token string) *adminAPI {
	a := &adminAPI{token: sha256.Sum256([]byte(token)), log: s.log.With("admin", true), timeout: adminTimeout}
	a.store, _ = s.store.(idempotency.Inspector)
	a.identity = identityFunc(s.cfg)
	return a
}

// adminTimeout bounds one admin call's store work (a listing of claims
// walks every record on Redis).
const adminTimeout = 30 * time.Second

// identityFunc is how idemd, configured by cfg, derives a caller's identity
// from its credential: the Authorization header, or the header named by the
// sidecar's -identity header:NAME.
func identityFunc(cfg config) func(string) string {
	header, derive := "Authorization", dispatcher.BearerIdentity
	if cfg.sidecar.upstream != "" {
		derive = idemhttp.DefaultIdentity
		if name, ok := strings.CutPrefix(cfg.sidecar.identity, "header:"); ok {
			header, derive = name, headerIdentity(name)
		}
	}
	return func(credential string) string {
		r := &http.Request{Header: http.Header{}}
		if credential != "" {
			r.Header.Set(header, credential)
		}
		return derive(r)
	}
}

func (a *adminAPI) handler() http.Handler {
	mux := http.NewServeMux()
	if a.store != nil { // else every call is answered 501, below
		mux.HandleFunc("GET /admin/v1/records", a.onRecord(a.store.Inspect, a.inspected))
		mux.HandleFunc("DELETE /admin/v1/records", a.onRecord(a.store.Purge, a.purged))
	}
	mux.HandleFunc("GET /admin/v1/claims", a.claims)
	for path, allow := range map[string]string{"/admin/v1/records": "GET, DELETE", "/admin/v1/claims": "GET"} {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.Method+" "+path+": want "+allow)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such admin endpoint; see GET /admin/v1/records, DELETE /admin/v1/records, GET /admin/v1/claims")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w}
		switch {
		case !a.authorized(r):
			rec.Header().Set("WWW-Authenticate", `Bearer realm="idemd admin"`)
			writeError(rec, http.StatusUnauthorized, "unauthorized", "missing or wrong admin token: send Authorization: Bearer and the -admin-token")
		case a.store == nil:
			writeError(rec, http.StatusNotImplemented, "not_inspectable", "this store cannot be inspected")
		default:
			mux.ServeHTTP(rec, r)
		}
		level := slog.LevelInfo
		if rec.status >= 400 {
			level = slog.LevelWarn
		}
		a.log.LogAttrs(r.Context(), level, "admin call",
			slog.String("method", r.Method), slog.String("path", r.URL.Path),
			slog.String("query", truncate(r.URL.RawQuery, 600)),
			slog.String("remote", r.RemoteAddr), slog.Int("status", rec.status),
			slog.Duration("duration", time.Since(start)))
	})
}

// authorized compares the bearer token with -admin-token in constant time.
func (a *adminAPI) authorized(r *http.Request) bool {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(got[:], a.token[:]) == 1
}

// recordID is the record named by the request's query: id, or key with
// identity (or credential).
func (a *adminAPI) recordID(r *http.Request) (string, error) {
	q := r.URL.Query()
	id, key := q.Get("id"), q.Get("key")
	_, hasIdentity := q["identity"]
	_, hasCredential := q["credential"]
	switch {
	case id != "" && (key != "" || hasIdentity || hasCredential):
		return "", errors.New("give id alone, or key with identity or credential")
	case id != "":
		return id, nil
	case key == "":
		return "", errors.New("missing key (or id)")
	case hasIdentity == hasCredential:
		return "", errors.New("give the caller as identity=… (as stored: anonymous, bearer:…) or credential=… (the header value idemd derives it from), one of them")
	}
	if err := idempotency.ValidateKey(key); err != nil {
		return "", err
	}
	identity := q.Get("identity")
	if hasCredential {
		identity = a.identity(q.Get("credential"))
	}
	return a.store.RecordID(key, identity), nil
}

// onRecord serves a call on the record the query names: op inspects or
// purges it, and data is the answer's data given what op returned.
func (a *adminAPI) onRecord(op func(context.Context, string) (idempotency.RecordInfo, error),
	data func(id string, info idempotency.RecordInfo) map[string]any) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := a.recordID(r)
		if err != nil {
			writeError(w, http.StatusBadRequest, "bad_request", err.Error())
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
		defer cancel()
		info, err := op(ctx, id)
		if err != nil {
			a.storeError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, okEnvelope{OK: true, Data: data(id, info)})
	}
}

func (a *adminAPI) inspected(_ string, info idempotency.RecordInfo) map[string]any {
	return map[string]any{"record": recordJSON(info, time.Now())}
}

func (a *adminAPI) purged(id string, was idempotency.RecordInfo) map[string]any {
	a.log.Warn("record purged", "id", id, "was", was.State.String(), "fence", was.Fence)
	return map[string]any{"purged": was.State != idempotency.RecordAbsent, "record": recordJSON(was, time.Now())}
}

func (a *adminAPI) claims(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	olderThan, limit := time.Duration(0), defaultClaimsLimit
	if v := q.Get("older-than"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("older-than=%q: want a duration such as 30s or 5m", v))
			return
		}
		olderThan = d
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxClaimsLimit {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("limit=%q: want 1 to %d", v, maxClaimsLimit))
			return
		}
		limit = n
	}
	ctx, cancel := context.WithTimeout(r.Context(), a.timeout)
	defer cancel()
	infos, err := a.store.Claims(ctx, olderThan, limit)
	if err != nil {
		a.storeError(w, err)
		return
	}
	now := time.Now()
	out := make([]map[string]any, len(infos))
	for i, info := range infos {
		out[i] = recordJSON(info, now)
	}
	writeJSON(w, http.StatusOK, okEnvelope{OK: true, Data: map[string]any{"claims": out, "count": len(out)}})
}

func (a *adminAPI) storeError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, idempotency.ErrInvalidArgument):
		writeError(w, http.StatusBadRequest, "bad_request", err.Error())
	case errors.Is(err, pgstore.ErrLockNotAClaim):
		writeError(w, http.StatusConflict, "lock_not_a_claim", err.Error())
	case errors.Is(err, idempotency.ErrStoreUnavailable), errors.Is(err, context.DeadlineExceeded):
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "store_unavailable", err.Error())
	default:
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
	}
}

// recordJSON is the admin API's view of info: the fields that apply to
// its state, times in RFC 3339, durations in milliseconds.
func recordJSON(info idempotency.RecordInfo, now time.Time) map[string]any {
	m := map[string]any{"id": info.ID, "state": info.State.String()}
	if info.Key != "" {
		m["key"] = info.Key
	}
	if info.Identity != "" {
		m["identity"] = info.Identity
	}
	if info.Fence != 0 {
		m["fence"] = info.Fence
	}
	if info.Fingerprint != "" {
		m["fingerprint"] = info.Fingerprint
	}
	switch info.State {
	case idempotency.RecordInFlight:
		if info.Owner != "" {
			m["owner"] = info.Owner
		}
		if !info.ClaimedAt.IsZero() {
			m["claimed_at"] = info.ClaimedAt.UTC().Format(time.RFC3339Nano)
			m["age_ms"] = now.Sub(info.ClaimedAt).Milliseconds()
		}
		if info.LeaseLeft > 0 {
			m["lease_left_ms"] = info.LeaseLeft.Milliseconds()
		}
	case idempotency.RecordCompleted, idempotency.RecordTombstone:
		if info.State == idempotency.RecordCompleted {
			m["status"], m["size"] = info.Status, info.Size
		}
		m["stored_at"] = info.StoredAt.UTC().Format(time.RFC3339Nano)
		m["expires_at"] = info.ExpiresAt.UTC().Format(time.RFC3339Nano)
	}
	return m
}

// statusRecorder remembers the status written, for the log line.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// serveAdmin serves the admin API on ln until ctx ends.
func serveAdmin(ctx context.Context, ln net.Listener, a *adminAPI) error {
	hs := &http.Server{
		Handler:           a.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := hs.Shutdown(shut); err != nil {
		hs.Close()
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// startAdmin starts the admin API of s on cfg.adminAddr; stop ends it and
// waits for it.
func startAdmin(ctx context.Context, cfg config, s *server, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", cfg.adminAddr)
	if err != nil {
		return nil, fmt.Errorf("-admin-addr: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	a := newAdminAPI(s, cfg.adminToken)
	log.Info("admin API listening", "addr", ln.Addr().String(), "inspectable", a.store != nil)
	go func() {
		defer close(done)
		if err := serveAdmin(ctx, ln, a); err != nil {
			log.Error("admin API stopped", "err", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}
