package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Tunnel open steps: the step an open failed at (the step label of
// pgrelay_tunnel_opens_total).
const (
	StepDial          = "dial"           // TCP connect to the bastion
	StepNetworkPolicy = "network_policy" // the address is denied
	StepHandshake     = "handshake"      // SSH version and key exchange
	StepHostKey       = "host_key"       // host key not pinned or changed
	StepAuth          = "auth"           // the bastion refused the key
	StepOther         = "other"
)

// OpenSteps lists every failing step of a tunnel open.
var OpenSteps = []string{StepDial, StepNetworkPolicy, StepHandshake, StepHostKey, StepAuth, StepOther}

// DropCauses lists every cause of pgrelay_tunnel_drops_total (those of
// tunnel.DropCause).
var DropCauses = []string{"keepalive_timeout", "eof", "reset", "host_key", "other"}

// tunnelMetrics are the SSH tunnel collectors. Each has the connection
// label first when connection labels are on.
type tunnelMetrics struct {
	byConnection bool
	opens        *prometheus.CounterVec
	openSeconds  *prometheus.HistogramVec
	handshake    *prometheus.HistogramVec
	keepaliveRTT *prometheus.HistogramVec
	missed       *prometheus.CounterVec
	drops        *prometheus.CounterVec
	channels     *prometheus.GaugeVec
	bytes        *prometheus.CounterVec
}

// latencyBuckets suit network round trips and handshakes (1 ms to 30 s).
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

func newTunnelMetrics(byConnection bool) *tunnelMetrics {
	labels := func(ls ...string) []string {
		if byConnection {
			return append([]string{"connection"}, ls...)
		}
		return ls
	}
	by := ""
	if byConnection {
		by = ", by connection"
	}
	tm := &tunnelMetrics{
		byConnection: byConnection,
		opens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgrelay_tunnel_opens_total",
			Help: "SSH tunnel opens by outcome (ok, failed) and failing step (dial, network_policy, handshake, host_key, auth, other)" + by + "."},
			labels("outcome", "step")),
		openSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pgrelay_tunnel_open_duration_seconds",
			Help: "Time to open an SSH tunnel (TCP connect, handshake, authentication), by outcome" + by + ".", Buckets: latencyBuckets},
			labels("outcome")),
		handshake: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pgrelay_ssh_handshake_duration_seconds",
			Help: "SSH handshake time, from the TCP connection to the end of authentication" + by + ".", Buckets: latencyBuckets},
			labels()),
		keepaliveRTT: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pgrelay_tunnel_keepalive_rtt_seconds",
			Help: "Round trip of SSH keepalives to the bastion" + by + ".", Buckets: latencyBuckets},
			labels()),
		missed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgrelay_tunnel_keepalives_missed_total",
			Help: "Keepalive intervals that passed while a keepalive waited for the bastion's reply" + by + "."},
			labels()),
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgrelay_tunnel_drops_total",
			Help: "SSH tunnels that dropped, by cause (keepalive_timeout, eof, reset, host_key, other)" + by + "."},
			labels("cause")),
		channels: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pgrelay_tunnel_channels_open",
			Help: "Connections open through SSH tunnels (direct-tcpip channels)" + by + "."},
			labels()),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgrelay_tunnel_bytes_total",
			Help: "Bytes through SSH tunnels, as sent to and read from bastions (encrypted, all channels), by direction (in, out)" + by + "."},
			labels("direction")),
	}
	if !byConnection {
		// Every series exists from the start, at zero.
		tm.opens.WithLabelValues("ok", "")
		for _, s := range OpenSteps {
			tm.opens.WithLabelValues("failed", s)
		}
		for _, o := range []string{"ok", "failed"} {
			tm.openSeconds.WithLabelValues(o)
		}
		for _, c := range DropCauses {
			tm.drops.WithLabelValues(c)
		}
		tm.bytes.WithLabelValues("in")
		tm.bytes.WithLabelValues("out")
		tm.handshake.WithLabelValues()
		tm.keepaliveRTT.WithLabelValues()
		tm.missed.WithLabelValues()
		tm.channels.WithLabelValues()
	}
	return tm
}

func (tm *tunnelMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{tm.opens, tm.openSeconds, tm.handshake, tm.keepaliveRTT, tm.missed, tm.drops, tm.channels, tm.bytes}
}

// values returns the label values for connection and the rest.
func (tm *tunnelMetrics) values(connection string, rest ...string) []string {
	if tm.byConnection {
		return append([]string{connection}, rest...)
	}
	return rest
}

