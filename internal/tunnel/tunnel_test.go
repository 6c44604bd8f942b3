package tunnel_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/testenv"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

func TestQueryThroughTunnel(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	b := setup(t, testenv.BastionOptions{})
	tun := dial(t, b.cfg)

	if got, want := ssh.FingerprintSHA256(tun.HostKey()), ssh.FingerprintSHA256(b.bastion.HostKey); got != want {
		t.Errorf("HostKey() = %s, want %s", got, want)
	}
	// The bastion's socket is read and written directly (internal/sockio)
	// on Linux, so a tunnel woken per round trip does not also wake the Go
	// runtime's sysmon thread (bench: proxy CPU per pgbench transaction).
	if want := runtime.GOOS == "linux"; tunnel.TransportDirect(tun) != want {
		t.Errorf("TransportDirect = %v, want %v on %s", !want, want, runtime.GOOS)
	}

	// Several database connections share the one SSH connection.
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		conn := connectPG(t, tun, pg)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var got int
			if err := conn.QueryRow(ctx, "SELECT $1::int + 1", i).Scan(&got); err != nil {
				errs <- err
				return
			}
			if got != i+1 {
				errs <- fmt.Errorf("query %d returned %d", i, got)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := tun.Stats().OpenChannels; got != n {
		t.Errorf("Stats().OpenChannels = %d, want %d", got, n)
	}
	if tun.Err() != nil {
		t.Errorf("Err() = %v while up", tun.Err())
	}
}

func TestQueryCancelThroughTunnel(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	b := setup(t, testenv.BastionOptions{})
	tun := dial(t, b.cfg)
	conn := connectPG(t, tun, pg)

	// pgx interrupts a running query by setting a deadline on the net.Conn
	// (and sends a cancel request over a second channel).
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := conn.Exec(ctx, "SELECT pg_sleep(30)")
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("pg_sleep(30) with a 300ms context succeeded")
	}
	if elapsed > 5*time.Second {
		t.Errorf("cancelled query returned after %v, want well under 5s", elapsed)
	}
	if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "canceling statement") {
		t.Errorf("cancelled query error = %v, want a deadline or cancel error", err)
	}
	if tun.Err() != nil {
		t.Errorf("tunnel dropped by a query cancel: %v", tun.Err())
	}
	// The tunnel still serves new connections.
	conn2 := connectPG(t, tun, pg)
	var one int
	if err := conn2.QueryRow(context.Background(), "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Errorf("query after cancel: %d, %v", one, err)
	}
}

func TestConnDeadlines(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	b := setup(t, testenv.BastionOptions{})
	tun := dial(t, b.cfg)

	c, err := tun.DialContext(context.Background(), "tcp", echo)
	if err != nil {
		t.Fatalf("DialContext: %v", err)
	}
	defer c.Close()

	// A read with nothing to read times out at its deadline.
	buf := make([]byte, 64)
	start := time.Now()
	if err := c.SetReadDeadline(time.Now().Add(150 * time.Millisecond)); err != nil {
		t.Fatalf("SetReadDeadline: %v", err)
	}
	_, err = c.Read(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past deadline = %v, want a timeout", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
		t.Errorf("Read timed out after %v, want about 150ms", d)
	}

	// A deadline set while a Read is waiting interrupts it.
	_ = c.SetReadDeadline(time.Time{})
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(buf)
		readErr <- err
	}()
	// Let the Read start waiting (a deadline set before it starts makes it
	// time out too, so starting early cannot hide a failure, only make the
	// check weaker).
	waitBlocked(t, "tunnel.(*conn).Read(", "tunnel_test.TestConnDeadlines")
	_ = c.SetDeadline(time.Now())
	select {
	case err := <-readErr:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("interrupted Read = %v, want a timeout", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("SetDeadline did not interrupt a waiting Read")
	}

	// After clearing the deadline the connection still works.
	_ = c.SetDeadline(time.Time{})
	msg := strings.Repeat("pgrelay ", 20000) // several chunks
	go func() { _, _ = io.WriteString(c, msg) }()
	got := make([]byte, len(msg))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("echo after deadline: %v", err)
	}
	if string(got) != msg {
		t.Error("echo returned different bytes")
	}

	// CloseWrite sends EOF: the echo server closes its side and Read
	// returns io.EOF.
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	if _, err := c.Read(buf); err != io.EOF {
		t.Errorf("Read after CloseWrite = %v, want io.EOF", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := c.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close = %v, want net.ErrClosed", err)
	}
	if got := tun.Stats().OpenChannels; got != 0 {
		t.Errorf("OpenChannels after Close = %d", got)
	}
}

