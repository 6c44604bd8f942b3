package app_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/egress"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

func denying(t *testing.T, prefixes ...string) func(*app.Config) {
	return func(c *app.Config) {
		ps, err := egress.ParsePrefixes(prefixes)
		if err != nil {
			t.Fatal(err)
		}
		if c.Network, err = egress.New(ps, nil); err != nil {
			t.Fatal(err)
		}
	}
}

// TestNetworkPolicy: every hop pgrelay dials itself is checked: a denied
// database address (direct), a denied bastion, and a denied IP literal the
// bastion is asked to reach, while the same servers on allowed addresses
// work. The default policy refuses the cloud metadata address at once.
func TestNetworkPolicy(t *testing.T) {
	t.Parallel()
	pg, b := startPostgresAndBastion(t)
	ctx := context.Background()
	// The database is also reachable on 127.0.0.2 (all of 127/8 is
	// loopback on Linux).
	alias := testenv.TCPRelay(t, "127.0.0.2", net.JoinHostPort(pg.Host, strconv.Itoa(pg.Port)))
	direct := func(name, host string, port int) connection.Spec {
		return connection.Spec{Name: name, Host: host, Port: port, Database: pg.DB.Name, User: pg.DB.User,
			Password: secret.New(pg.DB.Password), SSLMode: connection.SSLDisable}
	}

	open := newService(t)
	denied := newServiceWith(t, denying(t, "127.0.0.2/32"))
	for _, f := range []*fixture{open, denied} {
		if _, err := f.svc.CreateConnection(ctx, direct("alias", "127.0.0.2", alias)); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.CreateConnection(ctx, direct("plain", pg.Host, pg.Port)); err != nil {
			t.Fatal(err)
		}
	}
	if err := selectOne(ctx, open.svc, "alias"); err != nil {
		t.Fatalf("127.0.0.2 without a policy: %v", err)
	}
	if err := selectOne(ctx, denied.svc, "plain"); err != nil {
		t.Fatalf("127.0.0.1 with 127.0.0.2 denied: %v", err)
	}
	err := selectOne(ctx, denied.svc, "alias")
	wantDenied(t, "direct database", err, "127.0.0.2", "127.0.0.2/32", "--deny-network 127.0.0.2/32")

	// Session.Dial (the local proxy's path) is checked the same way.
	sess, err := denied.svc.Open(ctx, "alias")
	if err != nil {
		t.Fatal(err)
	}
	_, err = sess.DialDatabase(ctx)
	wantDenied(t, "proxy dial", err, "127.0.0.2", "127.0.0.2/32", "--deny-network")
	_ = sess.Close()

	// The connection test fails at resolve, before any connection.
	rep, err := denied.svc.TestConnection(ctx, "alias", nil)
	if err != nil {
		t.Fatal(err)
	}
	if fail := rep.Failed(); fail == nil || fail.ID != diagnose.StepResolve || rep.Step(diagnose.StepTCP).Status != diagnose.StatusSkipped ||
		!strings.Contains(fail.Hint, "--deny-network 127.0.0.2/32") || !strings.Contains(fail.Error, "127.0.0.2") {
		t.Fatalf("test of a denied database: %+v", rep.Steps)
	}

	// Through a bastion: a denied bastion address, and a denied database
	// IP literal sent to the bastion.
	tun := tunnelled("db-alias", pg, b)
	tun.Host, tun.Port = "127.0.0.2", alias
	for _, f := range []*fixture{open, denied} {
		v, err := f.svc.CreateConnection(ctx, tun)
		if err != nil {
			t.Fatal(err)
		}
		b.Authorize(t, v.SSHTunnel.PublicKey)
	}
	if err := selectOne(ctx, open.svc, "db-alias"); err != nil {
		t.Fatalf("database 127.0.0.2 through the bastion without a policy: %v", err)
	}
	wantDenied(t, "database IP through the bastion", selectOne(ctx, denied.svc, "db-alias"), "127.0.0.2", "127.0.0.2/32", "--deny-network")
	rep, _ = denied.svc.TestConnection(ctx, "db-alias", nil)
	if fail := rep.Failed(); fail == nil || fail.ID != diagnose.StepForward || !strings.Contains(fail.Hint, "--deny-network 127.0.0.2/32") {
		t.Fatalf("test of a denied database behind a bastion: %+v", rep.Steps)
	}
	bastionDenied := newServiceWith(t, denying(t, b.Host+"/32"))
	v, err := bastionDenied.svc.CreateConnection(ctx, tunnelled("wh", pg, b))
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	wantDenied(t, "bastion", selectOne(ctx, bastionDenied.svc, "wh"), b.Host, b.Host+"/32", "--deny-network")
	rep, _ = bastionDenied.svc.TestConnection(ctx, "wh", nil)
	if fail := rep.Failed(); fail == nil || fail.ID != diagnose.StepResolve || rep.Step(diagnose.StepBastionTCP).Status != diagnose.StatusSkipped {
		t.Fatalf("test of a denied bastion: %+v", rep.Steps)
	}

	// The default policy refuses the metadata address as a database and
	// as a bastion, at once (nothing waits for an answer from it).
	if _, err := open.svc.CreateConnection(ctx, direct("meta", "169.254.169.254", 80)); err != nil {
		t.Fatal(err)
	}
	meta := tunnelled("meta-bastion", pg, b)
	meta.Tunnel.Host, meta.Tunnel.Port = "169.254.169.254", 22
	if _, err := open.svc.CreateConnection(ctx, meta); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"meta", "meta-bastion"} {
		start := time.Now()
		err := selectOne(ctx, open.svc, name)
		wantDenied(t, name, err, "169.254.169.254", "169.254.0.0/16", "--allow-network 169.254.0.0/16")
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s: refusal took %v", name, d)
		}
		rep, _ := open.svc.TestConnection(ctx, name, nil)
		if fail := rep.Failed(); fail == nil || fail.ID != diagnose.StepResolve || !strings.Contains(fail.Hint, "metadata") {
			t.Errorf("test of %s: %+v", name, rep.Steps)
		}
	}
}

func wantDenied(t *testing.T, what string, err error, addr, prefix, setting string) {
	t.Helper()
	t.Logf("%s: %v", what, err)
	var d *egress.DeniedError
	if !errors.As(err, &d) {
		t.Errorf("%s: %v (%T), want a network policy refusal", what, err, err)
		return
	}
	if d.Addr != netip.MustParseAddr(addr) || d.Rule.Prefix.String() != prefix {
		t.Errorf("%s: refused %s by %s, want %s by %s", what, d.Addr, d.Rule.Prefix, addr, prefix)
	}
	if !strings.Contains(err.Error(), setting) || !app.IsConnectFailure(err) {
		t.Errorf("%s: message %q lacks %q, or is not a connect failure", what, err, setting)
	}
}
