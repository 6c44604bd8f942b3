package relay_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/proxy"
	"github.com/pgrelay/pgrelay/internal/relay"
	"github.com/pgrelay/pgrelay/internal/testenv"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// TestCloseStopsCancelRetries: a session lost with its tunnel (the bastion
// went silent) has its cancel request sent again for CancelRetryFor; the
// relay's Close makes one last attempt and ends the retries, logging the
// backend whose statement may still run (by PID, never its key). The
// retries used to go on after Close, dialling for ten minutes.
func TestCloseStopsCancelRetries(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	b := testenv.SharedBastion(t, testenv.BastionOptions{})
	fp := testenv.StartFaultProxy(t, b.Addr())
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, string(ssh.MarshalAuthorizedKey(signer.PublicKey())))
	ctx := context.Background()
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	tun, err := tunnel.Dial(dctx, tunnel.Config{Addr: fp.Addr(), User: b.User, Signer: signer, HostKeys: []ssh.PublicKey{b.HostKey},
		KeepaliveInterval: 200 * time.Millisecond, KeepaliveCountMax: 3})
	if err != nil {
		t.Fatalf("tunnel.Dial: %v", err)
	}
	t.Cleanup(func() { _ = tun.Close() })

	spec := connection.Spec{Name: "test", Host: pg.Host, Port: pg.Port, SSLMode: connection.SSLDisable}
	pol, err := relay.PolicyFor(&spec)
	if err != nil {
		t.Fatal(err)
	}
	dial := func(ctx context.Context) (net.Conn, error) { return tun.DialContext(ctx, "tcp", pg.Addr()) }
	up := relay.Upstream{Dial: dial, TLS: pol, Addr: pg.Addr(), RequireAuth: spec.EffectiveRequireAuth()}
	logs := &testenv.LogBuffer{}
	rec := newRecorder()
	rl := relay.New(relay.Config{Upstream: up, Observer: rec, CancelRetryFor: 10 * time.Minute,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	px := proxy.New(ln, dial, testLogger(t), proxy.WithHandshake(rl.Handshake))
	served := make(chan struct{})
	go func() { defer close(served); _ = px.Serve(ctx) }()
	t.Cleanup(func() {
		_ = px.Close()
		<-served
		_ = rl.Close()
		t.Logf("relay log:\n%s", logs)
	})

	super := superConn(t, pg)
	app := "close-retries-" + strconv.Itoa(int(time.Now().UnixNano()%1e9))
	t.Cleanup(func() {
		_, _ = super.Exec(context.Background(), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1", app)
	})
	cctx, ccancel := context.WithTimeout(ctx, 15*time.Second)
	defer ccancel()
	conn, err := pgx.Connect(cctx, fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable&application_name=%s",
		db.User, db.Password, ln.Addr(), db.Name, app))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	go func() { _, _ = conn.Exec(context.Background(), "SELECT pg_sleep(300)") }()
	pid := activePID(t, super, app, nil)

	// The bastion goes silent: the tunnel's keepalives drop it, the
	// session with it, and its cancel request cannot go.
	fp.Freeze()
	defer fp.Thaw()
	waitFor(t, 30*time.Second, "the session's cancel request to be retried", func() bool { return rl.PendingCancels() == 1 })
	if end := rec.waitClosed(t, pid); end.How != relay.UpstreamLost || end.CancelErr == nil {
		t.Fatalf("end reported as %v (cancel error %v), want upstream_lost with a failed cancel", end.How, end.CancelErr)
	}

	if err := px.Close(); err != nil {
		t.Fatal(err)
	}
	cerr := rl.Close()
	if n := rl.PendingCancels(); n != 0 {
		t.Fatalf("%d cancel requests still being retried after Close", n)
	}
	if cerr == nil || !strings.Contains(cerr.Error(), "pid "+strconv.Itoa(int(pid))) {
		t.Fatalf("Close returned %v, want the undelivered cancel request of backend pid %d", cerr, pid)
	}
	log := logs.String()
	if !strings.Contains(log, "closed before the cancel request") || !strings.Contains(log, "backend.pid="+strconv.Itoa(int(pid))) {
		t.Fatalf("no warning naming backend pid %d for the undelivered cancel request:\n%s", pid, log)
	}
	if backendState(t, super, pid) != "active" {
		t.Fatal("the statement stopped while the bastion was silent: the test proves nothing")
	}
}
