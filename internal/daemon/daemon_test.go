package daemon_test

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/daemon"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func newKeyring(t *testing.T) *secret.Keyring {
	t.Helper()
	key := make([]byte, secret.KeySize)
	_, _ = rand.Read(key)
	kr, err := secret.NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// TestDaemonServes assembles every part as serve does and works a run
// queued through the use cases: the queue opens the connection through
// the same Connector as the service, and the HTTP server answers with both
// faces mounted.
func TestDaemonServes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	st := openStore(t)
	d, err := daemon.New(ctx, daemon.Config{Store: st, Keyring: newKeyring(t),
		Jobs: &daemon.JobsConfig{HeartbeatInterval: 200 * time.Millisecond, ReapInterval: time.Second, ShutdownGrace: time.Second},
		HTTP: &daemon.HTTPConfig{WebUI: true}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Stop(context.Background()) })
	if d.Queue() == nil || d.Server() == nil || d.API() == nil || d.Sessions() == nil || d.Metrics() == nil || d.Store() != st {
		t.Fatal("a part is missing")
	}
	ts := httptest.NewServer(d.Handler())
	t.Cleanup(ts.Close)
	for path, want := range map[string]int{"/readyz": http.StatusOK, "/login": http.StatusOK, "/api/v1/connections": http.StatusUnauthorized} {
		resp, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}

	svc := d.App()
	if _, err := svc.CreateConnection(ctx, connection.Spec{Name: "db", Host: pg.Host, Port: pg.Port, Database: "postgres",
		User: pg.SuperUser, Password: secret.New(pg.SuperPassword), SSLMode: connection.SSLDisable}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.PutJob(ctx, jobs.Job{Name: "one", Connection: "db", Steps: []jobs.Step{{SQL: "select 1"}}}); err != nil {
		t.Fatal(err)
	}
	run, err := svc.RunJob(ctx, "one", jobs.Manual)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := svc.GetRun(ctx, run.ID)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Terminal() {
			if r.Status != jobs.Succeeded {
				t.Fatalf("run %s: %s", r.Status, r.Reason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("run still %s after 30s", r.Status)
		}
		time.Sleep(50 * time.Millisecond) // polling the run's status
	}
	if err := d.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Stop(ctx); err != nil {
		t.Fatalf("a second Stop: %v", err)
	}
}

// TestDaemonWithoutParts builds the use cases alone (as the CLI's local
// commands do): no queue, so queuing a run is refused; no HTTP server.
func TestDaemonWithoutParts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d, err := daemon.New(ctx, daemon.Config{Store: openStore(t), Keyring: newKeyring(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = d.Stop(ctx) }()
	if d.Queue() != nil || d.Server() != nil || d.Handler() != nil || d.Metrics() != nil {
		t.Fatal("parts that were not asked for")
	}
	if _, err := d.App().RunJobLocally(ctx, "nosuch", nil); !errors.Is(err, app.ErrNotFound) {
		t.Fatalf("local run of a missing job: %v", err)
	}
}

// TestDaemonRefuses checks the config: required parts, the master key of
// the store, and HTTP settings the server refuses (a *ConfigError).
func TestDaemonRefuses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := openStore(t)
	if _, err := daemon.New(ctx, daemon.Config{Keyring: newKeyring(t)}); err == nil {
		t.Error("no store: accepted")
	}
	if _, err := daemon.New(ctx, daemon.Config{Store: st}); err == nil {
		t.Error("no keyring: accepted")
	}
	d, err := daemon.New(ctx, daemon.Config{Store: st, Keyring: newKeyring(t)})
	if err != nil {
		t.Fatal(err)
	}
	_ = d.Stop(ctx)
	if _, err := daemon.New(ctx, daemon.Config{Store: st, Keyring: newKeyring(t)}); !errors.Is(err, app.ErrWrongMasterKey) {
		t.Errorf("another key: %v, want ErrWrongMasterKey", err)
	}
	_, err = daemon.New(ctx, daemon.Config{Store: openStore(t), Keyring: newKeyring(t), HTTP: &daemon.HTTPConfig{MaxConnections: -1}})
	var ce *daemon.ConfigError
	if !errors.As(err, &ce) {
		t.Errorf("--max-connections -1: %v, want a *ConfigError", err)
	}
}

// TestDaemonProxyCommands: the proxy commands a daemon's connections may
// run are Config.SSH.ProxyCommands (serve gives its command allowlist):
// none by default, and only the allowed programs.
func TestDaemonProxyCommands(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	spec := connection.Spec{Name: "ssm", Host: "127.0.0.1", Port: 5432, Database: "postgres", User: "dbt",
		SSLMode: connection.SSLDisable, Tunnel: &connection.Tunnel{Host: "bastion.internal", User: "jump",
			ProxyCommand: []string{"socat", "STDIO", "TCP:127.0.0.1:22"}}}
	for _, tc := range []struct {
		name    string
		ssh     app.SSHConfig
		allowed bool
	}{
		{"default", app.SSHConfig{}, false},
		{"other program", app.SSHConfig{ProxyCommands: jobs.CommandPolicy{Allow: mustAllow(t, "sh")}}, false},
		{"allowlist", app.SSHConfig{ProxyCommands: jobs.CommandPolicy{Allow: mustAllow(t, "socat")}}, true},
	} {
		d, err := daemon.New(ctx, daemon.Config{Store: openStore(t), Keyring: newKeyring(t), SSH: tc.ssh})
		if err != nil {
			t.Fatal(err)
		}
		_, err = d.App().CreateConnection(ctx, spec)
		var ve *app.ValidationError
		switch {
		case tc.allowed && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case !tc.allowed && (!errors.As(err, &ve) || ve.Fields()["ssh_tunnel.proxy_command"] == ""):
			t.Errorf("%s: %v, want a field error on ssh_tunnel.proxy_command", tc.name, err)
		}
		_ = d.Stop(ctx)
	}
}

func mustAllow(t *testing.T, programs ...string) *jobs.Allowlist {
	t.Helper()
	a, err := jobs.NewAllowlist(programs)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestDaemonAuditRetention: with Config.AuditRetention, Start deletes the
// audit records past it (and records that it did), keeping the chain
// verifiable; without it, they stay.
func TestDaemonAuditRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, retention := range []time.Duration{0, 24 * time.Hour} {
		st := openStore(t)
		for _, age := range []time.Duration{72 * time.Hour, 48 * time.Hour, time.Minute} {
			if err := st.AppendAudit(ctx, &audit.Record{Time: time.Now().Add(-age), Actor: audit.System("test"),
				Action: "test.record", TargetKind: audit.TargetAudit, Outcome: audit.OK}); err != nil {
				t.Fatal(err)
			}
		}
		d, err := daemon.New(ctx, daemon.Config{Store: st, Keyring: newKeyring(t), AuditRetention: retention})
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Start(ctx); err != nil {
			t.Fatal(err)
		}
		list := func() []audit.Record {
			recs, err := d.App().ListAudit(ctx, audit.Filter{})
			if err != nil {
				t.Fatal(err)
			}
			return recs
		}
		if retention == 0 {
			if err := d.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			if n := len(list()); n != 3 {
				t.Fatalf("without retention: %d records, want 3", n)
			}
			continue
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			recs := list()
			if len(recs) == 2 && recs[0].Action == "audit.prune" && recs[1].Seq == 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("records after retention: %+v", recs)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := d.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		v, err := d.App().VerifyAudit(ctx)
		if err != nil || !v.OK {
			t.Fatalf("verify after retention: %+v %v", v, err)
		}
	}
}

// TestDaemonWarmTunnels: with --ssh-warm, a connection keeps as many
// tunnels as the queue runs at once; without, none.
func TestDaemonWarmTunnels(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		cfg  daemon.Config
		want int
	}{
		{"off", daemon.Config{}, 0},
		{"default max runs", daemon.Config{SSH: app.SSHConfig{WarmTunnels: time.Minute}, Jobs: &daemon.JobsConfig{}}, 4},
		{"max runs 6", daemon.Config{SSH: app.SSHConfig{WarmTunnels: time.Minute}, Jobs: &daemon.JobsConfig{MaxRuns: 6}}, 6},
		{"given", daemon.Config{SSH: app.SSHConfig{WarmTunnels: time.Minute, WarmPerConnection: 2}, Jobs: &daemon.JobsConfig{MaxRuns: 6}}, 2},
	} {
		cfg := tc.cfg
		cfg.Store, cfg.Keyring = openStore(t), newKeyring(t)
		d, err := daemon.New(ctx, cfg)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := d.Connector().WarmPerConnection(); got != tc.want {
			t.Errorf("%s: %d tunnels kept per connection, want %d", tc.name, got, tc.want)
		}
		_ = d.Stop(ctx)
	}
}
