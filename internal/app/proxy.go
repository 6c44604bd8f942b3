package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/proxy"
	"github.com/pgrelay/pgrelay/internal/relay"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// ProxyServer is a local endpoint that forwards every client connection to
// a connection's database, through its tunnel when it has one. When the
// tunnel drops, connections through it fail, the drop is logged, and the
// next client connection opens a new tunnel.
//
// Each session starts through a relay (internal/relay): the database hop
// is encrypted and verified per the connection's sslmode, clients that
// ask for TLS get the endpoint's own self-signed certificate, and a client
// that goes away without ending its session (killed mid-statement) has
// its statement cancelled.
type ProxyServer struct {
	svc      *Service
	name     string
	px       *proxy.Proxy
	rl       *relay.Relay
	backends *relay.Registry
	localTLS *relay.LocalTLS
	// password is the proxy's own password, when it authenticates
	// clients itself (a connection with token auth).
	password secret.Value

	mu     sync.Mutex
	sess   *Session
	closed bool // Close has finished: no tunnel is opened again
	// reopening is the reopen of the tunnel under way, which the clients
	// arriving meanwhile wait for (each as long as its own context lets
	// it) instead of each opening one in turn.
	reopening *reopen
}

// reopen is one attempt to open the proxy's session again.
type reopen struct {
	done chan struct{} // closed once sess or err is set
	sess *Session
	err  error
}

// Proxy opens the named connection (proving the tunnel works) and returns a
// proxy listening on listenAddr ("127.0.0.1:0" picks a free port). Call
// Serve, then Close.
func (s *Service) Proxy(ctx context.Context, name, listenAddr string) (_ *ProxyServer, err error) {
	defer s.audited(ctx, &entry{action: "connection.proxy", targetKind: audit.TargetConnection, target: name,
		use: s.useOf(ctx, name)}, &err)
	start := s.now()
	sess, err := s.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, ListenNetwork(listenAddr), listenAddr)
	if err != nil {
		_ = sess.Close()
		return nil, fmt.Errorf("proxy %s: listen on %s: %w", name, listenAddr, err)
	}
	ps := &ProxyServer{svc: s, name: name, sess: sess}
	rl, err := ps.relay(sess, ln.Addr())
	if err != nil {
		_ = ln.Close()
		_ = sess.Close()
		return nil, fmt.Errorf("proxy %s: %w", name, err)
	}
	ps.rl = rl
	ps.px = proxy.New(ln, ps.dial, s.logger.With("connection", name), proxy.WithHandshake(rl.Handshake))
	s.recordUse(ctx, name, "proxy", start)
	return ps, nil
}

// ListenNetwork is the network to listen on at addr (host:port), so that
// a listener is exactly where it was asked to be: "tcp4" for an IPv4
// literal (Go's "tcp" would also take every IPv6 address for 0.0.0.0),
// "tcp6" for an IPv6 literal, "tcp" for a name or an empty host.
func ListenNetwork(addr string) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return "tcp"
	}
	ip, err := netip.ParseAddr(host)
	switch {
	case err != nil:
		return "tcp"
	case ip.Is4() || ip.Is4In6():
		return "tcp4"
	}
	return "tcp6"
}

// relay makes the relay that starts the proxy's sessions.
func (p *ProxyServer) relay(sess *Session, listen net.Addr) (*relay.Relay, error) {
	spec := sess.Spec()
	pol, err := relay.PolicyFor(spec)
	if err != nil {
		return nil, err
	}
	var names []string
	if ta, ok := listen.(*net.TCPAddr); ok && !ta.IP.IsUnspecified() {
		names = append(names, ta.IP.String())
	}
	p.localTLS, err = relay.NewLocalTLS(names...)
	if err != nil {
		return nil, err
	}
	up := relay.Upstream{Dial: p.dial, TLS: pol, Addr: net.JoinHostPort(spec.Host, strconv.Itoa(spec.Port)),
		RequireAuth: spec.EffectiveRequireAuth(), Params: connection.StartupParams(spec), User: spec.User}
	p.backends = relay.NewRegistry(up)
	var login *relay.Login
	startup := time.Duration(0)
	if sess.TokenAuth() {
		startup = relay.LoginStartupTimeout(time.Minute)
		if a := spec.Auth; a != nil && a.Kind == connection.AuthCommand && a.Timeout > 0 {
			startup = relay.LoginStartupTimeout(a.Timeout.Duration())
		}
		// Clients never see the token: they log in with the proxy's own
		// password, and the relay logs in with the current token.
		pw, err := newLocalPassword()
		if err != nil {
			return nil, err
		}
		p.password = pw
		login = &relay.Login{Password: pw, User: spec.User, Connect: p.loginUpstream}
	}
	return relay.New(relay.Config{
		Upstream:       up,
		LocalTLS:       p.localTLS.Config,
		Observer:       p.backends,
		Logger:         p.svc.logger.With("connection", p.name),
		Login:          login,
		StartupTimeout: startup,
		// A session lost with its tunnel leaves its statement running
		// until the cancel reaches the server through a tunnel opened
		// again, as a run's cleanup does.
		CancelRetryFor: jobs.DefaultCleanupFor,
	}), nil
}

