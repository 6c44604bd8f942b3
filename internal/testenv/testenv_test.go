package testenv_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/testenv"
)

func connect(t *testing.T, connString string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, connString)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func queryString(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var s string
	if err := conn.QueryRow(ctx, sql, args...).Scan(&s); err != nil {
		t.Fatalf("query %q: %v", sql, err)
	}
	return s
}

func superConn(t *testing.T, pg *testenv.Postgres) *pgx.Conn {
	t.Helper()
	return connect(t, pg.ConnString(pg.SuperUser, pg.SuperPassword, "postgres"))
}

func pgErrorCode(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

func TestPostgresPlain(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	if pg.CAFile != "" || pg.CAPEM != nil {
		t.Errorf("CA without TLS: %q", pg.CAFile)
	}
	if pg.Addr() != net.JoinHostPort("127.0.0.1", strconv.Itoa(pg.Port)) {
		t.Errorf("Addr() = %q", pg.Addr())
	}

	// Awkward names and a quote in the password exercise the quoting.
	pg.CreateRole(t, `app "user"`, `pa'ss\word`)
	pg.CreateDatabase(t, "app db", `app "user"`)
	pg.Exec(t, "CREATE TABLE t (n int)")
	pg.Exec(t, "INSERT INTO t VALUES ($1)", 42)

	app := connect(t, pg.ConnString(`app "user"`, `pa'ss\word`, "app db"))
	if got := queryString(t, app, "SELECT current_user || '/' || current_database()"); got != `app "user"/app db` {
		t.Errorf("current_user/database = %q", got)
	}
	if got := queryString(t, app, "SELECT coalesce((SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()), 'none')"); got != "false" {
		t.Errorf("ssl = %s, want false", got)
	}

	super := superConn(t, pg)
	if got := queryString(t, super, "SELECT n::text FROM t"); got != "42" {
		t.Errorf("Exec with args stored %q", got)
	}
	if got := queryString(t, super, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", `app "user"`); !strings.HasPrefix(got, "SCRAM-SHA-256$") {
		t.Errorf("password not stored as SCRAM: %.14q", got)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := pgx.Connect(ctx, pg.ConnString(`app "user"`, "wrong", "app db"))
	if code := pgErrorCode(err); code != "28P01" {
		t.Errorf("wrong password: got %v (SQLSTATE %q), want 28P01", err, code)
	}
}

func TestPostgresTLS(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{TLS: true, MaxConnections: 20})
	if pg.CAFile == "" || !strings.Contains(string(pg.CAPEM), "BEGIN CERTIFICATE") {
		t.Fatalf("no CA: file %q", pg.CAFile)
	}
	super := superConn(t, pg) // verify-full against CAFile
	if got := queryString(t, super, "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"); got != "true" {
		t.Errorf("ssl = %s, want true", got)
	}
	if got := queryString(t, super, "SHOW max_connections"); got != "20" {
		t.Errorf("max_connections = %s", got)
	}

	// The certificate also names "localhost".
	u, err := url.Parse(pg.ConnString(pg.SuperUser, pg.SuperPassword, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	u.Host = net.JoinHostPort("localhost", strconv.Itoa(pg.Port))
	connect(t, u.String())

	// Without SSLOnly, plain connections are still accepted.
	plain := strings.Replace(pg.ConnString(pg.SuperUser, pg.SuperPassword, "postgres"), "sslmode=verify-full", "sslmode=disable", 1)
	connect(t, plain)
}

func TestPostgresSSLOnly(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{SSLOnly: true})
	pg.CreateRole(t, "app", "secret")

	plain := strings.Replace(pg.ConnString("app", "secret", "postgres"), "sslmode=verify-full", "sslmode=disable", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := pgx.Connect(ctx, plain)
	if code := pgErrorCode(err); code != "28000" {
		t.Fatalf("plain connection: got %v (SQLSTATE %q), want 28000", err, code)
	}

	app := connect(t, pg.ConnString("app", "secret", "postgres"))
	if got := queryString(t, app, "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()"); got != "true" {
		t.Errorf("ssl = %s, want true", got)
	}
}

func TestPostgresRestartStopStart(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	port := pg.Port
	pg.Exec(t, "CREATE TABLE kept (s text)")
	pg.Exec(t, "INSERT INTO kept VALUES ('survives')")
	before := superConn(t, pg)

	pg.Restart(t)
	if pg.Port != port {
		t.Errorf("port changed from %d to %d", port, pg.Port)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := before.Ping(ctx); err == nil {
		t.Error("connection from before Restart still works")
	}
	if got := queryString(t, superConn(t, pg), "SELECT s FROM kept"); got != "survives" {
		t.Errorf("after restart: %q", got)
	}

	pg.Stop(t)
	if _, err := pgx.Connect(ctx, pg.ConnString(pg.SuperUser, pg.SuperPassword, "postgres")); err == nil {
		t.Error("connected to a stopped server")
	}
	pg.Start(t)
	if got := queryString(t, superConn(t, pg), "SELECT s FROM kept"); got != "survives" {
		t.Errorf("after stop/start: %q", got)
	}
}

// clientKey makes an ed25519 key and its authorized_keys line.
func clientKey(t *testing.T) (ssh.Signer, string) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return signer, string(ssh.MarshalAuthorizedKey(signer.PublicKey()))
}

func sshDial(b *testenv.Bastion, signer ssh.Signer, hostKey ssh.PublicKey) (*ssh.Client, error) {
	return ssh.Dial("tcp", b.Addr(), &ssh.ClientConfig{
		User:            b.User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback: ssh.FixedHostKey(hostKey),
		Timeout:         5 * time.Second,
	})
}

// login starts nothing: it logs in to b with a freshly authorized key.
func login(t *testing.T, b *testenv.Bastion) *ssh.Client {
	t.Helper()
	signer, line := clientKey(t)
	b.Authorize(t, line)
	client, err := sshDial(b, signer, b.HostKey)
	if err != nil {
		t.Fatalf("ssh login to bastion: %v\n%s", err, b.LogTail())
	}
	t.Cleanup(func() { _ = client.Close() })
	return client
}

func keepalive(client *ssh.Client, timeout time.Duration) error {
	answered := make(chan error, 1)
	go func() {
		_, _, err := client.SendRequest("keepalive@openssh.com", true, nil)
		answered <- err
	}()
	select {
	case err := <-answered:
		return err
	case <-time.After(timeout):
		return errors.New("keepalive not answered")
	}
}

func TestBastion(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})

	t.Run("TunnelToPostgres", func(t *testing.T) {
		t.Parallel()
		b := testenv.StartBastion(t, testenv.BastionOptions{})
		client := login(t, b)
		cfg, err := pgx.ParseConfig(pg.ConnString(pg.SuperUser, pg.SuperPassword, "postgres"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.DialFunc = func(ctx context.Context, _, addr string) (net.Conn, error) {
			return client.DialContext(ctx, "tcp", addr)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("pgx over SSH: %v\n%s", err, b.LogTail())
		}
		defer func() { _ = conn.Close(context.Background()) }()
		// The server sees the connection coming from the bastion's side.
		if got := queryString(t, conn, "SELECT 'via ' || inet_client_addr()::text"); got != "via 127.0.0.1/32" {
			t.Errorf("got %q", got)
		}
	})

	t.Run("UnauthorizedKeyRefused", func(t *testing.T) {
		t.Parallel()
		b := testenv.StartBastion(t, testenv.BastionOptions{})
		_, line := clientKey(t)
		b.Authorize(t, line)
		stranger, _ := clientKey(t)
		client, err := sshDial(b, stranger, b.HostKey)
		if err == nil {
			_ = client.Close()
			t.Fatal("login with a key that was never authorized succeeded")
		}
		if !strings.Contains(err.Error(), "unable to authenticate") {
			t.Errorf("unexpected error: %v", err)
		}
	})

	t.Run("RotateHostKey", func(t *testing.T) {
		t.Parallel()
		b := testenv.StartBastion(t, testenv.BastionOptions{})
		signer, line := clientKey(t)
		b.Authorize(t, line)
		established, err := sshDial(b, signer, b.HostKey)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = established.Close() }()
		old, port := b.HostKey, b.Port

		b.RotateHostKey(t)
		if string(b.HostKey.Marshal()) == string(old.Marshal()) || b.Port != port {
			t.Fatalf("key not rotated or port changed (%d -> %d)", port, b.Port)
		}
		if c, err := sshDial(b, signer, old); err == nil {
			_ = c.Close()
			t.Error("the old host key was still accepted")
		}
		c, err := sshDial(b, signer, b.HostKey)
		if err != nil {
			t.Fatalf("login with the new host key: %v", err)
		}
		_ = c.Close()
		if err := keepalive(established, 5*time.Second); err != nil {
			t.Errorf("connection from before the rotation: %v", err)
		}
	})

	t.Run("FreezeThaw", func(t *testing.T) {
		t.Parallel()
		b := testenv.StartBastion(t, testenv.BastionOptions{})
		client := login(t, b)
		if err := keepalive(client, 5*time.Second); err != nil {
			t.Fatalf("before freeze: %v", err)
		}
		b.Freeze(t)
		answered := make(chan error, 1)
		go func() {
			_, _, err := client.SendRequest("keepalive@openssh.com", true, nil)
			answered <- err
		}()
		select {
		case err := <-answered:
			b.Thaw(t)
			t.Fatalf("keepalive answered by a frozen bastion (err %v)", err)
		case <-time.After(time.Second):
		}
		b.Thaw(t)
		select {
		case err := <-answered:
			if err != nil {
				t.Errorf("keepalive after thaw: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("keepalive not answered after thaw")
		}
	})

	t.Run("KillAndStart", func(t *testing.T) {
		t.Parallel()
		b := testenv.StartBastion(t, testenv.BastionOptions{})
		signer, line := clientKey(t)
		b.Authorize(t, line)
		client, err := sshDial(b, signer, b.HostKey)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = client.Close() }()
		b.Freeze(t) // Kill must work on frozen processes too
		b.Kill(t)
		waited := make(chan error, 1)
		go func() { waited <- client.Wait() }()
		select {
		case <-waited:
		case <-time.After(5 * time.Second):
			t.Fatal("client.Wait did not return after Kill")
		}
		if c, err := sshDial(b, signer, b.HostKey); err == nil {
			_ = c.Close()
			t.Fatal("login to a killed bastion succeeded")
		}
		b.Start(t)
		c, err := sshDial(b, signer, b.HostKey)
		if err != nil {
			t.Fatalf("login after Start: %v", err)
		}
		_ = c.Close()
	})

	t.Run("DisableForwarding", func(t *testing.T) {
		t.Parallel()
		b := testenv.StartBastion(t, testenv.BastionOptions{DisableForwarding: true})
		client := login(t, b)
		if c, err := client.Dial("tcp", pg.Addr()); err == nil {
			_ = c.Close()
			t.Fatal("forwarding worked with AllowTcpForwarding no")
		}
	})

	t.Run("PermitOpenAndOptions", func(t *testing.T) {
		t.Parallel()
		b := testenv.StartBastion(t, testenv.BastionOptions{
			PermitOpen:          []string{pg.Addr()},
			ClientAliveInterval: 1500 * time.Millisecond,
			ClientAliveCountMax: 2,
			MaxStartups:         "1000:30:1000",
			MaxSessions:         5,
		})
		client := login(t, b)
		c, err := client.Dial("tcp", pg.Addr())
		if err != nil {
			t.Fatalf("permitted destination: %v", err)
		}
		_ = c.Close()
		other := net.JoinHostPort("127.0.0.1", strconv.Itoa(testenv.FreePort(t)))
		if c, err := client.Dial("tcp", other); err == nil {
			_ = c.Close()
			t.Fatal("forwarding to a destination outside PermitOpen worked")
		} else if !strings.Contains(err.Error(), "prohibited") {
			t.Errorf("unexpected error: %v", err)
		}
	})
}

// startEcho runs a TCP echo server for the test's lifetime.
func startEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(conn net.Conn, msg string, timeout time.Duration) (string, error) {
	if _, err := conn.Write([]byte(msg)); err != nil {
		return "", err
	}
	return readN(conn, len(msg), timeout)
}

func readN(conn net.Conn, n int, timeout time.Duration) (string, error) {
	if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	buf := make([]byte, n)
	_, err := io.ReadFull(conn, buf)
	return string(buf), err
}

func TestFaultProxy(t *testing.T) {
	t.Parallel()
	p := testenv.StartFaultProxy(t, startEcho(t))
	if p.Host() != "127.0.0.1" || p.Addr() != net.JoinHostPort(p.Host(), strconv.Itoa(p.Port())) {
		t.Fatalf("Addr %q Host %q Port %d", p.Addr(), p.Host(), p.Port())
	}
	dial := func() net.Conn {
		c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}

	conn := dial()
	if got, err := roundTrip(conn, "hello", 5*time.Second); err != nil || got != "hello" {
		t.Fatalf("echo: %q, %v", got, err)
	}

	p.Freeze()
	late := dial() // accepted while frozen
	if _, err := roundTrip(conn, "frozen", 300*time.Millisecond); err == nil {
		t.Fatal("bytes went through a frozen proxy")
	}
	if _, err := roundTrip(late, "late", 300*time.Millisecond); err == nil {
		t.Fatal("a connection accepted while frozen forwarded bytes")
	}
	p.Thaw()
	if got, err := readN(conn, len("frozen"), 5*time.Second); err != nil || got != "frozen" {
		t.Fatalf("after thaw: %q, %v", got, err)
	}
	if got, err := readN(late, len("late"), 5*time.Second); err != nil || got != "late" {
		t.Fatalf("late connection after thaw: %q, %v", got, err)
	}

	p.CloseAll()
	for _, c := range []net.Conn{conn, late} {
		if _, err := readN(c, 1, 5*time.Second); err == nil || errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			t.Fatalf("after CloseAll: read error %v, want a closed connection", err)
		}
	}
	if got, err := roundTrip(dial(), "again", 5*time.Second); err != nil || got != "again" {
		t.Fatalf("new connection after CloseAll: %q, %v", got, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestFaultProxyToPostgres(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	p := testenv.StartFaultProxy(t, pg.Addr())
	cfg, err := pgx.ParseConfig(pg.ConnString(pg.SuperUser, pg.SuperPassword, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Host, cfg.Port = p.Host(), uint16(p.Port())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pgx through the proxy: %v", err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if got := queryString(t, conn, "SELECT 'ok'"); got != "ok" {
		t.Fatalf("got %q", got)
	}
	p.Freeze()
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	if err := conn.Ping(short); err == nil {
		t.Fatal("ping through a frozen proxy succeeded")
	}
	p.Thaw()
	p.CloseAll()
}
