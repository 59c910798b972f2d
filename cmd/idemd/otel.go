package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/idemkit/idempotency"
	"github.com/idemkit/idempotency/idemotel"
)

// telemetry is idemd's OpenTelemetry export, OTLP over HTTP, set up from
// the standard OTEL_* variables: traces when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, metrics when it or
// OTEL_EXPORTER_OTLP_METRICS_ENDPOINT is. Prometheus's /metrics is served
// either way.
type telemetry struct {
	tp       *sdktrace.TracerProvider // nil: no traces exported
	mp       *sdkmetric.MeterProvider // nil: no metrics exported
	observer *idempotency.Observer    // of the engines
}

// otelShutdownTimeout bounds how long run waits, on exit, for the last spans
// and metrics to be sent.
const otelShutdownTimeout = 5 * time.Second

// newTelemetry returns idemd's exporters, or nil when no OTLP endpoint is
// set or OTEL_SDK_DISABLED is true. The variables come through getenv, so that tests need not touch
// the process's environment: the endpoints, OTEL_BSP_SCHEDULE_DELAY and
// OTEL_METRIC_EXPORT_INTERVAL (milliseconds). The exporters read their
// other variables themselves (OTEL_EXPORTER_OTLP_HEADERS, _TIMEOUT,
// _COMPRESSION…), and the resource OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES (service.name is "idemd" otherwise).
//
// Spans carry a digest of each request's key and caller keyed with
// IDEMD_SECRET, or without it with a random secret of this process, so
// that a digest then correlates the spans of one process only.
func newTelemetry(ctx context.Context, cfg config, getenv func(string) string, storeName string) (*telemetry, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return nil, nil // the specification's switch: no telemetry at all
	}
	traces := otlpEndpoint(getenv, "TRACES", "/v1/traces")
	metrics := otlpEndpoint(getenv, "METRICS", "/v1/metrics")
	if traces == "" && metrics == "" {
		return nil, nil
	}
	if p := getenv("OTEL_EXPORTER_OTLP_PROTOCOL"); p != "" && p != "http/protobuf" {
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL %q: idemd exports http/protobuf only", p)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "idemd")),
		resource.WithFromEnv(), // after the default: OTEL_SERVICE_NAME wins
		resource.WithTelemetrySDK())
	if err != nil {
		return nil, fmt.Errorf("OpenTelemetry resource: %w", err)
	}
	t := &telemetry{}
	var tp trace.TracerProvider = tracenoop.NewTracerProvider()
	var mp metric.MeterProvider = metricnoop.NewMeterProvider()
	if traces != "" {
		exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(traces))
		if err != nil {
			return nil, fmt.Errorf("OTLP trace exporter: %w", err)
		}
		var opts []sdktrace.BatchSpanProcessorOption
		if d, ok, err := millis(getenv, "OTEL_BSP_SCHEDULE_DELAY"); err != nil {
			return nil, err
		} else if ok {
			opts = append(opts, sdktrace.WithBatchTimeout(d))
		}
		t.tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp, opts...), sdktrace.WithResource(res))
		tp = t.tp
	}
	if metrics != "" {
		exp, err := otlpmetrichttp.New(ctx, otlpmetrichttp.WithEndpointURL(metrics))
		if err != nil {
			return nil, errors.Join(fmt.Errorf("OTLP metric exporter: %w", err), t.shutdown(ctx))
		}
		var opts []sdkmetric.PeriodicReaderOption
		if d, ok, err := millis(getenv, "OTEL_METRIC_EXPORT_INTERVAL"); err != nil {
			return nil, errors.Join(err, t.shutdown(ctx))
		} else if ok {
			opts = append(opts, sdkmetric.WithInterval(d))
		}
		t.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp, opts...)), sdkmetric.WithResource(res))
		mp = t.mp
	}
	secret := []byte(cfg.secret)
	if len(secret) == 0 {
		secret = make([]byte, 32)
		_, _ = rand.Read(secret) // never fails
	}
	t.observer = idemotel.NewObserver(idemotel.WithTracerProvider(tp), idemotel.WithMeterProvider(mp),
		idemotel.WithStoreName(storeName), idemotel.WithKeyDigest(secret))
	return t, nil
}

// otlpEndpoint is the URL a signal is exported to: its own variable's URL
// as given, else the general one's with the signal's path; "" for none.
func otlpEndpoint(getenv func(string) string, signal, path string) string {
	if u := getenv("OTEL_EXPORTER_OTLP_" + signal + "_ENDPOINT"); u != "" {
		return u
	}
	if u := getenv("OTEL_EXPORTER_OTLP_ENDPOINT"); u != "" {
		return strings.TrimSuffix(u, "/") + path
	}
	return ""
}

// millis reads the variable name as a whole number of milliseconds.
func millis(getenv func(string) string, name string) (time.Duration, bool, error) {
	v := getenv(name)
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return 0, false, fmt.Errorf("%s %q: want a positive number of milliseconds", name, v)
	}
	return time.Duration(n) * time.Millisecond, true, nil
}

// propagate gives each request the W3C trace context (traceparent,
// tracestate) its caller sent, so that its execution's span joins the
// caller's trace. Without traces exported, h is returned as it is.
func (t *telemetry) propagate(h http.Handler) http.Handler {
	if t == nil || t.tp == nil {
		return h
	}
	var prop propagation.TraceContext
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.ServeHTTP(w, r.WithContext(prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))))
	})
}

// engineObserver is the observer to add to the engines; nil (none) on a
// nil telemetry.
func (t *telemetry) engineObserver() *idempotency.Observer {
	if t == nil {
		return nil
	}
	return t.observer
}

// shutdown sends what is left and stops the exporters. A nil telemetry has
// nothing to shut down.
func (t *telemetry) shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	var errs []error
	if t.tp != nil {
		errs = append(errs, t.tp.Shutdown(ctx))
	}
	if t.mp != nil {
		errs = append(errs, t.mp.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// storeKind names the store of the spec for the idempotency.store
// attribute: memory, redis or postgres.
func storeKind(spec string) string {
	scheme, _, ok := strings.Cut(spec, "://")
	switch {
	case !ok:
		return spec
	case scheme == "rediss":
		return "redis"
	case scheme == "postgresql":
		return "postgres"
	}
	return scheme
}

// close shuts t down, giving the last exports otelShutdownTimeout even
// when ctx has ended (as it has when idemd stops), and logs a failure.
func (t *telemetry) close(ctx context.Context, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), otelShutdownTimeout)
	defer cancel()
	if err := t.shutdown(ctx); err != nil {
		log.Warn("OpenTelemetry: the last spans or metrics were not exported", "err", err)
	}
}
