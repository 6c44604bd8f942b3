package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgrelay/pgrelay/internal/connection"
)

// DialFunc opens a byte stream to the database server: a channel through
// an SSH tunnel or a TCP connection.
type DialFunc func(ctx context.Context) (net.Conn, error)

// Upstream is how the relay reaches the database server.
type Upstream struct {
	// Dial opens a stream to the server. Sessions use the dial function
	// the proxy hands to Handshake; Cancel and Registry use this one.
	Dial DialFunc
	// TLS is the connection's TLS policy for the database hop.
	TLS TLSPolicy
	// Addr names the server in messages: host:port as configured.
	Addr string
	// RequireAuth is the connection's require_auth policy
	// (connection.Spec.EffectiveRequireAuth) for authentication that passes
	// through: a server asking for a method it does not accept (by default
	// a clear-text password over a hop whose certificate is not verified)
	// gets nothing from the client, which gets an error instead, also when
	// the client itself would not check (libpq before 16, JDBC, asyncpg).
	RequireAuth string
	// Params are startup parameters a session gets when its client sent
	// none of that name (the connection's role), for authentication that
	// passes through; a Login logs in with the connection's own.
	Params map[string]string
	// User is the connection's user. When set, only its sessions get
	// Params: a client that logs in as another user through an endpoint
	// whose authentication passes through (pgrelay proxy of a password
	// connection) is not made to take the connection's role, which that
	// user may not be a member of.
	User string
}

// TLSPolicy is what a connection's sslmode asks of the database hop,
// with libpq's meaning: disable never encrypts; allow tries without TLS
// first and with TLS if the server refuses; prefer tries TLS first and
// goes on without when the server does not offer it (or refuses the TLS
// session); require, verify-ca and verify-full insist on TLS, the
// latter two verifying the server's certificate (verify-full also its
// name, the connection's host, not the local endpoint's).
type TLSPolicy struct {
	Mode connection.SSLMode
	// Config is the TLS client configuration (connection.Spec.TLSConfig);
	// nil for disable.
	Config *tls.Config
}

// PolicyFor returns the TLS policy of a connection's spec.
func PolicyFor(spec *connection.Spec) (TLSPolicy, error) {
	cfg, err := spec.TLSConfig()
	if err != nil {
		return TLSPolicy{}, fmt.Errorf("connection %s: %w", spec.Name, err)
	}
	mode := spec.SSLMode
	if mode == "" {
		mode = spec.Flavor.DefaultSSLMode()
	}
	return TLSPolicy{Mode: mode, Config: cfg}, nil
}

// attempt is one way of opening the database hop.
type attempt int

const (
	plainAttempt      attempt = iota // no TLS
	tlsAttempt                       // TLS, a refusal fails
	tlsOrPlainAttempt                // TLS if the server offers it, else on without on the same stream
)

// attempts lists the ways to try, in order, as libpq and pgx do.
func (p TLSPolicy) attempts() []attempt {
	switch p.Mode {
	case connection.SSLDisable:
		return []attempt{plainAttempt}
	case connection.SSLAllow:
		return []attempt{plainAttempt, tlsAttempt}
	case connection.SSLPrefer, "":
		return []attempt{tlsOrPlainAttempt, plainAttempt}
	default:
		return []attempt{tlsAttempt}
	}
}

// SSLRefusedError is returned when the server does not accept TLS but the
// sslmode requires it.
type SSLRefusedError struct {
	Addr string
	Mode connection.SSLMode
}

func (e *SSLRefusedError) Error() string {
	return fmt.Sprintf("the server at %s does not accept SSL, but the connection's sslmode is %s", e.Addr, e.Mode)
}

