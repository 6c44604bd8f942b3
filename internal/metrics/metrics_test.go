package metrics_test

import (
	"testing"

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
