package relay_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/proxy"
	"github.com/pgrelay/pgrelay/internal/relay"
	"github.com/pgrelay/pgrelay/internal/testenv"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// Roles made on every cluster: one per authentication method.
const (
	scramUser, scramPassword = "r_scram", "pw-scram-1"
	md5User, md5Password     = "r_md5", "pw-md5-1"
	trustUser                = "r_trust"
	// sslOnlyUser may only log in over TLS (hostnossl ... reject).
	sslOnlyUser, sslOnlyPassword = "r_sslonly", "pw-sslonly-1"
)

// goneWithin bounds how long a killed client's statement may outlive it.
const goneWithin = 10 * time.Second

// fixture is what the relay's tests share: a PostgreSQL serving TLS
// (and plain connections), one serving no TLS, and a tunnel through a
// real sshd.
type fixture struct {
	tlsPG, plainPG *testenv.Postgres
	tun            *tunnel.Tunnel
}

// TestRelay runs the relay's tests against one set of servers.
func TestRelay(t *testing.T) {
	hba := []string{
		"hostnossl all " + sslOnlyUser + " 127.0.0.1/32 reject",
		"host all " + md5User + " 127.0.0.1/32 md5",
		"host all " + trustUser + " 127.0.0.1/32 trust",
	}
	// Clusters of the test's own: pg_hba rules and roles of fixed names.
	f := &fixture{
		tlsPG:   testenv.StartPostgres(t, testenv.PostgresOptions{TLS: true, HBA: hba}),
		plainPG: testenv.StartPostgres(t, testenv.PostgresOptions{HBA: hba}),
	}
	for _, pg := range []*testenv.Postgres{f.tlsPG, f.plainPG} {
		makeRoles(t, pg)
	}
	f.tun = openTunnel(t)

	t.Run("Login", f.testLogin)
	t.Run("VerifyFullWrongName", f.testVerifyFullWrongName)
	t.Run("RequireWithoutServerTLS", f.testRequireWithoutServerTLS)
	t.Run("ChannelBinding", f.testChannelBinding)
	t.Run("BackendKeyData", f.testBackendKeyData)
	t.Run("WrongPasswordPassedOn", f.testWrongPassword)
	t.Run("KilledClientCancelled", f.testKilledClient)
	t.Run("KilledClientReleasesLock", f.testKilledClientLock)
	t.Run("CtrlCCancels", f.testCtrlC)
	t.Run("TerminateReported", f.testTerminate)
	t.Run("ServerClosedReported", f.testServerClosed)
	t.Run("StartupTimeout", f.testStartupTimeout)
	t.Run("RegistryCancelAll", f.testRegistry)
	t.Run("LocalTLSVerifyFull", f.testLocalVerifyFull)
	t.Run("AllowRetriesWithTLS", f.testAllowRetriesWithTLS)
	t.Run("NoLocalTLS", f.testNoLocalTLS)
	t.Run("GSSEncRefused", f.testGSSEncRefused)
	t.Run("DataAfterSSLRequestRefused", f.testDataAfterSSLRequest)
	t.Run("UpstreamLostReported", f.testUpstreamLost)
	t.Run("LoginMode", f.testLoginMode)
}

func makeRoles(t *testing.T, pg *testenv.Postgres) {
	t.Helper()
	pg.CreateRole(t, scramUser, scramPassword)
	pg.CreateRole(t, sslOnlyUser, sslOnlyPassword)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.ConnString(pg.SuperUser, pg.SuperPassword, "postgres"))
	if err != nil {
		t.Fatalf("connect as superuser: %v", err)
	}
	defer conn.Close(ctx)
	for _, sql := range []string{
		"SET password_encryption = 'md5'",
		"CREATE ROLE " + md5User + " LOGIN PASSWORD '" + md5Password + "'",
		"CREATE ROLE " + trustUser + " LOGIN",
		"CREATE TABLE locks (id int PRIMARY KEY, v int)",
		"INSERT INTO locks VALUES (1, 0), (2, 0)",
		"GRANT ALL ON locks TO " + scramUser,
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

func openTunnel(t *testing.T) *tunnel.Tunnel {
	t.Helper()
	b := testenv.StartBastion(t, testenv.BastionOptions{})
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	tun, err := tunnel.Dial(ctx, tunnel.Config{Addr: b.Addr(), User: b.User, Signer: signer, HostKeys: []ssh.PublicKey{b.HostKey}})
	if err != nil {
		t.Fatalf("tunnel.Dial: %v", err)
	}
	t.Cleanup(func() { _ = tun.Close() })
	return tun
}

// upstream returns how to reach pg with sslmode, directly or through the
// tunnel; host is the name verify-full checks.
func (f *fixture) upstream(t *testing.T, pg *testenv.Postgres, mode connection.SSLMode, host string, viaTunnel bool) relay.Upstream {
	t.Helper()
	spec := connection.Spec{Name: "test", Host: host, Port: pg.Port, SSLMode: mode, SSLRootCert: string(pg.CAPEM)}
	pol, err := relay.PolicyFor(&spec)
	if err != nil {
		t.Fatalf("PolicyFor: %v", err)
	}
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", pg.Addr())
	}
	if viaTunnel {
		dial = func(ctx context.Context) (net.Conn, error) { return f.tun.DialContext(ctx, "tcp", pg.Addr()) }
	}
	return relay.Upstream{Dial: dial, TLS: pol, Addr: net.JoinHostPort(host, strconv.Itoa(pg.Port)),
		RequireAuth: spec.EffectiveRequireAuth()}
}

