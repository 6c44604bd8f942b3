package app_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/testenv"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// newCA makes a throwaway ed25519 CA key.
func newCA(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// writeFile writes data to a new file in a private directory.
func writeFile(t *testing.T, name, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCertificateLogin logs in to sshd's that trust pgrelay's CA
// (TrustedUserCAKeys) with empty authorized_keys: the certificate names
// the hop's user, allows only port forwarding, and its key ID names the
// connection; an expired certificate (pgrelay's clock behind), a principal
// sshd does not allow, and a CA sshd does not trust each fail with a clear
// reason.
func TestCertificateLogin(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	var clock struct{ skew time.Duration }
	f := newServiceWith(t, func(c *app.Config) { c.Now = func() time.Time { return time.Now().Add(clock.skew) } })
	ctx := context.Background()
	svc := f.svc

	// Without a CA, certificate logins are refused when saved.
	spec := func(name string, b *testenv.Bastion) connection.Spec {
		return connection.Spec{Name: name, Host: pg.Host, Port: pg.Port, Database: db.Name, User: db.User,
			Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
			Tunnel: &connection.Tunnel{Host: b.Host, Port: b.Port, User: b.User, Auth: connection.SSHAuthCertificate}}
	}
	trusting := testenv.StartBastion(t, testenv.BastionOptions{})
	var ve *app.ValidationError
	if _, err := svc.CreateConnection(ctx, spec("cert", trusting)); !errors.As(err, &ve) ||
		!strings.Contains(ve.Fields()["ssh_tunnel.auth"], "pgrelay ssh-ca init") {
		t.Fatalf("certificate login without a CA: %v, want a field error naming ssh-ca init", err)
	}
	if _, err := svc.SSHCA(ctx); !errors.Is(err, app.ErrNotFound) {
		t.Fatalf("SSHCA before init: %v, want ErrNotFound", err)
	}
	ca, err := svc.InitSSHCA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Without --principal, as before the list existed: any principal.
	if !ca.AnyPrincipal || ca.Principals == nil || len(ca.Principals) != 0 {
		t.Fatalf("CA made without principals: any %v, principals %#v", ca.AnyPrincipal, ca.Principals)
	}
	if _, err := svc.InitSSHCA(ctx); !errors.Is(err, app.ErrExists) {
		t.Fatalf("second init: %v, want ErrExists", err)
	}
	caFile := writeFile(t, "pgrelay_user_ca.pub", ca.PublicKey+"\n")

	// sshd's that trust the CA, with nothing in authorized_keys.
	trusting = testenv.StartBastion(t, testenv.BastionOptions{ExtraConfig: []string{"TrustedUserCAKeys " + caFile}})
	if _, err := svc.CreateConnection(ctx, spec("cert", trusting)); err != nil {
		t.Fatal(err)
	}
	var sink rowsSink
	if err := svc.Query(ctx, "cert", "select 7", &sink); err != nil || sink.String() != "7" {
		t.Fatalf("query with a certificate: %q %v\n%s", sink.String(), err, trusting.LogTail())
	}
	log := trusting.Log()
	if !strings.Contains(log, `ID pgrelay connection=cert`) || !strings.Contains(log, "CA ED25519 "+ca.Fingerprint) {
		t.Fatalf("sshd's log does not name the certificate's key ID and CA:\n%s", log)
	}
	rep, err := svc.TestConnection(ctx, "cert", nil)
	if err != nil || !rep.OK {
		t.Fatalf("test with a certificate: %+v %v", rep.Failed(), err)
	}
	if st := rep.Step(diagnose.StepSSHAuth); !strings.Contains(st.Detail, "certificate") {
		t.Fatalf("ssh_auth detail does not mention the certificate: %q", st.Detail)
	}

	// pgrelay's clock two hours behind: the certificate has expired by the
	// bastion's clock.
	clock.skew = -2 * time.Hour
	_, err = svc.Open(ctx, "cert")
	var refused *app.CertificateRefusedError
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), "expired by this machine's clock") {
		t.Fatalf("expired certificate: %v, want a CertificateRefusedError saying it expired", err)
	}
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(trusting.Log(), "Certificate invalid: expired") })
	clock.skew = 0

	// A principal sshd does not allow for the user.
	principals := writeFile(t, "principals", "someone-else\n")
	wrong := testenv.StartBastion(t, testenv.BastionOptions{ExtraConfig: []string{"TrustedUserCAKeys " + caFile,
		"AuthorizedPrincipalsFile " + principals}})
	if _, err := svc.CreateConnection(ctx, spec("principal", wrong)); err != nil {
		t.Fatal(err)
	}
	_, err = svc.Open(ctx, "principal")
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), `does not let principal "`+wrong.User+`" log in`) {
		t.Fatalf("wrong principal: %v, want a CertificateRefusedError naming the principal", err)
	}
	waitFor(t, 5*time.Second, func() bool {
		return strings.Contains(wrong.Log(), "Certificate does not contain an authorized principal")
	})

	// A CA sshd does not trust.
	other := writeFile(t, "other_ca.pub", sshkey.AuthorizedKey(newCA(t).PublicKey(), "")+"\n")
	untrusting := testenv.StartBastion(t, testenv.BastionOptions{ExtraConfig: []string{"TrustedUserCAKeys " + other}})
	if _, err := svc.CreateConnection(ctx, spec("untrusted", untrusting)); err != nil {
		t.Fatal(err)
	}
	_, err = svc.Open(ctx, "untrusted")
	if !errors.As(err, &refused) || !strings.Contains(err.Error(), "does not trust pgrelay's SSH CA "+ca.Fingerprint) {
		t.Fatalf("untrusted CA: %v, want a CertificateRefusedError naming the CA", err)
	}
	rep, err = svc.TestConnection(ctx, "untrusted", nil)
	if err != nil {
		t.Fatal(err)
	}
	if fs := rep.Failed(); fs == nil || fs.ID != diagnose.StepSSHAuth || !strings.Contains(fs.Hint, "TrustedUserCAKeys") {
		t.Fatalf("test with an untrusted CA: %+v", fs)
	}
	// sshd logs the refused certificate with its key ID and CA.
	waitFor(t, 5*time.Second, func() bool {
		return strings.Contains(untrusting.Log(), "Failed publickey for "+untrusting.User) &&
			strings.Contains(untrusting.Log(), "ID pgrelay connection=untrusted")
	})
}

