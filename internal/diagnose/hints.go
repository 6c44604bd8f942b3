package diagnose

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/egress"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// Hints are chosen by error type, SQLSTATE and the step reached; the
// messages of errors are never inspected.

// command returns a pgrelay command for the saved connection, such as
// "pgrelay connection trust-host-key NAME --fingerprint X", or "" for an
// unsaved draft.
func (r *runner) command(sub string, args ...string) string {
	if r.in.SavedName == "" {
		return ""
	}
	parts := append([]string{"pgrelay", "connection", sub, r.in.SavedName}, args...)
	return strings.Join(parts, " ")
}

// updateAdvice says how to change a setting: the command for a saved
// connection, the field for a draft. A change that verifies the endpoint
// less strictly (see connection.Endpoint.Covers) is refused unless the
// stored password (or auth secret) is given again, so the command then
// gives it too.
func (r *runner) updateAdvice(flag, value string) string {
	return r.changeAdvice(flag, value, value)
}

// changeAdvice is updateAdvice for a value shown as a placeholder (such as
// LIST): value is what it stands for when judging whether the change needs
// the stored secret again.
func (r *runner) changeAdvice(flag, shown, value string) string {
	env, again := r.secretAgain(flag, value)
	if cmd := r.command("update", append([]string{"--" + flag, shown}, again...)...); cmd != "" {
		if len(again) == 0 {
			return "`" + cmd + "`"
		}
		if env != "" {
			cmd = env + "=... " + cmd
		}
		return "`" + cmd + "` (a less strict setting needs the " + secretWord(r.spec) + " again)"
	}
	return fmt.Sprintf("set %s to %s", flag, value)
}

// secretAgain returns the flags that give the saved connection's stored
// password or auth secret again (and the environment variable they read,
// if any) when changing flag to value would stop the stored one from
// being sent (connection.Endpoint.Covers); nil when it needs nothing.
func (r *runner) secretAgain(flag, value string) (env string, flags []string) {
	next := r.spec.Clone()
	switch flag {
	case "sslmode":
		next.SSLMode = connection.SSLMode(value)
	case "require-auth":
		next.RequireAuth = value
	case "ssl-root-cert":
		// Another file: another CA as far as the stored secret goes
		// (text that holds no certificate stands for one).
		next.SSLRootCert = "another CA: " + value
	}
	if r.spec.Endpoint().Covers(next.Endpoint()) {
		return "", nil
	}
	switch {
	case r.spec.AuthKind() == connection.AuthLakebase && r.spec.Auth != nil && !r.spec.Auth.ClientSecret.IsZero():
		return "LB_SECRET", []string{"--client-secret-env", "LB_SECRET"}
	case r.spec.AuthKind() == connection.AuthAlloyDBIAM && r.spec.Auth != nil && !r.spec.Auth.ServiceAccountKey.IsZero():
		return "", []string{"--service-account-key-file", "KEY.json"}
	case !r.spec.AuthKind().IsToken() && !r.spec.Password.IsZero():
		return "DB_PASSWORD", []string{"--password-env", "DB_PASSWORD"}
	}
	return "", nil
}

// secretWord names the stored secret of spec that secretAgain gives.
func secretWord(spec *connection.Spec) string {
	switch spec.AuthKind() {
	case connection.AuthLakebase:
		return "client secret"
	case connection.AuthAlloyDBIAM:
		return "service-account key"
	}
	return "password"
}

func (r *runner) hintResolve(host string, err error, bastion bool) string {
	what := "database"
	if bastion {
		what = "SSH bastion"
	}
	var dnsErr *net.DNSError
	var denied *egress.DeniedError
	switch {
	case errors.As(err, &denied):
		return r.hintDenied(denied, what)
	case isTimeout(err):
		return fmt.Sprintf("The DNS server did not answer for %s in time: check this machine's DNS settings and network.", host)
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return fmt.Sprintf("The %s host name %q does not exist in DNS as seen from this machine: check its spelling. "+
			"Private names (e.g. *.internal) resolve only inside their network: use the public name or address, or connect through a VPN.",
			what, host)
	}
	return fmt.Sprintf("Looking up %q failed: check this machine's DNS settings and the spelling of the %s host.", host, what)
}

// droppedHint is the seed FAQ's advice for tunnels that drop.
func (r *runner) droppedHint() string {
	interval := connection.DefaultKeepaliveInterval
	count := connection.DefaultKeepaliveCountMax
	if t := r.spec.Tunnel; t != nil {
		interval, count = t.KeepaliveInterval.Duration(), t.KeepaliveCountMax
	}
	return fmt.Sprintf("The SSH tunnel dropped. Usual causes: a load balancer or NAT gateway in front of the bastion that cuts "+
		"connections idle for less than pgrelay's keepalive interval (%v): raise its idle timeout above that; or sshd giving up on "+
		"clients it thinks are idle: on the bastion set `ClientAliveInterval 30` and `ClientAliveCountMax 10` in /etc/ssh/sshd_config "+
		"(about 300 s) and reload sshd. pgrelay sends a keepalive every %v and gives up after %d missed replies.",
		interval, interval, count)
}

