package tunnel_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/testenv"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// newSigner makes a fresh ed25519 client key.
func newSigner(t testing.TB) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("generate key: %v", err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatalf("signer: %v", err)
	}
	return s
}

func authorizedLine(s ssh.Signer) string {
	return string(ssh.MarshalAuthorizedKey(s.PublicKey()))
}

// bundle is a running bastion with an authorized key and a config that
// pins its host key.
type bundle struct {
	bastion *testenv.Bastion
	signer  ssh.Signer
	cfg     tunnel.Config
}

// setup authorizes a new key on the package's shared bastion for opts.
func setup(t testing.TB, opts testenv.BastionOptions) *bundle {
	t.Helper()
	return setupOn(t, testenv.SharedBastion(t, opts))
}

// setupOwn is setup on a bastion of the test's own, for tests that
// freeze, kill or re-key it.
func setupOwn(t testing.TB, opts testenv.BastionOptions) *bundle {
	t.Helper()
	return setupOn(t, testenv.StartBastion(t, opts))
}

func setupOn(t testing.TB, b *testenv.Bastion) *bundle {
	t.Helper()
	s := newSigner(t)
	b.Authorize(t, authorizedLine(s))
	return &bundle{
		bastion: b,
		signer:  s,
		cfg: tunnel.Config{
			Addr:     b.Addr(),
			User:     b.User,
			Signer:   s,
			HostKeys: []ssh.PublicKey{b.HostKey},
			Logger:   testLogger(t),
		},
	}
}

// dial opens a tunnel and closes it when the test ends.
func dial(t testing.TB, cfg tunnel.Config) *tunnel.Tunnel {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	tun, err := tunnel.Dial(ctx, cfg)
	if err != nil {
		t.Fatalf("tunnel.Dial: %v", err)
	}
	t.Cleanup(func() { _ = tun.Close() })
	return tun
}

// connectPG opens a pgx connection to pg through tun; the host name is
// passed to the bastion unresolved.
func connectPG(t testing.TB, tun *tunnel.Tunnel, pg *testenv.Postgres) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(pg.ConnString(pg.SuperUser, pg.SuperPassword, "postgres"))
	if err != nil {
		t.Fatalf("parse config: %v", err)
	}
	cfg.DialFunc = tun.DialContext
	cfg.LookupFunc = func(_ context.Context, host string) ([]string, error) { return []string{host}, nil }
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pgx connect through tunnel: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	})
	return conn
}

// startEcho runs a TCP echo server on loopback, a target behind the
// bastion.
func startEcho(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(c, c)
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// waitDone waits for the tunnel to drop and returns how long it took.
func waitDone(t testing.TB, tun *tunnel.Tunnel, start time.Time, limit time.Duration) time.Duration {
	t.Helper()
	select {
	case <-tun.Done():
		return time.Since(start)
	case <-time.After(limit):
		t.Fatalf("tunnel still up %v after the fault (Err=%v)", limit, tun.Err())
		return 0
	}
}

func asDropped(t testing.TB, err error) *tunnel.DroppedError {
	t.Helper()
	var d *tunnel.DroppedError
	if !errors.As(err, &d) {
		t.Fatalf("error %v (%T) is not a *tunnel.DroppedError", err, err)
	}
	return d
}

// testLogger sends the tunnel's logs to the test log.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}