// TunnelOpened counts an open of the named connection's tunnel: its
// outcome, the step it failed at ("" when ok) and how long it took.
func (m *Metrics) TunnelOpened(connection string, ok bool, step string, d time.Duration) {
	outcome := "ok"
	if !ok {
		outcome = "failed"
	} else {
		step = ""
	}
	tm := m.tunnels
	tm.opens.WithLabelValues(tm.values(connection, outcome, step)...).Inc()
	tm.openSeconds.WithLabelValues(tm.values(connection, outcome)...).Observe(d.Seconds())
}

// TunnelDropped counts a dropped tunnel of the named connection by cause
// (one of DropCauses).
func (m *Metrics) TunnelDropped(connection, cause string) {
	tm := m.tunnels
	tm.drops.WithLabelValues(tm.values(connection, cause)...).Inc()
}

// ForgetConnection removes the tunnel series of the named connection, which
// exist only with connection labels: a deleted connection's series would
// otherwise stay in memory and in every scrape for the rest of the
// process, one set for each connection ever deleted. The observer of a
// tunnel of it still open counts on into series no longer exported.
func (m *Metrics) ForgetConnection(connection string) {
	tm := m.tunnels
	if !tm.byConnection {
		return
	}
	match := prometheus.Labels{"connection": connection}
	for _, v := range []interface{ DeletePartialMatch(prometheus.Labels) int }{
		tm.opens, tm.openSeconds, tm.handshake, tm.keepaliveRTT, tm.missed, tm.drops, tm.channels, tm.bytes,
	} {
		v.DeletePartialMatch(match)
	}
}

// Tunnel returns the observer of one tunnel of the named connection (see
// tunnel.Observer): its series are resolved once, so that the hot path
// (bytes on every read and write) only adds.
func (m *Metrics) Tunnel(connection string) *TunnelObserver {
	tm := m.tunnels
	return &TunnelObserver{
		handshake:    tm.handshake.WithLabelValues(tm.values(connection)...),
		keepaliveRTT: tm.keepaliveRTT.WithLabelValues(tm.values(connection)...),
		missed:       tm.missed.WithLabelValues(tm.values(connection)...),
		channels:     tm.channels.WithLabelValues(tm.values(connection)...),
		in:           tm.bytes.WithLabelValues(tm.values(connection, "in")...),
		out:          tm.bytes.WithLabelValues(tm.values(connection, "out")...),
	}
}

// TunnelObserver records one tunnel's measurements; it implements
// tunnel.Observer.
type TunnelObserver struct {
	handshake, keepaliveRTT prometheus.Observer
	missed, in, out         prometheus.Counter
	channels                prometheus.Gauge
}

// Handshake implements tunnel.Observer.
func (o *TunnelObserver) Handshake(d time.Duration) { o.handshake.Observe(d.Seconds()) }

// KeepaliveReply implements tunnel.Observer.
func (o *TunnelObserver) KeepaliveReply(rtt time.Duration) { o.keepaliveRTT.Observe(rtt.Seconds()) }

// KeepaliveMissed implements tunnel.Observer.
func (o *TunnelObserver) KeepaliveMissed() { o.missed.Inc() }

// ChannelOpened implements tunnel.Observer.
func (o *TunnelObserver) ChannelOpened() { o.channels.Inc() }

// ChannelClosed implements tunnel.Observer.
func (o *TunnelObserver) ChannelClosed() { o.channels.Dec() }

// BytesRead implements tunnel.Observer.
func (o *TunnelObserver) BytesRead(n int) { o.in.Add(float64(n)) }

// BytesWritten implements tunnel.Observer.
func (o *TunnelObserver) BytesWritten(n int) { o.out.Add(float64(n)) }

// runMetrics count runs.
type runMetrics struct {
	runs     *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// RunOutcomes are the outcomes of pgrelay_runs_total.
var RunOutcomes = []string{"succeeded", "failed", "cancelled"}

func newRunMetrics() *runMetrics {
	rm := &runMetrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgrelay_runs_total",
			Help: "Runs this process worked, by outcome (succeeded, failed, cancelled)."}, []string{"outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "pgrelay_run_duration_seconds",
			Help:    "How long runs ran, from start to end, by outcome.",
			Buckets: []float64{.1, .5, 1, 5, 15, 30, 60, 300, 900, 1800, 3600, 7200, 14400, 43200, 86400}}, []string{"outcome"}),
	}
	for _, o := range RunOutcomes {
		rm.runs.WithLabelValues(o)
		rm.duration.WithLabelValues(o)
	}
	return rm
}

func (rm *runMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{rm.runs, rm.duration}
}

// RunEnded counts a run that ended with status (succeeded, failed or
// cancelled; anything else counts as failed) after d.
func (m *Metrics) RunEnded(status string, d time.Duration) {
	outcome := "failed"
	for _, o := range RunOutcomes {
		if status == o {
			outcome = o
		}
	}
	m.runs.runs.WithLabelValues(outcome).Inc()
	m.runs.duration.WithLabelValues(outcome).Observe(d.Seconds())
}
