package core

import (
	"bytes"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/grpc/codes"
)

// serverMetrics are core's own metrics; plugins add theirs through Env.Metrics.
type serverMetrics struct {
	handled   *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	inFlight  *prometheus.GaugeVec
	backendUp prometheus.Gauge
	checks    *prometheus.CounterVec
	draining  prometheus.Gauge
	reloads   *prometheus.CounterVec

	// methods caches each method's metric children so a call does not hash label values.
	methods sync.Map // full method name -> *methodMetrics
}

// methodMetrics are one method's resolved metric children.
type methodMetrics struct {
	service, method string
	vec             *prometheus.CounterVec
	latency         prometheus.Observer
	inFlight        prometheus.Gauge
	codes           [17]atomic.Pointer[prometheus.Counter] // indexed by codes.Code
}

func (m *methodMetrics) handled(code codes.Code) prometheus.Counter {
	if int(code) >= len(m.codes) {
		return m.vec.WithLabelValues(m.service, m.method, code.String())
	}
	if c := m.codes[code].Load(); c != nil {
		return *c
	}
	c := m.vec.WithLabelValues(m.service, m.method, code.String())
	m.codes[code].Store(&c)
	return c
}

// forMethod returns the cached metric children for a full gRPC method name.
func (sm *serverMetrics) forMethod(fullMethod string) *methodMetrics {
	if m, ok := sm.methods.Load(fullMethod); ok {
		return m.(*methodMetrics)
	}
	service, method := splitMethod(fullMethod)
	m := &methodMetrics{
		service:  service,
		method:   method,
		vec:      sm.handled,
		latency:  sm.latency.WithLabelValues(service, method),
		inFlight: sm.inFlight.WithLabelValues(service, method),
	}
	actual, _ := sm.methods.LoadOrStore(fullMethod, m)
	return actual.(*methodMetrics)
}

// latencyBuckets span a loopback hop (tens of µs) to a slow backend call (seconds).
var latencyBuckets = prometheus.ExponentialBucketsRange(25e-6, 10, 20)

func newServerMetrics(reg *prometheus.Registry, info Info) *serverMetrics {
	m := &serverMetrics{
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prism_grpc_server_handled_total",
			Help: "gRPC calls completed, by service, method and status code.",
		}, []string{"grpc_service", "grpc_method", "grpc_code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "prism_grpc_server_handling_seconds",
			Help:    "Time from receiving a gRPC call to finishing it, by service and method.",
			Buckets: latencyBuckets,
		}, []string{"grpc_service", "grpc_method"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "prism_grpc_server_in_flight",
			Help: "gRPC calls in progress, by service and method.",
		}, []string{"grpc_service", "grpc_method"}),
		backendUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "prism_backend_up",
			Help: "1 when the last backend health check succeeded, else 0.",
		}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prism_backend_health_checks_total",
			Help: "Backend health checks, by result (ok or error).",
		}, []string{"result"}),
		draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "prism_plugin_draining",
			Help: "1 once the plugin has started draining.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "prism_config_reloads_total",
			Help: "Configuration reloads, by result (applied, unchanged or rejected).",
		}, []string{"result"}),
	}
	pluginInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "prism_plugin_info",
		Help:        "Always 1; labels describe the running plugin.",
		ConstLabels: prometheus.Labels{"plugin": info.Name, "backend": info.Backend, "version": Version},
	})
	pluginInfo.Set(1)
	reg.MustRegister(m.handled, m.latency, m.inFlight, m.backendUp, m.checks, m.draining, m.reloads, pluginInfo,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// metricsText renders the registry in the Prometheus text format, as /metrics does.
func metricsText(g prometheus.Gatherer) (string, string, error) {
	families, err := g.Gather()
	if err != nil {
		return "", "", fmt.Errorf("gather metrics: %w", err)
	}
	format := expfmt.NewFormat(expfmt.TypeTextPlain)
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, format)
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			return "", "", fmt.Errorf("encode metrics: %w", err)
		}
	}
	return buf.String(), string(format), nil
}

// newMetricsHandler serves /metrics, /healthz (process alive) and /readyz (serving).
func newMetricsHandler(g prometheus.Gatherer, ready func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{Timeout: 10 * time.Second}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "not serving", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("serving\n"))
	})
	return mux
}
