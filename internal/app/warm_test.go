package app_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// With --ssh-warm, the next run of a connection takes the tunnel its
// previous run left open: no second SSH login on the bastion. A changed
// connection dials afresh, and a kept tunnel is closed when the window
// passes.
func TestWarmTunnelServesTheNextRun(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	b := testenv.StartBastion(t, testenv.BastionOptions{})

	ctx := context.Background()
	const window = 3 * time.Second
	f := newServiceWith(t, func(c *app.Config) { c.SSH = app.SSHConfig{WarmTunnels: window} })
	svc, st, m := f.svc, f.store, f.metrics
	t.Cleanup(svc.Close)

	s := connection.Spec{Name: "warm", Host: pg.Host, Port: pg.Port, Database: db.Name, User: db.User,
		Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: b.Host, Port: b.Port, User: b.User}}
	v, err := svc.CreateConnection(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)

	r := &jobs.Runner{Open: svc.OpenConn}
	run := func(wantLog string) {
		t.Helper()
		var rec logRecorder
		res := r.Run(ctx, jobs.Job{Name: "j", Connection: "warm", Timeout: connection.Duration(time.Minute),
			Steps: []jobs.Step{{SQL: "select 1"}}}, jobs.Hooks{Log: rec.add})
		if res.Status != jobs.Succeeded {
			t.Fatalf("run: %s %s\n%s", res.Status, res.Reason, rec.String())
		}
		if !strings.Contains(rec.String(), wantLog) {
			t.Fatalf("run log lacks %q:\n%s", wantLog, rec.String())
		}
	}
	logins := func() int { return strings.Count(b.Log(), "Accepted publickey") }

	run("SSH tunnel up via ")
	if _, kept := svc.WarmTunnels(); kept != 1 {
		t.Fatalf("%d tunnels kept after the first run, want 1", kept)
	}
	if n := logins(); n != 1 {
		t.Fatalf("%d SSH logins after the first run, want 1", n)
	}
	run("SSH tunnel reused (kept open ")
	if n := logins(); n != 1 {
		t.Fatalf("%d SSH logins after the second run, want 1: the kept tunnel was not reused", n)
	}
	if got := sampleValue(t, m, "pgrelay_tunnels_reused_total", ""); got != 1 {
		t.Errorf("pgrelay_tunnels_reused_total = %v, want 1", got)
	}

	// A changed connection does not get the tunnel opened for the old one.
	s.Tunnel.KeepaliveInterval = connection.Duration(20 * time.Second)
	if _, err := svc.UpdateConnection(ctx, "warm", s, nil); err != nil {
		t.Fatal(err)
	}
	run("SSH tunnel up via ")
	if n := logins(); n != 2 {
		t.Fatalf("%d SSH logins after the connection changed, want 2", n)
	}

	// A host key pinned now that is not the one the kept tunnel was
	// verified with: the tunnel is not reused, and the fresh dial fails
	// closed on the mismatch.
	c, err := st.GetConnection(ctx, "warm")
	if err != nil {
		t.Fatal(err)
	}
	other, err := sshkey.Generate(sshkey.Ed25519, "")
	if err != nil {
		t.Fatal(err)
	}
	c.HostKeys = []string{sshkey.AuthorizedKey(other.Public, "")}
	if err := st.UpdateConnection(ctx, c); err != nil {
		t.Fatal(err)
	}
	var rec logRecorder
	res := r.Run(ctx, jobs.Job{Name: "j", Connection: "warm", Timeout: connection.Duration(time.Minute),
		Steps: []jobs.Step{{SQL: "select 1"}}}, jobs.Hooks{Log: rec.add})
	var changed *app.HostKeyChangedError
	if res.Status != jobs.Failed || !errors.As(res.Err, &changed) {
		t.Fatalf("run after the pinned host key changed: %s %v, want a host key mismatch\n%s", res.Status, res.Err, rec.String())
	}
	if n := logins(); n != 2 {
		t.Fatalf("%d SSH logins, want still 2", n)
	}

	// The window passes: the kept tunnel is closed.
	waitFor(t, window+10*time.Second, func() bool {
		_, kept := svc.WarmTunnels()
		return kept == 0 && sampleValue(t, m, "pgrelay_tunnels_open", "") == 0
	})
}

// Runs of one connection running at once each keep their tunnel (up to
// WarmPerConnection), and the next ones at once each take one.
func TestWarmTunnelsForConcurrentRuns(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	b := testenv.StartBastion(t, testenv.BastionOptions{})
	ctx := context.Background()
	svc := newServiceWith(t, func(c *app.Config) {
		c.SSH = app.SSHConfig{WarmTunnels: time.Minute, WarmPerConnection: 2}
	}).svc
	t.Cleanup(svc.Close)
	v, err := svc.CreateConnection(ctx, connection.Spec{Name: "two", Host: pg.Host, Port: pg.Port, Database: db.Name,
		User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: b.Host, Port: b.Port, User: b.User}})
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	r := &jobs.Runner{Open: svc.OpenConn}
	// two runs two jobs at once; each sleeps long enough for both to hold a
	// tunnel at the same time.
	two := func(wantLog string) {
		t.Helper()
		var wg sync.WaitGroup
		logs := make([]string, 2)
		var failed atomic.Bool
		for i := range 2 {
			wg.Go(func() {
				var rec logRecorder
				res := r.Run(ctx, jobs.Job{Name: "j", Connection: "two", Timeout: connection.Duration(time.Minute),
					Steps: []jobs.Step{{SQL: "select pg_sleep(0.5)"}}}, jobs.Hooks{Log: rec.add})
				logs[i] = rec.String()
				if res.Status != jobs.Succeeded {
					failed.Store(true)
				}
			})
		}
		wg.Wait()
		for _, l := range logs {
			if failed.Load() || !strings.Contains(l, wantLog) {
				t.Fatalf("runs at once: want %q in each log:\n%s", wantLog, strings.Join(logs, "\n---\n"))
			}
		}
	}
	logins := func() int { return strings.Count(b.Log(), "Accepted publickey") }
	two("SSH tunnel up via ")
	if _, kept := svc.WarmTunnels(); kept != 2 || logins() != 2 {
		t.Fatalf("after two runs at once: %d tunnels kept, %d logins; want 2 and 2", kept, logins())
	}
	two("SSH tunnel reused (kept open ")
	if logins() != 2 {
		t.Fatalf("%d logins after the second pair, want still 2", logins())
	}
}
