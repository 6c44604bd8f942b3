package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/credential"
	"github.com/pgrelay/pgrelay/internal/egress"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/pg"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/tracing"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// HostKeyChangedError is returned when a bastion presents a host key other
// than the pinned one, or, under the approve host key policy, any key while
// none is pinned (Err.Pinned is then empty). The connection is refused; the
// presented key is kept as pending so that it can be approved with
// TrustHostKey.
type HostKeyChangedError struct {
	Connection string
	// Hop is "hop 2 of 3 (bastion-b:22)" in a chain of hops, "" for a
	// single bastion.
	Hop string
	Err *tunnel.HostKeyMismatchError
	// Unverified says that the pinned keys were given with the connection
	// and the hop never presented one of them: nothing changed, most
	// likely the key given is not the hop's.
	Unverified bool
}

// Error names the hop, both fingerprints and the command that approves
// the new key.
func (e *HostKeyChangedError) Error() string {
	bastion := "SSH bastion " + e.Err.Addr
	if e.Hop != "" {
		bastion = "SSH " + e.Hop
	}
	if e.Err.PinnedNotOffered() {
		return fmt.Sprintf("connection %s: %s did not present a pinned host key: %s; %s "+
			"(on a server, an admin: replacing a pinned key needs the admin role): pgrelay connection trust-host-key %s --fingerprint %s",
			e.Connection, bastion, e.Err.NotOfferedText(), e.Err.NotOfferedFix(), e.Connection, e.Err.Presented)
	}
	if e.Unverified && len(e.Err.Pinned) > 0 {
		host, port, _ := net.SplitHostPort(e.Err.Addr)
		return fmt.Sprintf("connection %s: %s presented host key %s, which does not match the key given with the "+
			"connection (%s); no login has succeeded with the key given, so most likely it is not this bastion's key. "+
			"Check it: read the bastion's real key (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the bastion, or "+
			"ssh-keyscan -p %s %s | ssh-keygen -lf - from a machine you trust) and give the right one with "+
			"`pgrelay connection update %s --ssh-known-host \"ssh-ed25519 AAAA...\"`; or, if %s is the bastion's "+
			"fingerprint, approve the presented key: pgrelay connection trust-host-key %s --fingerprint %s",
			e.Connection, bastion, e.Err.Presented, joinFingerprints(e.Err.Pinned), port, host, e.Connection,
			e.Err.Presented, e.Connection, e.Err.Presented)
	}
	if len(e.Err.Pinned) == 0 {
		return fmt.Sprintf("connection %s: %s presented host key %s, which is not approved yet: this pgrelay "+
			"approves bastion host keys before first use (--host-key-policy approve). Confirm the fingerprint with the "+
			"bastion's administrator (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the bastion), then approve it: "+
			"pgrelay connection trust-host-key %s --fingerprint %s (or give the key with --ssh-known-host)",
			e.Connection, bastion, e.Err.Presented, e.Connection, e.Err.Presented)
	}
	return fmt.Sprintf("connection %s: host key of %s does not match the pinned key: pinned %s, presented %s. "+
		"This can mean the bastion was rebuilt, or that someone is intercepting the connection. "+
		"Check the bastion's key (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the bastion); if it is expected, approve it "+
		"(on a server, an admin: replacing a pinned key needs the admin role): "+
		"pgrelay connection trust-host-key %s --fingerprint %s",
		e.Connection, bastion, joinFingerprints(e.Err.Pinned), e.Err.Presented, e.Connection, e.Err.Presented)
}

// Unwrap returns the tunnel's error.
func (e *HostKeyChangedError) Unwrap() error { return e.Err }

func joinFingerprints(fps []string) string {
	if len(fps) == 0 {
		return "(none)"
	}
	s := fps[0]
	for _, f := range fps[1:] {
		s += " or " + f
	}
	return s
}

