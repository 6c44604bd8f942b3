package tunnel

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// ErrClosed is the cause reported by [Tunnel.Err] and by its connections
// after [Tunnel.Close].
var ErrClosed = errors.New("SSH tunnel closed")

// ErrKeepaliveTimeout is the cause of a [*DroppedError] when the bastion
// stopped answering keepalive requests.
var ErrKeepaliveTimeout = errors.New("no keepalive reply")

// isTimeout reports whether err is a time-out of a network operation.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// DialError means the TCP connection to the bastion could not be made.
// Use errors.Is (for example with syscall.ECONNREFUSED) or [DialError.Timeout]
// to tell a refused connection from a time-out.
type DialError struct {
	// Addr is the bastion's host:port.
	Addr string
	// Err is the cause from the dialer.
	Err error
}

// Error says what failed and what to check: this machine's way to the
// bastion, or, for a hop reached through the one before it (a
// [*ForwardError]), what that hop said.
func (e *DialError) Error() string {
	what := "failed"
	if e.Timeout() {
		what = "timed out"
	}
	var fe *ForwardError
	if errors.As(e.Err, &fe) {
		return fmt.Sprintf("connect to SSH bastion %s %s: %v", e.Addr, what, e.Err)
	}
	return fmt.Sprintf("connect to SSH bastion %s %s: %v: check the bastion's host name and port, "+
		"and that this machine can reach it (firewall, security group, VPN)", e.Addr, what, e.Err)
}

// Unwrap returns the cause.
func (e *DialError) Unwrap() error { return e.Err }

// Timeout reports whether the connect timed out.
func (e *DialError) Timeout() bool { return isTimeout(e.Err) }

// HandshakeError means the TCP connection was made but the SSH protocol
// handshake (version exchange, key exchange) failed or timed out. It is not
// used for host key or authentication failures, which have their own types.
type HandshakeError struct {
	// Addr is the bastion's host:port.
	Addr string
	// Err is the cause.
	Err error
}

// Error says what failed and what to check.
func (e *HandshakeError) Error() string {
	var algErr *AlgorithmError
	if errors.As(e.Err, &algErr) {
		return algErr.Error()
	}
	if e.Timeout() {
		return fmt.Sprintf("SSH handshake with bastion %s timed out: %v: the port accepted the connection "+
			"but no SSH server answered in time; check that %s is the bastion's SSH port and that nothing "+
			"between here and the bastion (load balancer, firewall) holds the connection", e.Addr, e.Err, e.Addr)
	}
	return fmt.Sprintf("SSH handshake with bastion %s failed: %v: check that %s is an OpenSSH server "+
		"and that it supports modern algorithms (curve25519 or ECDH key exchange, ed25519/ECDSA/RSA-SHA2 host keys, AES-GCM, ChaCha20 or AES-CTR with SHA-2 MACs)",
		e.Addr, e.Err, e.Addr)
}

// Unwrap returns the cause.
func (e *HandshakeError) Unwrap() error { return e.Err }

// Timeout reports whether the handshake timed out.
func (e *HandshakeError) Timeout() bool { return isTimeout(e.Err) }

// HostKeyMismatchError means the bastion presented a host key that is not
// pinned, or that no key is pinned and none may be trusted on first use.
// The tunnel fails closed: no credentials were sent.
type HostKeyMismatchError struct {
	// Addr is the bastion's host:port.
	Addr string
	// Pinned are the fingerprints ("SHA256:...") of the pinned keys; empty
	// when nothing was pinned (first use refused).
	Pinned []string
	// Presented is the fingerprint ("SHA256:...") of the key the bastion
	// presented.
	Presented string
	// PresentedKey is the key the bastion presented.
	PresentedKey ssh.PublicKey
	// Err is the refusal returned by Config.OnFirstUse, if that is why the
	// key was refused; nil otherwise.
	Err error
	// PinnedAlgorithms, when set, are the host key algorithms pgrelay
	// accepts for the pinned keys, none of which the bastion offers
	// (Offered are the host key algorithms it does offer): it could not
	// present a pinned key, so the key it presented is another of its keys
	// and not by itself a sign that its key changed. An RSA key offered
	// only as the SHA-1 ssh-rsa is such a case. See
	// [HostKeyMismatchError.PinnedNotOffered].
	PinnedAlgorithms []string
	Offered          []string
}

// PinnedNotOffered reports whether the bastion offers none of the pinned
// keys' algorithms that pgrelay accepts (see PinnedAlgorithms).
func (e *HostKeyMismatchError) PinnedNotOffered() bool { return len(e.PinnedAlgorithms) > 0 }

