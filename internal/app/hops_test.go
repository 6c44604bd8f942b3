package app_test

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/testenv"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// chain is a database behind three chained OpenSSH bastions, each of which
// may forward only to the next (by the permitopen of the lines pgrelay
// prints), the third through a fault proxy that can freeze it.
type chain struct {
	pg     *testenv.Postgres
	db     *testenv.Database
	b      [3]*testenv.Bastion
	frozen *testenv.FaultProxy // in front of the third bastion
	f      *fixture
	name   string
}

// newChain starts the servers and saves connection name through them with
// keepalives of interval × count on every hop, and installs the restricted
// line of each hop on it.
func newChain(t *testing.T, name string, interval time.Duration, count int) *chain {
	t.Helper()
	c := &chain{name: name, f: newService(t)}
	c.pg = testenv.SharedPostgres(t, testenv.PostgresOptions{})
	c.db = c.pg.NewDatabase(t)
	for i := range c.b {
		c.b[i] = testenv.StartBastion(t, testenv.BastionOptions{})
	}
	c.frozen = testenv.StartFaultProxy(t, c.b[2].Addr())
	ctx := context.Background()
	spec := connection.Spec{Name: name, Host: c.pg.Host, Port: c.pg.Port, Database: c.db.Name, User: c.db.User,
		Password: secret.New(c.db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: c.b[0].Host, Port: c.b[0].Port, User: c.b[0].User,
			KeepaliveInterval: connection.Duration(interval), KeepaliveCountMax: count,
			Next: []connection.Hop{
				{Host: c.b[1].Host, Port: c.b[1].Port, User: c.b[1].User},
				{Host: c.frozen.Host(), Port: c.frozen.Port(), User: c.b[2].User},
			}}}
	if _, err := c.f.svc.CreateConnection(ctx, spec); err != nil {
		t.Fatal(err)
	}
	lines, err := c.f.svc.PublicKey(ctx, name, true)
	if err != nil {
		t.Fatal(err)
	}
	ls := strings.Split(lines, "\n")
	if len(ls) != 3 {
		t.Fatalf("public-key --restricted printed %d lines, want one per hop:\n%s", len(ls), lines)
	}
	targets := []string{c.b[1].Addr(), c.frozen.Addr(), c.pg.Addr()}
	for i, l := range ls {
		if !strings.Contains(l, `permitopen="`+targets[i]+`"`) || strings.Count(l, "permitopen") != 1 {
			t.Fatalf("line of hop %d does not allow forwarding only to %s: %s", i+1, targets[i], l)
		}
		c.b[i].Authorize(t, l)
	}
	return c
}