// endpoint is a running proxy with a relay.
type endpoint struct {
	addr *net.TCPAddr
	rec  *recorder
	cert []byte // the local certificate, PEM
	// refused receives the sessions the server refused (Config.Refused),
	// for the endpoints in login mode.
	refused chan *relay.RefusedError
}

type endpointOptions struct {
	noLocalTLS     bool
	startupTimeout time.Duration
	observer       relay.Observer
}

func startEndpoint(t *testing.T, up relay.Upstream, opts endpointOptions) *endpoint {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &endpoint{addr: ln.Addr().(*net.TCPAddr), rec: newRecorder()}
	cfg := relay.Config{Upstream: up, Observer: e.rec, StartupTimeout: opts.startupTimeout, Logger: testLogger(t)}
	if opts.observer != nil {
		cfg.Observer = relay.Observers(e.rec, opts.observer)
	}
	if !opts.noLocalTLS {
		lt, err := relay.NewLocalTLS("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		cfg.LocalTLS, e.cert = lt.Config, lt.CertPEM
	}
	p := proxy.New(ln, proxy.DialFunc(up.Dial), testLogger(t), proxy.WithHandshake(relay.New(cfg).Handshake))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = p.Serve(context.Background())
	}()
	t.Cleanup(func() {
		_ = p.Close()
		<-done
	})
	return e
}

// connString is a libpq connection string for the endpoint.
func (e *endpoint) connString(user, password, extra string) string {
	s := fmt.Sprintf("host=127.0.0.1 port=%d user=%s dbname=postgres connect_timeout=10 %s", e.addr.Port, user, extra)
	if password != "" {
		s += " password=" + password
	}
	return s
}

func (e *endpoint) connect(t *testing.T, user, password, extra string) (*pgx.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, e.connString(user, password, extra))
	if err == nil {
		t.Cleanup(func() { _ = conn.Close(context.Background()) })
	}
	return conn, err
}

// recorder is an Observer that keeps what it was told.
type recorder struct {
	mu     sync.Mutex
	opened map[uint32]relay.Backend
	closed map[uint32]relay.End
}

func newRecorder() *recorder {
	return &recorder{opened: map[uint32]relay.Backend{}, closed: map[uint32]relay.End{}}
}

func (r *recorder) BackendOpened(b relay.Backend) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opened[b.PID] = b
}

func (r *recorder) BackendClosed(b relay.Backend, e relay.End) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed[b.PID] = e
}

func (r *recorder) backend(pid uint32) (relay.Backend, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b, ok := r.opened[pid]
	return b, ok
}

// waitClosed waits for the end of pid's session to be reported.
func (r *recorder) waitClosed(t *testing.T, pid uint32) relay.End {
	t.Helper()
	var e relay.End
	waitFor(t, goneWithin, fmt.Sprintf("the end of backend %d to be reported", pid), func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		var ok bool
		e, ok = r.closed[pid]
		return ok
	})
	return e
}

// waitFor polls cond every 20 ms until it holds, failing after within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("waited %v for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", bytes.TrimRight(p, "\n"))
	return len(p), nil
}

