package testenv

import (
	"crypto/tls"
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// PasswordCatcher is an impostor PostgreSQL server on loopback: it refuses
// SSL (or, started with StartTLSPasswordCatcher, answers it with a
// certificate of its own), asks every client for its password in clear
// text and records what it receives. Tests use it to prove that a stored password is never sent
// to an endpoint it was not saved for (a real server cannot show what it
// was sent).
type PasswordCatcher struct {
	Host string
	Port int

	ln  net.Listener
	tls *tls.Config // nil: SSL refused
	mu  sync.Mutex
	// received are the passwords clients sent.
	received []string
	// conns counts the connections accepted.
	conns int
	wg    sync.WaitGroup
}

// StartPasswordCatcher starts a catcher that stops when the test ends.
func StartPasswordCatcher(tb testing.TB) *PasswordCatcher {
	tb.Helper()
	return startPasswordCatcher(tb, nil)
}

// StartTLSPasswordCatcher starts a catcher that accepts SSL with cert (an
// impostor holding a certificate of a CA of its own).
func StartTLSPasswordCatcher(tb testing.TB, cert *TLSCert) *PasswordCatcher {
	tb.Helper()
	pair, err := tls.LoadX509KeyPair(cert.CertFile, cert.KeyFile)
	if err != nil {
		tb.Fatalf("testenv: password catcher: %v", err)
	}
	return startPasswordCatcher(tb, &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12})
}

func startPasswordCatcher(tb testing.TB, cfg *tls.Config) *PasswordCatcher {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("testenv: password catcher: %v", err)
	}
	c := &PasswordCatcher{Host: "127.0.0.1", Port: ln.Addr().(*net.TCPAddr).Port, ln: ln, tls: cfg}
	c.wg.Add(1)
	go c.serve()
	tb.Cleanup(func() {
		_ = ln.Close()
		c.wg.Wait()
	})
	return c
}

// Addr is host:port.
func (c *PasswordCatcher) Addr() string { return net.JoinHostPort(c.Host, strconv.Itoa(c.Port)) }

// Received returns the passwords received so far.
func (c *PasswordCatcher) Received() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.received...)
}

// Connections is how many connections were accepted so far.
func (c *PasswordCatcher) Connections() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conns
}

func (c *PasswordCatcher) serve() {
	defer c.wg.Done()
	for {
		nc, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		c.conns++
		c.mu.Unlock()
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			defer nc.Close()
			c.handle(nc)
		}()
	}
}

func (c *PasswordCatcher) handle(nc net.Conn) {
	be := pgproto3.NewBackend(nc, nc)
startup:
	for {
		msg, err := be.ReceiveStartupMessage()
		if err != nil {
			return
		}
		switch msg.(type) {
		case *pgproto3.SSLRequest:
			if c.tls == nil {
				if _, err := nc.Write([]byte{'N'}); err != nil {
					return
				}
				continue
			}
			if _, err := nc.Write([]byte{'S'}); err != nil {
				return
			}
			nc = tls.Server(nc, c.tls)
			be = pgproto3.NewBackend(nc, nc)
		case *pgproto3.GSSEncRequest:
			if _, err := nc.Write([]byte{'N'}); err != nil {
				return
			}
		case *pgproto3.StartupMessage:
			break startup
		default:
			return
		}
	}
	be.Send(&pgproto3.AuthenticationCleartextPassword{})
	if err := be.Flush(); err != nil {
		return
	}
	if err := be.SetAuthType(pgproto3.AuthTypeCleartextPassword); err != nil {
		return
	}
	msg, err := be.Receive()
	if err != nil {
		return
	}
	pm, ok := msg.(*pgproto3.PasswordMessage)
	if !ok {
		return
	}
	c.mu.Lock()
	c.received = append(c.received, pm.Password)
	c.mu.Unlock()
	be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: "28P01", Message: "password authentication failed"})
	_ = be.Flush()
}