func TestFirstUsePinsHostKey(t *testing.T) {
	t.Parallel()
	b := setup(t, testenv.BastionOptions{})
	cfg := b.cfg
	cfg.HostKeys = nil
	var offered []ssh.PublicKey
	cfg.OnFirstUse = func(key ssh.PublicKey) error {
		offered = append(offered, key)
		return nil
	}
	tun := dial(t, cfg)
	if len(offered) != 1 {
		t.Fatalf("OnFirstUse called %d times, want 1", len(offered))
	}
	want := ssh.FingerprintSHA256(b.bastion.HostKey)
	if got := ssh.FingerprintSHA256(offered[0]); got != want {
		t.Errorf("OnFirstUse got %s, want the bastion's %s", got, want)
	}
	if got := ssh.FingerprintSHA256(tun.HostKey()); got != want {
		t.Errorf("HostKey() = %s, want %s", got, want)
	}

	// The pinned key is then enough, and OnFirstUse is not consulted.
	cfg.HostKeys = offered
	cfg.OnFirstUse = func(ssh.PublicKey) error { t.Error("OnFirstUse called with a pinned key"); return nil }
	dial(t, cfg)
}

func TestFirstUseRefused(t *testing.T) {
	t.Parallel()
	b := setup(t, testenv.BastionOptions{})
	want := ssh.FingerprintSHA256(b.bastion.HostKey)

	t.Run("no callback", func(t *testing.T) {
		cfg := b.cfg
		cfg.HostKeys = nil
		_, err := tunnel.Dial(context.Background(), cfg)
		var hk *tunnel.HostKeyMismatchError
		if !errors.As(err, &hk) {
			t.Fatalf("Dial = %v, want *HostKeyMismatchError", err)
		}
		if hk.Presented != want || len(hk.Pinned) != 0 || hk.Err != nil {
			t.Errorf("error = %+v, want presented %s and nothing pinned", hk, want)
		}
		if msg := err.Error(); !strings.Contains(msg, want) || !strings.Contains(msg, "no host key is pinned") ||
			!strings.Contains(msg, "pgrelay connection trust-host-key") {
			t.Errorf("message %q lacks the fingerprint or the fix", msg)
		}
	})
	t.Run("callback refuses", func(t *testing.T) {
		cfg := b.cfg
		cfg.HostKeys = nil
		refusal := errors.New("operator declined")
		cfg.OnFirstUse = func(ssh.PublicKey) error { return refusal }
		_, err := tunnel.Dial(context.Background(), cfg)
		var hk *tunnel.HostKeyMismatchError
		if !errors.As(err, &hk) || !errors.Is(err, refusal) {
			t.Fatalf("Dial = %v, want *HostKeyMismatchError wrapping the refusal", err)
		}
	})
}

func TestHostKeyMismatchAfterRotation(t *testing.T) {
	t.Parallel()
	b := setupOwn(t, testenv.BastionOptions{})
	old := b.bastion.HostKey
	dial(t, b.cfg) // the pinned key works before the rotation
	b.bastion.RotateHostKey(t)
	rotated := b.bastion.HostKey

	_, err := tunnel.Dial(context.Background(), b.cfg)
	var hk *tunnel.HostKeyMismatchError
	if !errors.As(err, &hk) {
		t.Fatalf("Dial after rotation = %v, want *HostKeyMismatchError", err)
	}
	oldFP, newFP := ssh.FingerprintSHA256(old), ssh.FingerprintSHA256(rotated)
	if hk.Presented != newFP || len(hk.Pinned) != 1 || hk.Pinned[0] != oldFP {
		t.Errorf("mismatch = presented %s pinned %v, want presented %s pinned [%s]", hk.Presented, hk.Pinned, newFP, oldFP)
	}
	if hk.PresentedKey == nil || ssh.FingerprintSHA256(hk.PresentedKey) != newFP {
		t.Error("PresentedKey is not the rotated key")
	}
	msg := err.Error()
	for _, s := range []string{oldFP, newFP, b.bastion.Addr(), "pgrelay connection trust-host-key <connection> --fingerprint " + newFP} {
		if !strings.Contains(msg, s) {
			t.Errorf("message %q lacks %q", msg, s)
		}
	}
	if got := hk.TrustCommand("warehouse"); got != "pgrelay connection trust-host-key warehouse --fingerprint "+newFP {
		t.Errorf("TrustCommand = %q", got)
	}

	// Any one of several pinned keys is accepted (rotation with two live keys).
	cfg := b.cfg
	cfg.HostKeys = []ssh.PublicKey{old, rotated}
	dial(t, cfg)
}

