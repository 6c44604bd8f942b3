// Package metrics defines pgrelay's Prometheus metrics on a registry of
// its own (no global state): HTTP requests and latencies; SSH tunnels
// (opens by outcome and failing step, open and handshake time, keepalive
// round trips and misses, drops by cause, channels, bytes); runs by outcome
// and duration; connection tests by outcome and failing step; token
// credentials' fetches and expiry.
//
// Every label has a bounded set of values that no request can extend:
// routes are the server's patterns and methods outside the standard ones
// are OTHER (package server); steps, causes and outcomes are fixed lists.
// Connection names, which say what a deployment reaches and grow with it,
// label the tunnel metrics only when the operator opts in
// (Options.ConnectionLabels).
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds the collectors. The zero value is not usable; use New.
type Metrics struct {
	Registry *prometheus.Registry

	// HTTPRequests counts requests by route pattern, method and status code.
	HTTPRequests *prometheus.CounterVec
	// HTTPDuration observes request latency by route pattern and method.
	HTTPDuration *prometheus.HistogramVec
	// TunnelsOpen is the number of SSH tunnels currently open.
	TunnelsOpen prometheus.Gauge
	// TunnelsReused counts runs that took a tunnel kept open after an
	// earlier run of their connection (--ssh-warm) instead of dialling.
	TunnelsReused prometheus.Counter
	// ConnectionTests counts connection tests by outcome (ok, failed) and
	// failing step.
	ConnectionTests *prometheus.CounterVec
	// ServerCancels counts what was done to stop a run's backends on the
	// server after the run ended, by outcome: cancelled, terminated,
	// failed (still running when pgrelay gave up) and unreachable.
	ServerCancels *prometheus.CounterVec
	// AuditFailures counts audit records that could not be saved.
	AuditFailures prometheus.Counter

	tunnels *tunnelMetrics
	runs    *runMetrics
	credentialMetrics
}

// Options configures New.
type Options struct {
	// ConnectionLabels labels the tunnel metrics by connection name
	// (`pgrelay serve --metrics-connection-labels`); without it, the
	// tunnels of every connection are aggregated and no name is exposed.
	ConnectionLabels bool
}

// New returns metrics with the default options, registered on a new
// registry, with Go and process collectors.
func New() *Metrics { return NewWithOptions(Options{}) }

// NewWithOptions returns metrics registered on a new registry, with Go and
// process collectors.
func NewWithOptions(o Options) *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		HTTPRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgrelay_http_requests_total", Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		HTTPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "pgrelay_http_request_duration_seconds", Help: "HTTP request latency by route and method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"route", "method"}),
		TunnelsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pgrelay_tunnels_open", Help: "SSH tunnels currently open.",
		}),
		TunnelsReused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pgrelay_tunnels_reused_total", Help: "Runs that reused a tunnel kept warm after an earlier run of their connection.",
		}),
		ConnectionTests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgrelay_connection_tests_total", Help: "Connection tests by outcome and failing step.",
		}, []string{"outcome", "step"}),
		ServerCancels: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgrelay_server_cancels_total",
			Help: "Backends of ended runs by what stopped them: cancelled, terminated, failed or unreachable.",
		}, []string{"outcome"}),
	}
	m.AuditFailures = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "pgrelay_audit_write_failures_total", Help: "Audit records that could not be saved (see the log).",
	})
	for _, o := range []string{"cancelled", "terminated", "failed", "unreachable"} {
		m.ServerCancels.WithLabelValues(o)
	}
	m.tunnels = newTunnelMetrics(o.ConnectionLabels)
	m.runs = newRunMetrics()
	m.Registry.MustRegister(m.HTTPRequests, m.HTTPDuration, m.TunnelsOpen, m.TunnelsReused, m.ConnectionTests, m.ServerCancels, m.AuditFailures,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.registerCredentials(o)
	m.Registry.MustRegister(m.tunnels.collectors()...)
	m.Registry.MustRegister(m.runs.collectors()...)
	return m
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

// CountCancels adds n backends to pgrelay_server_cancels_total{outcome}.
func (m *Metrics) CountCancels(outcome string, n int) {
	m.ServerCancels.WithLabelValues(outcome).Add(float64(n))
}
