package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/dispatcher"
)

// releaseTimeout bounds how long shutdown waits, after cancelling the
// commands still running, for them to end and release their keys.
const releaseTimeout = 10 * time.Second

// adminPrefix is where a sidecar serves idemd's own endpoints (healthz,
// readyz, metrics); every other path goes upstream.
const adminPrefix = "/_idemd/"

// errShutdown is the cause given to the commands cancelled at shutdown.
var errShutdown = errors.New("idemd: shutting down")

// server is idemd's HTTP side: the dispatcher with the demo commands,
// health, metrics, and the graceful shutdown of running commands.
type server struct {
	cfg     config
	log     *slog.Logger
	metrics *metrics
	store   idempotency.Store // instrumented
	engine  *idempotency.Engine
	d       *dispatcher.Dispatcher
	dash    dashboard
	active  *gate // command requests running
	ready   *readiness
	handler http.Handler
	sidecar *sidecar // idemd -upstream; nil otherwise

	// commands ends when running commands must stop (shutdown took too long).
	commands     context.Context
	stopCommands context.CancelCauseFunc

	mu    sync.RWMutex
	known map[string]bool // registered command names, for metric labels
}

// newServer returns idemd's server on store, with the widgets in dash. On a
// store that is an idempotency.TxStore (pgstore's transactional view), the
// engine runs each keyed command in a transaction that commits with its
// record, and dash must write through it (pgDashboard).
func newServer(cfg config, store idempotency.Store, dash dashboard, log *slog.Logger) *server {
	s := &server{
		cfg:     cfg,
		log:     log,
		metrics: newMetrics(),
		dash:    dash,
		active:  newGate(),
		known:   make(map[string]bool),
		ready:   newReadiness(nil, cfg.storeTimeout, log), // run sets its ping
	}
	s.metrics.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "idemd_store_up",
		Help: "1 if the store answered the last readiness probe (/readyz), else 0.",
	}, func() float64 {
		if s.ready.up() {
			return 1
		}
		return 0
	}))
	s.commands, s.stopCommands = context.WithCancelCause(context.Background())
	s.store = store
	engineOpts := []idempotency.EngineOption{idempotency.WithLease(cfg.lease),
		idempotency.WithObserver(s.metrics.observer(log)), idempotency.WithObserver(cfg.observer)}
	if cfg.sidecar.upstream != "" {
		s.sidecar = newSidecar(cfg.sidecar, log, func(record func(idempotency.Response) bool) *idempotency.Engine {
			return idempotency.NewEngine(s.store, append(engineOpts,
				idempotency.WithDetachedRun(true), idempotency.WithRecordPolicy(record))...)
		})
		// A shutdown out of time cuts the upstream exchanges still running:
		// each gets its "outcome unknown" answer recorded.
		context.AfterFunc(s.commands, s.sidecar.conns.closeAll)
		sc := s.sidecar
		s.metrics.reg.MustRegister(
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "idemd_upstream_not_sent_total",
				Help: "Covered requests that never reached the upstream (answered 503; the key released).",
			}, func() float64 { return float64(sc.notSent.Load()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "idemd_upstream_outcome_unknown_total",
				Help: "Covered requests sent upstream whose whole answer never came back (reset, timeout, cut off): answered 502 or 504, recorded unless -upstream-ambiguous=release.",
			}, func() float64 { return float64(sc.ambiguous.Load()) }),
		)
		proxied := s.active.wrap(s.sidecar)
		admin := http.NewServeMux()
		s.handleOwn(admin, adminPrefix)
		s.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, adminPrefix) {
				admin.ServeHTTP(w, r)
				return
			}
			proxied.ServeHTTP(w, r)
		})
		return s
	}
	s.engine = idempotency.NewEngine(s.store, engineOpts...)
	s.d = dispatcher.New(s.engine, dispatcher.WithObserver(s.observe), dispatcher.WithCommandContext(s.commands))
	s.register("widgets.create", createWidget(s.dash))
	s.register("widgets.list", listWidgets(s.dash), dispatcher.NoKey())
	s.register("reports.generate", generateReport)

	mux := http.NewServeMux()
	mux.Handle("/v1/commands/{name}", s.active.wrap(s.d))
	s.handleOwn(mux, "/")
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint; commands are POST /v1/commands/{name}")
	})
	s.handler = mux
	return s
}

// register adds a command whose running handlers are counted in metrics.
func (s *server) register(name string, h dispatcher.Handler, opts ...dispatcher.RegisterOption) {
	running := s.metrics.running.WithLabelValues(name)
	s.d.Register(name, func(ctx context.Context, req dispatcher.Request) (dispatcher.Response, error) {
		running.Inc()
		defer running.Dec()
		return h(ctx, req)
	}, opts...)
	s.mu.Lock()
	s.known[name] = true
	s.mu.Unlock()
}

func (s *server) commandLabel(name string) string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.known[name] {
		return name
	}
	return otherCommand
}