func (r *runner) hintBastionTCP(addr string, err error) string {
	host, port, _ := net.SplitHostPort(addr)
	var fwd *tunnel.ForwardError
	if c := r.cur; c != nil && c.i > 0 && errors.As(err, &fwd) {
		prev := r.spec.Hops()[c.i-1]
		switch fwd.Reason {
		case ssh.Prohibited:
			var b strings.Builder
			fmt.Fprintf(&b, "Hop %d (%s) refuses to forward to hop %d at %s. On hop %d, allow it: `AllowTcpForwarding yes` and a "+
				"`PermitOpen` that includes %s in its sshd_config; the key's line in ~%s/.ssh/authorized_keys there must say permitopen=\"%s\".",
				c.i, prev.Addr(), c.i+1, addr, c.i, addr, prev.User, sshkey.PermitOpen(c.hop.Host, c.hop.Port))
			if cmd := r.command("public-key", "--restricted"); cmd != "" {
				fmt.Fprintf(&b, " `%s` prints every hop's line, in order.", cmd)
			}
			return b.String()
		case ssh.ConnectionFailed:
			return fmt.Sprintf("Hop %d (%s) could not connect to hop %d at %s: check that name and port as hop %d sees them, "+
				"that sshd runs there, and that the firewall between the two hops admits port %s.", c.i, prev.Addr(), c.i+1, addr, c.i, port)
		}
	}
	switch {
	case isTimeout(err):
		return fmt.Sprintf("No answer from the SSH bastion %s within %v: the packets are dropped on the way. Usually the "+
			"bastion's security group or firewall does not admit this machine's address (add pgrelay's outbound IP to its "+
			"allowlist for port %s), the bastion is only reachable through a VPN, or %s points to the wrong machine.",
			addr, r.in.StepTimeout, port, host)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("%s answered but refused port %s: no SSH server listens there. Check the bastion's SSH port "+
			"(sshd_config Port, usually 22) and that sshd is running.", host, port)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return fmt.Sprintf("There is no network route from this machine to %s: check the address, and the VPN or routing "+
			"that should reach the bastion's network.", host)
	}
	return fmt.Sprintf("Could not open a TCP connection to the SSH bastion %s: check its host name and port, and that "+
		"this machine may reach it (firewall, security group, VPN).", addr)
}

// certRefusal says in words why a host certificate was refused.
func certRefusal(reason tunnel.CertReason) string {
	switch reason {
	case tunnel.CertUntrustedAuthority:
		return "signed by a CA not trusted for this bastion"
	case tunnel.CertWrongPrincipal:
		return "issued for another host name"
	case tunnel.CertExpired:
		return "expired"
	case tunnel.CertNotYetValid:
		return "not valid yet"
	case tunnel.CertNotHost:
		return "a user certificate, not a host certificate"
	}
	return "not valid"
}