// superConn opens a direct superuser session on pg for checks.
func superConn(t *testing.T, pg *testenv.Postgres) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.ConnString(pg.SuperUser, pg.SuperPassword, "postgres"))
	if err != nil {
		t.Fatalf("superuser connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// backendState returns pid's state in pg_stat_activity ("" when gone).
func backendState(t *testing.T, super *pgx.Conn, pid uint32) string {
	t.Helper()
	var state *string
	err := super.QueryRow(context.Background(), "SELECT coalesce(state, '?') FROM pg_stat_activity WHERE pid = $1", int64(pid)).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return ""
	}
	if err != nil {
		t.Fatalf("read pg_stat_activity: %v", err)
	}
	return *state
}

// activePID waits for a backend with application_name app to run an
// active statement and returns its PID.
func activePID(t *testing.T, super *pgx.Conn, app string, cmdDone <-chan struct{}) uint32 {
	t.Helper()
	var pid uint32
	waitFor(t, 15*time.Second, "the client's statement to run", func() bool {
		select {
		case <-cmdDone:
			t.Fatal("the client exited before its statement ran")
		default:
		}
		var p int64
		err := super.QueryRow(context.Background(),
			"SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' AND query LIKE '%pg_sleep%'", app).Scan(&p)
		if err == nil {
			pid = uint32(p)
			return true
		}
		return false
	})
	return pid
}

func (f *fixture) testLogin(t *testing.T) {
	t.Parallel()
	users := []struct{ user, password string }{{scramUser, scramPassword}, {md5User, md5Password}, {trustUser, ""}}
	cases := []struct {
		pg        *testenv.Postgres
		mode      connection.SSLMode
		host      string
		tunnel    bool
		wantSSL   bool
		serverTag string
	}{
		{f.tlsPG, connection.SSLDisable, "127.0.0.1", false, false, "tls"},
		{f.tlsPG, connection.SSLAllow, "127.0.0.1", false, false, "tls"},
		{f.tlsPG, connection.SSLPrefer, "127.0.0.1", false, true, "tls"},
		{f.tlsPG, connection.SSLRequire, "127.0.0.1", true, true, "tls"},
		{f.tlsPG, connection.SSLVerifyCA, "127.0.0.1", false, true, "tls"},
		{f.tlsPG, connection.SSLVerifyFull, "localhost", true, true, "tls"},
		{f.plainPG, connection.SSLPrefer, "127.0.0.1", true, false, "plain"},
		{f.plainPG, connection.SSLDisable, "127.0.0.1", false, false, "plain"},
	}
	// The client's side: without TLS, with TLS, and libpq's default.
	clients := []string{"sslmode=disable", "sslmode=require channel_binding=disable", "sslmode=prefer"}
	for _, c := range cases {
		via := "direct"
		if c.tunnel {
			via = "tunnel"
		}
		t.Run(fmt.Sprintf("%s_%s_%s", c.serverTag, c.mode, via), func(t *testing.T) {
			t.Parallel()
			e := startEndpoint(t, f.upstream(t, c.pg, c.mode, c.host, c.tunnel), endpointOptions{})
			for _, u := range users {
				for _, cl := range clients {
					conn, err := e.connect(t, u.user, u.password, cl)
					if err != nil {
						t.Errorf("%s with %s: connect: %v", u.user, cl, err)
						continue
					}
					var who string
					var ssl bool
					var pid int64
					if err := conn.QueryRow(context.Background(),
						"SELECT current_user, coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false), pg_backend_pid()").Scan(&who, &ssl, &pid); err != nil {
						t.Errorf("%s with %s: query: %v", u.user, cl, err)
						continue
					}
					if who != u.user || ssl != c.wantSSL {
						t.Errorf("%s with %s: current_user %q, server-side ssl %v; want %q, %v", u.user, cl, who, ssl, u.user, c.wantSSL)
					}
					b, ok := e.rec.backend(uint32(pid))
					if !ok {
						t.Errorf("%s with %s: backend %d not reported", u.user, cl, pid)
					} else if b.Encrypted != c.wantSSL || b.User != u.user {
						t.Errorf("%s with %s: reported %v encrypted=%v", u.user, cl, b, b.Encrypted)
					}
					_ = conn.Close(context.Background())
				}
			}
		})
	}
}

func (f *fixture) testVerifyFullWrongName(t *testing.T) {
	t.Parallel()
	e := startEndpoint(t, f.upstream(t, f.tlsPG, connection.SSLVerifyFull, "wrong.example", false), endpointOptions{})
	_, err := e.connect(t, scramUser, scramPassword, "sslmode=disable")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Fatalf("connect = %v; want the relay's ErrorResponse", err)
	}
	for _, want := range []string{"wrong.example", "certificate", "verify-full"} {
		if !strings.Contains(pe.Message, want) {
			t.Errorf("error %q does not mention %q", pe.Message, want)
		}
	}
	if pe.Code != "08001" || pe.Severity != "FATAL" {
		t.Errorf("error %s %s; want FATAL 08001", pe.Severity, pe.Code)
	}
	// psql shows it as it is.
	out, _ := exec.Command("psql", "-X", "-c", "select 1", e.connString(scramUser, scramPassword, "sslmode=disable")).CombinedOutput()
	if !strings.Contains(string(out), "x509: certificate is valid for") || !strings.Contains(string(out), "wrong.example") {
		t.Errorf("psql output %q does not show the verification failure", out)
	}
}

func (f *fixture) testRequireWithoutServerTLS(t *testing.T) {
	t.Parallel()
	e := startEndpoint(t, f.upstream(t, f.plainPG, connection.SSLRequire, "127.0.0.1", false), endpointOptions{})
	_, err := e.connect(t, scramUser, scramPassword, "sslmode=disable")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || !strings.Contains(pe.Message, "does not accept SSL") {
		t.Fatalf("connect = %v; want an error saying the server does not accept SSL", err)
	}
}

