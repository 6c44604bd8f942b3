package app_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestProxyEndsStatementsOfLostClients runs psql through `pgrelay proxy`'s
// endpoint (a TLS server, through a bastion) and checks that a client
// killed mid-statement leaves nothing running, that Ctrl-C in psql
// cancels its statement, and that stopping the proxy cancels the
// statements of the sessions still open. Each bound is checked in
// pg_stat_activity.
func TestProxyEndsStatementsOfLostClients(t *testing.T) {
	t.Parallel()
	const gone = 10 * time.Second
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{TLS: true})
	pg.CreateRole(t, "dbt", "dbt-pw")
	b := testenv.SharedBastion(t, testenv.BastionOptions{})
	f := newService(t)
	ctx := context.Background()
	v, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "wh", Host: "localhost", Port: pg.Port, Database: "postgres",
		User: "dbt", Password: secret.New("dbt-pw"), SSLMode: connection.SSLVerifyFull, SSLRootCert: string(pg.CAPEM),
		Tunnel: &connection.Tunnel{Host: b.Host, Port: b.Port, User: b.User}})
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	ps, err := f.svc.Proxy(ctx, "wh", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- ps.Serve(ctx) }()
	t.Cleanup(func() { _ = ps.Close() })
	_, lport, err := net.SplitHostPort(ps.Addr().String())
	if err != nil {
		t.Fatal(err)
	}

	super, err := pgx.Connect(ctx, pg.ConnString(pg.SuperUser, pg.SuperPassword, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	poll := func(what string, cond func() bool) time.Duration {
		t.Helper()
		start := time.Now()
		for !cond() {
			if time.Since(start) > gone {
				t.Fatalf("waited %v for %s", gone, what)
			}
			time.Sleep(20 * time.Millisecond)
		}
		return time.Since(start)
	}
	active := func(app string, out *testenv.LogBuffer) int64 {
		t.Helper()
		var pid int64
		poll("the statement of "+app+" to run", func() bool {
			if strings.Contains(out.String(), "error") {
				t.Fatalf("psql: %s", out)
			}
			return super.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name = $1
				AND state = 'active' AND query LIKE '%pg_sleep%'`, app).Scan(&pid) == nil
		})
		return pid
	}
	goneCheck := func(pid int64) func() bool {
		return func() bool {
			var n int
			if err := super.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n == 0
		}
	}
	// psql with libpq's defaults (sslmode=prefer, channel_binding=prefer).
	psql := func(app string) (*exec.Cmd, *testenv.LogBuffer, chan struct{}) {
		cmd := exec.Command("psql", "-X", "-c", "select pg_sleep(300)")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "PGHOST=127.0.0.1", "PGPORT=" + lport,
			"PGUSER=dbt", "PGPASSWORD=dbt-pw", "PGDATABASE=postgres", "PGAPPNAME=" + app}
		var out testenv.LogBuffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
		return cmd, &out, done
	}

	// SIGKILL: no Terminate; the proxy cancels the statement.
	cmd, out, _ := psql("killed")
	pid := active("killed", out)
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed client's backend %d gone after %v", pid, poll("the killed client's backend to end", goneCheck(pid)))

	// Ctrl-C: psql sends its own cancel request through the proxy.
	cmd, out, done := psql("interrupted")
	pid = active("interrupted", out)
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(gone):
		t.Fatal("psql still running after SIGINT")
	}
	if !strings.Contains(out.String(), "canceling statement due to user request") {
		t.Errorf("psql after SIGINT: %q", out)
	}
	poll("the interrupted client's backend to end", goneCheck(pid))

	// Stopping the proxy cancels what its sessions still run.
	conn, err := pgx.Connect(ctx, "host=127.0.0.1 port="+lport+" user=dbt password=dbt-pw dbname=postgres sslmode=disable application_name=open")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if got := ps.Backends().Backends(); len(got) != 1 || int64(got[0].PID) != int64(conn.PgConn().PID()) {
		t.Errorf("proxy's backends: %v, want the one of pid %d", got, conn.PgConn().PID())
	}
	qerr := make(chan error, 1)
	go func() { _, err := conn.Exec(ctx, "select pg_sleep(300)"); qerr <- err }()
	pid = active("open", &testenv.LogBuffer{})
	if err := ps.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("open session's backend %d gone %v after the proxy stopped", pid, poll("the open session's backend to end", goneCheck(pid)))
	var pe *pgconn.PgError
	if err := <-qerr; err == nil || errors.As(err, &pe) && pe.Code != "57014" {
		t.Errorf("statement of the open session: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// TestProxyListensWhereAsked: an IPv4 wildcard listens on IPv4 only, not
// on every IPv6 address as Go's "tcp" does; a client reaches it at
// 127.0.0.1 and not at ::1.
func TestProxyListensWhereAsked(t *testing.T) {
	t.Parallel()
	pg, _ := startPostgresAndBastion(t)
	f := newService(t)
	ctx := context.Background()
	s := connection.Spec{Name: "direct", Host: pg.Host, Port: pg.Port, Database: pg.DB.Name, User: pg.DB.User,
		Password: secret.New(pg.DB.Password), SSLMode: connection.SSLDisable}
	if _, err := f.svc.CreateConnection(ctx, s); err != nil {
		t.Fatal(err)
	}
	ps, err := f.svc.Proxy(ctx, "direct", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ps.Close() })
	addr, ok := ps.Addr().(*net.TCPAddr)
	if !ok || addr.IP.To4() == nil || !addr.IP.IsUnspecified() {
		t.Fatalf("listening on %s for 0.0.0.0:0, want the IPv4 wildcard only", ps.Addr())
	}
	port := strconv.Itoa(addr.Port)
	c, err := net.Dial("tcp4", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		t.Fatalf("127.0.0.1: %v", err)
	}
	_ = c.Close()
	if c, err := net.Dial("tcp6", net.JoinHostPort("::1", port)); err == nil {
		_ = c.Close()
		t.Fatalf("the proxy asked to listen on 0.0.0.0 accepts connections at [::1]:%s", port)
	}
	for addr, want := range map[string]string{"0.0.0.0:1": "tcp4", "127.0.0.1:1": "tcp4", "[::]:1": "tcp6",
		"[::1]:1": "tcp6", "localhost:1": "tcp", ":1": "tcp"} {
		if got := app.ListenNetwork(addr); got != want {
			t.Errorf("ListenNetwork(%q) = %s, want %s", addr, got, want)
		}
	}
}

// TestProxyReopensOnceForWaitingClients: clients that arrive while the
// bastion does not answer share one attempt to open the tunnel again, each
// waiting only as long as its own time limit; they used to queue behind a
// lock and open one each in turn (a pool of clients waited minutes).
func TestProxyReopensOnceForWaitingClients(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	b := testenv.SharedBastion(t, testenv.BastionOptions{})
	fp := testenv.StartFaultProxy(t, b.Addr())
	f := newServiceWith(t, func(c *app.Config) { c.DialTimeout = 2 * time.Second })
	ctx := context.Background()
	v, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "storm", Host: pg.Host, Port: pg.Port, Database: db.Name,
		User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: fp.Host(), Port: fp.Port(), User: b.User}})
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	ps, err := f.svc.Proxy(ctx, "storm", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = ps.Serve(ctx) }()
	t.Cleanup(func() { _ = ps.Close() })
	// The bastion goes silent and the tunnel is reset.
	fp.Freeze()
	fp.CloseAll()
	defer fp.Thaw()
	for deadline := time.Now().Add(10 * time.Second); ps.Session().Err() == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the tunnel was not seen dropped")
		}
	}
	before := fp.Accepted()
	const clients = 4
	errs := make(chan error, clients)
	for range clients {
		go func() {
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			c, err := pgx.Connect(cctx, "postgres://"+db.User+":"+db.Password+"@"+ps.Addr().String()+"/"+db.Name+"?sslmode=disable")
			if err == nil {
				_ = c.Close(ctx)
			}
			errs <- err
		}()
	}
	for range clients {
		if err := <-errs; err == nil {
			t.Fatal("a client connected through a silent bastion")
		}
	}
	if n := fp.Accepted() - before; n > 2 {
		t.Fatalf("%d clients opened %d tunnels, one after another; want them to share one attempt", clients, n)
	}
}

// lostStatement is a proxy through a bastion behind a fault proxy, with
// a client running a long statement through it (see startLostStatement).
type lostStatement struct {
	fp    *testenv.FaultProxy
	ps    *app.ProxyServer
	logs  *testenv.LogBuffer
	super *pgx.Conn
	// tag marks the statement in pg_stat_activity.
	tag string
}

// startLostStatement starts a proxy of a connection name through a fault
// proxy in front of the shared bastion (keepalives every 200 ms, 3 missed
// end the tunnel) and a client running SELECT pg_sleep(300) through it,
// and waits until the statement runs.
func startLostStatement(t *testing.T, name string) *lostStatement {
	t.Helper()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	b := testenv.SharedBastion(t, testenv.BastionOptions{})
	l := &lostStatement{fp: testenv.StartFaultProxy(t, b.Addr()), logs: &testenv.LogBuffer{}, tag: name + "-" + strconv.Itoa(os.Getpid())}
	f := newServiceWith(t, func(c *app.Config) {
		c.DialTimeout = 2 * time.Second
		c.Logger = slog.New(slog.NewTextHandler(l.logs, nil))
	})
	ctx := context.Background()
	v, err := f.svc.CreateConnection(ctx, connection.Spec{Name: name, Host: pg.Host, Port: pg.Port, Database: db.Name,
		User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: l.fp.Host(), Port: l.fp.Port(), User: b.User,
			KeepaliveInterval: connection.Duration(200 * time.Millisecond), KeepaliveCountMax: 3}})
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	if l.ps, err = f.svc.Proxy(ctx, name, "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	go func() { _ = l.ps.Serve(ctx) }()
	t.Cleanup(func() { _ = l.ps.Close() })
	if l.super, err = pgx.Connect(ctx, pg.ConnString(pg.SuperUser, pg.SuperPassword, "postgres")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = l.super.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%'||$1||'%' AND pid <> pg_backend_pid()`, l.tag)
		_ = l.super.Close(context.Background())
	})
	c, err := pgx.Connect(ctx, "postgres://"+db.User+":"+db.Password+"@"+l.ps.Addr().String()+"/"+db.Name+"?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	go func() { _, _ = c.Exec(context.Background(), "SELECT pg_sleep(300) /* "+l.tag+" */") }()
	l.waitFor(t, "the statement to run", 10*time.Second, func() bool { return l.pid(t) != 0 })
	return l
}

// pid is the backend running the statement, 0 when none does.
func (l *lostStatement) pid(t *testing.T) int64 {
	t.Helper()
	var pid int64
	err := l.super.QueryRow(context.Background(), `SELECT pid FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%'||$1||'%' AND pid <> pg_backend_pid()`, l.tag).Scan(&pid)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		t.Fatal(err)
	}
	return pid
}

// waitFor polls cond until it holds, failing the test after within.
func (l *lostStatement) waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestProxyCancelsLostStatementOnceReachable: a client's session lost with
// the proxy's tunnel (the bastion went silent) leaves its statement
// running on the server, where the cancel request cannot go while the
// bastion is silent; it is sent once the bastion answers again (the proxy
// opens a new tunnel), so the statement stops. It used to be tried once.
func TestProxyCancelsLostStatementOnceReachable(t *testing.T) {
	t.Parallel()
	l := startLostStatement(t, "lost")
	// The bastion goes silent: the tunnel is dropped by its keepalives, the
	// client's session with it, and the first cancel request cannot go.
	l.fp.Freeze()
	l.waitFor(t, "the first cancel request to fail", 20*time.Second, func() bool {
		return strings.Contains(l.logs.String(), "could not cancel its statement")
	})
	if l.pid(t) == 0 {
		t.Fatal("the statement stopped while the bastion was silent: the test proves nothing")
	}
	l.fp.Thaw()
	l.waitFor(t, "the statement to be cancelled once the bastion answers", 30*time.Second, func() bool { return l.pid(t) == 0 })
}

// TestProxyCloseEndsCancelRetries: closing the proxy (the process shuts
// down) while the cancel request of a session lost with its tunnel is
// being sent again makes one last attempt and ends the retries, naming
// the backend whose statement may still run. The retries used to go on
// after Close, opening tunnels for ten minutes.
func TestProxyCloseEndsCancelRetries(t *testing.T) {
	t.Parallel()
	l := startLostStatement(t, "closing")
	pid := l.pid(t)
	// The bastion goes silent: the tunnel is dropped by its keepalives,
	// the session with it, and its cancel request is sent again.
	l.fp.Freeze()
	defer l.fp.Thaw()
	l.waitFor(t, "the cancel request to be sent again", 20*time.Second, func() bool { return l.ps.PendingCancels() == 1 })

	err := l.ps.Close()
	if n := l.ps.PendingCancels(); n != 0 {
		t.Fatalf("%d cancel requests still sent again after Close", n)
	}
	if err == nil || !strings.Contains(err.Error(), "pid "+strconv.FormatInt(pid, 10)) {
		t.Fatalf("Close returned %v, want the undelivered cancel request of backend pid %d", err, pid)
	}
	if !strings.Contains(l.logs.String(), "closed before the cancel request") {
		t.Fatalf("no warning for the undelivered cancel request:\n%s", l.logs)
	}
}