func TestUnauthorizedKey(t *testing.T) {
	t.Parallel()
	b := setup(t, testenv.BastionOptions{})
	cfg := b.cfg
	cfg.Signer = newSigner(t) // never authorized
	_, err := tunnel.Dial(context.Background(), cfg)
	var ae *tunnel.AuthError
	if !errors.As(err, &ae) {
		t.Fatalf("Dial = %v (%T), want *AuthError", err, err)
	}
	var he *tunnel.HandshakeError
	if errors.As(err, &he) {
		t.Errorf("auth failure also classified as handshake error")
	}
	fp := ssh.FingerprintSHA256(cfg.Signer.PublicKey())
	if ae.User != b.bastion.User || ae.Addr != b.bastion.Addr() || ae.KeyFingerprint != fp {
		t.Errorf("AuthError = %+v", ae)
	}
	msg := err.Error()
	for _, s := range []string{fp, "user " + b.bastion.User, b.bastion.Addr(), "authorized_keys"} {
		if !strings.Contains(msg, s) {
			t.Errorf("message %q lacks %q", msg, s)
		}
	}
}

func TestForwardErrors(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	closed := closedPort(t)

	cases := []struct {
		name   string
		opts   testenv.BastionOptions
		keyOpt string // authorized_keys options for the key
		target string
		reason ssh.RejectionReason
	}{
		{name: "closed port", target: closed, reason: ssh.ConnectionFailed},
		{name: "PermitOpen", opts: testenv.BastionOptions{PermitOpen: []string{closed}}, target: echo, reason: ssh.Prohibited},
		{name: "DisableForwarding", opts: testenv.BastionOptions{DisableForwarding: true}, target: echo, reason: ssh.Prohibited},
		{name: "key permitopen", keyOpt: `restrict,port-forwarding,permitopen="` + closed + `" `, target: echo, reason: ssh.Prohibited},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := testenv.SharedBastion(t, tc.opts)
			s := newSigner(t)
			b.Authorize(t, tc.keyOpt+authorizedLine(s))
			tun := dial(t, tunnel.Config{Addr: b.Addr(), User: b.User, Signer: s, HostKeys: []ssh.PublicKey{b.HostKey}})

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := tun.DialContext(ctx, "tcp", tc.target)
			if err == nil {
				c.Close()
				t.Fatalf("DialContext(%s) succeeded", tc.target)
			}
			var fe *tunnel.ForwardError
			if !errors.As(err, &fe) {
				t.Fatalf("DialContext = %v (%T), want *ForwardError", err, err)
			}
			if fe.Reason != tc.reason || fe.Target != tc.target || fe.Bastion != b.Addr() {
				t.Errorf("ForwardError = %+v, want reason %v", fe, tc.reason)
			}
			var oce *ssh.OpenChannelError
			if !errors.As(err, &oce) {
				t.Error("ForwardError does not unwrap to *ssh.OpenChannelError")
			}
			if !strings.Contains(err.Error(), tc.target) {
				t.Errorf("message %q lacks the target", err)
			}
			// A refused forward leaves the tunnel up.
			if tun.Err() != nil {
				t.Errorf("tunnel down after a refused forward: %v", tun.Err())
			}
		})
	}
}