// KeyNotAuthorizedError is returned when the bastion refuses the
// connection's key. It carries the line to add to authorized_keys.
type KeyNotAuthorizedError struct {
	Connection string
	Bastion    string
	User       string
	// Hop is "hop 2 of 3 (bastion-b:22)" in a chain of hops, "" for a
	// single bastion.
	Hop string
	// PublicKey is the authorized_keys line to add: restricted to
	// forwarding to the database.
	PublicKey string
	// OwnKey is true when the refused key is the hop's own (own_key)
	// rather than the connection's.
	OwnKey bool
	// LastHop is true when Hop is the last of the chain, whose line
	// forwards to the database rather than to a next hop.
	LastHop bool
	Err     error
}

// Error says the key is not authorized and how to authorize it.
func (e *KeyNotAuthorizedError) Error() string {
	if e.Hop != "" {
		whose := "the connection's public key"
		if e.OwnKey {
			whose = "the hop's own public key (own_key)"
		}
		target := "the next hop"
		if e.LastHop {
			target = "the database"
		}
		return fmt.Sprintf("connection %s: SSH %s refused %s for user %q: the key is not authorized. "+
			"Add this line, which allows nothing but forwarding to %s, to ~%s/.ssh/authorized_keys on that hop "+
			"(every hop's line: `pgrelay connection public-key %s --restricted`):\n%s",
			e.Connection, e.Hop, whose, e.User, target, e.User, e.Connection, e.PublicKey)
	}
	return fmt.Sprintf("connection %s: SSH bastion %s refused the connection's public key for user %q: the key is not authorized. "+
		"Add this line, which allows nothing but forwarding to the database, to ~%s/.ssh/authorized_keys on the bastion "+
		"(or run the script from `pgrelay connection bastion-setup %s`):\n%s",
		e.Connection, e.Bastion, e.User, e.User, e.Connection, e.PublicKey)
}

// Unwrap returns the tunnel's error.
func (e *KeyNotAuthorizedError) Unwrap() error { return e.Err }

// Session is an opened connection: its spec (with the password) and, for a
// tunnelled connection, the one SSH connection all its database sessions
// share as channels.
type Session struct {
	spec connection.Spec
	// tunnel is the chain of SSH hops (one for a single bastion).
	tunnel *tunnel.Chain
	// tracer traces the session's database connects.
	tracer trace.Tracer
	// network is the policy on the addresses the session dials.
	network *egress.Policy
	// cred is the token cache of a connection with token auth; nil for
	// the password kind.
	cred *credential.Cache
	// warm, with warmKey, keeps the tunnel open after Close for the next
	// run of the connection; nil closes it.
	warm     *tunnel.Warm
	warmSlot string
	warmKey  string
	// reused is how long the tunnel had been kept warm when this session
	// took it; zero for a tunnel it opened.
	reused time.Duration

	closeOnce sync.Once
}

// Spec returns the connection's spec, password included. Do not print it
// with anything but the Value's redaction.
func (s *Session) Spec() *connection.Spec { return &s.spec }

// Tunnel returns the session's (first) SSH hop, or nil for a direct
// connection.
func (s *Session) Tunnel() *tunnel.Tunnel {
	if s.tunnel == nil {
		return nil
	}
	return s.tunnel.Hop(0)
}

// Chain returns the session's chain of SSH hops, or nil for a direct
// connection.
func (s *Session) Chain() *tunnel.Chain { return s.tunnel }

// DatabaseAddr is the database host:port as seen from the bastion (or from
// here, for a direct connection).
func (s *Session) DatabaseAddr() string {
	return net.JoinHostPort(s.spec.Host, strconv.Itoa(s.spec.Port))
}

// Dial opens a byte stream to addr: a channel through the tunnel, or a
// direct TCP connection. The network policy refuses a denied address: the
// one dialled directly, or an IP literal sent to the bastion (a name is
// resolved by the bastion, out of pgrelay's sight).
func (s *Session) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if s.tunnel != nil {
		if err := s.network.CheckHostPort(addr); err != nil {
			return nil, fmt.Errorf("connection %s: database through SSH bastion: %w", s.spec.Name, err)
		}
		return s.tunnel.DialContext(ctx, network, addr)
	}
	return s.network.DialContext(ctx, network, addr)
}