func (r *runner) hintHandshake(addr string, err error) string {
	var mismatch *tunnel.HostKeyMismatchError
	var hsErr *tunnel.HandshakeError
	var algErr *tunnel.AlgorithmError
	var certErr *tunnel.HostCertificateError
	switch {
	case errors.As(err, &certErr) && certErr.Reason == tunnel.CertMissing:
		return fmt.Sprintf("A host CA is trusted for %s, so pgrelay expects a host certificate from it, but it presented a plain "+
			"host key (%s). Give the bastion a certificate signed by that CA (ssh-keygen -s HOST_CA -h -n NAME "+
			"/etc/ssh/ssh_host_ed25519_key.pub, then HostCertificate in /etc/ssh/sshd_config and reload sshd), or, if the key "+
			"is the bastion's (confirm with its administrator), pin it instead. Nothing was sent to the bastion.", addr, certErr.Presented)
	case errors.As(err, &certErr):
		return fmt.Sprintf("The bastion's host certificate was refused (%s), so pgrelay cannot tell it is the bastion. On the "+
			"bastion, sign its host key again with the host CA (ssh-keygen -s HOST_CA -h -n NAME -V +52w "+
			"/etc/ssh/ssh_host_ed25519_key.pub) and reload sshd; or correct the host authorities the connection trusts "+
			"(--ssh-host-authority). Nothing was sent to the bastion.", certRefusal(certErr.Reason))
	case errors.As(err, &mismatch) && len(mismatch.Pinned) == 0 && r.in.ApproveHostKeys:
		approve := r.command("trust-host-key", "--fingerprint", mismatch.Presented)
		if approve == "" {
			approve = "save the connection, test it, and approve the key (or give the key in the connection's bastion host key field)"
		} else {
			approve = "`" + approve + "`, or give the key itself with `" + r.command("update", "--ssh-known-host", `"ssh-ed25519 AAAA..."`) + "`"
		}
		return fmt.Sprintf("The bastion presented host key %s, and no key is pinned for it. This pgrelay approves bastion host "+
			"keys before first use (--host-key-policy approve), so the connection stops here and nothing was sent to the bastion. "+
			"Confirm the fingerprint with the bastion's administrator (on the bastion: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), "+
			"then an admin or editor approves it: %s.", mismatch.Presented, approve)
	case errors.As(err, &algErr):
		return fmt.Sprintf("The bastion %s offers for %s only %s, none of which pgrelay accepts: pgrelay refuses SHA-1 key "+
			"exchanges and MACs, ssh-rsa (SHA-1) and DSA host keys, and CBC ciphers. On the bastion, enable one of %s in "+
			"/etc/ssh/sshd_config (%s) and reload sshd; OpenSSH 7.4 and later support them by default.",
			addr, algErr.What, strings.Join(algErr.Offered, ", "), strings.Join(algErr.Accepted, ", "), sshdSetting(algErr.What))
	case errors.As(err, &mismatch) && mismatch.PinnedNotOffered():
		approve := r.command("trust-host-key", "--fingerprint", mismatch.Presented)
		if approve == "" {
			approve = "save the connection, test it, and approve the key"
		} else {
			approve = "`" + approve + "`"
		}
		return fmt.Sprintf("The bastion did not present a pinned host key: %s. To keep the pinned key, let the bastion "+
			"offer one of %s (HostKeyAlgorithms in /etc/ssh/sshd_config) and reload sshd; or confirm %s with the bastion's "+
			"administrator (on the bastion: ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) and approve it (on a server, an admin: replacing a "+
			"pinned key needs the admin role): %s. Nothing was sent to the bastion.",
			mismatch.NotOfferedText(), strings.Join(mismatch.PinnedAlgorithms, ", "), mismatch.Presented, approve)
	case errors.As(err, &mismatch) && len(mismatch.Pinned) > 0 && r.cur != nil && r.cur.in.HostKeysUnverified:
		return r.hintWrongKeyGiven(addr, mismatch)
	case errors.As(err, &mismatch) && len(mismatch.Pinned) > 0:
		approve := r.command("trust-host-key", "--fingerprint", mismatch.Presented)
		if approve == "" {
			approve = "save the connection, test it, and approve the key"
		} else {
			approve = "`" + approve + "`"
		}
		return fmt.Sprintf("The bastion's host key changed: %s is pinned, but it presented %s. If the bastion was rebuilt or "+
			"its keys were replaced, confirm the new fingerprint with its administrator (on the bastion: "+
			"ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) and approve it (on a server, an admin: replacing a pinned key needs "+
			"the admin role): %s. Otherwise someone may be intercepting "+
			"the connection: do not approve it. Nothing was sent to the bastion.",
			strings.Join(mismatch.Pinned, " or "), mismatch.Presented, approve)
	case errors.As(err, &mismatch):
		return fmt.Sprintf("The bastion's host key %s was not accepted; confirm it with the bastion's administrator.", mismatch.Presented)
	case isTimeout(err):
		_, port, _ := net.SplitHostPort(addr)
		return fmt.Sprintf("%s accepted the TCP connection but no SSH server answered within %v. Check that port %s is the "+
			"bastion's SSH port (not, say, the database's), and that a load balancer in front of the bastion has a healthy "+
			"target; a bastion under heavy load or a MaxStartups limit (sshd_config) can delay the greeting too.",
			addr, r.in.StepTimeout, port)
	case errors.As(err, &hsErr):
		return fmt.Sprintf("The SSH handshake with %s failed: check that it is an SSH server (OpenSSH) and that it offers "+
			"current algorithms (curve25519 key exchange; ed25519, ECDSA or RSA-SHA2 host keys; AES-GCM or ChaCha20).", addr)
	}
	return fmt.Sprintf("The SSH handshake with %s failed.", addr)
}

// hintWrongKeyGiven explains a host key mismatch when the pinned keys were
// given with the connection and never presented by the bastion: nothing
// changed, the key given is most likely not the bastion's.
func (r *runner) hintWrongKeyGiven(addr string, mismatch *tunnel.HostKeyMismatchError) string {
	host, port, _ := net.SplitHostPort(addr)
	give := r.command("update", "--ssh-known-host", `"ssh-ed25519 AAAA..."`)
	approve := r.command("trust-host-key", "--fingerprint", mismatch.Presented)
	if give == "" {
		give, approve = "give the right key in the bastion host key field", "save the connection, test it, and approve the key"
	} else {
		give, approve = "`"+give+"`", "`"+approve+"`"
	}
	return fmt.Sprintf("The bastion %s presented host key %s, which does not match the key given with the connection (%s); "+
		"no login has succeeded with that key, so most likely it is not this bastion's key. Check the key given: read the "+
		"bastion's real key on the bastion (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub) or from a machine you trust "+
		"(ssh-keyscan -p %s %s | ssh-keygen -lf -), then give the right one: %s; or, if %s is the bastion's fingerprint, "+
		"approve the presented key: %s. Nothing was sent to the bastion.",
		addr, mismatch.Presented, strings.Join(mismatch.Pinned, " or "), port, host, give, mismatch.Presented, approve)
}

