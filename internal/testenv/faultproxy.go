package testenv

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// FaultProxy is a TCP proxy on loopback in front of a target address, for
// network faults that a real server cannot be made to show: a path that
// goes silent (Freeze) and connections that drop (CloseAll). Made by
// StartFaultProxy; its methods are safe for concurrent use.
type FaultProxy struct {
	target string
	ln     net.Listener
	tb     testing.TB

	mu     sync.Mutex
	thawed chan struct{} // closed while not frozen; a new open one while frozen
	frozen bool
	closed bool
	conns  map[*proxyConn]struct{}
	// accepted counts the connections accepted so far.
	accepted int

	wg sync.WaitGroup
}

// proxyConn is one proxied connection: the accepted client side and the
// side dialled to the target.
type proxyConn struct {
	client net.Conn
	server net.Conn // nil until dialled; guarded by FaultProxy.mu
	done   chan struct{}
	once   sync.Once
}

// StartFaultProxy listens on 127.0.0.1 and a free port and forwards each
// connection to target ("host:port"), dialled when the connection arrives
// (or at Thaw, if frozen). The proxy and all its connections are closed in
// tb.Cleanup.
func StartFaultProxy(tb testing.TB, target string) *FaultProxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testenv: start fault proxy to %s: listen: %v", target, err)
	}
	thawed := make(chan struct{})
	close(thawed)
	p := &FaultProxy{
		target: target,
		ln:     ln,
		tb:     tb,
		thawed: thawed,
		conns:  make(map[*proxyConn]struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	tb.Cleanup(p.shutdown)
	return p
}

// Addr returns the proxy's listening address, "127.0.0.1:PORT".
func (p *FaultProxy) Addr() string { return p.ln.Addr().String() }

// Host returns the proxy's listening host, "127.0.0.1".
func (p *FaultProxy) Host() string { return p.ln.Addr().(*net.TCPAddr).IP.String() }

// Port returns the proxy's listening port.
func (p *FaultProxy) Port() int { return p.ln.Addr().(*net.TCPAddr).Port }

// Freeze stops forwarding bytes in both directions while keeping every
// socket open, like a network path that goes silent. Connections accepted
// while frozen stay frozen too (the target is dialled only at Thaw). At
// most one read buffer per direction may still be delivered.
func (p *FaultProxy) Freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.frozen {
		p.frozen = true
		p.thawed = make(chan struct{})
	}
}

// Thaw resumes forwarding after Freeze; bytes held back are delivered.
func (p *FaultProxy) Thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.frozen {
		p.frozen = false
		close(p.thawed)
	}
}

// Accepted returns how many connections the proxy has accepted so far.
func (p *FaultProxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// CloseAll aborts every proxied connection (both sides, with a TCP reset)
// and keeps listening for new ones.
func (p *FaultProxy) CloseAll() {
	p.mu.Lock()
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		p.abort(c)
	}
}

func (p *FaultProxy) shutdown() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.CloseAll()
	p.wg.Wait()
}

func (p *FaultProxy) acceptLoop() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if !closed && !errors.Is(err, net.ErrClosed) {
				p.tb.Logf("testenv: fault proxy %s: accept: %v", p.Addr(), err)
			}
			return
		}
		c := &proxyConn{client: client, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = client.Close()
			return
		}
		p.conns[c] = struct{}{}
		p.accepted++
		p.wg.Add(1)
		p.mu.Unlock()
		go p.serve(c)
	}
}

// serve dials the target for c and copies bytes both ways until either
// side ends, then closes both.
func (p *FaultProxy) serve(c *proxyConn) {
	defer p.wg.Done()
	defer p.abortGracefully(c)
	if !p.waitThawed(c.done) {
		return
	}
	server, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		p.tb.Logf("testenv: fault proxy %s: dial target %s: %v", p.Addr(), p.target, err)
		return
	}
	p.mu.Lock()
	c.server = server
	p.mu.Unlock()
	select {
	case <-c.done: // aborted while dialling
		_ = server.Close()
		return
	default:
	}
	finished := make(chan struct{}, 2)
	go func() { p.pump(c, server, c.client); finished <- struct{}{} }()
	go func() { p.pump(c, c.client, server); finished <- struct{}{} }()
	<-finished
	p.abortGracefully(c) // unblocks the other pump
	<-finished
}

// pump copies src to dst, holding each chunk back while the proxy is
// frozen.
func (p *FaultProxy) pump(c *proxyConn, dst, src net.Conn) {
	buf := make([]byte, 32*1024)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.waitThawed(c.done) {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// waitThawed blocks while the proxy is frozen; false means c was closed
// meanwhile.
func (p *FaultProxy) waitThawed(done <-chan struct{}) bool {
	p.mu.Lock()
	thawed := p.thawed
	p.mu.Unlock()
	select {
	case <-thawed:
		return true
	case <-done:
		return false
	}
}

// abort closes both sides of c with a TCP reset.
func (p *FaultProxy) abort(c *proxyConn) { p.closeConn(c, true) }

// abortGracefully closes both sides of c normally (FIN).
func (p *FaultProxy) abortGracefully(c *proxyConn) { p.closeConn(c, false) }

func (p *FaultProxy) closeConn(c *proxyConn, reset bool) {
	c.once.Do(func() {
		close(c.done)
		p.mu.Lock()
		server := c.server
		delete(p.conns, c)
		p.mu.Unlock()
		for _, conn := range []net.Conn{c.client, server} {
			if conn == nil {
				continue
			}
			if tcp, ok := conn.(*net.TCPConn); ok && reset {
				_ = tcp.SetLinger(0)
			}
			_ = conn.Close()
		}
	})
}
