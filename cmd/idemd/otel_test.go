package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	tracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an in-process OTLP/HTTP collector: it keeps every
// request it is sent, decoded, and the raw bodies.
type otlpReceiver struct {
	srv *httptest.Server

	mu      sync.Mutex
	traces  []*tracepb.ExportTraceServiceRequest
	metrics []*metricspb.ExportMetricsServiceRequest
	raw     [][]byte
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	r := &otlpReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *otlpReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body := io.Reader(req.Body)
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var msg proto.Message
	var resp proto.Message
	switch {
	case req.Method == http.MethodPost && req.URL.Path == "/v1/traces":
		msg, resp = &tracepb.ExportTraceServiceRequest{}, &tracepb.ExportTraceServiceResponse{}
	case req.Method == http.MethodPost && req.URL.Path == "/v1/metrics":
		msg, resp = &metricspb.ExportMetricsServiceRequest{}, &metricspb.ExportMetricsServiceResponse{}
	default:
		http.NotFound(w, req)
		return
	}
	if err := proto.Unmarshal(b, msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.raw = append(r.raw, b)
	switch m := msg.(type) {
	case *tracepb.ExportTraceServiceRequest:
		r.traces = append(r.traces, m)
	case *metricspb.ExportMetricsServiceRequest:
		r.metrics = append(r.metrics, m)
	}
	r.mu.Unlock()
	out, _ := proto.Marshal(resp)
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// exportedSpan is what the test looks at in a received span.
type exportedSpan struct {
	name, service string
	id, parent    string
	trace         string
	attrs         map[string]string
}

func (r *otlpReceiver) spans() []exportedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []exportedSpan
	for _, req := range r.traces {
		for _, rs := range req.GetResourceSpans() {
			service := ""
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					service = kv.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					attrs := map[string]string{}
					for _, kv := range s.GetAttributes() {
						switch v := kv.GetValue().GetValue().(type) {
						case *commonpb.AnyValue_StringValue:
							attrs[kv.GetKey()] = v.StringValue
						case *commonpb.AnyValue_BoolValue:
							attrs[kv.GetKey()] = strconv.FormatBool(v.BoolValue)
						case *commonpb.AnyValue_IntValue:
							attrs[kv.GetKey()] = strconv.FormatInt(v.IntValue, 10)
						}
					}
					out = append(out, exportedSpan{name: s.GetName(), service: service,
						id: string(s.GetSpanId()), parent: string(s.GetParentSpanId()), trace: string(s.GetTraceId()), attrs: attrs})
				}
			}
		}
	}
	return out
}

// executionsMetric is the latest value of idempotency.executions by
// outcome.
func (r *otlpReceiver) executionsMetric() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int64{}
	for _, req := range r.metrics {
		for _, rm := range req.GetResourceMetrics() {
			for _, sm := range rm.GetScopeMetrics() {
				for _, m := range sm.GetMetrics() {
					if m.GetName() != "idempotency.executions" {
						continue
					}
					for _, p := range m.GetSum().GetDataPoints() {
						for _, kv := range p.GetAttributes() {
							if kv.GetKey() == "idempotency.outcome" {
								out[kv.GetValue().GetStringValue()] = p.GetAsInt() // cumulative: the last is the total
							}
						}
					}
				}
			}
		}
	}
	return out
}

func (r *otlpReceiver) rawContains(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range r.raw {
		if bytes.Contains(b, []byte(s)) {
			return true
		}
	}
	return false
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 10s, still not %s", what)
		}
		time.Sleep(20 * time.Millisecond) // polling a receiver in another goroutine, not waiting for an event
	}
}

func TestOTLPExport(t *testing.T) {
	recv := newOTLPReceiver(t)
	const key = "otlp-raw-key-5f2c9b"
	c, stop := runIdemd(t, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": recv.srv.URL,
		"OTEL_BSP_SCHEDULE_DELAY":     "50",
		"OTEL_METRIC_EXPORT_INTERVAL": "100",
	})
	// The first request comes with a caller's trace context: its
	// execution's span joins that trace.
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	c.post(t, "widgets.create", `{"name":"w"}`, "Idempotency-Key", key,
		"traceparent", "00-"+traceID+"-"+parentID+"-01").data(t, 201, &struct{}{})
	c.post(t, "widgets.create", `{"name":"w"}`, "Idempotency-Key", key).data(t, 201, &struct{}{})

	outcomes := recv.executions
	eventually(t, "exported an executed and a replayed execution span", func() bool {
		x := outcomes()
		return x["executed"].name != "" && x["replayed"].name != ""
	})
	eventually(t, "exported the executions metric", func() bool {
		m := recv.executionsMetric()
		return m["executed"] == 1 && m["replayed"] == 1
	})

	x := outcomes()
	executed, replayed := x["executed"], x["replayed"]
	if hex.EncodeToString([]byte(executed.trace)) != traceID || hex.EncodeToString([]byte(executed.parent)) != parentID {
		t.Errorf("executed span in trace %x under %x, want the caller's trace %s under %s", executed.trace, executed.parent, traceID, parentID)
	}
	if hex.EncodeToString([]byte(replayed.trace)) == traceID {
		t.Error("the replay, sent without a traceparent, joined the first request's trace")
	}
	if executed.service != "idemd" {
		t.Errorf("service.name %q, want idemd", executed.service)
	}
	if executed.attrs["idempotency.store"] != "memory" || executed.attrs["idempotency.replayed"] != "false" ||
		replayed.attrs["idempotency.replayed"] != "true" || executed.attrs["idempotency.fence"] == "" {
		t.Errorf("attributes %v then %v, want store memory, a fence, the second replayed", executed.attrs, replayed.attrs)
	}
	d := executed.attrs["idempotency.key_digest"]
	if len(d) != 32 || replayed.attrs["idempotency.key_digest"] != d {
		t.Errorf("key digests %q and %q, want one 32-digit digest for the key", d, replayed.attrs["idempotency.key_digest"])
	}
	var calls []string
	for _, s := range recv.spans() {
		if s.parent == executed.id {
			calls = append(calls, s.name)
		}
	}
	if strings.Join(calls, ",") != "idempotency.store.begin,idempotency.store.complete" {
		t.Errorf("store call spans under the executed span: %v, want begin, complete", calls)
	}
	if err := stop(); err != nil {
		t.Errorf("run: %v", err)
	}
	if recv.rawContains(key) {
		t.Error("the raw idempotency key was exported")
	}
}