func (r *runner) hintNoKey() string {
	return "An unsaved connection has no SSH key pair yet, so the bastion cannot authorize it. Save the connection: " +
		"pgrelay generates its key pair and shows the public key to add to the bastion's authorized_keys; then test again."
}

func (r *runner) hintAuth(addr string, err error) string {
	user := r.spec.Tunnel.User
	signer := r.in.Signer
	target := "the database " + r.dbAddr()
	if c := r.cur; c != nil {
		user, signer = c.hop.User, c.in.Signer
		if c.i+1 < c.n {
			target = "the next hop " + r.spec.Hops()[c.i+1].Addr()
		}
	}
	var authErr *tunnel.AuthError
	switch {
	case signer == nil:
		return r.hintNoKey()
	case errors.As(err, &authErr) && authErr.Certificate != nil:
		c := authErr.Certificate
		return fmt.Sprintf("The bastion %s refused pgrelay's certificate for %s (principal %s, key ID %q, valid %s to %s, CA %s). "+
			"On the bastion, as root: put the line of `pgrelay ssh-ca show` in a file such as /etc/ssh/pgrelay_user_ca.pub, add "+
			"`TrustedUserCAKeys /etc/ssh/pgrelay_user_ca.pub` to /etc/ssh/sshd_config before any Match line and reload sshd (sshd "+
			"reads only the first TrustedUserCAKeys: when `sshd -T` shows one already, add the line to that file); if sshd_config sets "+
			"AuthorizedPrincipalsFile, list %s there for %s; check that the bastion's clock is right. sshd's log names the reason.",
			addr, user, strings.Join(c.ValidPrincipals, ","), c.KeyId, certTime(c.ValidAfter), certTime(c.ValidBefore),
			ssh.FingerprintSHA256(c.SignatureKey), strings.Join(c.ValidPrincipals, ","), user)
	case errors.As(err, &authErr) && len(authErr.Methods) > 0 && !slices.Contains(authErr.Methods, "publickey"):
		return fmt.Sprintf("The bastion does not offer public key authentication to %s (it offers: %s): set "+
			"`PubkeyAuthentication yes` in its sshd_config and reload sshd.", user, strings.Join(authErr.Methods, ", "))
	case errors.As(err, &authErr):
		var b strings.Builder
		fmt.Fprintf(&b, "The bastion %s refused this connection's public key for user %s: the key is not authorized. "+
			"Add this line to ~%s/.ssh/authorized_keys on the bastion (~/.ssh mode 700, the file mode 600, both owned by %s); "+
			"it lets the key do nothing but forward to %s:\n%s\n",
			addr, user, user, user, target, r.restrictedKeyLine())
		var setup []string
		if c := r.cur; c != nil && c.n > 1 {
			// The script of hop 1 (the default) would install a line that
			// forwards only to hop 2, in place of this hop's line.
			setup = []string{"--hop", strconv.Itoa(c.i + 1)}
		}
		if cmd := r.command("bastion-setup", setup...); cmd != "" {
			fmt.Fprintf(&b, "or run, as root on the bastion, the script printed by `%s`. ", cmd)
		}
		fmt.Fprintf(&b, "Check also that the account is not locked: sshd without PAM refuses accounts created by useradd "+
			"until `usermod -p '*' %s`.", user)
		return b.String()
	case isTimeout(err):
		return fmt.Sprintf("The bastion did not finish authenticating %s within %v: it may be overloaded, or slow to look up "+
			"the user (UseDNS, LDAP).", user, r.in.StepTimeout)
	}
	return fmt.Sprintf("Authentication on the bastion %s failed.", addr)
}

// restrictedKeyLine is the authorized_keys line of the connection's key
// (with the comment of Input.PublicKeyLine) restricted to forwarding to
// the database: restrict,port-forwarding,permitopen="host:port".
func (r *runner) restrictedKeyLine() string {
	var pub ssh.PublicKey
	comment := ""
	line, signer := r.in.PublicKeyLine, r.in.Signer
	target := sshkey.PermitOpen(r.spec.Host, r.spec.Port)
	if c := r.cur; c != nil {
		if c.in.PublicKeyLine != "" || len(r.in.Hops) > 0 {
			line = c.in.PublicKeyLine
		}
		signer = c.in.Signer
		if c.i+1 < c.n {
			next := r.spec.Hops()[c.i+1]
			target = sshkey.PermitOpen(next.Host, next.Port)
		}
	}
	if line != "" {
		if k, c, _, _, err := ssh.ParseAuthorizedKey([]byte(line)); err == nil {
			pub, comment = k, c
		}
	}
	if pub == nil && signer != nil {
		pub = signer.PublicKey()
		if c, ok := pub.(*ssh.Certificate); ok {
			pub = c.Key
		}
	}
	if pub == nil {
		return "(no key yet)"
	}
	return sshkey.RestrictedTo(pub, comment, target)
}