// TestChainOfThreeHops: a query, the local proxy, a job run (SQL and psql)
// and the connection test go through three chained sshd's, each allowed
// to forward only to the next; every hop's host key is pinned on first
// use, and hop 2 presenting another key fails closed, naming hop 2.
func TestChainOfThreeHops(t *testing.T) {
	t.Parallel()
	c := newChain(t, "three", time.Second, 5)
	ctx := context.Background()
	svc := c.f.svc

	// Query.
	var sink rowsSink
	if err := svc.Query(ctx, "three", "select current_user", &sink); err != nil {
		t.Fatalf("query through three hops: %v", err)
	}
	if got := sink.String(); got != c.db.User {
		t.Fatalf("query through three hops returned %q", got)
	}
	v, err := svc.GetConnection(ctx, "three")
	if err != nil {
		t.Fatal(err)
	}
	if len(v.SSHHops) != 3 {
		t.Fatalf("view has %d hops, want 3: %+v", len(v.SSHHops), v.SSHHops)
	}
	for i, h := range v.SSHHops {
		if h.HostKeyFingerprint == "" {
			t.Fatalf("hop %d's host key was not pinned on first use: %+v", i+1, h)
		}
	}
	if v.SSHTunnel.KeyUsedAt == nil {
		t.Error("a login to every hop was not recorded as the key's use")
	}

	// The local proxy.
	ps, err := svc.Proxy(ctx, "three", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = ps.Serve(ctx) }()
	t.Cleanup(func() { _ = ps.Close() })
	host, port, _ := net.SplitHostPort(ps.Addr().String())
	conn, err := pgx.Connect(ctx, "postgres://"+c.db.User+":"+url.QueryEscape(c.db.Password)+"@"+net.JoinHostPort(host, port)+"/"+c.db.Name+"?sslmode=disable")
	if err != nil {
		t.Fatalf("connect through the proxy: %v", err)
	}
	var one int
	if err := conn.QueryRow(ctx, "select 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("query through the proxy: %d %v", one, err)
	}
	_ = conn.Close(ctx)

	// A job run: SQL, and psql through the run's endpoint.
	r := &jobs.Runner{
		Open:     func(ctx context.Context, name string) (jobs.Conn, error) { return svc.Open(ctx, name) },
		Commands: jobs.CommandPolicy{Allow: allowlistOf(t, "psql")},
	}
	var rec logRecorder
	res := r.Run(ctx, jobs.Job{Name: "j", Connection: "three", Timeout: connection.Duration(time.Minute), Steps: []jobs.Step{
		{SQL: "create table if not exists t (x int); insert into t values (1)"},
		{Command: []string{"psql", "-v", "ON_ERROR_STOP=1", "-Atc", "select count(*) from t"}},
	}}, jobs.Hooks{Log: rec.add})
	if res.Status != jobs.Succeeded {
		t.Fatalf("job through three hops: %s %s\n%s", res.Status, res.Reason, rec.String())
	}
	if !strings.Contains(rec.String(), "SSH tunnel up via "+c.b[0].User+"@"+c.b[0].Addr()+" → ") {
		t.Errorf("run log does not name the hops:\n%s", rec.String())
	}

	// The connection test walks every hop.
	rep, err := svc.TestConnection(ctx, "three", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK {
		t.Fatalf("test failed: %+v", rep.Failed())
	}
	var names []string
	for _, st := range rep.Steps {
		names = append(names, st.Name())
	}
	want := "hop 2 of 3 (" + c.b[1].Addr() + "): ssh_auth"
	if !strings.Contains(strings.Join(names, "\n"), want) {
		t.Fatalf("test steps do not name hop 2:\n%s", strings.Join(names, "\n"))
	}

	// Hop 2's host key changes: refused before any login, naming hop 2.
	c.b[1].RotateHostKey(t)
	_, err = svc.Open(ctx, "three")
	var changed *app.HostKeyChangedError
	if !errors.As(err, &changed) || !strings.Contains(err.Error(), "hop 2 of 3 ("+c.b[1].Addr()+")") {
		t.Fatalf("hop 2 with another host key: %v, want a HostKeyChangedError naming hop 2", err)
	}
	rep, err = svc.TestConnection(ctx, "three", nil)
	if err != nil {
		t.Fatal(err)
	}
	if f := rep.Failed(); f == nil || f.ID != diagnose.StepSSHHandshake || f.Hop != 2 {
		t.Fatalf("test with hop 2's key changed: %+v, want ssh_handshake of hop 2 failed", f)
	}
	v, _ = svc.GetConnection(ctx, "three")
	if v.SSHHops[1].PendingHostKeyFingerprint == "" || v.SSHHops[0].PendingHostKeyFingerprint != "" {
		t.Fatalf("the changed key is not waiting for approval on hop 2: %+v", v.SSHHops)
	}
	if _, err := svc.TrustHostKey(ctx, "three", v.SSHHops[1].PendingHostKeyFingerprint); err != nil {
		t.Fatal(err)
	}
	if err := svc.Query(ctx, "three", "select 1", &rowsSink{}); err != nil {
		t.Fatalf("query after approving hop 2's new key: %v", err)
	}
}

// TestChainHopFrozenFailsRun freezes the third hop during a running job:
// the run fails within that hop's keepalive bound, naming the hop.
func TestChainHopFrozenFailsRun(t *testing.T) {
	t.Parallel()
	const interval, count = 300 * time.Millisecond, 3
	c := newChain(t, "frozen3", interval, count)
	ctx := context.Background()
	svc := c.f.svc
	r := &jobs.Runner{Open: func(ctx context.Context, name string) (jobs.Conn, error) { return svc.Open(ctx, name) }}
	started := make(chan struct{})
	var once bool
	done := make(chan jobs.Result, 1)
	go func() {
		done <- r.Run(ctx, jobs.Job{Name: "j", Connection: "frozen3", Timeout: connection.Duration(time.Minute),
			Steps: []jobs.Step{{SQL: "select pg_sleep(60)"}}}, jobs.Hooks{Step: func(s jobs.RunStep) {
			if s.Status == jobs.Running && !once {
				once = true
				close(started)
			}
		}})
	}()
	select {
	case <-started:
	case res := <-done:
		t.Fatalf("run ended before it started its step: %s %s", res.Status, res.Reason)
	case <-time.After(30 * time.Second):
		t.Fatal("the run did not start")
	}
	// The statement is running on the server.
	waitFor(t, 10*time.Second, func() bool {
		return countActive(t, c.pg, "select pg_sleep(60)") == 1
	})
	frozenAt := time.Now()
	c.frozen.Freeze()
	defer c.frozen.Thaw()
	select {
	case res := <-done:
		elapsed := time.Since(frozenAt)
		if res.Status != jobs.Failed || !strings.Contains(res.Reason, "hop 3 of 3 ("+c.frozen.Addr()+")") ||
			!strings.Contains(res.Reason, "no keepalive reply") {
			t.Fatalf("run with hop 3 frozen: %s %q, want failed naming hop 3's silence", res.Status, res.Reason)
		}
		if bound := interval*count + 2*interval + time.Second; elapsed > bound {
			t.Fatalf("run failed %v after hop 3 froze, want within %v", elapsed, bound)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not fail after hop 3 froze")
	}
}

// TestProxyCommandHop reaches the bastion through `socat STDIO TCP:...`
// (OpenSSH's ProxyCommand): only when the server allows socat, with the
// host key checked as over TCP.
func TestProxyCommandHop(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	b := testenv.StartBastion(t, testenv.BastionOptions{})
	f := newService(t)
	ctx := context.Background()
	spec := connection.Spec{Name: "ssm", Host: pg.Host, Port: pg.Port, Database: db.Name, User: db.User,
		Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: "bastion.internal", Port: 22, User: b.User,
			ProxyCommand: []string{"socat", "STDIO", "TCP:" + b.Addr()}}}
	// Not allowed by default (a server's allowlist is empty).
	var ve *app.ValidationError
	if _, err := f.svc.CreateConnection(ctx, spec); !errors.As(err, &ve) || !strings.Contains(ve.Fields()["ssh_tunnel.proxy_command"], "socat") {
		t.Fatalf("proxy command not allowed: %v, want a field error", err)
	}
	f.svc.SetProxyCommands(jobs.CommandPolicy{Allow: allowlistOf(t, "socat")})
	v, err := f.svc.CreateConnection(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	var sink rowsSink
	if err := f.svc.Query(ctx, "ssm", "select 42", &sink); err != nil || sink.String() != "42" {
		t.Fatalf("query over the proxy command: %q %v", sink.String(), err)
	}
	rep, err := f.svc.TestConnection(ctx, "ssm", nil)
	if err != nil || !rep.OK {
		t.Fatalf("test over the proxy command: %+v %v", rep.Failed(), err)
	}
	v, _ = f.svc.GetConnection(ctx, "ssm")
	if v.SSHTunnel.HostKeyFingerprint == "" {
		t.Fatal("host key of the bastion behind the proxy command not pinned")
	}
	// Host key verification is unchanged: another key is refused.
	b.RotateHostKey(t)
	var changed *app.HostKeyChangedError
	if err := f.svc.Query(ctx, "ssm", "select 1", &rowsSink{}); !errors.As(err, &changed) {
		t.Fatalf("changed host key behind the proxy command: %v, want HostKeyChangedError", err)
	}
	// A program the server no longer allows is refused at open.
	f.svc.SetProxyCommands(jobs.CommandPolicy{})
	if _, err := f.svc.Open(ctx, "ssm"); err == nil || !strings.Contains(err.Error(), "may not run here as a proxy command") {
		t.Fatalf("open with a proxy command no longer allowed: %v", err)
	}
	// A command that fails says so, with its standard error.
	f.svc.SetProxyCommands(jobs.CommandPolicy{Allow: allowlistOf(t, "socat")})
	bad := spec
	bad.Name = "ssm2"
	bad.Tunnel = &connection.Tunnel{Host: "bastion.internal", User: b.User,
		ProxyCommand: []string{"socat", "STDIO", "TCP:127.0.0.1:1"}}
	if _, err := f.svc.CreateConnection(ctx, bad); err != nil {
		t.Fatal(err)
	}
	_, err = f.svc.Open(ctx, "ssm2")
	var pce *tunnel.ProxyCommandError
	if !errors.As(err, &pce) || !strings.Contains(err.Error(), "Connection refused") {
		t.Fatalf("failing proxy command: %v, want its error with its stderr", err)
	}
}

// TestChainHopForwardRefused: hop 1's key line allows forwarding only to
// the database, not to hop 2: the connection test fails at hop 2's
// bastion_tcp with the line hop 1 needs, and a query names hop 2.
func TestChainHopForwardRefused(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	b1 := testenv.StartBastion(t, testenv.BastionOptions{})
	b2 := testenv.StartBastion(t, testenv.BastionOptions{})
	f := newService(t)
	ctx := context.Background()
	if _, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "fwd", Host: pg.Host, Port: pg.Port, Database: db.Name,
		User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: b1.Host, Port: b1.Port, User: b1.User,
			Next: []connection.Hop{{Host: b2.Host, Port: b2.Port, User: b2.User}}}}); err != nil {
		t.Fatal(err)
	}
	lines, err := f.svc.HopKeys(ctx, "fwd")
	if err != nil {
		t.Fatal(err)
	}
	// Hop 1 gets hop 2's line (permitopen to the database): wrong.
	b1.Authorize(t, lines[1].Line)
	b2.Authorize(t, lines[1].Line)
	rep, err := f.svc.TestConnection(ctx, "fwd", nil)
	if err != nil {
		t.Fatal(err)
	}
	fs := rep.Failed()
	if fs == nil || fs.ID != diagnose.StepBastionTCP || fs.Hop != 2 {
		t.Fatalf("failed step %+v, want hop 2's bastion_tcp", fs)
	}
	if !strings.Contains(fs.Hint, `permitopen="`+b2.Addr()+`"`) || !strings.Contains(fs.Hint, "public-key fwd --restricted") {
		t.Fatalf("hint does not give hop 1's line: %s", fs.Hint)
	}
	err = f.svc.Query(ctx, "fwd", "select 1", &rowsSink{})
	var fe *tunnel.ForwardError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "hop 2 of 2 ("+b2.Addr()+")") {
		t.Fatalf("query: %v, want a ForwardError naming hop 2", err)
	}
	// Hop 2 is reached through hop 1, not from this machine: the advice is
	// hop 1's forwarding, not this machine's network.
	if strings.Contains(err.Error(), "this machine can reach it") ||
		!strings.Contains(err.Error(), "SSH bastion "+b1.Addr()+" refused to forward to "+b2.Addr()) {
		t.Fatalf("query: %v, want hop 1's refusal without advice about this machine's network", err)
	}
}