func (s *Session) dialFunc() pg.DialFunc {
	if s.tunnel == nil {
		return nil
	}
	return s.Dial
}

// DialDatabase opens a byte stream to the database server.
func (s *Session) DialDatabase(ctx context.Context) (net.Conn, error) {
	return s.Dial(ctx, "tcp", s.DatabaseAddr())
}

// Connect opens a database session (through the tunnel, if any).
func (s *Session) Connect(ctx context.Context) (_ *pgx.Conn, err error) {
	if s.tracer != nil {
		var span trace.Span
		ctx, span = s.tracer.Start(ctx, "db.connect", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
			tracing.Connection.String(s.spec.Name), attribute.String("db.system.name", "postgresql"),
			attribute.String("server.address", s.spec.Host), attribute.Int("server.port", s.spec.Port),
			attribute.String("db.namespace", s.spec.Database)))
		defer func() { endSpan(span, err) }()
	}
	cfg, err := s.PgxConfig()
	if err != nil {
		return nil, err
	}
	var conn *pgx.Conn
	if s.cred != nil {
		conn, err = s.connectWithToken(ctx, cfg)
	} else {
		conn, err = pgx.ConnectConfig(ctx, cfg)
	}
	if err != nil {
		var ce *CredentialError
		if errors.As(err, &ce) {
			return nil, err
		}
		return nil, fmt.Errorf("connect to %s: %w", pg.Describe(&s.spec), pg.TidyConnectError(err))
	}
	return conn, nil
}

// PgxConfig returns the pgx configuration that goes through the session.
// A direct connection resolves the host as pgx does, and dials every
// address under the network policy.
func (s *Session) PgxConfig() (*pgx.ConnConfig, error) {
	cfg, err := pg.Config(&s.spec, s.dialFunc())
	if err != nil {
		return nil, err
	}
	if s.tunnel == nil {
		cfg.DialFunc = s.network.DialContext
	}
	return cfg, nil
}

// Done is closed when the tunnel drops or the session is closed; it is nil
// (never closed) for direct connections.
func (s *Session) Done() <-chan struct{} {
	if s.tunnel == nil {
		return nil
	}
	return s.tunnel.Done()
}

// Err is the reason the tunnel ended, or nil; a drop comes as a
// *TunnelDroppedError with the next step.
func (s *Session) Err() error {
	if s.tunnel == nil {
		return nil
	}
	return s.withNextStep(s.tunnel.Err())
}

// Close closes the tunnel, if any, or, for a run's session on a server
// that keeps tunnels warm, parks it for the connection's next run.
func (s *Session) Close() error {
	var err error
	s.closeOnce.Do(func() {
		if s.tunnel == nil {
			return
		}
		if s.warmKey != "" && s.warm.Put(s.warmSlot, s.warmKey, s.tunnel) {
			return
		}
		err = s.tunnel.Close()
	})
	return err
}

// Reused reports whether the session's tunnel was kept open after an
// earlier run rather than opened for it, and for how long it had been.
func (s *Session) Reused() (time.Duration, bool) { return s.reused, s.reused > 0 }

// Open opens a saved connection: decrypts its secrets and, when it has a
// tunnel, connects to the bastion (pinning its host key on first use and
// refusing a different one).
func (s *Connector) Open(ctx context.Context, name string) (*Session, error) {
	return s.open(ctx, name, false)
}