// hintStream explains a failure to open the stream to the database.
func (r *runner) hintStream(err error) string {
	addr := r.dbAddr()
	port := strconv.Itoa(r.spec.Port)
	if dropped(err) != nil {
		return r.droppedHint()
	}
	var denied *egress.DeniedError
	if errors.As(err, &denied) {
		return r.hintDenied(denied, "database")
	}
	if r.tunnel != nil {
		var fwd *tunnel.ForwardError
		switch {
		case errors.As(err, &fwd) && fwd.Reason == ssh.Prohibited:
			var b strings.Builder
			fmt.Fprintf(&b, "The bastion refuses to forward to %s. On the bastion, allow it: in /etc/ssh/sshd_config "+
				"`AllowTcpForwarding yes` (and no `DisableForwarding yes`), and a `PermitOpen` that includes %s (or `PermitOpen any`); "+
				"if the key's line in authorized_keys has a permitopen=\"...\" option, it must name exactly %s.", addr, addr, addr)
			if cmd := r.command("public-key", "--restricted"); cmd != "" {
				fmt.Fprintf(&b, " `%s` prints a correctly restricted line.", cmd)
			}
			return b.String()
		case errors.As(err, &fwd) && fwd.Reason == ssh.ConnectionFailed:
			return fmt.Sprintf("The bastion could not connect to %s. Check the database host and port as the bastion sees them "+
				"(a private DNS name or IP), that the database is running, that the bastion is in the database's network "+
				"(VPC, peering), and that the database's security group or firewall admits the bastion on port %s.", addr, port)
		case isTimeout(err):
			return fmt.Sprintf("The bastion's connection to %s got no answer within %v: the database's security group or firewall "+
				"most likely drops packets from the bastion (allow the bastion's private address on port %s), or the host is "+
				"an address where nothing answers.", addr, r.in.StepTimeout, port)
		}
		return fmt.Sprintf("Opening a channel through the bastion to %s failed.", addr)
	}
	switch {
	case isTimeout(err):
		return fmt.Sprintf("No answer from %s within %v: a firewall, the database's security group or its authorized "+
			"networks drop this machine's packets (add this machine's public address; AlloyDB and Lakebase list allowed "+
			"networks in their consoles), the database is only reachable from a private network (use an SSH bastion), or "+
			"the host is wrong.", addr, r.in.StepTimeout)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("Nothing listens on %s: check the port, and that PostgreSQL runs and listens on this address "+
			"(listen_addresses and port in postgresql.conf).", addr)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return fmt.Sprintf("There is no network route to %s: the database may only be reachable from a private network "+
			"(use an SSH bastion or a VPN).", r.spec.Host)
	}
	return fmt.Sprintf("Could not connect to %s.", addr)
}

// hintTLS explains a failed tls step.
func (r *runner) hintTLS(err error) string {
	if dropped(err) != nil {
		return r.droppedHint()
	}
	var refused *SSLRefusedError
	var notPG *NotPostgresError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var recErr tls.RecordHeaderError
	var alert tls.AlertError
	ca := "the CA certificate configured for this connection (ssl_root_cert)"
	if r.spec.SSLRootCert == "" {
		ca = "this machine's system CA certificates (no ssl_root_cert is configured)"
	}
	switch {
	case errors.As(err, &refused):
		h := fmt.Sprintf("The server at %s does not accept SSL connections, but sslmode=%s requires them. Enable SSL on the "+
			"server (ssl = on in postgresql.conf, with a certificate), or, only on a network you trust, use sslmode=prefer: %s.",
			r.dbAddr(), r.spec.SSLMode, r.updateAdvice("sslmode", "prefer"))
		if r.spec.Flavor == connection.AlloyDB || r.spec.Flavor == connection.Lakebase {
			h += fmt.Sprintf(" %s always accepts SSL, so this is probably not a %s server: check the host and port.",
				r.spec.Flavor.Label(), r.spec.Flavor.Label())
		}
		return h
	case errors.As(err, &notPG):
		return r.hintNotPostgres()
	case errors.As(err, &unknownCA):
		issuer := ""
		if unknownCA.Cert != nil {
			issuer = fmt.Sprintf(" (issued by %q)", unknownCA.Cert.Issuer.CommonName)
		}
		return fmt.Sprintf("The server's certificate%s is not signed by %s. Configure the CA that signed the server's "+
			"certificate (--ssl-root-cert: a PEM file from your provider, e.g. the AlloyDB cluster's server CA): %s; or use "+
			"sslmode=require to encrypt without verifying the server: %s.", issuer, ca,
			r.updateAdvice("ssl-root-cert", "CA.pem"), r.updateAdvice("sslmode", "require"))
	case errors.As(err, &hostErr):
		names := certNames(hostErr.Certificate)
		return fmt.Sprintf("The server's certificate is valid for %s, not for %q (sslmode=verify-full checks the host name). "+
			"Connect with one of those names, or use sslmode=verify-ca, which checks the CA but not the name "+
			"(tunnels often reach a database by an address its certificate does not list): %s.",
			names, hostErr.Host, r.updateAdvice("sslmode", "verify-ca"))
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return r.hintExpired(err, invalid.Cert, ca)
	case errors.As(err, &invalid):
		return "The server's certificate is not acceptable for a server (wrong key usage, or a CA constraint): have it reissued."
	case errors.As(err, &recErr):
		return fmt.Sprintf("%s agreed to SSL but then did not speak TLS: check that the port is PostgreSQL's (an SSH server, "+
			"for one, also starts its answer with 'S').", r.dbAddr())
	case errors.As(err, &alert):
		return "The server ended the TLS handshake with an alert: it may require a TLS version or a client certificate that " +
			"this connection does not offer; see the server's log."
	case isTimeout(err):
		return fmt.Sprintf("The server did not complete the SSL request or TLS handshake within %v: it may be overloaded, or "+
			"something between here and the server holds the connection.", r.in.StepTimeout)
	}
	return "The TLS handshake failed."
}

