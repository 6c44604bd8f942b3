package app_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/metrics"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestTunnelMetricsCopy: a COPY out of and into the database through a
// real bastion moves the tunnel's byte counters by at least the bytes
// copied, and the open, the handshake, the keepalives and the channel are
// measured.
func TestTunnelMetricsCopy(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	b := testenv.SharedBastion(t, testenv.BastionOptions{})
	f := newService(t)
	ctx := context.Background()
	v, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "copy", Host: pg.Host, Port: pg.Port, Database: db.Name,
		User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: b.Host, Port: b.Port, User: b.User,
			KeepaliveInterval: connection.Duration(100 * time.Millisecond), KeepaliveCountMax: 50}})
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	sess, err := f.svc.Open(ctx, "copy")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	conn, err := sess.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if got := sampleValue(t, f.metrics, "pgrelay_tunnel_channels_open", ""); got != 1 {
		t.Errorf("channels open = %v, want 1", got)
	}
	in0 := sampleValue(t, f.metrics, "pgrelay_tunnel_bytes_total", "direction=in")
	out0 := sampleValue(t, f.metrics, "pgrelay_tunnel_bytes_total", "direction=out")

	const rows, width = 4000, 1000 // 4 MB each way
	var buf bytes.Buffer
	if _, err := conn.PgConn().CopyTo(ctx, &buf, fmt.Sprintf(
		"COPY (SELECT repeat('x', %d) FROM generate_series(1, %d)) TO STDOUT", width, rows)); err != nil {
		t.Fatal(err)
	}
	if buf.Len() < rows*width {
		t.Fatalf("copied %d bytes out", buf.Len())
	}
	in1 := sampleValue(t, f.metrics, "pgrelay_tunnel_bytes_total", "direction=in")
	if in1-in0 < float64(rows*width) {
		t.Fatalf("bytes in moved by %v during a COPY of %d bytes out of the database", in1-in0, buf.Len())
	}
	if _, err := conn.Exec(ctx, "CREATE TEMP TABLE t (v text)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.PgConn().CopyFrom(ctx, strings.NewReader(buf.String()), "COPY t FROM STDIN"); err != nil {
		t.Fatal(err)
	}
	out1 := sampleValue(t, f.metrics, "pgrelay_tunnel_bytes_total", "direction=out")
	if out1-out0 < float64(rows*width) {
		t.Fatalf("bytes out moved by %v during a COPY of %d bytes into the database", out1-out0, buf.Len())
	}
	for _, m := range []struct{ name, labels string }{
		{"pgrelay_tunnel_opens_total", "outcome=ok,step="},
		{"pgrelay_tunnel_open_duration_seconds", "outcome=ok"},
		{"pgrelay_ssh_handshake_duration_seconds", ""},
	} {
		if got := sampleValue(t, f.metrics, m.name, m.labels); got != 1 {
			t.Errorf("%s{%s} = %v, want 1", m.name, m.labels, got)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); sampleValue(t, f.metrics, "pgrelay_tunnel_keepalive_rtt_seconds", "") == 0; {
		if time.Now().After(deadline) {
			t.Fatal("no keepalive round trip observed in 5 s (interval 100 ms)")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st := sess.Tunnel().Stats(); st.LastKeepaliveRTT <= 0 || st.MissedKeepalives != 0 {
		t.Errorf("tunnel stats: %+v", st)
	}
	conn.Close(ctx)
	if got := sampleValue(t, f.metrics, "pgrelay_tunnel_channels_open", ""); got != 0 {
		t.Errorf("channels open after close = %v, want 0", got)
	}
}

// TestMetricsCardinality1000Connections: 1,000 saved connections, each
// opened (failing at the bastion's closed port) and some tested, add no
// series per connection to any pgrelay metric.
func TestMetricsCardinality1000Connections(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := context.Background()
	port := testenv.FreePort(t) // nothing listens
	before := map[string]int{}
	count := func() map[string]int {
		mfs, err := f.metrics.Registry.Gather()
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
	for k, v := range count() {
		before[k] = v
	}
	for i := range 1000 {
		name := fmt.Sprintf("c%04d", i)
		s := connection.Spec{Name: name, Host: "127.0.0.1", Port: 5432, Database: "d", User: "u", SSLMode: connection.SSLDisable,
			Tunnel: &connection.Tunnel{Host: "127.0.0.1", Port: port, User: "u"}}
		if _, err := f.svc.CreateConnection(ctx, s); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.Open(ctx, name); err == nil {
			t.Fatal("opened a tunnel to a closed port")
		}
		if i%50 == 0 {
			if _, err := f.svc.TestConnection(ctx, name, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	after := count()
	if got := sampleValue(t, f.metrics, "pgrelay_tunnel_opens_total", "outcome=failed,step=dial"); got != 1000 {
		t.Errorf("failed opens at dial = %v, want 1000", got)
	}
	for name, n := range after {
		if n > 20 {
			t.Errorf("%s has %d series with 1,000 connections", name, n)
		}
		if grew := n - before[name]; grew > 2 {
			t.Errorf("%s grew by %d series with 1,000 connections", name, grew)
		}
	}
}

// TestDeletedConnectionSeriesForgotten: with connection labels, deleting a
// connection removes its tunnel series. They used to stay for the rest of
// the process: a `serve` whose connections come and go (60 made, tested,
// queried and deleted) exported 56 series more for each one it had ever
// deleted.
func TestDeletedConnectionSeriesForgotten(t *testing.T) {
	t.Parallel()
	pg, b := startPostgresAndBastion(t)
	m := metrics.NewWithOptions(metrics.Options{ConnectionLabels: true})
	f := newServiceWith(t, func(c *app.Config) { c.Metrics = m })
	ctx := context.Background()
	// series counts the series of m labelled with connection name.
	series := func(name string) int {
		t.Helper()
		mfs, err := m.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, mf := range mfs {
			for _, s := range mf.GetMetric() {
				for _, l := range s.GetLabel() {
					if l.GetName() == "connection" && l.GetValue() == name {
						n++
					}
				}
			}
		}
		return n
	}
	names := []string{"kept", "gone-1", "gone-2", "gone-3"}
	for _, name := range names {
		v, err := f.svc.CreateConnection(ctx, tunnelled(name, pg, b))
		if err != nil {
			t.Fatal(err)
		}
		b.Authorize(t, v.SSHTunnel.PublicKey)
		sess, err := f.svc.Open(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := sess.Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.Close(ctx)
		sess.Close()
		if series(name) == 0 {
			t.Fatalf("connection %s has no tunnel series after a session through its bastion: this test proves nothing", name)
		}
	}
	kept := series("kept")
	for _, name := range names[1:] {
		if err := f.svc.DeleteConnection(ctx, name); err != nil {
			t.Fatal(err)
		}
		if n := series(name); n != 0 {
			t.Errorf("deleted connection %s still has %d series in /metrics", name, n)
		}
	}
	if n := series("kept"); n != kept {
		t.Errorf("connection kept has %d series after the others were deleted, had %d", n, kept)
	}
}
