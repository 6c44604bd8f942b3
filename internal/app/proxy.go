package app

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/pgrelay/pgrelay/internal/proxy"
)

// ProxyServer is a local endpoint that forwards every client connection to
// a connection's database, through its tunnel when it has one. When the
// tunnel drops, connections through it fail, the drop is logged, and the
// next client connection opens a new tunnel.
type ProxyServer struct {
	svc  *Service
	name string
	px   *proxy.Proxy

	mu   sync.Mutex
	sess *Session
}

// Proxy opens the named connection (proving the tunnel works) and returns a
// proxy listening on listenAddr ("127.0.0.1:0" picks a free port). Call
// Serve, then Close.
func (s *Service) Proxy(ctx context.Context, name, listenAddr string) (*ProxyServer, error) {
	sess, err := s.Open(ctx, name)
	if err != nil {
		return nil, err
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", listenAddr)
	if err != nil {
		_ = sess.Close()
		return nil, fmt.Errorf("proxy %s: listen on %s: %w", name, listenAddr, err)
	}
	ps := &ProxyServer{svc: s, name: name, sess: sess}
	ps.px = proxy.New(ln, ps.dial, s.logger.With("connection", name))
	return ps, nil
}

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
	p.mu.Lock()
	sess := p.sess
	if sess != nil && sess.tunnel != nil && sess.tunnel.Err() != nil {
		p.svc.logger.WarnContext(ctx, "tunnel dropped; reopening for the next client", "connection", p.name,
			"error", sess.tunnel.Err())
		_ = sess.Close()
		sess = nil
		p.sess = nil
	}
	if sess == nil {
		var err error
		sess, err = p.svc.Open(ctx, p.name)
		if err != nil {
			p.mu.Unlock()
			return nil, err
		}
		p.sess = sess
	}
	p.mu.Unlock()
	return sess.DialDatabase(ctx)
}

// Serve accepts clients until ctx is done or Close is called.
func (p *ProxyServer) Serve(ctx context.Context) error { return p.px.Serve(ctx) }

// Close stops the proxy and closes its tunnel.
func (p *ProxyServer) Close() error {
	err := p.px.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sess != nil {
		_ = p.sess.Close()
		p.sess = nil
	}
	return err
}
