package app_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/metrics"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
	"github.com/pgrelay/pgrelay/internal/testenv"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

type fixture struct {
	svc     *app.Service
	store   *sqlite.Store
	metrics *metrics.Metrics
}

func newService(t *testing.T) *fixture {
	t.Helper()
	return newServiceWith(t, nil)
}

// newServiceWith is newService with a changed configuration (change may
// be nil): a fresh SQLite store, a keyring and metrics.
func newServiceWith(t *testing.T, change func(*app.Config)) *fixture {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	kr, err := secret.NewKeyring(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	cfg := app.Config{Store: st, Keyring: kr, DialTimeout: 5 * time.Second, Metrics: m}
	if change != nil {
		change(&cfg)
	}
	svc, err := app.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{svc: svc, store: st, metrics: m}
}

func spec(name string) connection.Spec {
	return connection.Spec{Name: name, Host: "db.internal", Database: "analytics", User: "dbt",
		Password: secret.New("pw-" + name)}
}

func TestUpdateKeysAndPins(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := context.Background()
	if _, err := f.svc.CreateConnection(ctx, spec("c")); err != nil {
		t.Fatal(err)
	}
	// Adding a tunnel generates a key pair. It changes the endpoint, so the
	// password is given again.
	s := spec("c")
	pw := s.Password
	s.Tunnel = &connection.Tunnel{Host: "bastion.example.com", User: "dbtcloud"}
	v, err := f.svc.UpdateConnection(ctx, "c", s, &pw)
	if err != nil {
		t.Fatal(err)
	}
	if v.SSHTunnel == nil || !strings.HasPrefix(v.SSHTunnel.PublicKey, "ssh-ed25519 ") || v.SSHTunnel.KeepaliveInterval.Duration() != 30*time.Second {
		t.Fatalf("after adding tunnel: %+v", v.SSHTunnel)
	}
	first := v.SSHTunnel.PublicKey
	// A change that keeps the endpoint keeps the password without giving it.
	s.Schema = "marts"
	if v, err = f.svc.UpdateConnection(ctx, "c", s, nil); err != nil || !v.HasPassword {
		t.Fatalf("password lost by an update without password: %+v, %v", v, err)
	}
	// A port change keeps the key.
	s.Port = 6543
	if v, err = f.svc.UpdateConnection(ctx, "c", s, &pw); err != nil || v.SSHTunnel.PublicKey != first {
		t.Fatalf("port change replaced the key: %v", err)
	}
	// Pretend a host key was pinned for this bastion.
	rec, _ := f.store.GetConnection(ctx, "c")
	rec.HostKeys, rec.HostKeysAddr = []string{first}, "bastion.example.com:22"
	if err := f.store.UpdateConnection(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if v, _ = f.svc.GetConnection(ctx, "c"); v.SSHTunnel.HostKeyFingerprint == "" {
		t.Fatal("pin not shown")
	}
	// Changing the key type generates a new (RSA) key and remembers the old.
	s.Tunnel.KeyType = "rsa"
	v, err = f.svc.UpdateConnection(ctx, "c", s, nil)
	if err != nil || !strings.HasPrefix(v.SSHTunnel.PublicKey, "ssh-rsa ") || v.SSHTunnel.PreviousPublicKey == "" {
		t.Fatalf("key type change: %+v, %v", v.SSHTunnel, err)
	}
	if v.SSHTunnel.HostKeyFingerprint == "" {
		t.Fatal("key type change forgot the host key pin")
	}
	// Moving to another bastion forgets the pin.
	s.Tunnel.Host = "other-bastion.example.com"
	if v, err = f.svc.UpdateConnection(ctx, "c", s, &pw); err != nil || v.SSHTunnel.HostKeyFingerprint != "" {
		t.Fatalf("bastion change kept the pin: %+v, %v", v.SSHTunnel, err)
	}
	// Renaming is refused with a field error.
	s.Name = "d"
	var ve *app.ValidationError
	if _, err := f.svc.UpdateConnection(ctx, "c", s, nil); !errors.As(err, &ve) || ve.Fields()["name"] == "" {
		t.Fatalf("rename: %v", err)
	}
	// Removing the tunnel drops the keys.
	s.Name, s.Tunnel = "c", nil
	if v, err = f.svc.UpdateConnection(ctx, "c", s, &pw); err != nil || v.SSHTunnel != nil {
		t.Fatalf("remove tunnel: %+v, %v", v, err)
	}
	rec, _ = f.store.GetConnection(ctx, "c")
	if rec.SealedPrivateKey != nil || len(rec.HostKeys) != 0 {
		t.Fatal("keys kept after removing the tunnel")
	}
	// A failed update loses nothing.
	bad := spec("c")
	bad.Port = 70000
	if _, err := f.svc.UpdateConnection(ctx, "c", bad, nil); !errors.As(err, &ve) {
		t.Fatalf("bad update: %v", err)
	}
	if v, _ = f.svc.GetConnection(ctx, "c"); v.Port != 6543 {
		t.Fatalf("bad update changed the port to %d", v.Port)
	}
}

func TestSealedSecretsAreBoundToTheirRecord(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := context.Background()
	for _, n := range []string{"a", "b"} {
		if _, err := f.svc.CreateConnection(ctx, spec(n)); err != nil {
			t.Fatal(err)
		}
	}
	a, _ := f.store.GetConnection(ctx, "a")
	b, _ := f.store.GetConnection(ctx, "b")
	// Copy a's sealed password onto b: opening b must fail, not reveal a's.
	b.SealedPassword = a.SealedPassword
	if err := f.store.UpdateConnection(ctx, b); err != nil {
		t.Fatal(err)
	}
	_, err := f.svc.Open(ctx, "b")
	if !errors.Is(err, secret.ErrOpen) {
		t.Fatalf("open with moved ciphertext: %v, want ErrOpen", err)
	}
	sess, err := f.svc.Open(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	if sess.Spec().Password.Reveal() != "pw-a" {
		t.Fatal("password did not round-trip")
	}
}

// TestTunnelDropFailsQuery freezes the bastion (a proxy that stops moving
// bytes without closing) during a query: the query must fail with the
// tunnel's drop error within interval × count + 1 s.
func TestTunnelDropFailsQuery(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	b := testenv.SharedBastion(t, testenv.BastionOptions{})
	fp := testenv.StartFaultProxy(t, b.Addr())

	f := newService(t)
	ctx := context.Background()
	const interval, count = 200 * time.Millisecond, 3
	s := connection.Spec{Name: "frozen", Host: pg.Host, Port: pg.Port, Database: db.Name, User: db.User,
		Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: fp.Host(), Port: fp.Port(), User: b.User,
			KeepaliveInterval: connection.Duration(interval), KeepaliveCountMax: count}}
	v, err := f.svc.CreateConnection(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)

	sess, err := f.svc.Open(ctx, "frozen")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if got := sess.Tunnel().HostKey(); sshkey.Fingerprint(got) != sshkey.Fingerprint(b.HostKey) {
		t.Fatal("tunnel went to another host")
	}
	errc := make(chan error, 1)
	go func() {
		errc <- sess.Query(ctx, "select pg_sleep(60) -- "+t.Name(), discardSink{})
	}()
	pg.WaitActive(t, "-- "+t.Name(), 10*time.Second) // the query is running on the server
	frozenAt := time.Now()
	fp.Freeze()
	defer fp.Thaw()
	select {
	case err := <-errc:
		elapsed := time.Since(frozenAt)
		var dropped *tunnel.DroppedError
		if !errors.As(err, &dropped) {
			t.Fatalf("query error = %v, want a *tunnel.DroppedError", err)
		}
		if !strings.Contains(err.Error(), "dropped") {
			t.Errorf("error does not say the tunnel dropped: %v", err)
		}
		// It says what to do next, as the connection test's hint does.
		for _, next := range []string{"pgrelay connection test frozen", "ClientAliveInterval", "load balancer", "idle timeout"} {
			if !strings.Contains(err.Error(), next) {
				t.Errorf("drop error lacks the next step %q: %v", next, err)
			}
		}
		if bound := interval*count + time.Second; elapsed > bound {
			t.Fatalf("drop reported after %v, want within %v", elapsed, bound)
		}
		t.Logf("drop reported %v after the freeze (bound %v): %v", elapsed, interval*count+time.Second, err)
	case <-time.After(10 * time.Second):
		t.Fatal("query did not fail 10 s after the bastion froze")
	}
	if err := sess.Err(); err == nil || !strings.Contains(err.Error(), "pgrelay connection test frozen") {
		t.Fatalf("session reports the drop as %v", err)
	}
	// The drop is counted by its cause, without the connection's name:
	// metrics carry names only with --metrics-connection-labels. The
	// keepalives that went unanswered before it are counted as missed.
	for deadline := time.Now().Add(5 * time.Second); ; {
		n, labels := tunnelDrops(t, f.metrics)
		for _, l := range labels {
			if strings.HasPrefix(l, "connection=") {
				t.Fatalf("pgrelay_tunnel_drops_total has labels %v, want no connection by default", labels)
			}
		}
		if n == 1 {
			if got := sampleValue(t, f.metrics, "pgrelay_tunnel_drops_total", "cause=keepalive_timeout"); got != 1 {
				t.Fatalf("drops by cause keepalive_timeout = %v, want 1", got)
			}
			// A keepalive is sent on each multiple of the interval; the
			// one pending at the freeze misses count-1 intervals or so
			// before the silence limit drops the tunnel.
			if got := sampleValue(t, f.metrics, "pgrelay_tunnel_keepalives_missed_total", ""); got < 1 {
				t.Fatalf("pgrelay_tunnel_keepalives_missed_total = %v after a freeze, want at least 1", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgrelay_tunnel_drops_total = %v 5s after the drop, want 1", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The drop does not stop a new session from working once the bastion
	// answers again.
	fp.Thaw()
	sess2, err := f.svc.Open(ctx, "frozen")
	if err != nil {
		t.Fatalf("reopen after thaw: %v", err)
	}
	defer sess2.Close()
	if err := sess2.Query(ctx, "select 1", discardSink{}); err != nil {
		t.Fatalf("query after reopen: %v", err)
	}
}

// sampleValue returns the value of the metric's sample whose labels are
// labels ("name=value,..." sorted by name; "" for none): a counter's or
// gauge's value, a histogram's count.
func sampleValue(t *testing.T, m *metrics.Metrics, name, labels string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, s := range mf.GetMetric() {
			var ls []string
			for _, l := range s.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			if strings.Join(ls, ",") == labels {
				return s.GetCounter().GetValue() + s.GetGauge().GetValue() + float64(s.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

// tunnelDrops returns the sum of pgrelay_tunnel_drops_total in m and every
// label it has.
func tunnelDrops(t *testing.T, m *metrics.Metrics) (float64, []string) {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	var labels []string
	for _, mf := range mfs {
		if mf.GetName() != "pgrelay_tunnel_drops_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			n += s.GetCounter().GetValue()
			if s.GetCounter().GetValue() == 0 {
				continue
			}
			for _, l := range s.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
		}
	}
	return n, labels
}

// discardSink drops query results.
type discardSink struct{}

func (discardSink) Begin([]app.Column) error { return nil }
func (discardSink) Row([][]byte) error       { return nil }
func (discardSink) End(string) error         { return nil }

// TestUpdateWithNothingToChange: an update that changes no setting (the
// connection's own settings given back, as `connection update NAME` with
// no flags and a PUT of what GET returned do) writes nothing: the version
// and updated_at stay. A change is written.
func TestUpdateWithNothingToChange(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := context.Background()
	s := spec("c")
	s.Tunnel = &connection.Tunnel{Host: "bastion.example.com", User: "dbtcloud",
		Next: []connection.Hop{{Host: "bastion-b.internal", User: "u2", OwnKey: true}}}
	if _, err := f.svc.CreateConnection(ctx, s); err != nil {
		t.Fatal(err)
	}
	before, err := f.store.GetConnection(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	cur, err := f.svc.GetConnection(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	v, err := f.svc.UpdateConnection(ctx, "c", cur.Spec(), nil)
	if err != nil {
		t.Fatal(err)
	}
	after, err := f.store.GetConnection(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if after.Version != before.Version || !after.UpdatedAt.Equal(before.UpdatedAt) || !v.UpdatedAt.Equal(cur.UpdatedAt) {
		t.Errorf("an update with nothing to change was written: version %d → %d, updated_at %s → %s (view %s)",
			before.Version, after.Version, before.UpdatedAt, after.UpdatedAt, v.UpdatedAt)
	}
	changed := cur.Spec()
	changed.Schema = "marts"
	if _, err := f.svc.UpdateConnection(ctx, "c", changed, nil); err != nil {
		t.Fatal(err)
	}
	if after, err = f.store.GetConnection(ctx, "c"); err != nil || after.Version == before.Version || after.Spec.Schema != "marts" {
		t.Errorf("a change was not written: version %d → %d, schema %q (%v)", before.Version, after.Version, after.Spec.Schema, err)
	}
}