// LocalPassword is the password clients of the proxy log in with when it
// authenticates them itself (the connection logs in with tokens); zero
// otherwise (authentication passes through to the server).
func (p *ProxyServer) LocalPassword() secret.Value { return p.password }

// loginUpstream logs in to the server for a client of the proxy, with the
// current session (reopened when its tunnel dropped).
func (p *ProxyServer) loginUpstream(ctx context.Context, params map[string]string) (*pgconn.PgConn, error) {
	sess, err := p.current(ctx)
	if err != nil {
		return nil, err
	}
	return sess.LoginUpstream(ctx, params)
}

// Backends is the registry of the database sessions the proxy has open.
func (p *ProxyServer) Backends() *relay.Registry { return p.backends }

// LocalCertPEM is the endpoint's self-signed certificate, PEM encoded.
func (p *ProxyServer) LocalCertPEM() []byte { return p.localTLS.CertPEM }

// Addr is the address the proxy listens on.
func (p *ProxyServer) Addr() net.Addr { return p.px.Addr() }

// Session returns the current session (its spec and tunnel).
func (p *ProxyServer) Session() *Session {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.sess
}

// dial opens a stream to the database, reopening the tunnel if it dropped.
func (p *ProxyServer) dial(ctx context.Context) (net.Conn, error) {
	sess, err := p.current(ctx)
	if err != nil {
		return nil, err
	}
	return sess.DialDatabase(ctx)
}

// current returns the proxy's session, reopening it if its tunnel dropped.
// One reopen serves every client that arrives while it runs; each waits
// for it only as long as its own context allows.
func (p *ProxyServer) current(ctx context.Context) (*Session, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, fmt.Errorf("proxy %s: closed", p.name)
	}
	sess := p.sess
	var dropped *Session
	if sess != nil && sess.tunnel != nil && sess.tunnel.Err() != nil {
		p.svc.logger.WarnContext(ctx, "tunnel dropped; reopening for the next client", "connection", p.name,
			"error", sess.tunnel.Err())
		dropped, sess, p.sess = sess, nil, nil
	}
	if sess != nil {
		p.mu.Unlock()
		return sess, nil
	}
	r := p.reopening
	if r == nil {
		r = &reopen{done: make(chan struct{})}
		p.reopening = r
		// Not bound to this client's context: the clients waiting for it
		// get its outcome; the dial has its own time limit.
		go p.reopen(context.WithoutCancel(ctx), r)
	}
	p.mu.Unlock()
	if dropped != nil {
		_ = dropped.Close() // waits for its tunnel's goroutines: not under mu
	}
	select {
	case <-r.done:
		return r.sess, r.err
	case <-ctx.Done():
		return nil, fmt.Errorf("proxy %s: waiting for the tunnel to be opened again: %w", p.name, context.Cause(ctx))
	}
}

// reopen opens the proxy's session again for r.
func (p *ProxyServer) reopen(ctx context.Context, r *reopen) {
	sess, err := p.svc.Open(ctx, p.name)
	p.mu.Lock()
	if err == nil && p.closed {
		_ = sess.Close()
		sess, err = nil, fmt.Errorf("proxy %s: closed", p.name)
	}
	if err == nil {
		p.sess = sess
	}
	p.reopening = nil
	r.sess, r.err = sess, err
	close(r.done)
	p.mu.Unlock()
}

// Serve accepts clients until ctx is done or Close is called.
func (p *ProxyServer) Serve(ctx context.Context) error { return p.px.Serve(ctx) }

// Close stops the proxy and closes its tunnel. Sessions still open are
// closed, and the statements they run are cancelled first. The cancel
// requests still being sent again for sessions lost with an earlier
// tunnel (the bastion did not answer) get a last attempt, through a
// tunnel opened again if need be, bounded by the relay's cancel time-out
// (relay.DefaultCancelTimeout); those that could not be sent are logged
// with their backend's PID and returned in the error (see relay.Relay.Close).
func (p *ProxyServer) Close() error {
	err := p.px.Close()
	// Before the proxy is marked closed: a last attempt may need its dial.
	err = errors.Join(err, p.rl.Close())
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	if p.sess != nil {
		_ = p.sess.Close()
		p.sess = nil
	}
	return err
}