// hintNotPostgres explains a server that answered with something no
// PostgreSQL server sends.
func (r *runner) hintNotPostgres() string {
	return fmt.Sprintf("%s does not speak PostgreSQL: some other service (an SSH server, say, when the bastion's port was "+
		"given as the database's) listens there. Check the database's host and port (5432 is usual).", r.dbAddr())
}

// hintExpired explains a certificate outside its validity period: the
// server's own, an intermediate CA certificate the server sends, or the CA
// certificate this machine trusts (ca names where that comes from).
func (r *runner) hintExpired(err error, cert *x509.Certificate, ca string) string {
	if cert == nil || !cert.IsCA {
		return "The server's certificate has expired or is not valid yet: renew it on the server, and check this machine's clock."
	}
	when := "expired on " + cert.NotAfter.UTC().Format("2006-01-02")
	if time.Now().Before(cert.NotBefore) {
		when = "is not valid until " + cert.NotBefore.UTC().Format("2006-01-02") + " (check this machine's clock)"
	}
	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) && slices.ContainsFunc(verr.UnverifiedCertificates, cert.Equal) {
		return fmt.Sprintf("The intermediate CA certificate %q that the server sends with its own %s: install the CA's "+
			"current certificate chain on the server (ssl_cert_file) and reload it.", cert.Subject.CommonName, when)
	}
	if r.spec.SSLRootCert == "" {
		return fmt.Sprintf("The CA certificate %q in %s %s: update this machine's CA certificates (the ca-certificates "+
			"package), or configure the CA's current certificate (--ssl-root-cert): %s.",
			cert.Subject.CommonName, ca, when, r.updateAdvice("ssl-root-cert", "CA.pem"))
	}
	return fmt.Sprintf("The CA certificate %q configured for this connection (ssl_root_cert) %s, so nothing it signed is "+
		"trusted, though the server's certificate itself is valid. Get the CA's current certificate from your provider or "+
		"administrator and configure it: %s; or use sslmode=require to encrypt without verifying the server: %s.",
		cert.Subject.CommonName, when, r.updateAdvice("ssl-root-cert", "CA.pem"), r.updateAdvice("sslmode", "require"))
}

// certNames lists the names and addresses a certificate is valid for.
func certNames(c *x509.Certificate) string {
	if c == nil {
		return "other names"
	}
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 && c.Subject.CommonName != "" {
		names = append(names, c.Subject.CommonName)
	}
	if len(names) == 0 {
		return "no host name"
	}
	return strings.Join(names, ", ")
}

