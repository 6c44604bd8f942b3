// Package metrics defines pgrelay's Prometheus metrics on a registry of
// its own (no global state): HTTP requests and latencies, tunnels open and
// dropped, and connection tests by outcome.
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
	// TunnelDrops counts tunnels that dropped (keepalive timeout or
	// connection lost), by connection.
	TunnelDrops *prometheus.CounterVec
	// ConnectionTests counts connection tests by outcome (ok, failed) and
	// failing step.
	ConnectionTests *prometheus.CounterVec
}

// New returns metrics registered on a new registry, with Go and process
// collectors.
func New() *Metrics {
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
		TunnelDrops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgrelay_tunnel_drops_total", Help: "SSH tunnels that dropped (no keepalive reply or connection lost), by connection.",
		}, []string{"connection"}),
		ConnectionTests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pgrelay_connection_tests_total", Help: "Connection tests by outcome and failing step.",
		}, []string{"outcome", "step"}),
	}
	m.Registry.MustRegister(m.HTTPRequests, m.HTTPDuration, m.TunnelsOpen, m.TunnelDrops, m.ConnectionTests,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