// freezeCase runs an in-flight query through a tunnel whose bastion path is
// then frozen by freeze, and checks detection within interval×count.
func freezeCase(t *testing.T, viaProxy bool) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	b := setupOwn(t, testenv.BastionOptions{})
	cfg := b.cfg
	var fp *testenv.FaultProxy
	if viaProxy {
		fp = testenv.StartFaultProxy(t, b.bastion.Addr())
		cfg.Addr = fp.Addr()
	}
	cfg.KeepaliveInterval = 200 * time.Millisecond
	cfg.KeepaliveCountMax = 3
	tun := dial(t, cfg)
	conn := connectPG(t, tun, pg)

	// Keepalives are answered while the path is healthy: let a few
	// intervals pass (the time passing is what is tested).
	time.Sleep(700 * time.Millisecond)
	if tun.Err() != nil {
		t.Fatalf("tunnel dropped while healthy: %v", tun.Err())
	}
	if tun.Stats().LastKeepaliveReply.IsZero() {
		t.Fatal("no keepalive reply recorded while healthy")
	}

	// An argument makes pgx use the extended protocol, which keeps the
	// cause. (pgx's simple-protocol Exec reports a later "conn closed"
	// instead of the read error; callers then consult Tunnel.Err.)
	queryErr := make(chan error, 1)
	go func() {
		var s string
		queryErr <- conn.QueryRow(context.Background(), "SELECT pg_sleep($1)::text -- "+t.Name(), 20).Scan(&s)
	}()
	pg.WaitActive(t, "-- "+t.Name(), 10*time.Second) // of this test: the cluster is shared

	start := time.Now()
	if viaProxy {
		fp.Freeze()
		t.Cleanup(fp.Thaw)
	} else {
		b.bastion.Freeze(t)
		t.Cleanup(func() { b.bastion.Thaw(t) })
	}
	took := waitDone(t, tun, start, 5*time.Second)
	// 3 × 200ms after the last reply, which came at most one interval
	// before the freeze; plus scheduling slack.
	if took > 600*time.Millisecond+time.Second {
		t.Errorf("drop detected after %v, want within 0.6s + 1s", took)
	}
	t.Logf("drop detected %v after the freeze", took)
	d := asDropped(t, tun.Err())
	// Silence is measured from the last reply: interval×count, not
	// (count+1)×interval.
	if !d.Timeout() || !errors.Is(d, tunnel.ErrKeepaliveTimeout) || d.Silence < 600*time.Millisecond || d.Silence >= 800*time.Millisecond {
		t.Errorf("DroppedError = %+v, want a keepalive timeout after 600ms of silence", d)
	}
	if !strings.Contains(d.Error(), "no keepalive reply for") || !strings.Contains(d.Error(), cfg.Addr) {
		t.Errorf("message %q", d.Error())
	}

	select {
	case err := <-queryErr:
		if err == nil {
			t.Fatal("in-flight query succeeded through a frozen bastion")
		}
		asDropped(t, err)
	case <-time.After(2 * time.Second):
		t.Fatal("in-flight query still running 2s after the tunnel dropped")
	}

	// New channels fail at once with the same error.
	_, err := tun.DialContext(context.Background(), "tcp", pg.Addr())
	asDropped(t, err)
}

func TestDropWhenPathFreezes(t *testing.T) {
	t.Parallel()
	freezeCase(t, true)
}

func TestDropWhenBastionFrozen(t *testing.T) {
	t.Parallel()
	freezeCase(t, false)
}

func TestDropWhenBastionKilled(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	b := setupOwn(t, testenv.BastionOptions{})
	tun := dial(t, b.cfg) // default keepalive: 30s × 10; the drop must not wait for it
	c, err := tun.DialContext(context.Background(), "tcp", echo)
	if err != nil {
		t.Fatalf("DialContext: %v", err)
	}
	defer c.Close()
	readErr := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 16))
		readErr <- err
	}()

	start := time.Now()
	b.bastion.Kill(t)
	took := waitDone(t, tun, start, 3*time.Second)
	t.Logf("drop detected %v after kill", took)
	d := asDropped(t, tun.Err())
	if d.Timeout() || !strings.Contains(d.Error(), "connection closed") {
		t.Errorf("DroppedError = %v, want connection closed", d)
	}
	select {
	case err := <-readErr:
		asDropped(t, err)
	case <-time.After(2 * time.Second):
		t.Fatal("Read on a channel still blocked after the drop")
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Error("Write after drop succeeded")
	} else {
		asDropped(t, err)
	}
}

func TestServerKeepalivesAnswered(t *testing.T) {
	t.Parallel()
	for _, withChannel := range []bool{false, true} {
		t.Run(fmt.Sprintf("channel=%v", withChannel), func(t *testing.T) {
			t.Parallel()
			// sshd asks when the client has been silent for a second and
			// gives up after 2 unanswered requests; our own keepalives are
			// made rare so that only the server's requests keep the
			// session alive.
			b := setup(t, testenv.BastionOptions{ClientAliveInterval: time.Second, ClientAliveCountMax: 2})
			cfg := b.cfg
			cfg.KeepaliveInterval = time.Hour
			tun := dial(t, cfg)
			if withChannel {
				// With a channel open, sshd sends its keepalive on the
				// channel instead of as a global request.
				c, err := tun.DialContext(context.Background(), "tcp", startEcho(t))
				if err != nil {
					t.Fatalf("DialContext: %v", err)
				}
				defer c.Close()
			}
			// An unanswering client is dropped by this sshd after about 6s
			// (its requests come about every 2s); wait well past that.
			select {
			case <-tun.Done():
				t.Fatalf("bastion dropped the tunnel: %v", tun.Err())
			case <-time.After(8 * time.Second):
			}
			if got := tun.Stats().ServerKeepalives; got < 3 {
				t.Errorf("ServerKeepalives = %d after 8s, want ≥ 3", got)
			}
		})
	}
}