// hintLogin explains a failed postgres_auth or database step; it may probe
// the server (a TLS attempt, the list of databases) to be specific.
func (r *runner) hintLogin(ctx context.Context, res *loginResult, encrypted bool, local net.Addr) string {
	err := res.err
	if dropped(err) != nil {
		return r.droppedHint()
	}
	user, db := r.spec.User, r.spec.Database
	pgErr := asPgError(err)
	var refused *AuthRefusedError
	if errors.As(err, &refused) {
		return r.hintAuthRefused(refused)
	}
	var notPG *NotPostgresError
	if errors.As(err, &notPG) {
		return r.hintNotPostgres()
	}
	if pgErr == nil {
		switch {
		case isTimeout(err):
			return fmt.Sprintf("The server did not finish the login within %v: it may be overloaded (check its CPU and "+
				"connections), or a proxy between here and the server holds the connection.", r.in.StepTimeout)
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return fmt.Sprintf("The server at %s closed the connection during the login without an error: check that it is "+
				"a PostgreSQL server, and that a connection pooler or load balancer in front of it has a healthy backend.", r.dbAddr())
		}
		return "The login failed before the server answered."
	}
	switch pgErr.Code {
	case "28P01":
		if r.spec.AuthKind().IsToken() {
			return r.hintTokenRefused()
		}
		h := fmt.Sprintf("The server rejected the password for user %q (PostgreSQL does not say whether the user exists). "+
			"Check the user name and password", user)
		if r.spec.Password.IsZero() {
			h += "; no password is set for this connection"
		}
		if cmd := r.command("update", "--password-env", "DB_PASSWORD"); cmd != "" {
			h += fmt.Sprintf("; change the saved one with `DB_PASSWORD=... %s`", cmd)
		}
		h += "."
		switch r.spec.Flavor {
		case connection.Lakebase:
			h += " A Lakebase OAuth token used as password expires after one hour: generate a new one, or use a native Postgres role password."
		case connection.AlloyDB:
			h += " With AlloyDB IAM authentication the password is an OAuth access token, which expires after one hour."
		}
		return h
	case "3D000":
		h := fmt.Sprintf("The database %q does not exist on this server (names are case-sensitive).", db)
		if dbs, lerr := r.listDatabases(ctx, encrypted); lerr == nil && len(dbs) > 0 {
			h += fmt.Sprintf(" Databases %s may connect to: %s.", user, strings.Join(dbs, ", "))
		} else {
			h += " List the databases by connecting to the database postgres and running " +
				"SELECT datname FROM pg_database WHERE NOT datistemplate (psql: \\l)."
		}
		if r.spec.Flavor == connection.Lakebase {
			h += " Lakebase's default database is databricks_postgres."
		}
		return h + " " + "Set the right one: " + r.updateAdvice("database", "NAME") + "."
	case "42501":
		return fmt.Sprintf("User %q lacks the CONNECT privilege on database %q. An administrator runs: "+
			"GRANT CONNECT ON DATABASE %s TO %s;%s", user, db, quoteIdent(db), quoteIdent(user), r.grantsAdvice())
	case "53300":
		threads := r.spec.Threads
		return fmt.Sprintf("The server has no connection slot left for %q: max_connections is reached (the last "+
			"superuser_reserved_connections are kept for superusers), or a CONNECTION LIMIT of the role or database is. "+
			"Close idle sessions (see SELECT usename, state, backend_start FROM pg_stat_activity), lower the connection's "+
			"threads (now %d), put a pooler such as PgBouncer in front, or raise the limit.", user, threads)
	case "57P03":
		return "The server is starting up, shutting down or recovering and does not accept connections yet: try again in a minute."
	case "28000":
		if res.afterAuth() {
			return fmt.Sprintf("The server authenticated %q but the role may not log in (NOLOGIN). An administrator runs: "+
				"ALTER ROLE %s LOGIN;", user, quoteIdent(user))
		}
		if !encrypted && r.probeSSLRequired(ctx) {
			return fmt.Sprintf("The server requires SSL: it rejects unencrypted connections (its pg_hba.conf only has hostssl "+
				"lines for this user), and accepted the same login over TLS. Use sslmode=require: %s.",
				r.updateAdvice("sslmode", "require"))
		}
		enc := "without SSL"
		if encrypted {
			enc = "over SSL"
		}
		from := "this machine's address"
		if r.tunnel != nil {
			from = fmt.Sprintf("the bastion's address (the database sees connections from the bastion %s, not from this machine)",
				r.spec.Tunnel.Host)
		} else if tcp, ok := local.(*net.TCPAddr); ok {
			from = fmt.Sprintf("this machine's address %s (unless NAT changes it on the way)", tcp.IP)
		}
		return fmt.Sprintf("The server's pg_hba.conf has no line that lets user %q connect to database %q from %s %s "+
			"(or a line rejects it). An administrator adds a line such as `hostssl %s %s <address>/32 scram-sha-256` to "+
			"pg_hba.conf and reloads the server (SELECT pg_reload_conf()); managed services (AlloyDB, Lakebase) manage these "+
			"rules through their network and IAM settings instead.", user, db, from, enc, hbaWord(db), hbaWord(user))
	}
	if pgErr.Hint != "" {
		return "The server refused the login: " + pgErr.Hint
	}
	return fmt.Sprintf("The server refused the login (SQLSTATE %s).", pgErr.Code)
}

// grantsAdvice points to the grants audit for a saved connection.
func (r *runner) grantsAdvice() string {
	if r.in.SavedName == "" {
		return ""
	}
	return fmt.Sprintf(" `pgrelay grants %s` lists every privilege a dbt run needs.", r.in.SavedName)
}