// observe counts and logs every dispatch.
func (s *server) observe(ctx context.Context, e dispatcher.Event) {
	s.metrics.commands.WithLabelValues(s.commandLabel(e.Command), string(e.Outcome)).Inc()
	s.metrics.duration.WithLabelValues(string(e.Outcome)).Observe(e.Duration.Seconds())

	level := slog.LevelInfo
	switch e.Outcome {
	case dispatcher.OutcomeError:
		level = slog.LevelError
	case dispatcher.OutcomeStoreUnavailable, dispatcher.OutcomeCancelled:
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("command", truncate(e.Command, 100)),
		slog.String("outcome", string(e.Outcome)),
		slog.Int("status", e.Status),
		slog.Duration("duration", e.Duration),
	}
	if e.Key != "" {
		attrs = append(attrs, slog.String("key", truncate(e.Key, 100)))
	}
	if e.Fence != 0 {
		attrs = append(attrs, slog.Uint64("fence", e.Fence))
	}
	if e.Err != nil {
		attrs = append(attrs, slog.String("err", e.Err.Error()))
	}
	if e.RecordErr != nil {
		level = max(level, slog.LevelWarn)
		attrs = append(attrs, slog.String("record_err", e.RecordErr.Error()))
	}
	s.log.LogAttrs(ctx, level, "command", attrs...)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// handleOwn registers idemd's own endpoints on mux, under prefix: healthz,
// readyz and metrics.
func (s *server) handleOwn(mux *http.ServeMux, prefix string) {
	mux.HandleFunc("GET "+prefix+"healthz", s.healthz)
	mux.HandleFunc("GET "+prefix+"readyz", s.readyz)
	mux.Handle("GET "+prefix+"metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{}))
}

// healthz is the liveness probe: 200 while the process serves, whether or
// not the store answers (that is readyz's question; a restart would not
// bring the store back).
func (s *server) healthz(w http.ResponseWriter, _ *http.Request) {
	if s.active.isClosed() {
		writeError(w, http.StatusServiceUnavailable, "shutting_down", "the server is shutting down")
		return
	}
	writeJSON(w, http.StatusOK, okEnvelope{OK: true, Data: map[string]string{"status": "ok"}})
}

// serve answers on ln until ctx ends, then shuts down: it stops accepting,
// lets running commands finish for up to cfg.shutdownTimeout, then cancels
// those still running (the engine releases their keys, so their retries run
// again rather than wait for the lease to run out) and waits, up to
// releaseTimeout, for them to end.
func (s *server) serve(ctx context.Context, ln net.Listener) error {
	defer s.stopCommands(errShutdown)
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}

	s.log.Info("shutting down", "running", s.active.count(), "timeout", s.cfg.shutdownTimeout)
	s.active.close() // a request that slips in now gets 503
	grace, cancel := context.WithTimeout(context.Background(), s.cfg.shutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(grace); err != nil {
		s.log.Warn("commands still running after the shutdown timeout: cancelling them",
			"running", s.active.count())
		s.stopCommands(errShutdown)
		wait, cancel := context.WithTimeout(context.Background(), releaseTimeout)
		defer cancel()
		if err := s.active.wait(wait); err != nil {
			s.log.Error("commands ignored cancellation; their keys stay claimed until their lease runs out",
				"running", s.active.count(), "lease", s.cfg.lease)
		}
		// The cancelled commands have answered (503); let their answers
		// leave before the connections close: Shutdown again closes each
		// connection once it is idle, that is, once its answer is flushed.
		flush, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := hs.Shutdown(flush); err != nil {
			hs.Close()
		}
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	s.log.Info("stopped")
	return nil
}

// gate counts the requests running through it and, once closed, turns new
// ones away, so shutdown knows when the last command has ended.
type gate struct {
	mu     sync.Mutex
	n      int
	closed bool
	idle   chan struct{} // closed when closed and n == 0
}

func newGate() *gate { return &gate{idle: make(chan struct{})} }

func (g *gate) enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.n++
	return true
}

func (g *gate) leave() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.n--
	if g.closed && g.n == 0 {
		close(g.idle)
	}
}

func (g *gate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.closed = true
	if g.n == 0 {
		close(g.idle)
	}
}

func (g *gate) isClosed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

func (g *gate) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n
}

// wait returns nil once the gate is closed and empty, or ctx's error.
func (g *gate) wait(ctx context.Context) error {
	select {
	case <-g.idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gate) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.enter() {
			w.Header().Set("Connection", "close")
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, "shutting_down", "the server is shutting down; retry")
			return
		}
		defer g.leave()
		h.ServeHTTP(w, r)
	})
}

// idemd's own answers use the dispatcher's envelopes, fields in the same order.
type okEnvelope struct {
	OK   bool `json:"ok"`
	Data any  `json:"data"`
}

type errEnvelope struct {
	OK    bool `json:"ok"`
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	var e errEnvelope
	e.Error.Code, e.Error.Message = code, message
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v) // strings and maps of strings always marshal
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
