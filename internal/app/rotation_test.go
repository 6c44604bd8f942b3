package app_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// currentKey opens the connection's current private key as the store
// holds it (newService's keyring is all zeros).
func currentKey(t *testing.T, st store.Store, name string) ssh.Signer {
	t.Helper()
	c, err := st.GetConnection(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return openSealedKey(t, c.SealedPrivateKey, "pgrelay/connection/"+c.ID+"/ssh_private_key")
}

// openSealedKey opens a private key sealed with newService's all-zero
// keyring and associated data ad.
func openSealedKey(t *testing.T, sealed []byte, ad string) ssh.Signer {
	t.Helper()
	kr, err := secret.NewKeyring(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	pem, err := kr.Open(sealed, []byte(ad))
	if err != nil {
		t.Fatal(err)
	}
	s, err := sshkey.Signer(pem)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestKeyRotationTwoLiveKeys: after --start, logins keep working with the
// old key while the new one is not installed ("new key not installed
// yet"); the first login the bastion accepts with the new key promotes it,
// with the time; once the old line is removed, sshd refuses the old key.
func TestKeyRotationTwoLiveKeys(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	b := testenv.StartBastion(t, testenv.BastionOptions{})
	f := newService(t)
	ctx := context.Background()
	svc := f.svc
	v, err := svc.CreateConnection(ctx, connection.Spec{Name: "rot", Host: pg.Host, Port: pg.Port, Database: db.Name,
		User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: b.Host, Port: b.Port, User: b.User}})
	if err != nil {
		t.Fatal(err)
	}
	oldLine, _ := svc.PublicKey(ctx, "rot", true)
	b.SetAuthorizedKeys(t, oldLine)
	if err := svc.Query(ctx, "rot", "select 1", &rowsSink{}); err != nil {
		t.Fatal(err)
	}
	oldKey := currentKey(t, f.store, "rot")

	rot, err := svc.RotateKeyStart(ctx, "rot", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	exp := rot.OldKeyExpiresAt.UTC().Format(sshkey.ExpiryTimeFormat)
	if !strings.HasPrefix(rot.Old, `expiry-time="`+exp+`" `) || !strings.HasPrefix(rot.Hops[0].Old, `expiry-time="`+exp+`",restrict,`) {
		t.Fatalf("old lines lack expiry-time: %q / %q", rot.Old, rot.Hops[0].Old)
	}
	if rot.New == v.SSHTunnel.PublicKey || !strings.Contains(rot.Hops[0].Line, `permitopen="`+pg.Addr()+`"`) {
		t.Fatalf("new lines: %+v", rot)
	}
	if _, err := svc.RotateKeyStart(ctx, "rot", 0); !errors.Is(err, app.ErrInvalid) {
		t.Fatalf("second start: %v, want ErrInvalid", err)
	}
	// The old key still logs in; the rotation stays pending.
	for range 2 {
		if err := svc.Query(ctx, "rot", "select 1", &rowsSink{}); err != nil {
			t.Fatalf("query while the new key is not installed: %v", err)
		}
	}
	v, _ = svc.GetConnection(ctx, "rot")
	if r := v.SSHTunnel.Rotation; r == nil || !r.Pending || r.NewPublicKeyFingerprint == "" || r.PromotedAt != nil {
		t.Fatalf("rotation state while the new key is not installed: %+v", r)
	}
	// --finish refuses while the bastion does not accept the new key.
	if _, err := svc.RotateKeyFinish(ctx, "rot"); err == nil || !strings.Contains(err.Error(), app.NewKeyNotInstalled) {
		t.Fatalf("finish before the new key is installed: %v", err)
	}

	// The new key installed (the old line replaced by the one with its
	// expiry-time): the next login promotes it.
	b.SetAuthorizedKeys(t, rot.Hops[0].Old, rot.Hops[0].Line)
	before := time.Now()
	if err := svc.Query(ctx, "rot", "select 1", &rowsSink{}); err != nil {
		t.Fatal(err)
	}
	v, _ = svc.GetConnection(ctx, "rot")
	r := v.SSHTunnel.Rotation
	if r == nil || r.Pending || r.PromotedAt == nil || r.PromotedAt.Before(before.Add(-time.Second)) || r.PromotedBy != "login" {
		t.Fatalf("rotation after the new key logged in: %+v", r)
	}
	if v.SSHTunnel.PublicKey != rot.New || v.SSHTunnel.PreviousPublicKey == "" {
		t.Fatalf("new key not promoted: %q (want %q)", v.SSHTunnel.PublicKey, rot.New)
	}
	if v.SSHTunnel.KeyUsedAt == nil {
		t.Error("the promoted key's login was not recorded")
	}
	// The audit log says when the old key stopped being used.
	recs, err := svc.ListAudit(ctx, audit.Filter{Action: "connection.rotate_key_promote"})
	if err != nil || len(recs) != 1 || recs[0].Target != "rot" || recs[0].Outcome != audit.OK ||
		!strings.Contains(recs[0].Detail, "logged in to every hop and replaced "+keyFP(t, v.SSHTunnel.PreviousPublicKey)) {
		t.Fatalf("promotion audit records: %+v, %v", recs, err)
	}

	// The old line removed: sshd refuses the old key; pgrelay works on.
	if err := b.Login(oldKey); err != nil {
		t.Fatalf("old key refused before its line was removed: %v", err)
	}
	b.SetAuthorizedKeys(t, rot.Hops[0].Line)
	if err := b.Login(oldKey); err == nil {
		t.Fatal("sshd accepted the old key after its line was removed")
	}
	if err := svc.Query(ctx, "rot", "select 1", &rowsSink{}); err != nil {
		t.Fatalf("query after the old key was removed: %v", err)
	}

	// --cancel drops a new key; --finish promotes one that every hop accepts.
	rot2, err := svc.RotateKeyStart(ctx, "rot", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RotateKeyCancel(ctx, "rot"); err != nil {
		t.Fatal(err)
	}
	if v, _ = svc.GetConnection(ctx, "rot"); v.SSHTunnel.Rotation.Pending || v.SSHTunnel.PublicKey != rot.New {
		t.Fatalf("after cancel: %+v", v.SSHTunnel)
	}
	rot3, err := svc.RotateKeyStart(ctx, "rot", 0)
	if err != nil || rot3.New == rot2.New {
		t.Fatalf("third start: %v", err)
	}
	b.SetAuthorizedKeys(t, rot.Hops[0].Line, rot3.Hops[0].Line)
	if _, err := svc.RotateKeyFinish(ctx, "rot"); err != nil {
		t.Fatal(err)
	}
	if v, _ = svc.GetConnection(ctx, "rot"); v.SSHTunnel.PublicKey != rot3.New || v.SSHTunnel.Rotation.PromotedBy != "finish" {
		t.Fatalf("after finish: %+v", v.SSHTunnel)
	}
}

// ownHopKey opens the current own private key of the connection's hop
// ("user@host:port") as the store holds it.
func ownHopKey(t *testing.T, st store.Store, name, hop string) ssh.Signer {
	t.Helper()
	c, err := st.GetConnection(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	k := c.HopKeyFor(hop)
	if k == nil {
		t.Fatalf("connection %s has no own key for hop %s", name, hop)
	}
	return openSealedKey(t, k.SealedPrivateKey, "pgrelay/connection/"+c.ID+"/hop_private_key\x00hop="+hop)
}

// TestKeyRotationHopOwnKey: a rotation rotates hop 2's own key with the
// connection's. Its lines give hop 2 a new own key and the current one's
// line with expiry-time; with the old lines only, and with the new line on
// hop 1 only, logins go on without promoting; with both new lines the next
// login promotes both keys, and sshd refuses hop 2's old key once its line
// goes. --cancel drops hop 2's new key, --finish checks and promotes both,
// and a rotation at once (RotateKey) replaces both.
func TestKeyRotationHopOwnKey(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	b1 := testenv.StartBastion(t, testenv.BastionOptions{})
	b2 := testenv.StartBastion(t, testenv.BastionOptions{})
	f := newService(t)
	ctx := context.Background()
	svc := f.svc
	hop2 := connection.Hop{Host: b2.Host, Port: b2.Port, User: b2.User, OwnKey: true}
	if _, err := svc.CreateConnection(ctx, connection.Spec{Name: "rh", Host: pg.Host, Port: pg.Port, Database: db.Name,
		User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: b1.Host, Port: b1.Port, User: b1.User, Next: []connection.Hop{hop2}}}); err != nil {
		t.Fatal(err)
	}
	lines, err := svc.HopKeys(ctx, "rh")
	if err != nil {
		t.Fatal(err)
	}
	b1.SetAuthorizedKeys(t, lines[0].Line)
	b2.SetAuthorizedKeys(t, lines[1].Line)
	query := func(when string) {
		t.Helper()
		if err := svc.Query(ctx, "rh", "select 1", &rowsSink{}); err != nil {
			t.Fatalf("query %s: %v", when, err)
		}
	}
	query("before the rotation")
	oldOwn := ownHopKey(t, f.store, "rh", hop2.String())
	pending := func(want bool) {
		t.Helper()
		v, err := svc.GetConnection(ctx, "rh")
		if err != nil {
			t.Fatal(err)
		}
		if r := v.SSHTunnel.Rotation; r == nil || r.Pending != want {
			t.Fatalf("rotation pending = %+v, want %v", r, want)
		}
	}

	rot, err := svc.RotateKeyStart(ctx, "rh", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	h2 := rot.Hops[1]
	if !h2.OwnKey || h2.Fingerprint == lines[1].Fingerprint || h2.Fingerprint == rot.Hops[0].Fingerprint ||
		!strings.Contains(h2.Line, `permitopen="`+pg.Addr()+`"`) || h2.Old != sshkey.WithExpiry(lines[1].Line, *rot.OldKeyExpiresAt) {
		t.Fatalf("hop 2's rotation lines: %+v (current line %s)", h2, lines[1].Line)
	}
	query("with the old keys only")
	b1.SetAuthorizedKeys(t, rot.Hops[0].Old, rot.Hops[0].Line)
	query("with the new key on hop 1 only")
	pending(true)
	if _, err := svc.RotateKeyFinish(ctx, "rh"); err == nil || !strings.Contains(err.Error(), app.NewKeyNotInstalled) {
		t.Fatalf("finish while hop 2 lacks its new key: %v", err)
	}

	b2.SetAuthorizedKeys(t, h2.Old, h2.Line)
	query("with both new keys installed")
	pending(false)
	v, _ := svc.GetConnection(ctx, "rh")
	if v.SSHTunnel.PublicKey != rot.New || v.SSHHops[1].OwnKeyFingerprint != h2.Fingerprint {
		t.Fatalf("after promotion: connection key %s (want %s), hop 2's key %s (want %s)", v.SSHTunnel.PublicKey, rot.New,
			v.SSHHops[1].OwnKeyFingerprint, h2.Fingerprint)
	}
	now, err := svc.HopKeys(ctx, "rh")
	if err != nil || now[1].Line != h2.Line {
		t.Fatalf("hop 2's line after promotion: %+v %v, want %s", now, err, h2.Line)
	}
	if err := b2.Login(oldOwn); err != nil {
		t.Fatalf("hop 2's old key refused before its line was removed: %v", err)
	}
	b2.SetAuthorizedKeys(t, h2.Line)
	if err := b2.Login(oldOwn); err == nil {
		t.Fatal("hop 2 accepted its old key after its line was removed")
	}
	query("after hop 2's old line was removed")

	// --cancel drops hop 2's new key with the connection's.
	if _, err := svc.RotateKeyStart(ctx, "rh", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.RotateKeyCancel(ctx, "rh"); err != nil {
		t.Fatal(err)
	}
	if now, _ = svc.HopKeys(ctx, "rh"); now[1].Line != h2.Line {
		t.Fatalf("hop 2's line after cancel: %s, want %s", now[1].Line, h2.Line)
	}
	c, _ := f.store.GetConnection(ctx, "rh")
	if k := c.HopKeyFor(hop2.String()); k == nil || k.PendingPublicKey != "" || len(k.SealedPendingPrivateKey) != 0 {
		t.Fatalf("hop 2's key after cancel: %+v", k)
	}
	query("after cancel")

	// --finish promotes both once every hop accepts its new key.
	rot3, err := svc.RotateKeyStart(ctx, "rh", 0)
	if err != nil {
		t.Fatal(err)
	}
	b1.SetAuthorizedKeys(t, rot.Hops[0].Line, rot3.Hops[0].Line)
	b2.SetAuthorizedKeys(t, h2.Line, rot3.Hops[1].Line)
	if _, err := svc.RotateKeyFinish(ctx, "rh"); err != nil {
		t.Fatal(err)
	}
	v, _ = svc.GetConnection(ctx, "rh")
	if v.SSHTunnel.PublicKey != rot3.New || v.SSHHops[1].OwnKeyFingerprint != rot3.Hops[1].Fingerprint ||
		v.SSHTunnel.Rotation.PromotedBy != "finish" {
		t.Fatalf("after finish: %+v %+v", v.SSHTunnel, v.SSHHops[1])
	}
	query("after finish")

	// A rotation at once replaces hop 2's own key too, and gives its line.
	rot4, err := svc.RotateKey(ctx, "rh")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ = svc.GetConnection(ctx, "rh"); v.SSHHops[1].OwnKeyFingerprint == rot3.Hops[1].Fingerprint || !v.SSHHops[1].OwnKey {
		t.Fatalf("hop 2's key after RotateKey: %+v", v.SSHHops[1])
	}
	if len(rot4.Hops) != 2 || !rot4.Hops[1].OwnKey || rot4.Hops[1].Fingerprint != v.SSHHops[1].OwnKeyFingerprint {
		t.Fatalf("lines of RotateKey: %+v, want hop 2's new own line", rot4.Hops)
	}
}

// keyFP is the fingerprint of an authorized_keys line.
func keyFP(t *testing.T, line string) string {
	t.Helper()
	pub, err := sshkey.ParsePublic(line)
	if err != nil {
		t.Fatal(err)
	}
	return sshkey.Fingerprint(pub)
}
