// Package pg opens pgx connections for a connection.Spec, directly or
// through a tunnel's dial function, and explains the errors they fail with.
// Errors are classified by type and SQLSTATE, never by message text.
package pg

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"

	"github.com/pgrelay/pgrelay/internal/connection"
)

// CancelWait is how long a session whose context was cancelled waits for
// the server to end the statement after the CancelRequest, before its
// socket is closed.
const CancelWait = 3 * time.Second

// DialFunc opens a byte stream to a database address. A tunnel's
// DialContext is one.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Config returns the pgx configuration for spec. With a non-nil dial, every
// connection goes through it, and the host name is resolved at the far end
// (the bastion), not locally.
func Config(spec *connection.Spec, dial DialFunc) (*pgx.ConnConfig, error) {
	cfg, err := spec.PgxConfig()
	if err != nil {
		return nil, err
	}
	// A cancelled context (Ctrl-C, a cancelled or timed-out run, a client
	// that went away) sends a CancelRequest at once, as libpq's PQcancel
	// does, instead of pgx's default of only closing the socket — which the
	// server notices only when it next writes, so the statement would run
	// on. The socket is closed after CancelWait if the server does not end
	// the statement by then.
	cfg.BuildContextWatcherHandler = func(pc *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: pc, DeadlineDelay: CancelWait}
	}
	if dial != nil {
		cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dial(ctx, network, addr)
		}
		cfg.LookupFunc = func(_ context.Context, host string) ([]string, error) {
			return []string{host}, nil
		}
	}
	return cfg, nil
}

// Connect opens one connection for spec (through dial when non-nil).
func Connect(ctx context.Context, spec *connection.Spec, dial DialFunc) (*pgx.Conn, error) {
	cfg, err := Config(spec, dial)
	if err != nil {
		return nil, err
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", Describe(spec), TidyConnectError(err))
	}
	return conn, nil
}

// Describe names the database a spec points at, for messages: user, host,
// port and database; never the password.
func Describe(spec *connection.Spec) string {
	return fmt.Sprintf("database %q as %q on %s", spec.Database, spec.User,
		net.JoinHostPort(spec.Host, fmt.Sprint(spec.Port)))
}
