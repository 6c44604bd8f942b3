package tunnel

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/sshkey"
)

// Defaults applied by [Config.WithDefaults].
const (
	// DefaultDialTimeout bounds the TCP connect plus the SSH handshake.
	DefaultDialTimeout = 10 * time.Second
	// DefaultKeepaliveInterval is how often a keepalive request is sent.
	DefaultKeepaliveInterval = 30 * time.Second
	// DefaultKeepaliveCountMax is how many keepalive intervals may pass
	// without a reply before the tunnel is dropped (30 s × 10 = 300 s).
	DefaultKeepaliveCountMax = 10
)

// Config describes one SSH connection to a bastion.
type Config struct {
	// Addr is the bastion's "host:port". IPv6 literals are bracketed
	// ("[2001:db8::1]:22"); use net.JoinHostPort to build it.
	Addr string
	// User is the account on the bastion.
	User string
	// Signer holds the client key. RSA signers should already be limited to
	// rsa-sha2-256/512 (OpenSSH 8.8+ refuses SHA-1 signatures).
	Signer ssh.Signer
	// Fallback, when set, is a second client key (or certificate) offered
	// when the bastion refuses Signer: the old key while a rotation's new
	// key is not installed yet. [Tunnel.UsedFallback] says which logged in.
	Fallback ssh.Signer
	// HostKeys are the pinned host keys of the bastion; any of them is
	// accepted. Comparison is on the marshalled key bytes.
	HostKeys []ssh.PublicKey
	// HostTrust holds host CAs (@cert-authority: a host certificate they
	// signed for the bastion's name is accepted without any pin), revoked
	// keys (@revoked: always refused) and further known host keys. A
	// bastion that a host CA covers must present a valid host
	// certificate, unless its plain key is pinned. See sshkey.HostTrust.
	HostTrust sshkey.HostTrust
	// Clock is the time host certificates are checked against (default
	// time.Now).
	Clock func() time.Time
	// OnFirstUse is called with the presented host key when HostKeys is
	// empty, so that the caller can pin it. An error refuses the key. When
	// OnFirstUse is nil and HostKeys is empty every key is refused: the
	// tunnel fails closed with a [*HostKeyMismatchError] naming the presented
	// fingerprint.
	OnFirstUse func(key ssh.PublicKey) error
	// HostKeyAccepted, when set, is called during the handshake once the
	// presented host key has been accepted (it matched a pinned key, or
	// OnFirstUse accepted it), before authentication starts. Diagnostics
	// use it to time the key exchange apart from authentication.
	HostKeyAccepted func(key ssh.PublicKey)
	// OnNegotiated, when set, is called once during the handshake with the
	// algorithms the key exchange settled on and the bastion's version,
	// before authentication completes. Diagnostics show them.
	OnNegotiated func(Negotiated)
	// DialTimeout bounds the TCP connect plus the SSH handshake
	// (default [DefaultDialTimeout]).
	DialTimeout time.Duration
	// KeepaliveInterval is the time between keepalive requests
	// (default [DefaultKeepaliveInterval]).
	KeepaliveInterval time.Duration
	// KeepaliveCountMax is the number of intervals without any keepalive
	// reply after which the tunnel is dropped
	// (default [DefaultKeepaliveCountMax]).
	KeepaliveCountMax int
	// Dial opens the TCP connection to the bastion (default: a net.Dialer).
	// Tests use it to put a fault proxy in the path.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Logger receives the tunnel's events (default: discarded).
	Logger *slog.Logger
	// Observer receives the tunnel's measurements: handshake time,
	// keepalive round trips and misses, channels, bytes (default:
	// discarded).
	Observer Observer
}

// WithDefaults returns a copy of c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.KeepaliveInterval == 0 {
		c.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if c.KeepaliveCountMax == 0 {
		c.KeepaliveCountMax = DefaultKeepaliveCountMax
	}
	if c.Dial == nil {
		d := &net.Dialer{}
		c.Dial = d.DialContext
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Observer == nil {
		c.Observer = nopObserver{}
	}
	return c
}

// Validate reports every problem of c at once (joined with errors.Join).
// Zero durations and counts pass: [Config.WithDefaults] fills them.
func (c Config) Validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("tunnel config: bastion address is empty: set it to host:port"))
	} else if host, port, err := net.SplitHostPort(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("tunnel config: bastion address %q is not host:port (bracket IPv6 literals): %w", c.Addr, err))
	} else {
		if host == "" {
			errs = append(errs, fmt.Errorf("tunnel config: bastion address %q has no host", c.Addr))
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			errs = append(errs, fmt.Errorf("tunnel config: bastion address %q: port %q is not a number from 1 to 65535", c.Addr, port))
		}
	}
	if c.User == "" {
		errs = append(errs, errors.New("tunnel config: bastion user is empty"))
	}
	if c.Signer == nil {
		errs = append(errs, errors.New("tunnel config: no client key (Signer is nil)"))
	}
	for i, k := range c.HostKeys {
		if k == nil {
			errs = append(errs, fmt.Errorf("tunnel config: pinned host key %d is nil", i))
		}
	}
	if c.DialTimeout < 0 {
		errs = append(errs, fmt.Errorf("tunnel config: dial timeout %v is negative", c.DialTimeout))
	}
	if c.KeepaliveInterval < 0 {
		errs = append(errs, fmt.Errorf("tunnel config: keepalive interval %v is negative", c.KeepaliveInterval))
	}
	if c.KeepaliveCountMax < 0 {
		errs = append(errs, fmt.Errorf("tunnel config: keepalive count %d is negative", c.KeepaliveCountMax))
	}
	return errors.Join(errs...)
}

// hostKeyAccepted calls HostKeyAccepted, if set.
func (c Config) hostKeyAccepted(key ssh.PublicKey) {
	if c.HostKeyAccepted != nil {
		c.HostKeyAccepted(key)
	}
}

// silenceLimit is how long the tunnel may go without a keepalive reply.
func (c Config) silenceLimit() time.Duration {
	return c.KeepaliveInterval * time.Duration(c.KeepaliveCountMax)
}