func TestDialTimeoutWhenHandshakeHangs(t *testing.T) {
	t.Parallel()
	b := setup(t, testenv.BastionOptions{})
	fp := testenv.StartFaultProxy(t, b.bastion.Addr())
	fp.Freeze() // TCP connects, nothing answers
	t.Cleanup(fp.Thaw)
	cfg := b.cfg
	cfg.Addr = fp.Addr()
	cfg.DialTimeout = 500 * time.Millisecond

	start := time.Now()
	_, err := tunnel.Dial(context.Background(), cfg)
	took := time.Since(start)
	var he *tunnel.HandshakeError
	if !errors.As(err, &he) || !he.Timeout() {
		t.Fatalf("Dial = %v (%T), want a *HandshakeError time-out", err, err)
	}
	if took < 400*time.Millisecond || took > 2*time.Second {
		t.Errorf("Dial gave up after %v, want about 500ms", took)
	}
	if !strings.Contains(err.Error(), "timed out") || !strings.Contains(err.Error(), fp.Addr()) {
		t.Errorf("message %q", err)
	}

	// The caller's context cancels a hanging handshake too.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	cfg.DialTimeout = time.Minute
	start = time.Now()
	_, err = tunnel.Dial(ctx, cfg)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &he) {
		t.Errorf("Dial with cancelled ctx = %v, want *HandshakeError wrapping context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Dial ignored its context for %v", took)
	}
}

func TestDialRefused(t *testing.T) {
	t.Parallel()
	addr := closedPort(t)
	_, err := tunnel.Dial(context.Background(), tunnel.Config{
		Addr: addr, User: "nobody", Signer: newSigner(t), HostKeys: []ssh.PublicKey{newSigner(t).PublicKey()},
	})
	var de *tunnel.DialError
	if !errors.As(err, &de) || !errors.Is(err, syscall.ECONNREFUSED) || de.Timeout() {
		t.Fatalf("Dial = %v (%T), want *DialError wrapping ECONNREFUSED", err, err)
	}
	if de.Addr != addr || !strings.Contains(err.Error(), addr) {
		t.Errorf("DialError = %v", err)
	}
}