// TestHopKnownHostPinnedAtOnce: a host key given for hop 2 is pinned when
// the connection is saved, and a hop 2 presenting another key is refused
// before any login.
func TestHopKnownHostPinnedAtOnce(t *testing.T) {
	t.Parallel()
	b1 := testenv.StartBastion(t, testenv.BastionOptions{})
	b2 := testenv.StartBastion(t, testenv.BastionOptions{})
	f := newService(t)
	ctx := context.Background()
	other := testenv.StartBastion(t, testenv.BastionOptions{}) // its key is not b2's
	v, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "kh", Host: "127.0.0.1", Port: 5432, Database: "d", User: "u",
		Tunnel: &connection.Tunnel{Host: b1.Host, Port: b1.Port, User: b1.User,
			Next: []connection.Hop{{Host: b2.Host, Port: b2.Port, User: b2.User, KnownHost: sshkey.AuthorizedKey(other.HostKey, "")}}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := v.SSHHops[1].HostKeyFingerprint; got != sshkey.Fingerprint(other.HostKey) || v.SSHHops[0].HostKeyFingerprint != "" {
		t.Fatalf("pins after create: %+v", v.SSHHops)
	}
	lines, _ := f.svc.HopKeys(ctx, "kh")
	b1.Authorize(t, lines[0].Line)
	b2.Authorize(t, lines[1].Line)
	_, err = f.svc.Open(ctx, "kh")
	var changed *app.HostKeyChangedError
	if !errors.As(err, &changed) || changed.Hop == "" || !strings.Contains(err.Error(), "hop 2 of 2") {
		t.Fatalf("hop 2 with another key than given: %v", err)
	}
	if strings.Contains(b2.Log(), "Accepted publickey") || strings.Contains(b2.Log(), "Failed publickey") {
		t.Fatal("pgrelay tried to log in to a hop whose host key was refused")
	}
	// Giving the right key on update replaces the pin; the chain opens.
	s := v.Spec()
	s.Tunnel.Next[0].KnownHost = sshkey.AuthorizedKey(b2.HostKey, "")
	if _, err := f.svc.UpdateConnection(ctx, "kh", s, nil); err != nil {
		t.Fatal(err)
	}
	sess, err := f.svc.Open(ctx, "kh")
	if err != nil {
		t.Fatal(err)
	}
	_ = sess.Close()
}
