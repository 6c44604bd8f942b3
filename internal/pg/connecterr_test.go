package pg_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/pg"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestConnectErrorToldShortly: a refused password under sslmode=prefer,
// against a server without TLS, is told without the TLS attempt before it
// (which read as a second failure), and a failure every attempt met alike
// is told once; the error types stay reachable.
func TestConnectErrorToldShortly(t *testing.T) {
	t.Parallel()
	p := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := p.NewDatabase(t)
	ctx := context.Background()
	spec := connection.Spec{Host: p.Host, Port: p.Port, Database: db.Name, User: db.User,
		Password: secret.New("not-the-password"), SSLMode: connection.SSLPrefer}
	_, err := pg.Connect(ctx, &spec, nil)
	var ce *pgconn.ConnectError
	var pe *pgconn.PgError
	if err == nil || !errors.As(err, &ce) || !errors.As(err, &pe) || pe.Code != "28P01" {
		t.Fatalf("connect with a wrong password: %v", err)
	}
	if msg := err.Error(); strings.Contains(msg, "tls") || strings.Count(msg, "password authentication failed") != 1 || strings.Contains(msg, "\n") {
		t.Errorf("message %q: want the refused password alone, on one line", msg)
	}

	refused := errors.New("SSH bastion refused to forward to the database")
	dial := func(context.Context, string, string) (net.Conn, error) { return nil, refused }
	spec.Password = secret.New(db.Password)
	_, err = pg.Connect(ctx, &spec, dial)
	if err == nil || !errors.Is(err, refused) || strings.Count(err.Error(), refused.Error()) != 1 {
		t.Errorf("every attempt refused alike: %v", err)
	}
}