// hintQuery explains a failed query step.
func (r *runner) hintQuery(err error) string {
	if dropped(err) != nil {
		return r.droppedHint()
	}
	if isTimeout(err) {
		return fmt.Sprintf("SELECT 1 did not return within %v: the server is overloaded, or locks block it.", r.in.StepTimeout)
	}
	if poolerSymptom(err) {
		return r.hintPooler()
	}
	if pgErr := asPgError(err); pgErr != nil {
		return fmt.Sprintf("The server refused a trivial query (SQLSTATE %s): see the error; its log has more.", pgErr.Code)
	}
	return "The session broke during a trivial query."
}

// quoteIdent quotes a PostgreSQL identifier.
func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// hbaWord quotes a pg_hba.conf database or user field when needed.
func hbaWord(s string) string {
	for _, c := range s {
		if !(c == '_' || c == '-' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			return `"` + s + `"`
		}
	}
	return s
}

// hintAuthRefused explains an authentication method pgrelay refused.
func (r *runner) hintAuthRefused(e *AuthRefusedError) string {
	if e.Method == "password" && r.spec.CleartextRefusedByDefault() && r.spec.AuthKind().IsToken() {
		return r.hintTokenCleartext()
	}
	if e.Method == "password" && r.spec.CleartextRefusedByDefault() {
		return fmt.Sprintf("The server asked for the password in clear text, and pgrelay does not verify this server's certificate "+
			"(sslmode=%s), so anyone on the path could read it: pgrelay refused and sent nothing. Best: have the server use "+
			"SCRAM (in pg_hba.conf the method scram-sha-256, with password_encryption = scram-sha-256 and the password set again). "+
			"Or verify the server: %s with its CA certificate. Or accept clear text knowingly: %s.",
			r.spec.SSLMode, r.updateAdvice("sslmode", "verify-full"), r.updateAdvice("require-auth", "password,md5,scram-sha-256"))
	}
	return fmt.Sprintf("The server asked for %s authentication, which this connection's require_auth setting (%q) does not accept, "+
		"so pgrelay sent no password. Change the server's pg_hba.conf method, or the setting: %s.",
		e.Method, e.Policy, r.changeAdvice("require-auth", "LIST", acceptingToo(e.Policy, e.Method)))
}

// acceptingToo is the require_auth policy that also accepts method: a
// list of refused methods without its refusal, a list of accepted ones
// with it.
func acceptingToo(policy, method string) string {
	var kept []string
	negated := false
	for _, m := range strings.Split(policy, ",") {
		m = strings.TrimSpace(m)
		switch {
		case m == "":
		case m == "!"+method:
			negated = true
		default:
			negated = negated || strings.HasPrefix(m, "!")
			kept = append(kept, m)
		}
	}
	if !negated {
		kept = append(kept, method)
	}
	if len(kept) == 0 {
		// Nothing refused (an empty policy would be the default).
		return "password,md5,scram-sha-256,gss,sspi,oauth,none"
	}
	return strings.Join(kept, ",")
}

// sshdSetting names the sshd_config setting of a part of the handshake.
func sshdSetting(what string) string {
	switch what {
	case "key exchange":
		return "KexAlgorithms"
	case "host key":
		return "HostKeyAlgorithms, with a HostKey of that type"
	case "cipher":
		return "Ciphers"
	}
	return "MACs"
}

// deniedTarget names a refused address as the user gave it.
func deniedTarget(d *egress.DeniedError) string {
	target := d.Addr.String()
	if d.Port != 0 {
		target = netip.AddrPortFrom(d.Addr, d.Port).String()
	}
	if d.Host != "" {
		target = fmt.Sprintf("%s (%s)", d.Host, target)
	}
	return target
}

// hintDenied explains a refusal by the network policy; what is "SSH
// bastion" or "database".
func (r *runner) hintDenied(d *egress.DeniedError, what string) string {
	if d.Rule.Default {
		return fmt.Sprintf("The %s address %s is link-local or a cloud metadata address (%s), where cloud instances get their "+
			"metadata and credentials, so pgrelay does not connect there. Nothing was sent to it. Check the %s host; if this "+
			"address really is the %s, the operator of the pgrelay process that connects (the server, for the web UI and API) "+
			"allows it with --allow-network %s (env PGRELAY_ALLOW_NETWORK).",
			what, deniedTarget(d), d.Rule.Prefix, what, what, d.Rule.Prefix)
	}
	return fmt.Sprintf("The %s address %s is in %s, which the operator denied with --deny-network %s (env PGRELAY_DENY_NETWORK) "+
		"on the pgrelay process that connects (the server, for the web UI and API). Nothing was sent to it. Check the %s host, "+
		"or ask the operator to allow this address (--allow-network with a narrower range).",
		what, deniedTarget(d), d.Rule.Prefix, d.Rule.Prefix, what)
}
