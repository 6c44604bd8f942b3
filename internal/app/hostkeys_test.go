package app_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// selectOne opens the connection and runs SELECT 1 over it.
func selectOne(ctx context.Context, svc *app.Service, name string) error {
	sess, err := svc.Open(ctx, name)
	if err != nil {
		return err
	}
	defer sess.Close()
	conn, err := sess.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var n int
	return conn.QueryRow(ctx, "SELECT 1").Scan(&n)
}

// TestApproveHostKeyPolicy: with the approve policy a bastion's first host
// key is not pinned: it waits for approval and nothing is sent to the
// bastion until an admin approves it.
func TestApproveHostKeyPolicy(t *testing.T) {
	t.Parallel()
	pg, b := startPostgresAndOwnBastion(t) // its log must show no login
	f := newServiceWith(t, func(c *app.Config) { c.HostKeyPolicy = app.HostKeyApprove })
	ctx := context.Background()
	v, err := f.svc.CreateConnection(ctx, tunnelled("wh", pg, b))
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	fp := sshkey.Fingerprint(b.HostKey)

	err = selectOne(ctx, f.svc, "wh")
	var changed *app.HostKeyChangedError
	if !errors.As(err, &changed) || len(changed.Err.Pinned) != 0 || changed.Err.Presented != fp {
		t.Fatalf("first connection = %v, want a host key waiting for approval", err)
	}
	for _, s := range []string{"not approved yet", "--host-key-policy approve", "pgrelay connection trust-host-key wh --fingerprint " + fp} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("message %q lacks %q", err, s)
		}
	}
	if !app.IsConnectFailure(err) {
		t.Error("the refusal is not a connect failure for the faces")
	}
	v, _ = f.svc.GetConnection(ctx, "wh")
	if v.SSHTunnel.HostKeyFingerprint != "" || v.SSHTunnel.PendingHostKeyFingerprint != fp {
		t.Fatalf("after the first connection: pinned %q, pending %q; want nothing pinned and %s pending",
			v.SSHTunnel.HostKeyFingerprint, v.SSHTunnel.PendingHostKeyFingerprint, fp)
	}

	// A connection test stops at the handshake too, and says how to approve.
	rep, err := f.svc.TestConnection(ctx, "wh", nil)
	if err != nil {
		t.Fatal(err)
	}
	fail := rep.Failed()
	if fail == nil || fail.ID != diagnose.StepSSHHandshake || rep.HostKey == nil || rep.HostKey.State != diagnose.HostKeyUnapproved ||
		!strings.Contains(fail.Hint, "pgrelay connection trust-host-key wh --fingerprint "+fp) ||
		rep.Step(diagnose.StepSSHAuth).Status != diagnose.StatusSkipped {
		t.Fatalf("test under the approve policy: host key %+v, steps %+v", rep.HostKey, rep.Steps)
	}
	// So does a draft.
	rep, err = f.svc.TestDraft(ctx, tunnelled("", pg, b), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if fail := rep.Failed(); fail == nil || fail.ID != diagnose.StepSSHHandshake || rep.HostKey.State != diagnose.HostKeyUnapproved {
		t.Fatalf("draft under the approve policy: %+v", rep.Steps)
	}
	// Nothing was pinned, and the bastion never saw an authentication.
	if v, _ := f.svc.GetConnection(ctx, "wh"); v.SSHTunnel.HostKeyFingerprint != "" {
		t.Fatalf("pinned by a test: %+v", v.SSHTunnel)
	}
	if log := b.LogTail(); strings.Contains(log, "Accepted publickey") || strings.Contains(log, "Failed publickey") {
		t.Fatalf("the bastion saw an authentication attempt before the key was approved:\n%s", log)
	}

	if _, err := f.svc.TrustHostKey(ctx, "wh", fp); err != nil {
		t.Fatal(err)
	}
	if err := selectOne(ctx, f.svc, "wh"); err != nil {
		t.Fatalf("after approval: %v", err)
	}
	// Approving it again has nothing to do, and says so: the key is
	// pinned, which is not the same as no key having been presented.
	_, err = f.svc.TrustHostKey(ctx, "wh", fp)
	if !errors.Is(err, app.ErrInvalid) || !strings.Contains(err.Error(), "host key "+fp+" is already pinned for "+b.Addr()) ||
		strings.Contains(err.Error(), "no host key waiting") {
		t.Fatalf("approving the pinned key again = %v, want: already pinned", err)
	}

	// A key waiting for approval belongs to the address it was seen at:
	// moving the connection to another bastion address forgets it, even
	// though nothing was pinned at the old one.
	if _, err := f.svc.CreateConnection(ctx, tunnelled("moved", pg, b)); err != nil {
		t.Fatal(err)
	}
	_ = selectOne(ctx, f.svc, "moved")
	if v, _ := f.svc.GetConnection(ctx, "moved"); v.SSHTunnel.PendingHostKeyFingerprint != fp {
		t.Fatalf("no pending key: %+v", v.SSHTunnel)
	}
	s := tunnelled("moved", pg, b)
	s.Tunnel.Host = "localhost"
	pw := s.Password // a new bastion is a new endpoint: the password is given again
	v, err = f.svc.UpdateConnection(ctx, "moved", s, &pw)
	if err != nil {
		t.Fatal(err)
	}
	if v.SSHTunnel.PendingHostKeyFingerprint != "" {
		t.Fatalf("the pending key seen at %s survived the move to %s", b.Addr(), s.Tunnel.Host)
	}
	if _, err := f.svc.TrustHostKey(ctx, "moved", fp); !errors.Is(err, app.ErrInvalid) {
		t.Fatalf("approving after the move = %v, want nothing to approve", err)
	}
}