// open dials and negotiates TLS for one attempt. encrypted says whether
// the stream it returns is a TLS session.
func (u *Upstream) open(ctx context.Context, dial DialFunc, a attempt) (conn net.Conn, encrypted bool, err error) {
	raw, err := dial(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("open a stream to %s: %w", u.Addr, err)
	}
	if a == plainAttempt {
		return raw, false, nil
	}
	if u.TLS.Config == nil {
		_ = raw.Close()
		return nil, false, fmt.Errorf("sslmode %s for %s has no TLS configuration", u.TLS.Mode, u.Addr)
	}
	defer deadlineFrom(ctx, raw)()
	req, err := (&pgproto3.SSLRequest{}).Encode(nil)
	if err != nil {
		_ = raw.Close()
		return nil, false, fmt.Errorf("encode SSL request: %w", err)
	}
	if _, err := raw.Write(req); err != nil {
		_ = raw.Close()
		return nil, false, fmt.Errorf("send SSL request to %s: %w", u.Addr, err)
	}
	var answer [1]byte
	if _, err := io.ReadFull(raw, answer[:]); err != nil {
		_ = raw.Close()
		return nil, false, fmt.Errorf("read the answer to the SSL request from %s: %w", u.Addr, err)
	}
	switch answer[0] {
	case 'S':
	case 'N':
		if a == tlsOrPlainAttempt {
			return raw, false, nil
		}
		_ = raw.Close()
		return nil, false, &SSLRefusedError{Addr: u.Addr, Mode: u.TLS.Mode}
	default:
		_ = raw.Close()
		return nil, false, fmt.Errorf("the server at %s answered the SSL request with %q: it does not speak the PostgreSQL protocol", u.Addr, answer[0])
	}
	// The server reads nothing more before the TLS handshake, and we read
	// exactly one byte: nothing sent in the clear is taken for TLS data.
	tc := tls.Client(raw, u.TLS.Config)
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = raw.Close()
		return nil, false, fmt.Errorf("TLS handshake with %s (sslmode %s): %w", u.Addr, u.TLS.Mode, err)
	}
	return tc, true, nil
}

// deadlineFrom makes conn's reads and writes fail when ctx is done (at its
// deadline, or at once when it is cancelled) and returns the function that
// lifts the deadline again, unless ctx ended first. Once it has returned,
// ctx sets no deadline on conn any more: a deadline set after it stays
// (see Relay.tell). It may be called more than once.
func deadlineFrom(ctx context.Context, conn net.Conn) (clear func()) {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = conn.SetDeadline(time.Unix(1, 0))
		close(fired)
	})
	var once sync.Once
	return func() {
		once.Do(func() {
			if stop() {
				_ = conn.SetDeadline(time.Time{})
			} else {
				<-fired
			}
		})
	}
}

// Cancel asks the server to cancel the statement backend b is running: a
// CancelRequest with b's PID and secret key over a new stream, encrypted
// as the connection's sessions are (as libpq 17 does for its cancel
// requests). It waits for the server to close that stream, which it does
// once it has read the request. The server never says whether a statement
// was cancelled; an idle backend ignores the request.
func Cancel(ctx context.Context, up Upstream, b Backend) error {
	if up.Dial == nil {
		return errors.New("relay: cancel: no dial function")
	}
	return sendCancel(ctx, &up, up.Dial, b.PID, b.SecretKey)
}

// isClosedByPeer reports whether err says that the other side closed
// the stream abruptly, which ends a cancel request as well as EOF does.
func isClosedByPeer(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

func sendCancel(ctx context.Context, up *Upstream, dial DialFunc, pid uint32, key []byte) error {
	msg, err := (&pgproto3.CancelRequest{ProcessID: pid, SecretKey: key}).Encode(nil)
	if err != nil {
		return fmt.Errorf("cancel backend pid %d on %s: %w", pid, up.Addr, err)
	}
	var lastErr error
	for _, a := range up.TLS.attempts() {
		conn, _, err := up.open(ctx, dial, a)
		if err != nil {
			lastErr = err
			continue
		}
		err = func() error {
			defer conn.Close()
			defer deadlineFrom(ctx, conn)()
			if _, err := conn.Write(msg); err != nil {
				return fmt.Errorf("send the cancel request: %w", err)
			}
			// The server closes the stream when it has read the request.
			_, err := conn.Read(make([]byte, 1))
			if err != nil && !errors.Is(err, io.EOF) && !isClosedByPeer(err) {
				return fmt.Errorf("wait for the server to take the cancel request: %w", err)
			}
			return nil
		}()
		if err != nil {
			return fmt.Errorf("cancel backend pid %d on %s: %w", pid, up.Addr, err)
		}
		return nil
	}
	return fmt.Errorf("cancel backend pid %d: %w", pid, lastErr)
}
