package app_test

import (
	"context"
	"errors"
	"os/exec"
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

	s.Name, s.Role = "nope", other
	if _, err := f.svc.CreateConnection(ctx, s); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Query(ctx, "nope", "select 1", &rowsSink{}); err == nil || !strings.Contains(err.Error(), "permission denied to set role") {
		t.Fatalf("a role the user may not take: %v", err)
	}

	s.Name, s.Role, s.Pooler = "pooled", role, connection.PoolerTransaction
	_, err := f.svc.CreateConnection(ctx, s)
	var ve *app.ValidationError
	if !errors.As(err, &ve) || !strings.Contains(ve.Fields()["role"], "not accepted with a connection pooler") {
		t.Fatalf("a role with a pooler: %v", err)
	}
}
