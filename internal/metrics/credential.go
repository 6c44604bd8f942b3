package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// CredentialExpiry is one cached token's expiry, for the gauge
// pgrelay_credential_expiry_seconds.
type CredentialExpiry struct {
	// Connection is the connection's name (a label only with
	// Options.ConnectionLabels).
	Connection string
	// Source is the auth kind: command, lakebase or alloydb-iam.
	Source    string
	ExpiresAt time.Time
}

// credentialMetrics are the metrics of token credentials: fetches by
// source and outcome, and a gauge of seconds until the cached tokens
// expire, read at scrape time.
type credentialMetrics struct {
	// CredentialFetches counts token fetches by source (command,
	// lakebase, alloydb-iam) and outcome (ok, unreachable, http_error,
	// invalid_client, invalid_key, not_allowed, command_failed,
	// command_timeout, malformed, rate_limited, config, canceled, error).
	CredentialFetches *prometheus.CounterVec

	expiryMu   sync.Mutex
	expiry     func() []CredentialExpiry
	expiryDesc *prometheus.Desc
	byConn     bool
	now        func() time.Time
}

func (m *Metrics) registerCredentials(o Options) {
	m.CredentialFetches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pgrelay_credential_fetches_total",
		Help: "Token fetches of connections with token credentials, by source (auth kind) and outcome.",
	}, []string{"source", "outcome"})
	labels := []string{"source"}
	help := "Seconds until the cached token that expires first, by source (negative: expired); no series without a cached token."
	if o.ConnectionLabels {
		labels = []string{"connection", "source"}
		help = "Seconds until each connection's cached token expires (negative: expired)."
	}
	m.byConn = o.ConnectionLabels
	m.now = time.Now
	m.expiryDesc = prometheus.NewDesc("pgrelay_credential_expiry_seconds", help, labels, nil)
	m.Registry.MustRegister(m.CredentialFetches, credentialCollector{m})
}

// CountCredentialFetch adds one fetch to
// pgrelay_credential_fetches_total{source,outcome}.
func (m *Metrics) CountCredentialFetch(source, outcome string) {
	m.CredentialFetches.WithLabelValues(source, outcome).Inc()
}

// SetCredentialExpiry sets the function the expiry gauge reads at each
// scrape (the process's token caches).
func (m *Metrics) SetCredentialExpiry(f func() []CredentialExpiry) {
	m.expiryMu.Lock()
	defer m.expiryMu.Unlock()
	m.expiry = f
}

type credentialCollector struct{ m *Metrics }

func (c credentialCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.m.expiryDesc }

func (c credentialCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.expiryMu.Lock()
	f := c.m.expiry
	c.m.expiryMu.Unlock()
	if f == nil {
		return
	}
	now := c.m.now()
	first := map[string]time.Time{}
	for _, e := range f() {
		if e.ExpiresAt.IsZero() {
			continue
		}
		if c.m.byConn {
			ch <- prometheus.MustNewConstMetric(c.m.expiryDesc, prometheus.GaugeValue, e.ExpiresAt.Sub(now).Seconds(), e.Connection, e.Source)
			continue
		}
		if t, ok := first[e.Source]; !ok || e.ExpiresAt.Before(t) {
			first[e.Source] = e.ExpiresAt
		}
	}
	for src, t := range first {
		ch <- prometheus.MustNewConstMetric(c.m.expiryDesc, prometheus.GaugeValue, t.Sub(now).Seconds(), src)
	}
}
