package metrics_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/metrics"
)

// samples returns a metric's samples as "labels=value".
func samples(t *testing.T, m *metrics.Metrics, name string) map[string]float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, s := range mf.GetMetric() {
			var key []string
			for _, l := range s.GetLabel() {
				key = append(key, l.GetName()+"="+l.GetValue())
			}
			v := s.GetCounter().GetValue() + s.GetGauge().GetValue() + float64(s.GetHistogram().GetSampleCount())
			out[strings.Join(key, ",")] += v
		}
	}
	return out
}

// TestConnectionLabelsOptIn: tunnel drops are series by cause without
// connection names by default, and by connection only when the operator
// opts in.
func TestConnectionLabelsOptIn(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	m.TunnelDropped("warehouse", "eof")
	m.TunnelDropped("crm", "eof")
	m.TunnelDropped("crm", "keepalive_timeout")
	got := samples(t, m, "pgrelay_tunnel_drops_total")
	if len(got) != len(metrics.DropCauses) || got["cause=eof"] != 2 || got["cause=keepalive_timeout"] != 1 || got["cause=reset"] != 0 {
		t.Fatalf("default: %v, want one series per cause", got)
	}
	m = metrics.NewWithOptions(metrics.Options{ConnectionLabels: true})
	m.TunnelDropped("warehouse", "eof")
	m.TunnelDropped("warehouse", "eof")
	m.TunnelDropped("crm", "reset")
	got = samples(t, m, "pgrelay_tunnel_drops_total")
	if len(got) != 2 || got["cause=eof,connection=warehouse"] != 2 || got["cause=reset,connection=crm"] != 1 {
		t.Fatalf("with connection labels: %v", got)
	}
}

// TestForgetConnection: forgetting a connection removes every series
// labelled with its name and no other; without connection labels the
// aggregate series stay.
func TestForgetConnection(t *testing.T) {
	t.Parallel()
	use := func(m *metrics.Metrics, name string) {
		m.TunnelOpened(name, true, "", time.Millisecond)
		m.TunnelDropped(name, "eof")
		o := m.Tunnel(name)
		o.Handshake(time.Millisecond)
		o.BytesRead(10)
	}
	m := metrics.NewWithOptions(metrics.Options{ConnectionLabels: true})
	use(m, "warehouse")
	use(m, "crm")
	m.ForgetConnection("crm")
	for _, name := range []string{"pgrelay_tunnel_opens_total", "pgrelay_tunnel_drops_total", "pgrelay_ssh_handshake_duration_seconds", "pgrelay_tunnel_bytes_total"} {
		for k := range samples(t, m, name) {
			if strings.Contains(k, "connection=crm") {
				t.Errorf("%s{%s} left after the connection was forgotten", name, k)
			}
		}
	}
	if got := samples(t, m, "pgrelay_tunnel_drops_total"); got["cause=eof,connection=warehouse"] != 1 || len(got) != 1 {
		t.Errorf("drops of the other connection: %v", got)
	}
	m = metrics.New()
	use(m, "crm")
	m.ForgetConnection("crm")
	if got := samples(t, m, "pgrelay_tunnel_drops_total"); got["cause=eof"] != 1 || len(got) != len(metrics.DropCauses) {
		t.Errorf("without connection labels: %v, want the aggregate series kept", got)
	}
}