func (f *fixture) testChannelBinding(t *testing.T) {
	t.Parallel()
	up := f.upstream(t, f.tlsPG, connection.SSLRequire, "127.0.0.1", false)
	e := startEndpoint(t, up, endpointOptions{})

	// The server offers SCRAM-SHA-256-PLUS over TLS; through the relay a
	// client is offered SCRAM-SHA-256 alone.
	offered := func(dial func() (net.Conn, error), viaTLS bool) []string {
		t.Helper()
		c, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if viaTLS {
			req, _ := (&pgproto3.SSLRequest{}).Encode(nil)
			if _, err := c.Write(req); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 1)
			if _, err := io.ReadFull(c, b); err != nil || b[0] != 'S' {
				t.Fatalf("SSL request answered %q, %v", b, err)
			}
			tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
			if err := tc.Handshake(); err != nil {
				t.Fatalf("TLS handshake: %v", err)
			}
			c = tc
		}
		fe := pgproto3.NewFrontend(c, c)
		fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
			Parameters: map[string]string{"user": scramUser, "database": "postgres"}})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		msg, err := fe.Receive()
		if err != nil {
			t.Fatal(err)
		}
		sasl, ok := msg.(*pgproto3.AuthenticationSASL)
		if !ok {
			t.Fatalf("first message %T, want AuthenticationSASL", msg)
		}
		return sasl.AuthMechanisms
	}
	direct := offered(func() (net.Conn, error) { return net.Dial("tcp", f.tlsPG.Addr()) }, true)
	if !strings.Contains(strings.Join(direct, ","), "SCRAM-SHA-256-PLUS") {
		t.Fatalf("the server offers %v over TLS; the test needs SCRAM-SHA-256-PLUS", direct)
	}
	relayed := offered(func() (net.Conn, error) { return net.Dial("tcp", e.addr.String()) }, true)
	if strings.Join(relayed, ",") != "SCRAM-SHA-256" {
		t.Errorf("through the relay the client is offered %v, want [SCRAM-SHA-256]", relayed)
	}

	for _, cl := range []string{
		"sslmode=disable channel_binding=prefer",
		"sslmode=prefer channel_binding=prefer", // TLS, refused, then without TLS, as libpq does
		"sslmode=require channel_binding=disable",
	} {
		if _, err := e.connect(t, scramUser, scramPassword, cl); err != nil {
			t.Errorf("%s: %v", cl, err)
		}
	}
	// TLS to the endpoint with channel binding on: the server would refuse
	// the login; the relay says why and what to do.
	_, err := e.connect(t, scramUser, scramPassword, "sslmode=require channel_binding=prefer")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || !strings.Contains(pe.Message, "channel binding") || !strings.Contains(pe.Hint, "channel_binding=disable") {
		t.Errorf("sslmode=require channel_binding=prefer: %v; want the relay's error with a hint", err)
	}
	// And psql, whose default is sslmode=prefer, logs in.
	out, err := exec.Command("psql", "-X", "-Atc", "select current_user", e.connString(scramUser, scramPassword, "")).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != scramUser {
		t.Errorf("psql with its default sslmode: %v: %s", err, out)
	}
}

func (f *fixture) testBackendKeyData(t *testing.T) {
	t.Parallel()
	for _, via := range []bool{false, true} {
		e := startEndpoint(t, f.upstream(t, f.tlsPG, connection.SSLRequire, "127.0.0.1", via), endpointOptions{})
		conn, err := e.connect(t, scramUser, scramPassword, "sslmode=disable application_name=bkd")
		if err != nil {
			t.Fatal(err)
		}
		var pid int64
		if err := conn.QueryRow(context.Background(), "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			t.Fatal(err)
		}
		b, ok := e.rec.backend(uint32(pid))
		if !ok {
			t.Fatalf("pg_backend_pid() %d was not reported (reported: %v)", pid, e.rec.opened)
		}
		// The key the client got is the one the relay kept.
		if got := conn.PgConn().SecretKey(); uint32(pid) != conn.PgConn().PID() || !bytes.Equal(b.SecretKey, got) || len(got) != 4 {
			t.Errorf("relay kept key %x, client has %x", b.SecretKey, got)
		}
		if b.User != scramUser || b.Database != "postgres" || b.ApplicationName != "bkd" || b.Params["server_version"] == "" || b.OpenedAt.IsZero() {
			t.Errorf("backend %v: user %q database %q app %q params %v", b, b.User, b.Database, b.ApplicationName, b.Params)
		}
		// The key is not printed.
		for _, s := range []string{b.String(), fmt.Sprintf("%v %+v %#v", b, b, b)} {
			if strings.Contains(s, fmt.Sprintf("%x", b.SecretKey)) || strings.Contains(s, fmt.Sprint(b.SecretKey)) {
				t.Errorf("backend printed with its secret key: %s", s)
			}
		}
	}
}

func (f *fixture) testWrongPassword(t *testing.T) {
	t.Parallel()
	e := startEndpoint(t, f.upstream(t, f.tlsPG, connection.SSLRequire, "127.0.0.1", false), endpointOptions{})
	_, err := e.connect(t, scramUser, "wrong", "sslmode=disable")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "28P01" {
		t.Fatalf("wrong password: %v; want the server's 28P01", err)
	}
}

