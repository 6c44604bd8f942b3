package testenv

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Connect opens a session as the superuser to database over TCP, closed
// when the test ends. Tests use it to look at the server as an operator
// would: pg_stat_activity, locks, roles.
func (p *Postgres) Connect(tb testing.TB, database string) *pgx.Conn {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.ConnString(p.SuperUser, p.SuperPassword, database))
	if err != nil {
		tb.Fatalf("testenv: connect to %s as %s: %v", p.Addr(), p.SuperUser, err)
	}
	tb.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}
