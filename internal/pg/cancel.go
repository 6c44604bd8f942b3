package pg

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgrelay/pgrelay/internal/connection"
)

// sslRequest is the SSLRequest message: length 8, code 80877103.
var sslRequest = [8]byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}

// Cancel asks the server to cancel what the backend (pid, secret key) is
// running, with a CancelRequest on a new stream opened by dial to the
// spec's database — like libpq's PQcancel, but with TLS negotiated as the
// spec's sslmode says (as libpq 17's cancel API does), since some servers
// and their proxies accept nothing unencrypted. The server sends no
// answer; nil means the request was delivered, not that a statement was
// running.
func Cancel(ctx context.Context, spec *connection.Spec, dial DialFunc, pid uint32, secretKey []byte) error {
	addr := net.JoinHostPort(spec.Host, fmt.Sprint(spec.Port))
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	nc, err := dial(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("cancel request to %s: %w", addr, err)
	}
	defer nc.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var c net.Conn = nc
	switch spec.SSLMode {
	case connection.SSLDisable, connection.SSLAllow:
	default:
		tc, err := startTLS(ctx, nc, spec)
		switch {
		case err == nil:
			c = tc
		case errors.Is(err, errSSLRefused) && spec.SSLMode == connection.SSLPrefer:
			// Like a prefer login: continue unencrypted on this stream.
		default:
			return fmt.Errorf("cancel request to %s: %w", addr, err)
		}
	}
	msg, err := (&pgproto3.CancelRequest{ProcessID: pid, SecretKey: secretKey}).Encode(nil)
	if err != nil {
		return fmt.Errorf("cancel request to %s: %w", addr, err)
	}
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("cancel request to %s: %w", addr, err)
	}
	// The server closes the stream once it has read the request; waiting
	// for that makes sure it was read before this returns.
	_, _ = io.Copy(io.Discard, c)
	return nil
}

var errSSLRefused = errors.New("the server does not accept SSL")

// startTLS negotiates TLS on nc as the spec's sslmode says.
func startTLS(ctx context.Context, nc net.Conn, spec *connection.Spec) (*tls.Conn, error) {
	cfg, err := spec.TLSConfig()
	if err != nil {
		return nil, err
	}
	if _, err := nc.Write(sslRequest[:]); err != nil {
		return nil, fmt.Errorf("send SSL request: %w", err)
	}
	var answer [1]byte
	if _, err := io.ReadFull(nc, answer[:]); err != nil {
		return nil, fmt.Errorf("read the answer to the SSL request: %w", err)
	}
	if answer[0] != 'S' {
		return nil, errSSLRefused
	}
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}
