package metrics_test

import (
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/metrics"
)

// drops returns pgrelay_tunnel_drops_total's samples as "labels=value".
func drops(t *testing.T, m *metrics.Metrics) map[string]float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "pgrelay_tunnel_drops_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			key := ""
			for _, l := range s.GetLabel() {
				key += l.GetName() + "=" + l.GetValue()
			}
			out[key] += s.GetCounter().GetValue()
		}
	}
	return out
}

// TestConnectionLabelsOptIn: tunnel drops are one series without
// connection names by default, and by connection only when the operator
// opts in.
func TestConnectionLabelsOptIn(t *testing.T) {
	t.Parallel()
	m := metrics.New()
	m.TunnelDropped("warehouse")
	m.TunnelDropped("crm")
	if got := drops(t, m); len(got) != 1 || got[""] != 2 {
		t.Fatalf("default: %v, want one unlabelled series of 2", got)
	}
	m = metrics.NewWithOptions(metrics.Options{ConnectionLabels: true})
	m.TunnelDropped("warehouse")
	m.TunnelDropped("warehouse")
	m.TunnelDropped("crm")
	if got := drops(t, m); len(got) != 2 || got["connection=warehouse"] != 2 || got["connection=crm"] != 1 {
		t.Fatalf("with connection labels: %v", got)
	}
}

// TestCredentialMetrics: fetches count by source and outcome; the expiry
// gauge has one series per source (the token that expires first) unless
// connection labels are on, and none without a cached token.
func TestCredentialMetrics(t *testing.T) {
	t.Parallel()
	samples := func(m *metrics.Metrics, name string) map[string]float64 {
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
				key := ""
				for _, l := range s.GetLabel() {
					key += l.GetName() + "=" + l.GetValue() + ","
				}
				out[key] = s.GetCounter().GetValue() + s.GetGauge().GetValue()
			}
		}
		return out
	}
	m := metrics.New()
	if got := samples(m, "pgrelay_credential_expiry_seconds"); len(got) != 0 {
		t.Fatalf("expiry without a source: %v", got)
	}
	m.CountCredentialFetch("lakebase", "ok")
	m.CountCredentialFetch("lakebase", "ok")
	m.CountCredentialFetch("command", "command_failed")
	if got := samples(m, "pgrelay_credential_fetches_total"); got["outcome=ok,source=lakebase,"] != 2 || got["outcome=command_failed,source=command,"] != 1 || len(got) != 2 {
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
	got := samples(m, "pgrelay_credential_expiry_seconds")
	if len(got) != 2 || got["source=lakebase,"] < 590 || got["source=lakebase,"] > 600 || got["source=alloydb-iam,"] < 1790 {
		t.Fatalf("expiry by source: %v", got)
	}
	m = metrics.NewWithOptions(metrics.Options{ConnectionLabels: true})
	m.SetCredentialExpiry(func() []metrics.CredentialExpiry { return tokens })
	got = samples(m, "pgrelay_credential_expiry_seconds")
	if len(got) != 3 || got["connection=wh,source=lakebase,"] < 3590 {
		t.Fatalf("expiry by connection: %v", got)
	}
}