// open is Open; a run's session (forRun) takes a tunnel kept warm after
// an earlier run of the connection when there is one, and hands its own
// back for the next when it closes.
func (s *Connector) open(ctx context.Context, name string, forRun bool) (_ *Session, err error) {
	ctx, span := s.startSpan(ctx, "connection.open", tracing.Connection.String(name))
	defer func() { endSpan(span, err) }()
	c, err := s.store.GetConnection(ctx, name)
	if err != nil {
		return nil, err
	}
	spec, err := s.openSpec(ctx, c)
	if err != nil {
		return nil, err
	}
	sess := &Session{spec: spec, network: s.network, tracer: s.tracer, cred: s.credentialFor(c, &spec)}
	if spec.Tunnel == nil {
		return sess, nil
	}
	if forRun && s.ssh.warm != nil {
		sess.warm, sess.warmSlot, sess.warmKey = s.ssh.warm, c.ID, warmKey(c)
		if t, parked := s.ssh.warm.Take(ctx, sess.warmSlot, sess.warmKey, hostKeysStillTrusted(c)); t != nil {
			sess.tunnel, sess.reused = t, max(parked, time.Nanosecond)
			if s.metrics != nil {
				s.metrics.TunnelsReused.Inc()
			}
			return sess, nil
		}
	}
	t, err := s.openChain(ctx, c, chainOptions{})
	if err != nil {
		return nil, err
	}
	sess.tunnel = t
	return sess, nil
}

// openSpec returns a saved connection's spec with its password decrypted.
// The password opens only for the endpoint it was sealed for (passwordAD);
// one sealed before passwords were bound to endpoints is sealed again,
// bound, in the store.
func (s *Connector) openSpec(ctx context.Context, c *store.Connection) (connection.Spec, error) {
	spec := c.Spec.Clone()
	if err := s.openAuthSecret(c, &spec); err != nil {
		return connection.Spec{}, err
	}
	if len(c.SealedPassword) == 0 {
		return spec, nil
	}
	pw, err := s.keyring.Open(c.SealedPassword, passwordAD(c.ID, spec.Endpoint()))
	if err != nil {
		legacy, lerr := s.keyring.Open(c.SealedPassword, legacyPasswordAD(c.ID))
		if lerr != nil {
			return connection.Spec{}, fmt.Errorf("connection %s: password: %w", c.Spec.Name, err)
		}
		pw = legacy
		s.bindLegacyPassword(ctx, c, secret.New(string(pw)))
	}
	spec.Password = secret.New(string(pw))
	return spec, nil
}

// bindLegacyPassword seals a password stored before endpoint binding again,
// bound to the connection's endpoint. It is best effort: a concurrent
// update wins, and the next open tries again.
func (s *Connector) bindLegacyPassword(ctx context.Context, c *store.Connection, pw secret.Value) {
	cc := *c
	if err := s.sealPassword(&cc, pw); err != nil {
		s.logger.WarnContext(ctx, "could not bind a stored password to its endpoint", "connection", c.Spec.Name, "error", err)
		return
	}
	if err := s.store.UpdateConnection(ctx, &cc); err != nil {
		s.logger.WarnContext(ctx, "could not bind a stored password to its endpoint", "connection", c.Spec.Name, "error", err)
		return
	}
	*c = cc
	s.logger.InfoContext(ctx, "stored password bound to its endpoint", "connection", c.Spec.Name)
}

// observeTunnel keeps the chain in the connection's health while it is
// open, counts it as open until it ends, and counts a drop by its cause.
func (s *Connector) observeTunnel(name string, t *tunnel.Chain) {
	s.tunnels.add(name, t)
	if s.metrics != nil {
		s.metrics.TunnelsOpen.Inc()
	}
	go func() {
		<-t.Done()
		s.tunnels.remove(name, t)
		if s.metrics == nil {
			return
		}
		s.metrics.TunnelsOpen.Dec()
		var dropped *tunnel.DroppedError
		if errors.As(t.Err(), &dropped) {
			s.metrics.TunnelDropped(name, tunnel.DropCause(t.Err()))
		}
	}()
}

// OpenConn opens a saved connection for a run: Open as a jobs.Opener.
func (s *Connector) OpenConn(ctx context.Context, name string) (jobs.Conn, error) {
	sess, err := s.open(ctx, name, true)
	if err != nil {
		return nil, err
	}
	return sess, nil
}
