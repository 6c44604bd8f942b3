package app_test

import (
	"context"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestConnectionRole: a connection's role is what its sessions act as
// (current_user), the user what logs in (session_user), also for a role
// name that needs quoting; a role the user may not take is refused by the
// server at login, and a role with a pooler at save.
func TestConnectionRole(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	role := db.User + " Transform" // a name that needs quoting
	pg.CreateRole(t, role, "unused-pw")
	pg.Exec(t, "GRANT "+pgx.Identifier{role}.Sanitize()+" TO "+pgx.Identifier{db.User}.Sanitize())
	other := db.User + "_other"
	pg.CreateRole(t, other, "unused-pw")
	t.Cleanup(func() {
		pg.Exec(t, "DROP ROLE "+pgx.Identifier{role}.Sanitize())
		pg.Exec(t, "DROP ROLE "+pgx.Identifier{other}.Sanitize())
	})
	f := newService(t)
	ctx := context.Background()
	s := connection.Spec{Name: "r", Host: pg.Host, Port: pg.Port, Database: db.Name, User: db.User,
		Password: secret.New(db.Password), SSLMode: connection.SSLDisable, Role: role}
	if _, err := f.svc.CreateConnection(ctx, s); err != nil {
		t.Fatal(err)
	}
	var out rowsSink
	if err := f.svc.Query(ctx, "r", "select current_user || '/' || session_user", &out); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), role+"/"+db.User; got != want {
		t.Fatalf("current_user/session_user = %q, want %q", got, want)
	}

	// A program through the run's endpoint acts as the role too (psql sets
	// no role of its own: the endpoint adds the connection's).
	if _, err := exec.LookPath("psql"); err == nil {
		var stdout, stderr testenv.LogBuffer
		res, err := f.svc.Exec(ctx, app.ExecRequest{Connection: "r", Command: []string{"psql", "-XAtc", "select current_user || '/' || session_user"},
			Stdio: &jobs.Stdio{In: strings.NewReader(""), Out: &stdout, Err: &stderr}})
		if err != nil || res.Status != jobs.Succeeded || strings.TrimSpace(stdout.String()) != role+"/"+db.User {
			t.Fatalf("psql through the endpoint: %v %s %q %s", err, res.Reason, stdout.String(), stderr.String())
		}
	}

	// A client that chose a role in its options keeps it: the server
	// applies startup parameters after the options, so the endpoint's
	// role used to win.
	if _, err := exec.LookPath("psql"); err == nil {
		alt := db.User + "_alt"
		pg.CreateRole(t, alt, "unused-pw")
		pg.Exec(t, "GRANT "+pgx.Identifier{alt}.Sanitize()+" TO "+pgx.Identifier{db.User}.Sanitize())
		t.Cleanup(func() { pg.Exec(t, "DROP ROLE "+pgx.Identifier{alt}.Sanitize()) })
		var stdout, stderr testenv.LogBuffer
		res, err := f.svc.Exec(ctx, app.ExecRequest{Connection: "r", Command: []string{"psql", "-XAt", "-d", "options='-c role=" + alt + "'",
			"-c", "select current_user"}, Stdio: &jobs.Stdio{In: strings.NewReader(""), Out: &stdout, Err: &stderr}})
		if err != nil || res.Status != jobs.Succeeded || strings.TrimSpace(stdout.String()) != alt {
			t.Fatalf("psql choosing role %s in its options: %v %s %q %s", alt, err, res.Reason, stdout.String(), stderr.String())
		}
	}

	// pgrelay proxy passes authentication through: its clients may log
	// in as other users, whose sessions are not made to take the
	// connection's role (the connection's user's; "other" may not take
	// it), while the connection's user still acts as it.
	ps, err := f.svc.Proxy(ctx, "r", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = ps.Serve(ctx) }()
	t.Cleanup(func() { _ = ps.Close() })
	for _, tc := range []struct{ user, password, want string }{
		{other, "unused-pw", other + "/" + other},
		{db.User, db.Password, role + "/" + db.User},
	} {
		cfg, err := pgx.ParseConfig("postgres://127.0.0.1/" + db.Name + "?sslmode=disable")
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := strings.Cut(ps.Addr().String(), ":")
		cfg.Port, cfg.User, cfg.Password = uint16(mustAtoi(t, port)), tc.user, tc.password
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatalf("%s through the proxy: %v", tc.user, err)
		}
		var got string
		err = c.QueryRow(ctx, "select current_user || '/' || session_user").Scan(&got)
		_ = c.Close(ctx)
		if err != nil || got != tc.want {
			t.Fatalf("%s through the proxy: current_user/session_user = %q (%v), want %q", tc.user, got, err, tc.want)
		}
	}

	s.Name, s.Role = "nope", other
	if _, err := f.svc.CreateConnection(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Query(ctx, "nope", "select 1", &rowsSink{}); err == nil || !strings.Contains(err.Error(), "permission denied to set role") {
		t.Fatalf("a role the user may not take: %v", err)
	}

	s.Name, s.Role, s.Pooler = "pooled", role, connection.PoolerTransaction
	_, err = f.svc.CreateConnection(ctx, s)
	var ve *app.ValidationError
	if !errors.As(err, &ve) || !strings.Contains(ve.Fields()["role"], "not accepted with a connection pooler") {
		t.Fatalf("a role with a pooler: %v", err)
	}
}

// mustAtoi is strconv.Atoi that fails the test on error.
func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
