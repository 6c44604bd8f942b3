package proxy_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/proxy"
	"github.com/pgrelay/pgrelay/internal/sockio"
	"github.com/pgrelay/pgrelay/internal/testenv"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// serve starts p.Serve and returns a channel with its result.
func serve(t *testing.T, ctx context.Context, p *proxy.Proxy) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		done <- p.Serve(ctx)
		close(finished)
	}()
	t.Cleanup(func() {
		_ = p.Close()
		select {
		case <-finished:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return done
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	return ln
}

// tcpDialer dials addr directly.
func tcpDialer(addr string) proxy.DialFunc {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

// connectVia opens a pgx connection to pg through the proxy's address.
func connectVia(t *testing.T, p *proxy.Proxy, pg *testenv.Postgres) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(pg.ConnString(pg.SuperUser, pg.SuperPassword, "postgres"))
	if err != nil {
		t.Fatalf("parse config: %v", err)
	}
	addr := p.Addr().(*net.TCPAddr)
	cfg.Host, cfg.Port = addr.IP.String(), uint16(addr.Port)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pgx connect through proxy: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func waitActive(t *testing.T, p *proxy.Proxy, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.Active() != want {
		if time.Now().After(deadline) {
			t.Fatalf("Active() = %d, want %d", p.Active(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}

func TestRoundTripToPostgresViaTunnel(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	b := testenv.SharedBastion(t, testenv.BastionOptions{})
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	tun, err := tunnel.Dial(context.Background(), tunnel.Config{
		Addr: b.Addr(), User: b.User, Signer: signer, HostKeys: []ssh.PublicKey{b.HostKey},
	})
	if err != nil {
		t.Fatalf("tunnel.Dial: %v", err)
	}
	t.Cleanup(func() { _ = tun.Close() })

	p := proxy.New(listen(t), func(ctx context.Context) (net.Conn, error) {
		return tun.DialContext(ctx, "tcp", pg.Addr())
	}, testLogger(t))
	serve(t, context.Background(), p)

	conns := []*pgx.Conn{connectVia(t, p, pg), connectVia(t, p, pg)}
	for i, conn := range conns {
		var got string
		if err := conn.QueryRow(context.Background(), "SELECT repeat('x', $1::int)", 100000+i).Scan(&got); err != nil {
			t.Fatalf("query through proxy and tunnel: %v", err)
		}
		if len(got) != 100000+i {
			t.Errorf("got %d bytes, want %d", len(got), 100000+i)
		}
	}
	waitActive(t, p, 2)
	if got := tun.Stats().OpenChannels; got != 2 {
		t.Errorf("tunnel channels = %d, want 2", got)
	}

	// A client that leaves closes its session and its channel.
	_ = conns[0].Close(context.Background())
	waitActive(t, p, 1)
	deadline := time.Now().Add(5 * time.Second)
	for tun.Stats().OpenChannels != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := tun.Stats().OpenChannels; got != 1 {
		t.Errorf("tunnel channels after a client left = %d, want 1", got)
	}
}

func TestCloseWhileActive(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	p := proxy.New(listen(t), tcpDialer(pg.Addr()), testLogger(t))
	served := serve(t, context.Background(), p)
	conn := connectVia(t, p, pg)
	waitActive(t, p, 1)

	queryErr := make(chan error, 1)
	go func() {
		var s string
		queryErr <- conn.QueryRow(context.Background(), "SELECT pg_sleep($1)::text -- "+t.Name(), 30).Scan(&s)
	}()
	pg.WaitActive(t, "-- "+t.Name(), 10*time.Second) // of this test: the cluster is shared

	start := time.Now()
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Close took %v with an active session", took)
	}
	if p.Active() != 0 {
		t.Errorf("Active() = %d after Close", p.Active())
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after Close = %v, want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
	select {
	case err := <-queryErr:
		if err == nil {
			t.Error("query survived Close")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("query still running after Close")
	}
	if c, err := net.DialTimeout("tcp", p.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("listener still accepting after Close")
	}
}

func TestServeReturnsOnContextCancel(t *testing.T) {
	t.Parallel()
	upstream := startEcho(t)
	p := proxy.New(listen(t), tcpDialer(upstream), nil)
	ctx, cancel := context.WithCancel(context.Background())
	served := serve(t, ctx, p)

	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatalf("dial proxy: %v", err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo through proxy = %q, %v", buf, err)
	}

	cancel()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after cancel = %v, want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Serve did not return after its context was cancelled")
	}
	// The active session was closed too.
	if _, err := c.Read(buf); err == nil {
		t.Error("session still open after cancel")
	}
	if err := p.Serve(context.Background()); err == nil {
		t.Error("second Serve returned nil")
	}
}

// TestSocketsDirect: the accepted client and a TCP upstream are read and
// written directly (internal/sockio) on Linux, which keeps a proxy woken
// per round trip from also waking the Go runtime's sysmon thread; the
// session works as any other.
func TestSocketsDirect(t *testing.T) {
	t.Parallel()
	upstream := startEcho(t)
	type kinds struct{ client, up bool }
	seen := make(chan kinds, 1)
	hs := func(ctx context.Context, client net.Conn, dial proxy.DialFunc) (*proxy.Splice, error) {
		up, err := dial(ctx)
		if err != nil {
			return nil, err
		}
		seen <- kinds{sockio.Direct(client), sockio.Direct(up)}
		return &proxy.Splice{Client: client, Upstream: up}, nil
	}
	p := proxy.New(listen(t), tcpDialer(upstream), testLogger(t), proxy.WithHandshake(hs))
	serve(t, context.Background(), p)

	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "ping"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo = %q, %v", buf, err)
	}
	got := <-seen
	want := runtime.GOOS == "linux"
	if got.client != want || got.up != want {
		t.Errorf("direct client, upstream = %v, %v; want %v, %v on %s", got.client, got.up, want, want, runtime.GOOS)
	}
}

func TestHalfClose(t *testing.T) {
	t.Parallel()
	upstream := startEcho(t)
	p := proxy.New(listen(t), tcpDialer(upstream), testLogger(t))
	serve(t, context.Background(), p)

	c, err := net.Dial("tcp", p.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := strings.Repeat("0123456789", 50000)
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	// Our EOF travels to the echo server, which finishes echoing and closes;
	// everything written arrives before EOF.
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(got) != msg {
		t.Errorf("echo returned %d bytes, want %d", len(got), len(msg))
	}
	waitActive(t, p, 0)
}

func TestDialFailureAndTimeout(t *testing.T) {
	t.Parallel()
	refused := errors.New("no upstream")
	var mu sync.Mutex
	var calls int
	var sawDeadline bool
	p := proxy.New(listen(t), func(ctx context.Context) (net.Conn, error) {
		mu.Lock()
		calls++
		n := calls
		_, sawDeadline = ctx.Deadline()
		mu.Unlock()
		if n == 1 {
			return nil, refused
		}
		<-ctx.Done() // hangs until the proxy's dial time-out
		return nil, ctx.Err()
	}, testLogger(t), proxy.WithDialTimeout(200*time.Millisecond))
	serve(t, context.Background(), p)

	for i, wantMin := range []time.Duration{0, 150 * time.Millisecond} {
		c, err := net.Dial("tcp", p.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
		took := time.Since(start)
		c.Close()
		if err != io.EOF {
			t.Errorf("client %d: Read = %v, want EOF when the upstream dial fails", i, err)
		}
		if took < wantMin || took > 2*time.Second {
			t.Errorf("client %d closed after %v", i, took)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !sawDeadline {
		t.Error("dial context had no deadline")
	}
	waitActive(t, p, 0)
}

// startEcho runs a TCP echo server that half-closes after echoing.
func startEcho(t *testing.T) string {
	t.Helper()
	ln := listen(t)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// TestStopAccepting: after StopAccepting the listener refuses new clients
// while the open session goes on working; Close then ends it and Serve
// returns.
func TestStopAccepting(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	p := proxy.New(listen(t), tcpDialer(pg.Addr()), testLogger(t))
	served := serve(t, context.Background(), p)
	conn := connectVia(t, p, pg)
	waitActive(t, p, 1)
	if err := p.StopAccepting(); err != nil {
		t.Fatalf("StopAccepting: %v", err)
	}
	if err := p.StopAccepting(); err != nil {
		t.Fatalf("StopAccepting again: %v", err)
	}
	if c, err := net.DialTimeout("tcp", p.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Fatal("listener still accepting after StopAccepting")
	}
	var one int
	if err := conn.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("the open session after StopAccepting: %d, %v", one, err)
	}
	select {
	case err := <-served:
		t.Fatalf("Serve returned before Close: %v", err)
	default:
	}
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after Close = %v, want nil", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Serve did not return after Close")
	}
	if p.Active() != 0 {
		t.Errorf("Active() = %d after Close", p.Active())
	}
}

// toldErr is a handshake error whose client was told why (a session the
// server refused).
type toldErr struct{}

func (toldErr) Error() string    { return "the server refused the session" }
func (toldErr) ClientTold() bool { return true }

// TestHandshakeErrorLevels: a session start that failed with an error the
// client was told (the server refused it) is logged at info level; any
// other failure stays a warning.
func TestHandshakeErrorLevels(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var buf strings.Builder
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	fail := make(chan error, 1)
	hs := func(ctx context.Context, client net.Conn, dial proxy.DialFunc) (*proxy.Splice, error) {
		return nil, <-fail
	}
	p := proxy.New(listen(t), tcpDialer(startEcho(t)), logger, proxy.WithHandshake(hs))
	serve(t, context.Background(), p)
	for _, tc := range []struct {
		err         error
		level, want string
	}{
		{fmt.Errorf("relay: client: %w", toldErr{}), "INFO", `error="relay: client: the server refused the session"`},
		{errors.New("relay: client: read from the server: EOF"), "WARN", `error="relay: client: read from the server: EOF"`},
	} {
		fail <- tc.err
		c, err := net.Dial("tcp", p.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, _ = c.Read(make([]byte, 1)) // the proxy closes it
		_ = c.Close()
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			logged := buf.String()
			mu.Unlock()
			i := strings.Index(logged, tc.want)
			if i >= 0 {
				line := logged[strings.LastIndex(logged[:i], "\n")+1 : i]
				if !strings.Contains(line, "level="+tc.level+` msg="proxy session start failed"`) {
					t.Errorf("want level %s: %s", tc.level, line)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("log lacks %s:\n%s", tc.want, logged)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// lockedWriter writes to w under mu.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