// TestCardinalityBounded: with 1,000 connections each opening, failing,
// dropping and moving bytes, no pgrelay metric gains a series per
// connection unless connection labels are on.
func TestCardinalityBounded(t *testing.T) {
	t.Parallel()
	exercise := func(m *metrics.Metrics) {
		for i := range 1000 {
			name := fmt.Sprintf("conn-%04d", i)
			m.TunnelOpened(name, true, "", time.Millisecond)
			m.TunnelOpened(name, false, metrics.OpenSteps[i%len(metrics.OpenSteps)], time.Second)
			o := m.Tunnel(name)
			o.Handshake(time.Millisecond)
			o.KeepaliveReply(time.Millisecond)
			o.KeepaliveMissed()
			o.ChannelOpened()
			o.BytesRead(10)
			o.BytesWritten(10)
			m.TunnelDropped(name, metrics.DropCauses[i%len(metrics.DropCauses)])
			m.RunEnded([]string{"succeeded", "failed", "cancelled", "weird"}[i%4], time.Second)
		}
	}
	series := func(m *metrics.Metrics) map[string]int {
		mfs, err := m.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int{}
		for _, mf := range mfs {
			if strings.HasPrefix(mf.GetName(), "pgrelay_") {
				out[mf.GetName()] = len(mf.GetMetric())
			}
		}
		return out
	}
	m := metrics.New()
	before := series(m)
	exercise(m)
	after := series(m)
	for name, n := range after {
		if n > 20 {
			t.Errorf("%s has %d series after 1,000 connections", name, n)
		}
		if n != before[name] && name != "pgrelay_connection_tests_total" {
			t.Errorf("%s went from %d to %d series: its series must not depend on connections", name, before[name], n)
		}
	}
	for _, name := range []string{"pgrelay_tunnel_opens_total", "pgrelay_tunnel_open_duration_seconds", "pgrelay_ssh_handshake_duration_seconds",
		"pgrelay_tunnel_keepalive_rtt_seconds", "pgrelay_tunnel_keepalives_missed_total", "pgrelay_tunnel_drops_total",
		"pgrelay_tunnel_channels_open", "pgrelay_tunnel_bytes_total", "pgrelay_runs_total", "pgrelay_run_duration_seconds"} {
		if after[name] == 0 {
			t.Errorf("%s is not exposed", name)
		}
	}
	if got := samples(t, m, "pgrelay_tunnel_bytes_total"); got["direction=in"] != 10000 || got["direction=out"] != 10000 {
		t.Errorf("bytes: %v", got)
	}
	if got := samples(t, m, "pgrelay_runs_total"); got["outcome=failed"] != 500 || got["outcome=succeeded"] != 250 {
		t.Errorf("runs: %v", got)
	}
	// Opted in, names are labels: one series per connection.
	m = metrics.NewWithOptions(metrics.Options{ConnectionLabels: true})
	exercise(m)
	if n := series(m)["pgrelay_tunnel_keepalives_missed_total"]; n != 1000 {
		t.Errorf("with connection labels: %d series of missed keepalives, want 1000", n)
	}
}

// TestCredentialMetrics: fetches count by source and outcome; the expiry
// gauge has one series per source (the token that expires first) unless
// connection labels are on, and none without a cached token.
func TestCredentialMetrics(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	if got := samples(t, m, "pgrelay_credential_expiry_seconds"); len(got) != 0 {
		t.Fatalf("expiry without a source: %v", got)
	}
	m.CountCredentialFetch("lakebase", "ok")
	m.CountCredentialFetch("lakebase", "ok")
	m.CountCredentialFetch("command", "command_failed")
	if got := samples(t, m, "pgrelay_credential_fetches_total"); got["outcome=ok,source=lakebase"] != 2 || got["outcome=command_failed,source=command"] != 1 || len(got) != 2 {
		t.Fatalf("fetches: %v", got)
	}
	now := time.Now()
	tokens := []metrics.CredentialExpiry{
		{Connection: "wh", Source: "lakebase", ExpiresAt: now.Add(time.Hour)},
		{Connection: "crm", Source: "lakebase", ExpiresAt: now.Add(10 * time.Minute)},
		{Connection: "ad", Source: "alloydb-iam", ExpiresAt: now.Add(30 * time.Minute)},
		{Connection: "none", Source: "command"},
	}
	m.SetCredentialExpiry(func() []metrics.CredentialExpiry { return tokens })
	got := samples(t, m, "pgrelay_credential_expiry_seconds")
	if len(got) != 2 || got["source=lakebase"] < 590 || got["source=lakebase"] > 600 || got["source=alloydb-iam"] < 1790 {
		t.Fatalf("expiry by source: %v", got)
	}
	m = metrics.NewWithOptions(metrics.Options{ConnectionLabels: true})
	m.SetCredentialExpiry(func() []metrics.CredentialExpiry { return tokens })
	got = samples(t, m, "pgrelay_credential_expiry_seconds")
	if len(got) != 3 || got["connection=wh,source=lakebase"] < 3590 {
		t.Fatalf("expiry by connection: %v", got)
	}
}
