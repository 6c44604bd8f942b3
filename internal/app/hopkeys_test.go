package app_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestHopOwnKey: hop 2 of two chained sshd's has its own key pair and
// authorizes only that key. With only the connection's key installed there
// the login is refused, naming hop 2 and printing hop 2's own line; with
// its own line installed a query goes through. The key pair stays while
// the hop keeps own_key, and goes when it is turned off.
func TestHopOwnKey(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	b1 := testenv.StartBastion(t, testenv.BastionOptions{})
	b2 := testenv.StartBastion(t, testenv.BastionOptions{})
	f := newService(t)
	ctx := context.Background()
	v, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "own", Host: pg.Host, Port: pg.Port, Database: db.Name,
		User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: b1.Host, Port: b1.Port, User: b1.User,
			Next: []connection.Hop{{Host: b2.Host, Port: b2.Port, User: b2.User, OwnKey: true}}}})
	if err != nil {
		t.Fatal(err)
	}
	lines, err := f.svc.HopKeys(ctx, "own")
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 || lines[0].OwnKey || !lines[1].OwnKey {
		t.Fatalf("hop lines: %+v, want hop 2 with its own key", lines)
	}
	if lines[1].Fingerprint == v.SSHTunnel.PublicKeyFingerprint || lines[0].Fingerprint != v.SSHTunnel.PublicKeyFingerprint {
		t.Fatalf("hop 2's key %s is not its own (connection's: %s)", lines[1].Fingerprint, v.SSHTunnel.PublicKeyFingerprint)
	}
	if !strings.Contains(lines[1].Line, `permitopen="`+pg.Addr()+`"`) {
		t.Fatalf("hop 2's own line does not forward to the database only: %s", lines[1].Line)
	}
	if h := v.SSHHops[1]; !h.OwnKey || h.OwnKeyFingerprint != lines[1].Fingerprint || v.SSHHops[0].OwnKey {
		t.Fatalf("view's hops: %+v", v.SSHHops)
	}
	restricted, err := f.svc.PublicKey(ctx, "own", true)
	if err != nil || restricted != lines[0].Line+"\n"+lines[1].Line {
		t.Fatalf("public-key --restricted = %q %v, want each hop's line", restricted, err)
	}

	// Hop 2 has only the connection's key: refused, naming hop 2 with
	// its own line.
	connPub, err := sshkey.ParsePublic(v.SSHTunnel.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	b1.Authorize(t, lines[0].Line)
	b2.Authorize(t, sshkey.RestrictedTo(connPub, sshkey.Comment("own"), sshkey.PermitOpen(pg.Host, pg.Port)))
	err = f.svc.Query(ctx, "own", "select 1", &rowsSink{})
	var kna *app.KeyNotAuthorizedError
	if !errors.As(err, &kna) || !kna.OwnKey || kna.PublicKey != lines[1].Line ||
		!strings.Contains(err.Error(), "hop 2 of 2 ("+b2.Addr()+")") || !strings.Contains(err.Error(), lines[1].Line) {
		t.Fatalf("hop 2 with the connection's key only: %v, want a KeyNotAuthorizedError naming hop 2 with its own line", err)
	}
	// Hop 2 is the last: its line forwards to the database, not to a next hop.
	if msg := err.Error(); !strings.Contains(msg, "forwarding to the database") || strings.Contains(msg, "next hop") {
		t.Errorf("the last hop's error says where its line forwards wrongly: %v", err)
	}

	// The connection test fails at hop 2's login, with hop 2's own line.
	rep, err := f.svc.TestConnection(ctx, "own", nil)
	if err != nil {
		t.Fatal(err)
	}
	if fs := rep.Failed(); fs == nil || fs.ID != diagnose.StepSSHAuth || fs.Hop != 2 || !strings.Contains(fs.Hint, lines[1].Line) {
		t.Fatalf("test with hop 2's own key not installed: %+v, want hop 2's ssh_auth with its own line", fs)
	}

	// Its own line installed: the query and the test go through.
	b2.Authorize(t, lines[1].Line)
	if rep, err = f.svc.TestConnection(ctx, "own", nil); err != nil || !rep.OK {
		t.Fatalf("test with hop 2's own key installed: %+v %v", rep.Failed(), err)
	}
	var sink rowsSink
	if err := f.svc.Query(ctx, "own", "select current_user", &sink); err != nil || sink.String() != db.User {
		t.Fatalf("query with hop 2's own key installed: %q %v", sink.String(), err)
	}
	// The audit record of the query names the key each hop logged in with.
	recs, err := f.store.AuditAfter(ctx, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var last *audit.Record
	for i := range recs {
		if recs[i].Action == "connection.query" {
			last = &recs[i]
		}
	}
	if last == nil || last.Use == nil || len(last.Use.Hops) != 2 || last.Use.KeyFingerprint != v.SSHTunnel.PublicKeyFingerprint ||
		last.Use.Hops[0] != b1.User+"@"+b1.Addr() || last.Use.Hops[1] != b2.User+"@"+b2.Addr()+" own key "+lines[1].Fingerprint {
		t.Errorf("audit use of the query: %+v", last)
	}
	if !strings.Contains(b2.Log(), "Accepted publickey") || !strings.Contains(b2.Log(), strings.TrimPrefix(lines[1].Fingerprint, "SHA256:")) {
		t.Errorf("hop 2 did not log in with its own key %s:\n%s", lines[1].Fingerprint, b2.Log())
	}
	v, _ = f.svc.GetConnection(ctx, "own")
	if v.SSHTunnel.KeyUsedAt == nil {
		t.Error("a login to every hop was not recorded as the keys' use")
	}

	// An update that keeps the hop keeps its key pair.
	s := v.Spec()
	s.Threads = 7
	if v, err = f.svc.UpdateConnection(ctx, "own", s, nil); err != nil {
		t.Fatal(err)
	}
	if v.SSHHops[1].OwnKeyFingerprint != lines[1].Fingerprint {
		t.Fatalf("hop 2's own key changed on an update that kept it: %s, was %s", v.SSHHops[1].OwnKeyFingerprint, lines[1].Fingerprint)
	}
	// own_key off: the key pair goes, the hop uses the connection's key.
	s.Tunnel.Next[0].OwnKey = false
	if v, err = f.svc.UpdateConnection(ctx, "own", s, nil); err != nil {
		t.Fatal(err)
	}
	c, _ := f.store.GetConnection(ctx, "own")
	if len(c.HopKeys) != 0 || v.SSHHops[1].OwnKey || v.SSHHops[1].OwnKeyFingerprint != "" {
		t.Fatalf("own_key off kept the hop's key pair: %+v %+v", c.HopKeys, v.SSHHops[1])
	}
	if err := f.svc.Query(ctx, "own", "select 1", &rowsSink{}); err != nil {
		t.Fatalf("query with the connection's key on hop 2: %v", err)
	}
	// On again: a new key pair, which hop 2 does not authorize yet.
	s.Tunnel.Next[0].OwnKey = true
	if v, err = f.svc.UpdateConnection(ctx, "own", s, nil); err != nil {
		t.Fatal(err)
	}
	if fp := v.SSHHops[1].OwnKeyFingerprint; fp == "" || fp == lines[1].Fingerprint {
		t.Fatalf("own_key on again: fingerprint %q, want a new key", fp)
	}
	if err := f.svc.Query(ctx, "own", "select 1", &rowsSink{}); !errors.As(err, &kna) || !kna.OwnKey {
		t.Fatalf("query with hop 2's new own key not installed: %v", err)
	}
}

// TestHopOwnKeySealed: a hop's private key is sealed bound to the
// connection and the hop, survives a master key rotation (sealed again)
// and goes when the hop changes.
func TestHopOwnKeySealed(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	old, next := newKeyring(t, 7), newKeyring(t, 8)
	svc, st := serviceOn(t, old)
	tun := spec("tun")
	tun.Tunnel = &connection.Tunnel{Host: "bastion.example.com", User: "dbt", KeyType: "rsa",
		Next: []connection.Hop{{Host: "b2.internal", User: "jump", OwnKey: true}, {Host: "b3.internal", User: "jump"}}}
	if _, err := svc.CreateConnection(ctx, tun); err != nil {
		t.Fatal(err)
	}
	c, _ := st.GetConnection(ctx, "tun")
	if len(c.HopKeys) != 1 || c.HopKeys[0].Hop != "jump@b2.internal:22" || !strings.HasPrefix(c.HopKeys[0].PublicKey, "ssh-rsa ") {
		t.Fatalf("hop keys after create: %+v, want one RSA key for jump@b2.internal:22", c.HopKeys)
	}
	k := c.HopKeys[0]
	ad := []byte("pgrelay/connection/" + c.ID + "/hop_private_key\x00hop=jump@b2.internal:22")
	if _, err := old.Open(k.SealedPrivateKey, ad); err != nil {
		t.Fatalf("hop key does not open bound to its hop: %v", err)
	}
	if _, err := old.Open(k.SealedPrivateKey, []byte("pgrelay/connection/"+c.ID+"/hop_private_key\x00hop=jump@b3.internal:22")); err == nil {
		t.Fatal("hop 2's private key opens for hop 3")
	}
	if _, err := old.Open(k.SealedPrivateKey, []byte("pgrelay/connection/"+c.ID+"/ssh_private_key")); err == nil {
		t.Fatal("hop 2's private key opens as the connection's")
	}
	rep, err := app.RotateMasterKey(ctx, st, old, next, app.RotateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.HopKeys != 1 {
		t.Fatalf("report %+v, want one hop key sealed again", rep)
	}
	c, _ = st.GetConnection(ctx, "tun")
	if _, err := next.Open(c.HopKeys[0].SealedPrivateKey, ad); err != nil || c.HopKeys[0].PublicKey != k.PublicKey {
		t.Fatalf("hop key after the master key rotation: %v", err)
	}
	if _, err := old.Open(c.HopKeys[0].SealedPrivateKey, ad); err == nil {
		t.Fatal("the hop key still opens with the old master key")
	}
	// Another user on hop 2: another hop, another key pair.
	svc2, err := app.New(app.Config{Store: st, Keyring: next})
	if err != nil {
		t.Fatal(err)
	}
	tun.Tunnel.Next[0].User = "other"
	pw := secret.New("pw-tun")
	if _, err := svc2.UpdateConnection(ctx, "tun", tun, &pw); err != nil {
		t.Fatal(err)
	}
	c, _ = st.GetConnection(ctx, "tun")
	if len(c.HopKeys) != 1 || c.HopKeys[0].Hop != "other@b2.internal:22" || c.HopKeys[0].PublicKey == k.PublicKey {
		t.Fatalf("hop keys after hop 2 changed user: %+v", c.HopKeys)
	}
	// The key type changes: the hop's key pair is made again of that type.
	tun.Tunnel.KeyType = "ed25519"
	if _, err := svc2.UpdateConnection(ctx, "tun", tun, nil); err != nil {
		t.Fatal(err)
	}
	c, _ = st.GetConnection(ctx, "tun")
	if len(c.HopKeys) != 1 || !strings.HasPrefix(c.HopKeys[0].PublicKey, "ssh-ed25519 ") {
		t.Fatalf("hop keys after the key type changed: %+v", c.HopKeys)
	}
	// The hop goes: so does its key pair.
	tun.Tunnel.Next = tun.Tunnel.Next[1:]
	if _, err := svc2.UpdateConnection(ctx, "tun", tun, &pw); err != nil {
		t.Fatal(err)
	}
	c, _ = st.GetConnection(ctx, "tun")
	if len(c.HopKeys) != 0 {
		t.Fatalf("hop keys after hop 2 was removed: %+v", c.HopKeys)
	}
}

// TestHopOwnKeyCertificate: with certificate logins, hop 2's own key is
// the one certified (sshd logs the certified key's fingerprint).
func TestHopOwnKeyCertificate(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	f := newService(t)
	ctx := context.Background()
	ca, err := f.svc.InitSSHCA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	caFile := writeFile(t, "pgrelay_user_ca.pub", ca.PublicKey+"\n")
	b1 := testenv.StartBastion(t, testenv.BastionOptions{ExtraConfig: []string{"TrustedUserCAKeys " + caFile}})
	b2 := testenv.StartBastion(t, testenv.BastionOptions{ExtraConfig: []string{"TrustedUserCAKeys " + caFile}})
	v, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "owncert", Host: pg.Host, Port: pg.Port, Database: db.Name,
		User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: b1.Host, Port: b1.Port, User: b1.User, Auth: connection.SSHAuthCertificate,
			Next: []connection.Hop{{Host: b2.Host, Port: b2.Port, User: b2.User, OwnKey: true}}}})
	if err != nil {
		t.Fatal(err)
	}
	own, conn := v.SSHHops[1].OwnKeyFingerprint, v.SSHTunnel.PublicKeyFingerprint
	if own == "" || own == conn {
		t.Fatalf("hop 2's own key %q (connection's %q)", own, conn)
	}
	var sink rowsSink
	if err := f.svc.Query(ctx, "owncert", "select 7", &sink); err != nil || sink.String() != "7" {
		t.Fatalf("query with certificates: %q %v", sink.String(), err)
	}
	if l := b2.Log(); !strings.Contains(l, "CERT "+own) || strings.Contains(l, conn) {
		t.Fatalf("hop 2 was not logged in to with a certificate of its own key %s:\n%s", own, l)
	}
	if l := b1.Log(); !strings.Contains(l, "CERT "+conn) {
		t.Fatalf("hop 1 was not logged in to with a certificate of the connection's key %s:\n%s", conn, l)
	}
}