// NotOfferedText explains a PinnedNotOffered mismatch in one sentence (no
// fix), for messages of this package and of its callers.
func (e *HostKeyMismatchError) NotOfferedText() string {
	return fmt.Sprintf("the pinned key is %s, but the bastion offers only the host key algorithms %s, none of which "+
		"pgrelay accepts for the pinned key (%s; ssh-rsa and ssh-dss are refused as insecure), so it presented another of "+
		"its keys, %s: this alone does not mean that its key changed",
		strings.Join(e.Pinned, " or "), strings.Join(e.Offered, ", "), strings.Join(e.PinnedAlgorithms, ", "), e.Presented)
}

// NotOfferedFix says how to resolve a PinnedNotOffered mismatch.
func (e *HostKeyMismatchError) NotOfferedFix() string {
	return "if the pinned key is the bastion's, let it offer one of " + strings.Join(e.PinnedAlgorithms, ", ") +
		" (HostKeyAlgorithms in its sshd_config); or confirm the presented key with the bastion's administrator " +
		"(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub) and approve it"
}

// Error names both fingerprints and the command that trusts the new key.
// The tunnel does not know the connection's name; see
// [HostKeyMismatchError.TrustCommand].
func (e *HostKeyMismatchError) Error() string {
	var b strings.Builder
	switch {
	case e.PinnedNotOffered():
		fmt.Fprintf(&b, "SSH bastion %s did not present a pinned host key: %s; %s: %s",
			e.Addr, e.NotOfferedText(), e.NotOfferedFix(), e.TrustCommand("<connection>"))
		return b.String()
	case e.Err != nil:
		fmt.Fprintf(&b, "SSH bastion %s presented host key %s, which was not trusted: %v", e.Addr, e.Presented, e.Err)
	case len(e.Pinned) == 0:
		fmt.Fprintf(&b, "SSH bastion %s presented host key %s, but no host key is pinned for it", e.Addr, e.Presented)
	default:
		fmt.Fprintf(&b, "SSH host key mismatch for bastion %s: it presented %s but the pinned key is %s; "+
			"the bastion's key may have been replaced, or someone may be intercepting the connection",
			e.Addr, e.Presented, strings.Join(e.Pinned, " or "))
	}
	fmt.Fprintf(&b, ": confirm the fingerprint with the bastion's administrator "+
		"(ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub), then run: %s", e.TrustCommand("<connection>"))
	return b.String()
}

// Unwrap returns the first-use refusal, if any.
func (e *HostKeyMismatchError) Unwrap() error { return e.Err }

// TrustCommand returns the pgrelay command that pins the presented key for
// the named connection.
func (e *HostKeyMismatchError) TrustCommand(name string) string {
	return fmt.Sprintf("pgrelay connection trust-host-key %s --fingerprint %s", name, e.Presented)
}

// AuthError means the bastion did not accept the client's public key for
// the user (or does not offer public key authentication at all).
type AuthError struct {
	// Addr is the bastion's host:port.
	Addr string
	// User is the account on the bastion.
	User string
	// KeyFingerprint is the fingerprint ("SHA256:...") of the client key.
	KeyFingerprint string
	// Methods are the authentication methods the bastion offered.
	Methods []string
	// FallbackFingerprint is the fingerprint of the second key offered
	// (Config.Fallback), also refused; empty when there was none.
	FallbackFingerprint string
	// Certificate is the certificate offered, when the client logged in
	// with one (Config.Signer made by ssh.NewCertSigner); nil otherwise.
	Certificate *ssh.Certificate
	// Err is the cause from the SSH library.
	Err error
}