// psqlEnv is the environment of a psql client of e.
func psqlEnv(e *endpoint, app, sslmode string) []string {
	return append(os.Environ(), "PGHOST=127.0.0.1", "PGPORT="+strconv.Itoa(e.addr.Port), "PGUSER="+scramUser,
		"PGPASSWORD="+scramPassword, "PGDATABASE=postgres", "PGAPPNAME="+app, "PGSSLMODE="+sslmode,
		"PGCHANNELBINDING=disable", "PGCONNECT_TIMEOUT=10")
}

// startPsql runs psql with args; done is closed when it has exited.
func startPsql(t *testing.T, env []string, stdin io.Reader, args ...string) (cmd *exec.Cmd, out *bytes.Buffer, done chan struct{}) {
	t.Helper()
	cmd = exec.Command("psql", append([]string{"-X", "-v", "ON_ERROR_STOP=1"}, args...)...)
	cmd.Env = env
	cmd.Stdin = stdin
	out = &bytes.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start psql: %v", err)
	}
	done = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	return cmd, out, done
}

func (f *fixture) testKilledClient(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		pg      *testenv.Postgres
		mode    connection.SSLMode
		tunnel  bool
		sslmode string // psql's
	}{
		{"direct_tls", f.tlsPG, connection.SSLRequire, false, "require"},
		{"tunnel_tls", f.tlsPG, connection.SSLVerifyFull, true, "disable"},
		{"tunnel_plain", f.plainPG, connection.SSLDisable, true, "prefer"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			host := "127.0.0.1"
			if c.mode == connection.SSLVerifyFull {
				host = "localhost"
			}
			e := startEndpoint(t, f.upstream(t, c.pg, c.mode, host, c.tunnel), endpointOptions{})
			super := superConn(t, c.pg)
			app := "killed_" + c.name
			cmd, _, done := startPsql(t, psqlEnv(e, app, c.sslmode), nil, "-c", "select pg_sleep(300)")
			pid := activePID(t, super, app, done)
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			took := waitFor(t, goneWithin, fmt.Sprintf("backend %d to end after its client was killed", pid), func() bool {
				return backendState(t, super, pid) == ""
			})
			t.Logf("backend %d gone %v after its client was killed", pid, took)
			end := e.rec.waitClosed(t, pid)
			if end.How != relay.ClientLost || !end.CancelSent || end.CancelErr != nil {
				t.Errorf("end reported as %v, cancel sent %v (%v); want client_lost with a cancel sent", end.How, end.CancelSent, end.CancelErr)
			}
		})
	}
}

func (f *fixture) testKilledClientLock(t *testing.T) {
	t.Parallel()
	for i, c := range []struct {
		name   string
		script string
	}{
		// Running a statement while holding the lock: needs the cancel.
		{"active", "begin;\nupdate locks set v = v + 1 where id = 1;\nselect pg_sleep(300);\n"},
		// Idle in the transaction: ends when its connection closes.
		{"idle_in_transaction", "begin;\nupdate locks set v = v + 1 where id = 2;\nselect pg_sleep(0.01) as ready;\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			row := i + 1
			e := startEndpoint(t, f.upstream(t, f.tlsPG, connection.SSLRequire, "127.0.0.1", true), endpointOptions{})
			super := superConn(t, f.tlsPG)
			app := "lock_" + c.name
			// psql reads the script from a pipe that stays open, so that
			// it waits for more after the script.
			stdinR, stdinW, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = stdinW.Close() })
			if _, err := io.WriteString(stdinW, c.script); err != nil {
				t.Fatal(err)
			}
			cmd, _, done := startPsql(t, psqlEnv(e, app, "disable"), stdinR, "-f", "-")
			_ = stdinR.Close()
			var pid int64
			waitFor(t, 15*time.Second, "the client to hold the row lock", func() bool {
				select {
				case <-done:
					t.Fatal("psql exited")
				default:
				}
				err := super.QueryRow(context.Background(), `SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
					WHERE a.application_name = $1 AND l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock'
					AND (a.state = 'idle in transaction' OR a.query LIKE '%pg_sleep(300)%')`, app).Scan(&pid)
				return err == nil
			})
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			ctx, cancel := context.WithTimeout(context.Background(), goneWithin+5*time.Second)
			defer cancel()
			if _, err := super.Exec(ctx, fmt.Sprintf("SET lock_timeout = '%dms'", goneWithin.Milliseconds())); err != nil {
				t.Fatal(err)
			}
			if _, err := super.Exec(ctx, "UPDATE locks SET v = v + 1 WHERE id = $1", row); err != nil {
				t.Fatalf("second session could not take the row lock within %v after the client was killed: %v", goneWithin, err)
			}
			t.Logf("row lock taken %v after the client (backend %d) was killed", time.Since(start), pid)
		})
	}
}