// executions returns the received execution spans by outcome.
func (r *otlpReceiver) executions() map[string]exportedSpan {
	out := map[string]exportedSpan{}
	for _, s := range r.spans() {
		if s.name == "idempotency.execute" {
			out[s.attrs["idempotency.outcome"]] = s
		}
	}
	return out
}

// The sidecar's engines are observed too.
func TestOTLPExportSidecar(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(up.Close)
	recv := newOTLPReceiver(t)
	c, stop := runIdemd(t, map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": recv.srv.URL + "/v1/traces",
		"OTEL_BSP_SCHEDULE_DELAY": "50"}, "-upstream", up.URL)
	const key = "otlp-sidecar-raw-key-91e0"
	for range 2 {
		if a := post(t, c.base+"/orders", key, "{}"); a.status != http.StatusCreated {
			t.Fatalf("POST = %d %s, want 201", a.status, a.body)
		}
	}
	eventually(t, "exported an executed and a replayed execution span", func() bool {
		x := recv.executions()
		return x["executed"].name != "" && x["replayed"].name != ""
	})
	if err := stop(); err != nil {
		t.Errorf("run: %v", err)
	}
	if recv.rawContains(key) || recv.rawContains("alice") {
		t.Error("the raw idempotency key or credential was exported")
	}
	recv.mu.Lock()
	defer recv.mu.Unlock()
	if len(recv.metrics) != 0 {
		t.Errorf("%d metric exports with only a traces endpoint, want none", len(recv.metrics))
	}
}

func TestOTelUsage(t *testing.T) {
	var out strings.Builder
	if _, err := parseConfig([]string{"-h"}, env(nil), &out); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	if !strings.Contains(out.String(), "OTEL_EXPORTER_OTLP_ENDPOINT") {
		t.Errorf("-h does not mention OTEL_EXPORTER_OTLP_ENDPOINT:\n%s", out.String())
	}
}

func TestOTelWithoutEndpointNoExporter(t *testing.T) {
	tel, err := newTelemetry(context.Background(), testConfig(), env(nil), "memory")
	if err != nil || tel != nil {
		t.Fatalf("newTelemetry without an endpoint = (%v, %v), want none", tel, err)
	}
	if o := tel.engineObserver(); o != nil {
		t.Errorf("observer %v, want nil", o)
	}
	if err := tel.shutdown(context.Background()); err != nil {
		t.Errorf("shutdown of none = %v", err)
	}
	// OTEL_SDK_DISABLED turns it off even with an endpoint.
	tel, err = newTelemetry(context.Background(), testConfig(),
		env(map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}), "memory")
	if err != nil || tel != nil {
		t.Errorf("newTelemetry with OTEL_SDK_DISABLED=true = (%v, %v), want none", tel, err)
	}
}

func TestOTelEndpoints(t *testing.T) {
	tests := []struct {
		name            string
		vars            map[string]string
		traces, metrics string
	}{
		{"general", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, "http://c:4318/v1/traces", "http://c:4318/v1/metrics"},
		{"signal's own", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
			"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://t/x"}, "https://t/x", "http://c:4318/v1/metrics"},
		{"metrics only", map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m/v1/metrics"}, "", "http://m/v1/metrics"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := otlpEndpoint(env(tt.vars), "TRACES", "/v1/traces"); got != tt.traces {
				t.Errorf("traces to %q, want %q", got, tt.traces)
			}
			if got := otlpEndpoint(env(tt.vars), "METRICS", "/v1/metrics"); got != tt.metrics {
				t.Errorf("metrics to %q, want %q", got, tt.metrics)
			}
		})
	}
	_, err := newTelemetry(context.Background(), testConfig(), env(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}), "memory")
	if err == nil {
		t.Error("OTEL_EXPORTER_OTLP_PROTOCOL=grpc accepted, want an error: idemd exports over HTTP only")
	}
	_, err = newTelemetry(context.Background(), testConfig(), env(map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_METRIC_EXPORT_INTERVAL": "soon"}), "memory")
	if err == nil {
		t.Error("OTEL_METRIC_EXPORT_INTERVAL=soon accepted, want an error")
	}
}
