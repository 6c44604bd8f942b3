package testenv_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestSharedPostgres: tests asking for the same options share one
// cluster; each gets a database and role of its own, which its owner can
// use and which are gone when the test ends.
func TestSharedPostgres(t *testing.T) {
	t.Parallel()
	p := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	if q := testenv.SharedPostgres(t, testenv.PostgresOptions{}); q != p {
		t.Fatal("the same options gave another cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var name, user string
	t.Run("db", func(t *testing.T) {
		d := p.NewDatabase(t)
		name, user = d.Name, d.User
		conn, err := pgx.Connect(ctx, d.ConnString())
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close(ctx) }()
		if _, err := conn.Exec(ctx, "CREATE TABLE t (n int)"); err != nil {
			t.Fatalf("the owner cannot create a table: %v", err)
		}
		var cur, db string
		if err := conn.QueryRow(ctx, "SELECT current_user, current_database()").Scan(&cur, &db); err != nil || cur != d.User || db != d.Name {
			t.Fatalf("connected as %s to %s (%v)", cur, db, err)
		}
	})
	admin, err := pgx.Connect(ctx, p.ConnString(p.SuperUser, p.SuperPassword, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = admin.Close(ctx) }()
	var dbs, roles int
	if err := admin.QueryRow(ctx, "SELECT (SELECT count(*) FROM pg_database WHERE datname = $1), (SELECT count(*) FROM pg_roles WHERE rolname = $2)",
		name, user).Scan(&dbs, &roles); err != nil {
		t.Fatal(err)
	}
	if dbs != 0 || roles != 0 {
		t.Fatalf("after the test: %d databases %s, %d roles %s", dbs, name, roles, user)
	}
}