func (f *fixture) testCtrlC(t *testing.T) {
	t.Parallel()
	for _, sslmode := range []string{"disable", "require"} {
		t.Run(sslmode, func(t *testing.T) {
			e := startEndpoint(t, f.upstream(t, f.tlsPG, connection.SSLRequire, "127.0.0.1", true), endpointOptions{})
			super := superConn(t, f.tlsPG)
			app := "ctrlc_" + sslmode
			cmd, out, done := startPsql(t, psqlEnv(e, app, sslmode), nil, "-c", "select pg_sleep(300)")
			pid := activePID(t, super, app, done)
			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			select {
			case <-done:
			case <-time.After(goneWithin):
				t.Fatalf("psql still running %v after SIGINT", goneWithin)
			}
			if !strings.Contains(out.String(), "canceling statement due to user request") {
				t.Errorf("psql output %q; want the statement cancelled", out)
			}
			waitFor(t, goneWithin, "the backend to end", func() bool { return backendState(t, super, pid) == "" })
			// psql exits normally after the cancel: it says Terminate.
			if end := e.rec.waitClosed(t, pid); end.How != relay.Terminated || end.CancelSent {
				t.Errorf("end reported as %v (cancel sent %v), want terminated", end.How, end.CancelSent)
			}
		})
	}
}