func TestDialContextCancelledWhileOpening(t *testing.T) {
	t.Parallel()
	echo := startEcho(t)
	b := setupOwn(t, testenv.BastionOptions{})
	tun := dial(t, b.cfg)

	// A frozen bastion never answers the channel open.
	b.bastion.Freeze(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	c, err := tun.DialContext(ctx, "tcp", echo)
	if err == nil {
		c.Close()
		t.Fatal("DialContext through a frozen bastion succeeded")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("DialContext = %v, want context.DeadlineExceeded", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("DialContext returned after %v, want about 200ms", took)
	}
	b.bastion.Thaw(t)

	// The late channel was closed, not handed out; the tunnel still works.
	c, err = tun.DialContext(context.Background(), "tcp", echo)
	if err != nil {
		t.Fatalf("DialContext after thaw: %v", err)
	}
	defer c.Close()
	if got := tun.Stats().OpenChannels; got != 1 {
		t.Errorf("OpenChannels = %d, want 1", got)
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatalf("Write: %v", err)
	}
	buf := make([]byte, 4)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Errorf("echo = %q, %v", buf, err)
	}
}

func TestDialContextBadAddress(t *testing.T) {
	t.Parallel()
	b := setup(t, testenv.BastionOptions{})
	tun := dial(t, b.cfg)
	for _, tc := range []struct{ network, addr string }{
		{"tcp", "no-port"},
		{"tcp", "db:notaport"},
		{"udp", "db:5432"},
	} {
		if c, err := tun.DialContext(context.Background(), tc.network, tc.addr); err == nil {
			c.Close()
			t.Errorf("DialContext(%s, %s) succeeded", tc.network, tc.addr)
		}
	}
}

// TestCloseReleasesGoroutines is not parallel: it counts the process's
// goroutines.
func TestCloseReleasesGoroutines(t *testing.T) {
	echo := startEcho(t)
	b := setup(t, testenv.BastionOptions{})
	before := runtime.NumGoroutine()

	tun, err := tunnel.Dial(context.Background(), b.cfg)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	var conns []net.Conn
	for range 5 {
		c, err := tun.DialContext(context.Background(), "tcp", echo)
		if err != nil {
			t.Fatalf("DialContext: %v", err)
		}
		conns = append(conns, c)
	}
	conns[0].Close() // one closed by its user, the rest by the tunnel
	readErr := make(chan error, 1)
	go func() {
		_, err := conns[1].Read(make([]byte, 1))
		readErr <- err
	}()

	if err := tun.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := tun.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	select {
	case <-tun.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if err := tun.Err(); !errors.Is(err, tunnel.ErrClosed) {
		t.Errorf("Err() after Close = %v, want ErrClosed", err)
	}
	select {
	case err := <-readErr:
		if !errors.Is(err, tunnel.ErrClosed) {
			t.Errorf("Read on a channel after Close = %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Read still blocked after Close")
	}
	if _, err := tun.DialContext(context.Background(), "tcp", echo); !errors.Is(err, tunnel.ErrClosed) {
		t.Errorf("DialContext after Close = %v, want ErrClosed", err)
	}
	for _, c := range conns {
		c.Close()
	}

	// The SSH library's goroutines end a moment after the connection.
	deadline := time.Now().Add(3 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if after := runtime.NumGoroutine(); after > before {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines before Dial, %d after Close:\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	good := tunnel.Config{Addr: "bastion.example.com:22", User: "pgrelay", Signer: newSigner(t)}.WithDefaults()
	if err := good.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	if good.DialTimeout != tunnel.DefaultDialTimeout || good.KeepaliveInterval != 30*time.Second ||
		good.KeepaliveCountMax != 10 || good.Dial == nil || good.Logger == nil {
		t.Errorf("WithDefaults = %+v", good)
	}
	ipv6 := good
	ipv6.Addr = "[2001:db8::1]:2222"
	if err := ipv6.Validate(); err != nil {
		t.Errorf("IPv6 address refused: %v", err)
	}

	cases := map[string]func(c *tunnel.Config){
		"empty address":   func(c *tunnel.Config) { c.Addr = "" },
		"no port":         func(c *tunnel.Config) { c.Addr = "bastion.example.com" },
		"bare IPv6":       func(c *tunnel.Config) { c.Addr = "2001:db8::1:22" },
		"port zero":       func(c *tunnel.Config) { c.Addr = "b:0" },
		"port too large":  func(c *tunnel.Config) { c.Addr = "b:70000" },
		"no user":         func(c *tunnel.Config) { c.User = "" },
		"no signer":       func(c *tunnel.Config) { c.Signer = nil },
		"nil pinned key":  func(c *tunnel.Config) { c.HostKeys = []ssh.PublicKey{nil} },
		"negative count":  func(c *tunnel.Config) { c.KeepaliveCountMax = -1 },
		"negative period": func(c *tunnel.Config) { c.KeepaliveInterval = -time.Second },
	}
	for name, mutate := range cases {
		c := good
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
	}

	// All problems are reported at once.
	err := tunnel.Config{}.Validate()
	if err == nil {
		t.Fatal("empty config accepted")
	}
	for _, s := range []string{"address", "user", "Signer"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("Validate of an empty config = %q, lacks %q", err, s)
		}
	}
	if _, err := tunnel.Dial(context.Background(), tunnel.Config{}); err == nil {
		t.Error("Dial accepted an empty config")
	}
}

// waitBlocked waits until a goroutine started by creator (a function
// name) is blocked in a call of fn (a function name and its parenthesis),
// as the goroutine dump shows it.
func waitBlocked(t *testing.T, fn, creator string) {
	t.Helper()
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		n := runtime.Stack(buf, true)
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			head, _, _ := strings.Cut(g, "\n")
			if strings.Contains(g, fn) && strings.Contains(g, "created by ") && strings.Contains(g, creator) &&
				(strings.Contains(head, "[select") || strings.Contains(head, "[chan receive")) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine of %s blocked in %s within 5 s", creator, fn)
		}
	}
}