// TestHostCertificate trusts a bastion through its host CA
// (@cert-authority) without any pin; refuses a revoked host key, and a
// host certificate that expired or names another host, with clear errors.
func TestHostCertificate(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	b := testenv.StartBastion(t, testenv.BastionOptions{})
	hostCA := newCA(t)
	now := time.Now()
	b.CertifyHostKey(t, hostCA, []string{"127.0.0.1"}, now.Add(-time.Hour), now.Add(time.Hour))
	f := newServiceWith(t, func(c *app.Config) { c.HostKeyPolicy = app.HostKeyApprove })
	ctx := context.Background()
	caLine := "@cert-authority 127.0.0.1,[127.0.0.1]:* " + sshkey.AuthorizedKey(hostCA.PublicKey(), "")
	v, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "hc", Host: pg.Host, Port: pg.Port, Database: db.Name,
		User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: b.Host, Port: b.Port, User: b.User, HostAuthorities: []string{caLine}}})
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	// Under the approve policy nothing is trusted on first use: the host
	// certificate alone gets the connection through.
	var sink rowsSink
	if err := f.svc.Query(ctx, "hc", "select 1", &sink); err != nil {
		t.Fatalf("query via a host certificate: %v", err)
	}
	if v, _ = f.svc.GetConnection(ctx, "hc"); v.SSHTunnel.HostKeyFingerprint != "" || v.SSHTunnel.PendingHostKeyFingerprint != "" {
		t.Fatalf("a host vouched for by its CA got pinned or held: %+v", v.SSHTunnel)
	}
	rep, err := f.svc.TestConnection(ctx, "hc", nil)
	if err != nil || !rep.OK || !rep.HostKey.Certificate {
		t.Fatalf("test via a host certificate: %+v %+v %v", rep.Failed(), rep.HostKey, err)
	}

	// The bastion's key revoked: refused though its certificate is valid.
	update := func(lines ...string) {
		t.Helper()
		cur, _ := f.svc.GetConnection(ctx, "hc")
		s := cur.Spec()
		s.Tunnel.HostAuthorities = lines
		// Taking a revocation back needs the password again.
		pw := secret.New(db.Password)
		if _, err := f.svc.UpdateConnection(ctx, "hc", s, &pw); err != nil {
			t.Fatal(err)
		}
	}
	update(caLine, "@revoked * "+sshkey.AuthorizedKey(b.HostKey, ""))
	_, err = f.svc.Open(ctx, "hc")
	var revoked *tunnel.HostKeyRevokedError
	if !errors.As(err, &revoked) || !strings.Contains(err.Error(), "revoked host key "+sshkey.Fingerprint(b.HostKey)) {
		t.Fatalf("revoked host key: %v, want HostKeyRevokedError", err)
	}
	update(caLine)

	// An expired host certificate.
	b.CertifyHostKey(t, hostCA, []string{"127.0.0.1"}, now.Add(-2*time.Hour), now.Add(-time.Hour))
	_, err = f.svc.Open(ctx, "hc")
	var certErr *tunnel.HostCertificateError
	if !errors.As(err, &certErr) || certErr.Reason != tunnel.CertExpired || !strings.Contains(err.Error(), "expired at") {
		t.Fatalf("expired host certificate: %v, want HostCertificateError expired", err)
	}
	// A certificate for another host name.
	b.CertifyHostKey(t, hostCA, []string{"bastion.example.com"}, now.Add(-time.Hour), now.Add(time.Hour))
	_, err = f.svc.Open(ctx, "hc")
	if !errors.As(err, &certErr) || certErr.Reason != tunnel.CertWrongPrincipal || !strings.Contains(err.Error(), "bastion.example.com") {
		t.Fatalf("host certificate for another name: %v, want HostCertificateError wrong principal", err)
	}
	// Signed by a CA not trusted for this host.
	b.CertifyHostKey(t, newCA(t), []string{"127.0.0.1"}, now.Add(-time.Hour), now.Add(time.Hour))
	_, err = f.svc.Open(ctx, "hc")
	if !errors.As(err, &certErr) || certErr.Reason != tunnel.CertUntrustedAuthority {
		t.Fatalf("host certificate of an untrusted CA: %v, want HostCertificateError untrusted", err)
	}
	rep, err = f.svc.TestConnection(ctx, "hc", nil)
	if err != nil {
		t.Fatal(err)
	}
	if fs := rep.Failed(); fs == nil || fs.ID != diagnose.StepSSHHandshake ||
		!strings.Contains(fs.Hint, "host certificate was refused (signed by a CA not trusted") || !strings.Contains(fs.Hint, "--ssh-host-authority") {
		t.Fatalf("test with an untrusted host certificate: %+v, want the failure's hint to say why and what to do", fs)
	}
	if v, _ = f.svc.GetConnection(ctx, "hc"); v.SSHTunnel.HostKeyFingerprint != "" {
		t.Fatal("a refused host certificate's key got pinned")
	}
}

// TestHostCertificateNameCase: a hop's host name is compared with a host
// certificate's principals in lower case, as OpenSSH's ssh does: a name
// typed in another case is the same host (it was refused as "wrong
// principal").
func TestHostCertificateNameCase(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	b := testenv.StartBastion(t, testenv.BastionOptions{})
	hostCA := newCA(t)
	now := time.Now()
	b.CertifyHostKey(t, hostCA, []string{"localhost"}, now.Add(-time.Hour), now.Add(time.Hour))
	f := newServiceWith(t, func(c *app.Config) { c.HostKeyPolicy = app.HostKeyApprove })
	ctx := context.Background()
	v, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "hcase", Host: pg.Host, Port: pg.Port, Database: db.Name,
		User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: "LocalHost", Port: b.Port, User: b.User,
			HostAuthorities: []string{"@cert-authority [localhost]:* " + sshkey.AuthorizedKey(hostCA.PublicKey(), "")}}})
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	if err := f.svc.Query(ctx, "hcase", "select 1", &rowsSink{}); err != nil {
		t.Fatalf("query via a host certificate for localhost, host typed LocalHost: %v", err)
	}
}