// TestKnownHostPinnedAtOnce: a host key given with the connection is
// pinned when it is saved, so the first connection trusts nothing it is
// shown: a bastion presenting another key is refused.
func TestKnownHostPinnedAtOnce(t *testing.T) {
	t.Parallel()
	pg, b := startPostgresAndBastion(t)
	f := newService(t) // tofu
	ctx := context.Background()
	fp := sshkey.Fingerprint(b.HostKey)
	line := sshkey.AuthorizedKey(b.HostKey, "root@bastion")
	other, err := sshkey.Generate(sshkey.Ed25519, "")
	if err != nil {
		t.Fatal(err)
	}
	otherLine := sshkey.AuthorizedKey(other.Public, "")

	// Given as a .pub line: pinned at once and used.
	s := tunnelled("given", pg, b)
	s.Tunnel.KnownHost = line
	v, err := f.svc.CreateConnection(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	if v.SSHTunnel.HostKeyFingerprint != fp {
		t.Fatalf("not pinned on create: %+v", v.SSHTunnel)
	}
	if err := selectOne(ctx, f.svc, "given"); err != nil {
		t.Fatal(err)
	}
	rec, _ := f.store.GetConnection(ctx, "given")
	if rec.Spec.Tunnel.KnownHost != "" || rec.HostKeysAddr != b.Addr() {
		t.Fatalf("stored: known_host %q, pins for %q", rec.Spec.Tunnel.KnownHost, rec.HostKeysAddr)
	}
	// The bastion presented the key given: from now on a mismatch is a
	// change of its key.
	if want := sshkey.AuthorizedKey(b.HostKey, ""); len(rec.HostKeys) != 1 || rec.HostKeys[0] != want {
		t.Fatalf("pins after the first login with the key given: %q, want %q", rec.HostKeys, want)
	}

	// Given as a known_hosts line with the bastion's port.
	s = tunnelled("kh", pg, b)
	s.Tunnel.KnownHost = fmt.Sprintf("[%s]:%d %s", b.Host, b.Port, line)
	if v, err = f.svc.CreateConnection(ctx, s); err != nil || v.SSHTunnel.HostKeyFingerprint != fp {
		t.Fatalf("known_hosts line: %+v, %v", v, err)
	}

	// Another key given: the bastion's own key is refused, not trusted on
	// first use, and kept for approval.
	s = tunnelled("wrong", pg, b)
	s.Tunnel.KnownHost = otherLine
	v, err = f.svc.CreateConnection(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	// Nothing changed: the key given never logged in, and the messages
	// say it does not match the key given rather than that it changed.
	var changed *app.HostKeyChangedError
	err = selectOne(ctx, f.svc, "wrong")
	if !errors.As(err, &changed) || changed.Err.Presented != fp || !changed.Unverified {
		t.Fatalf("bastion with another key than the given one: %v", err)
	}
	givenFP := sshkey.Fingerprint(other.Public)
	for _, want := range []string{"presented host key " + fp + ", which does not match the key given with the connection (" + givenFP + ")",
		"ssh-keyscan -p " + strconv.Itoa(b.Port) + " " + b.Host, "pgrelay connection trust-host-key wrong --fingerprint " + fp} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "rebuilt") {
		t.Errorf("a key given wrong is called changed: %v", err)
	}
	rep, err := f.svc.TestConnection(ctx, "wrong", nil)
	if err != nil {
		t.Fatal(err)
	}
	if fail := rep.Failed(); fail == nil || fail.ID != diagnose.StepSSHHandshake || rep.HostKey.State != diagnose.HostKeyChanged ||
		!strings.Contains(fail.Hint, "does not match the key given with the connection") || strings.Contains(fail.Hint, "rebuilt") {
		t.Fatalf("test with another key given: %+v", rep.Steps)
	}
	// Giving the right key on update replaces the pin and the pending key.
	s.Tunnel.KnownHost = line
	if v, err = f.svc.UpdateConnection(ctx, "wrong", s, nil); err != nil {
		t.Fatal(err)
	}
	if v.SSHTunnel.HostKeyFingerprint != fp || v.SSHTunnel.PendingHostKeyFingerprint != "" {
		t.Fatalf("after update: %+v", v.SSHTunnel)
	}
	if err := selectOne(ctx, f.svc, "wrong"); err != nil {
		t.Fatal(err)
	}
	// An update without a key keeps the pin.
	s.Tunnel.KnownHost = ""
	if v, err = f.svc.UpdateConnection(ctx, "wrong", s, nil); err != nil || v.SSHTunnel.HostKeyFingerprint != fp {
		t.Fatalf("update without a key: %+v, %v", v, err)
	}

	// A draft is tested against the keys it gives.
	d := tunnelled("", pg, b)
	d.Tunnel.KnownHost = otherLine
	rep, err = f.svc.TestDraft(ctx, d, "given", nil)
	if err != nil {
		t.Fatal(err)
	}
	if fail := rep.Failed(); fail == nil || fail.ID != diagnose.StepSSHHandshake ||
		!strings.Contains(fail.Hint, "does not match the key given with the connection") {
		t.Fatalf("draft with another key: %+v", rep.Steps)
	}

	// Bad input is a field error that says what is accepted.
	s = tunnelled("bad", pg, b)
	s.Tunnel.KnownHost = "SHA256:" + strings.Repeat("A", 43)
	var ve *app.ValidationError
	if _, err := f.svc.CreateConnection(ctx, s); !errors.As(err, &ve) ||
		!strings.Contains(ve.Fields()["ssh_tunnel.known_host"], "accepted is the bastion's public host key") {
		t.Fatalf("fingerprint as known_host: %v", err)
	}
	if _, err := f.svc.GetConnection(ctx, "bad"); !errors.Is(err, app.ErrNotFound) {
		t.Fatal("a connection with a bad known_host was saved")
	}
}

// TestGivenKeyThatLoggedInChanged: a host key given with the connection
// that the bastion presented in a login is its key; when the bastion later
// presents another, its key changed, and the messages say so.
func TestGivenKeyThatLoggedInChanged(t *testing.T) {
	t.Parallel()
	pg, b := startPostgresAndOwnBastion(t)
	f := newService(t)
	ctx := context.Background()
	s := tunnelled("wh", pg, b)
	s.Tunnel.KnownHost = sshkey.AuthorizedKey(b.HostKey, "")
	v, err := f.svc.CreateConnection(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	if err := selectOne(ctx, f.svc, "wh"); err != nil {
		t.Fatal(err)
	}
	old := sshkey.Fingerprint(b.HostKey)
	b.RotateHostKey(t)
	err = selectOne(ctx, f.svc, "wh")
	var changed *app.HostKeyChangedError
	if !errors.As(err, &changed) || changed.Unverified || !strings.Contains(err.Error(), "does not match the pinned key: pinned "+old) {
		t.Fatalf("after the bastion's key changed: %v", err)
	}
	rep, err := f.svc.TestConnection(ctx, "wh", nil)
	if err != nil {
		t.Fatal(err)
	}
	if fail := rep.Failed(); fail == nil || fail.ID != diagnose.StepSSHHandshake || !strings.Contains(fail.Hint, "host key changed") {
		t.Fatalf("test after the bastion's key changed: %+v", rep.Steps)
	}
}

// TestHostNameCaseKeepsPins: a hop's host name written in another case is
// the same endpoint, so the stored password is kept without being given
// again, and so must the hop's pinned host key be. Were the pin forgotten,
// the next connection would trust whatever key answers there on first use
// and log in through it with the stored password. The bastion's host key
// is changed (an impostor at its address) before the host name's case is.
func TestHostNameCaseKeepsPins(t *testing.T) {
	t.Parallel()
	pg, b := startPostgresAndOwnBastion(t) // its host key is rotated
	f := newService(t)                     // tofu
	ctx := context.Background()
	s := tunnelled("wh", pg, b)
	s.Tunnel.Host = "localhost"
	v, err := f.svc.CreateConnection(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	if err := selectOne(ctx, f.svc, "wh"); err != nil {
		t.Fatal(err)
	}
	pinned := sshkey.Fingerprint(b.HostKey)
	b.RotateHostKey(t)

	// A draft based on the saved connection, the host name in capitals,
	// with the stored password: tested against the pin.
	d := s.Clone()
	d.Password = secret.Value{}
	d.Tunnel.Host = "LocalHost"
	rep, err := f.svc.TestDraft(ctx, d, "wh", nil)
	if err != nil {
		t.Fatal(err)
	}
	if fail := rep.Failed(); fail == nil || fail.ID != diagnose.StepSSHHandshake || rep.HostKey == nil ||
		rep.HostKey.State != diagnose.HostKeyChanged {
		t.Fatalf("draft with the bastion's name in other case: host key %+v, steps %+v", rep.HostKey, rep.Steps)
	}
	if st := rep.Step(diagnose.StepPostgresAuth); st == nil || st.Status != diagnose.StatusSkipped {
		t.Fatalf("the stored password was sent through a bastion that presented another key: %+v", st)
	}

	// Saved that way: the same endpoint, so no password is needed, and
	// the pin stays.
	v, err = f.svc.UpdateConnection(ctx, "wh", d, nil)
	if err != nil {
		t.Fatalf("the same bastion in other case, without the password: %v", err)
	}
	if v.SSHTunnel.HostKeyFingerprint != pinned {
		t.Fatalf("pin after the host name's case changed: %q, want %s", v.SSHTunnel.HostKeyFingerprint, pinned)
	}
	var changed *app.HostKeyChangedError
	if err := selectOne(ctx, f.svc, "wh"); !errors.As(err, &changed) || changed.Err.Presented != sshkey.Fingerprint(b.HostKey) {
		t.Fatalf("connection through the bastion presenting another key = %v, want refused as changed", err)
	}
	// Approving the key presented, at either spelling, is what lets it in.
	if _, err := f.svc.TrustHostKey(ctx, "wh", sshkey.Fingerprint(b.HostKey)); err != nil {
		t.Fatal(err)
	}
	if err := selectOne(ctx, f.svc, "wh"); err != nil {
		t.Fatalf("after approval: %v", err)
	}
}

// TestPinnedKeyTypeNotOfferedLogged: a bastion that has the pinned key but
// offers none of its type (an ECDSA key left out of HostKeyAlgorithms)
// presents another of its keys. The refusal is logged as that, in a query
// and in a connection test alike, not as a changed key: the log said
// "bastion host key changed".
func TestPinnedKeyTypeNotOfferedLogged(t *testing.T) {
	t.Parallel()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "second host key")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ssh_host_ecdsa_key")
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	pinned, err := ssh.NewPublicKey(priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	pg, b := startPostgresWith(t, testenv.StartBastion(t, testenv.BastionOptions{
		ExtraConfig: []string{"HostKey " + file, "HostKeyAlgorithms ssh-ed25519"}}))
	var logs testenv.LogBuffer
	f := newServiceWith(t, func(c *app.Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	ctx := context.Background()
	s := tunnelled("ecdsa", pg, b)
	s.Tunnel.KnownHost = sshkey.AuthorizedKey(pinned, "")
	v, err := f.svc.CreateConnection(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	const said = "bastion did not present a pinned host key (it offers none of their types)"
	if err := selectOne(ctx, f.svc, "ecdsa"); err == nil {
		t.Fatal("a query through a bastion that does not offer the pinned key's type succeeded")
	}
	if !strings.Contains(logs.String(), said) || strings.Contains(logs.String(), "host key changed") {
		t.Fatalf("the query's refusal is not logged as what it is:\n%s", logs.String())
	}
	before := len(logs.String())
	if rep, err := f.svc.TestConnection(ctx, "ecdsa", nil); err != nil || rep.OK {
		t.Fatalf("test: %+v %v", rep, err)
	}
	if test := logs.String()[before:]; !strings.Contains(test, said) || strings.Contains(test, "host key changed") {
		t.Fatalf("the test's refusal is not logged as what it is:\n%s", logs.String())
	}
}
