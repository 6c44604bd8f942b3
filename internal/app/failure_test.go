package app_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/pg"
)

// TestIsConnectFailureNotTheStore: a connection's database errors (a
// QueryError, a *pg.ConnectError) are failures the web pages show; a bare
// PostgreSQL error is pgrelay's own store's (it names the store's host and
// user) and is not, so that a store outage is not shown as a connection's
// failure with the store's address in it.
func TestIsConnectFailureNotTheStore(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection's query", &app.QueryError{Connection: "wh", Err: &pgconn.PgError{Code: "42501"}}, true},
		{"connection's login", fmt.Errorf("connect to wh: %w", &pg.ConnectError{Err: &pgconn.ConnectError{}}), true},
		{"store statement", fmt.Errorf("get connection: %w", &pgconn.PgError{Code: "25006"}), false},
		{"store connect", fmt.Errorf("get token: %w", &pgconn.ConnectError{}), false},
		{"other", errors.New("keyring"), false},
	} {
		if got := app.IsConnectFailure(c.err); got != c.want {
			t.Errorf("%s: IsConnectFailure = %v, want %v", c.name, got, c.want)
		}
	}
}