// Error says which key and user were refused and where to authorize it.
func (e *AuthError) Error() string {
	if !slices.Contains(e.Methods, "publickey") && len(e.Methods) > 0 {
		return fmt.Sprintf("SSH bastion %s does not offer public key authentication to user %s (it offers: %s): "+
			"enable PubkeyAuthentication in the bastion's sshd_config", e.Addr, e.User, strings.Join(e.Methods, ", "))
	}
	if c := e.Certificate; c != nil {
		return fmt.Sprintf("SSH bastion %s refused the certificate for user %s (principal %s, key ID %q, valid %s to %s, "+
			"signed by CA %s): check that the bastion trusts the CA (TrustedUserCAKeys in sshd_config, with the line of "+
			"`pgrelay ssh-ca show`), that principal %s may log in as %s (AuthorizedPrincipalsFile, when set), and that "+
			"the bastion's clock is right: %v",
			e.Addr, e.User, strings.Join(c.ValidPrincipals, ","), c.KeyId, certTime(c.ValidAfter), certTime(c.ValidBefore),
			ssh.FingerprintSHA256(c.SignatureKey), strings.Join(c.ValidPrincipals, ","), e.User, e.Err)
	}
	if e.FallbackFingerprint != "" {
		return fmt.Sprintf("neither public key %s (new) nor %s (old) is authorized for user %s on bastion %s: add the "+
			"new one to ~%s/.ssh/authorized_keys on the bastion (~/.ssh mode 700, authorized_keys mode 600, owned by %s): %v",
			e.KeyFingerprint, e.FallbackFingerprint, e.User, e.Addr, e.User, e.User, e.Err)
	}
	return fmt.Sprintf("the public key %s is not authorized for user %s on bastion %s: add it to ~%s/.ssh/authorized_keys "+
		"on the bastion (~/.ssh mode 700, authorized_keys mode 600, owned by %s) and check that the account is not locked: %v",
		e.KeyFingerprint, e.User, e.Addr, e.User, e.User, e.Err)
}

// Unwrap returns the cause.
func (e *AuthError) Unwrap() error { return e.Err }

// ForwardError means the bastion refused or failed to open a direct-tcpip
// channel to the target. Reason tells which: [ssh.Prohibited] means the
// bastion forbids forwarding there (AllowTcpForwarding, DisableForwarding,
// PermitOpen or a permitopen= key option); [ssh.ConnectionFailed] means the
// bastion could not reach the target.
type ForwardError struct {
	// Bastion is the bastion's host:port.
	Bastion string
	// Target is the host:port the bastion was asked to connect to.
	Target string
	// Reason is the bastion's rejection reason.
	Reason ssh.RejectionReason
	// Message is the bastion's own description.
	Message string
	// Err is the cause (an *ssh.OpenChannelError).
	Err error
}

// Error says which hop failed and what to change.
func (e *ForwardError) Error() string {
	prefix := fmt.Sprintf("SSH bastion %s", e.Bastion)
	detail := e.Message
	if detail == "" {
		detail = e.Reason.String()
	}
	switch e.Reason {
	case ssh.Prohibited:
		return fmt.Sprintf("%s refused to forward to %s (%s): allow TCP forwarding to it on the bastion "+
			"(AllowTcpForwarding yes, no DisableForwarding, PermitOpen or the key's permitopen=\"%s\" option)",
			prefix, e.Target, detail, e.Target)
	case ssh.ConnectionFailed:
		return fmt.Sprintf("%s could not connect to %s (%s): check that host and port, and that the "+
			"bastion can reach it (its DNS, security groups, firewall)", prefix, e.Target, detail)
	default:
		return fmt.Sprintf("%s could not open a channel to %s (%s: %s)", prefix, e.Target, e.Reason, detail)
	}
}

// Unwrap returns the cause.
func (e *ForwardError) Unwrap() error { return e.Err }

// DroppedError means an established tunnel went down: the bastion stopped
// answering keepalives (Err is [ErrKeepaliveTimeout]) or the connection
// closed (Err is the transport's error).
type DroppedError struct {
	// Addr is the bastion's host:port.
	Addr string
	// Silence is how long no keepalive reply had arrived when the tunnel
	// was dropped for silence; zero when the connection closed.
	Silence time.Duration
	// Err is the cause.
	Err error
}

// Error says that the tunnel dropped and why.
func (e *DroppedError) Error() string {
	if errors.Is(e.Err, ErrKeepaliveTimeout) {
		return fmt.Sprintf("SSH tunnel to bastion %s dropped: no keepalive reply for %s: the bastion or the network "+
			"path stopped answering (check the bastion's load, and idle timeouts of load balancers or NAT on the path)",
			e.Addr, roundDuration(e.Silence))
	}
	return fmt.Sprintf("SSH tunnel to bastion %s dropped: connection closed: %v", e.Addr, e.Err)
}

// Unwrap returns the cause.
func (e *DroppedError) Unwrap() error { return e.Err }

// Timeout reports whether the tunnel was dropped for lack of keepalive
// replies.
func (e *DroppedError) Timeout() bool { return errors.Is(e.Err, ErrKeepaliveTimeout) }

// roundDuration makes durations in messages readable: seconds from 10 s
// on, milliseconds below.
func roundDuration(d time.Duration) time.Duration {
	if d >= 10*time.Second {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}