func (f *fixture) testTerminate(t *testing.T) {
	t.Parallel()
	e := startEndpoint(t, f.upstream(t, f.tlsPG, connection.SSLPrefer, "127.0.0.1", false), endpointOptions{})
	for _, cl := range []string{"sslmode=disable", "sslmode=require channel_binding=disable"} {
		conn, err := e.connect(t, scramUser, scramPassword, cl)
		if err != nil {
			t.Fatal(err)
		}
		pid := conn.PgConn().PID()
		if err := conn.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if end := e.rec.waitClosed(t, pid); end.How != relay.Terminated || end.CancelSent {
			t.Errorf("%s: end reported as %v (cancel sent %v), want terminated", cl, end.How, end.CancelSent)
		}
	}
	// A client that just closes its socket is not taken for one that said
	// goodbye.
	conn, err := e.connect(t, scramUser, scramPassword, "sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	pid := conn.PgConn().PID()
	_ = conn.PgConn().Conn().Close()
	if end := e.rec.waitClosed(t, pid); end.How != relay.ClientLost || !end.CancelSent || end.CancelErr != nil {
		t.Errorf("closed socket: end reported as %v (cancel sent %v, %v), want client_lost with a cancel", end.How, end.CancelSent, end.CancelErr)
	}
}

func (f *fixture) testServerClosed(t *testing.T) {
	t.Parallel()
	e := startEndpoint(t, f.upstream(t, f.tlsPG, connection.SSLRequire, "127.0.0.1", true), endpointOptions{})
	conn, err := e.connect(t, scramUser, scramPassword, "sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	pid := conn.PgConn().PID()
	super := superConn(t, f.tlsPG)
	if _, err := super.Exec(context.Background(), "SELECT pg_terminate_backend($1)", int64(pid)); err != nil {
		t.Fatal(err)
	}
	if end := e.rec.waitClosed(t, pid); end.How != relay.ServerClosed || end.CancelSent {
		t.Errorf("end reported as %v (cancel sent %v), want server_closed", end.How, end.CancelSent)
	}
}

func (f *fixture) testStartupTimeout(t *testing.T) {
	t.Parallel()
	e := startEndpoint(t, f.upstream(t, f.tlsPG, connection.SSLRequire, "127.0.0.1", false), endpointOptions{startupTimeout: 300 * time.Millisecond})
	c, err := net.Dial("tcp", e.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Half a startup packet, then nothing.
	if _, err := c.Write([]byte{0, 0, 0, 40, 0, 3}); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("Read = %v, want EOF once the startup timed out", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("closed after %v with a 300ms startup time-out", took)
	}
}

func (f *fixture) testRegistry(t *testing.T) {
	t.Parallel()
	up := f.upstream(t, f.tlsPG, connection.SSLRequire, "127.0.0.1", true)
	reg := relay.NewRegistry(up)
	e := startEndpoint(t, up, endpointOptions{observer: reg})
	var conns []*pgx.Conn
	errs := make(chan error, 2)
	for range 2 {
		conn, err := e.connect(t, scramUser, scramPassword, "sslmode=disable")
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		go func() {
			_, err := conn.Exec(context.Background(), "SELECT pg_sleep(300)")
			errs <- err
		}()
	}
	super := superConn(t, f.tlsPG)
	waitFor(t, 15*time.Second, "both statements to run", func() bool {
		var n int
		_ = super.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(300)' AND state = 'active'").Scan(&n)
		return n == 2
	})
	if got := len(reg.Backends()); got != 2 {
		t.Fatalf("registry holds %d backends, want 2", got)
	}
	res := reg.CancelAll(context.Background())
	if len(res) != 2 {
		t.Fatalf("CancelAll returned %d results, want 2", len(res))
	}
	for _, r := range res {
		if r.Err != nil {
			t.Errorf("cancel %v: %v", r.Backend, r.Err)
		}
	}
	for range 2 {
		select {
		case err := <-errs:
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "57014" {
				t.Errorf("statement ended with %v, want query_canceled (57014)", err)
			}
		case <-time.After(goneWithin):
			t.Fatal("statement still running after CancelAll")
		}
	}
	for _, c := range conns {
		_ = c.Close(context.Background())
	}
	waitFor(t, goneWithin, "the registry to empty", func() bool { return len(reg.Backends()) == 0 })
}

// testLocalVerifyFull checks that a client that trusts the endpoint's
// certificate can verify it, with psql (libpq) and pgx.
func (f *fixture) testLocalVerifyFull(t *testing.T) {
	t.Parallel()
	e := startEndpoint(t, f.upstream(t, f.tlsPG, connection.SSLRequire, "127.0.0.1", false), endpointOptions{})
	root := t.TempDir() + "/local.crt"
	if err := os.WriteFile(root, e.cert, 0o600); err != nil {
		t.Fatal(err)
	}
	cs := e.connString(scramUser, scramPassword, "sslmode=verify-full channel_binding=disable sslrootcert="+root)
	if _, err := e.connect(t, scramUser, scramPassword, "sslmode=verify-full channel_binding=disable sslrootcert="+root); err != nil {
		t.Errorf("pgx verify-full against the local certificate: %v", err)
	}
	out, err := exec.Command("psql", "-X", "-Atc", "select 1", cs).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "1" {
		t.Errorf("psql verify-full against the local certificate: %v: %s", err, out)
	}
}

// testAllowRetriesWithTLS: with sslmode allow the relay tries without TLS
// first and, when the server refuses that, with TLS, before the client
// has heard anything; with disable the server's refusal reaches the
// client as it is.
func (f *fixture) testAllowRetriesWithTLS(t *testing.T) {
	t.Parallel()
	e := startEndpoint(t, f.upstream(t, f.tlsPG, connection.SSLAllow, "127.0.0.1", true), endpointOptions{})
	conn, err := e.connect(t, sslOnlyUser, sslOnlyPassword, "sslmode=disable")
	if err != nil {
		t.Fatalf("allow, server refusing plain text: %v", err)
	}
	var ssl bool
	if err := conn.QueryRow(context.Background(), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil || !ssl {
		t.Errorf("server-side ssl = %v, %v; want true", ssl, err)
	}
	e = startEndpoint(t, f.upstream(t, f.tlsPG, connection.SSLDisable, "127.0.0.1", false), endpointOptions{})
	_, err = e.connect(t, sslOnlyUser, sslOnlyPassword, "sslmode=disable")
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "28000" || !strings.Contains(pe.Message, "pg_hba.conf rejects") {
		t.Errorf("disable, server refusing plain text: %v; want the server's own error", err)
	}
}

// testNoLocalTLS: an endpoint without TLS of its own refuses a client's
// SSLRequest; clients that prefer TLS go on without.
func (f *fixture) testNoLocalTLS(t *testing.T) {
	t.Parallel()
	e := startEndpoint(t, f.upstream(t, f.tlsPG, connection.SSLRequire, "127.0.0.1", false), endpointOptions{noLocalTLS: true})
	if _, err := e.connect(t, scramUser, scramPassword, "sslmode=prefer"); err != nil {
		t.Errorf("sslmode=prefer: %v", err)
	}
	if _, err := e.connect(t, scramUser, scramPassword, "sslmode=require"); err == nil || !strings.Contains(err.Error(), "refused") && !strings.Contains(err.Error(), "SSL") {
		t.Errorf("sslmode=require against an endpoint without TLS: %v, want a refusal", err)
	}
}

// startupOf writes a protocol 3.0 StartupMessage for scramUser.
func startupOf(t *testing.T) []byte {
	t.Helper()
	b, err := (&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber,
		Parameters: map[string]string{"user": trustUser, "database": "postgres"}}).Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testGSSEncRefused: a GSSENCRequest is answered 'N', and the session goes
// on with the StartupMessage that follows.
func (f *fixture) testGSSEncRefused(t *testing.T) {
	t.Parallel()
	e := startEndpoint(t, f.upstream(t, f.tlsPG, connection.SSLRequire, "127.0.0.1", false), endpointOptions{})
	c, err := net.Dial("tcp", e.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req, _ := (&pgproto3.GSSEncRequest{}).Encode(nil)
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	answer := make([]byte, 1)
	if _, err := io.ReadFull(c, answer); err != nil || answer[0] != 'N' {
		t.Fatalf("GSSENCRequest answered %q, %v; want N", answer, err)
	}
	if _, err := c.Write(startupOf(t)); err != nil {
		t.Fatal(err)
	}
	fe := pgproto3.NewFrontend(c, c)
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("after the refused GSSENCRequest: %v", err)
		}
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			return
		}
		if e, ok := msg.(*pgproto3.ErrorResponse); ok {
			t.Fatalf("after the refused GSSENCRequest: %s", e.Message)
		}
	}
}

// testDataAfterSSLRequest: bytes sent in the clear right behind an
// SSLRequest are not taken as part of the TLS session: the endpoint
// hangs up instead of answering.
func (f *fixture) testDataAfterSSLRequest(t *testing.T) {
	t.Parallel()
	e := startEndpoint(t, f.upstream(t, f.tlsPG, connection.SSLRequire, "127.0.0.1", false), endpointOptions{})
	c, err := net.Dial("tcp", e.addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	req, _ := (&pgproto3.SSLRequest{}).Encode(nil)
	if _, err := c.Write(append(req, startupOf(t)...)); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("SSLRequest with data behind it: read %d bytes, %v; want the connection closed", n, err)
	}
}

// testUpstreamLost breaks the database hop (a reset between the relay and
// the server) while a statement runs, which PostgreSQL does not notice
// while it sleeps: the session ends as upstream_lost, and the relay's
// cancel request over a new stream stops the statement.
func (f *fixture) testUpstreamLost(t *testing.T) {
	t.Parallel()
	fp := testenv.StartFaultProxy(t, f.tlsPG.Addr())
	up := f.upstream(t, f.tlsPG, connection.SSLRequire, "127.0.0.1", false)
	up.Dial = func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", fp.Addr())
	}
	e := startEndpoint(t, up, endpointOptions{})
	conn, err := e.connect(t, scramUser, scramPassword, "sslmode=disable application_name=upstream_lost")
	if err != nil {
		t.Fatal(err)
	}
	qerr := make(chan error, 1)
	go func() { _, err := conn.Exec(context.Background(), "SELECT pg_sleep(300)"); qerr <- err }()
	super := superConn(t, f.tlsPG)
	pid := activePID(t, super, "upstream_lost", nil)
	fp.CloseAll()
	select {
	case err := <-qerr:
		if err == nil {
			t.Fatal("statement succeeded after its connection broke")
		}
	case <-time.After(goneWithin):
		t.Fatal("the client was not told that its connection broke")
	}
	end := e.rec.waitClosed(t, pid)
	if end.How != relay.UpstreamLost || !end.CancelSent || end.CancelErr != nil {
		t.Errorf("end reported as %v (cancel sent %v, %v, error %v), want upstream_lost with a cancel", end.How, end.CancelSent, end.CancelErr, end.Err)
	}
	waitFor(t, goneWithin, "the statement to end", func() bool { return backendState(t, super, pid) != "active" })
}

// TestRelayRefusesClearTextUnverified: with authentication passing
// through, a server that asks for the password in clear text over a hop
// whose certificate is not verified (an impostor on the path, whatever
// certificate it holds) gets nothing, even from a client that would send
// it (libpq before 16, JDBC, asyncpg ignore require_auth); the client is
// told why. A connection whose require_auth accepts clear text passes it,
// as the user chose.
func TestRelayRefusesClearTextUnverified(t *testing.T) {
	t.Parallel()
	own := testenv.NewTLSCert(t)
	for _, tc := range []struct {
		name        string
		mode        connection.SSLMode
		requireAuth string
		impostor    func(testing.TB) *testenv.PasswordCatcher
		passes      bool
	}{
		{"disable", connection.SSLDisable, "", testenv.StartPasswordCatcher, false},
		{"require, a certificate of its own", connection.SSLRequire, "",
			func(t testing.TB) *testenv.PasswordCatcher { return testenv.StartTLSPasswordCatcher(t, own) }, false},
		{"only SCRAM accepted", connection.SSLRequire, "scram-sha-256",
			func(t testing.TB) *testenv.PasswordCatcher { return testenv.StartTLSPasswordCatcher(t, own) }, false},
		{"clear text accepted knowingly", connection.SSLRequire, "password,scram-sha-256",
			func(t testing.TB) *testenv.PasswordCatcher { return testenv.StartTLSPasswordCatcher(t, own) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			catcher := tc.impostor(t)
			spec := connection.Spec{Name: "c", Host: catcher.Host, Port: catcher.Port, SSLMode: tc.mode, RequireAuth: tc.requireAuth}
			pol, err := relay.PolicyFor(&spec)
			if err != nil {
				t.Fatal(err)
			}
			up := relay.Upstream{TLS: pol, Addr: catcher.Addr(), RequireAuth: spec.EffectiveRequireAuth(),
				Dial: func(ctx context.Context) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "tcp", catcher.Addr())
				}}
			e := startEndpoint(t, up, endpointOptions{})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			// As a client of `pgrelay proxy` may: the database's password,
			// and no require_auth of its own.
			c, err := pgconn.Connect(ctx, e.connString("u", "stored-password", "sslmode=disable"))
			if c != nil {
				_ = c.Close(ctx)
			}
			got := catcher.Received()
			if tc.passes {
				if len(got) != 1 || got[0] != "stored-password" {
					t.Fatalf("accepted knowingly, the server got %q (%v)", got, err)
				}
				return
			}
			if len(got) != 0 {
				t.Fatalf("the server got the password %d times", len(got))
			}
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "28000" || !strings.Contains(pe.Message, "pgrelay sent nothing") {
				t.Fatalf("client error: %v", err)
			}
		})
	}
}
