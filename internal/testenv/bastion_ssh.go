package testenv

import (
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// File returns the path of name in the bastion's private directory, for
// files that BastionOptions.ExtraConfig names (written by the test).
func (b *Bastion) File(name string) string { return filepath.Join(b.dir, name) }

// SetAuthorizedKeys replaces the authorized_keys file with lines (one key
// each), taking effect for the next login: removing a key refuses it from
// then on.
func (b *Bastion) SetAuthorizedKeys(tb testing.TB, lines ...string) {
	tb.Helper()
	b.notShared(tb, "set authorized keys of")
	b.authMu.Lock()
	defer b.authMu.Unlock()
	var data []byte
	for _, l := range lines {
		data = append(data, strings.TrimRight(l, "\r\n")+"\n"...)
	}
	tmp := b.authKeysFile + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		tb.Fatalf("testenv: set authorized keys of bastion %s: %v", b.Addr(), err)
	}
	if err := os.Rename(tmp, b.authKeysFile); err != nil {
		tb.Fatalf("testenv: set authorized keys of bastion %s: %v", b.Addr(), err)
	}
}

// CertifyHostKey signs the bastion's host key with ca as an OpenSSH host
// certificate for principals, valid from after to before, makes sshd
// present it (HostCertificate) and restarts sshd on the same port (SIGHUP;
// established connections stay up). It returns the certificate.
func (b *Bastion) CertifyHostKey(tb testing.TB, ca ssh.Signer, principals []string, after, before time.Time) *ssh.Certificate {
	tb.Helper()
	b.notShared(tb, "certify host key of")
	cert := &ssh.Certificate{
		Key:             b.HostKey,
		CertType:        ssh.HostCert,
		KeyId:           "testenv host " + b.Addr(),
		ValidPrincipals: principals,
		ValidAfter:      uint64(after.Unix()),
		ValidBefore:     uint64(before.Unix()),
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		tb.Fatalf("testenv: certify host key of bastion %s: %v", b.Addr(), err)
	}
	path := b.hostKeyFile + "-cert.pub"
	if err := os.WriteFile(path, ssh.MarshalAuthorizedKey(cert), 0o600); err != nil {
		tb.Fatalf("testenv: certify host key of bastion %s: %v", b.Addr(), err)
	}
	line := "HostCertificate " + path
	found := false
	for _, l := range b.opts.ExtraConfig {
		found = found || l == line
	}
	if !found {
		b.opts.ExtraConfig = append(b.opts.ExtraConfig, line)
	}
	b.restart(tb)
	return cert
}

// restart rewrites sshd_config and restarts sshd on the same port (SIGHUP),
// returning once it serves again.
func (b *Bastion) restart(tb testing.TB) {
	tb.Helper()
	b.notShared(tb, "restart")
	if !b.running() {
		tb.Fatalf("testenv: restart bastion %s: sshd is not running", b.Addr())
	}
	if err := os.WriteFile(b.configFile, []byte(b.config()), 0o600); err != nil {
		tb.Fatalf("testenv: restart bastion %s: write sshd_config: %v", b.Addr(), err)
	}
	offset := fileSize(b.logFile)
	if err := b.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		tb.Fatalf("testenv: restart bastion %s: signal sshd: %v", b.Addr(), err)
	}
	if err := b.waitRestarted(offset, 10*time.Second); err != nil {
		tb.Fatalf("testenv: restart bastion %s: %v\n--- tail of %s ---\n%s", b.Addr(), err, b.logFile, b.LogTail())
	}
	if err := b.waitReady(10 * time.Second); err != nil {
		tb.Fatalf("testenv: restart bastion %s: %v\n--- tail of %s ---\n%s", b.Addr(), err, b.logFile, b.LogTail())
	}
}

// Log returns sshd's whole log (LogLevel VERBOSE): logins with the key or
// certificate used (a certificate's key ID among them), and refusals with
// their reason.
func (b *Bastion) Log() string { return readFrom(b.logFile, 0) }

// Login logs in to the bastion as its user with signer, checking its host
// key, and closes the connection: nil when sshd accepted the key.
func (b *Bastion) Login(signer ssh.Signer) error {
	conn, err := net.DialTimeout("tcp", b.Addr(), 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	c, _, _, err := ssh.NewClientConn(conn, b.Addr(), &ssh.ClientConfig{User: b.User,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: ssh.FixedHostKey(b.HostKey)})
	if err != nil {
		return err
	}
	return c.Close()
}
