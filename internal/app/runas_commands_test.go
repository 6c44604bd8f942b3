package app_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestConnectionCommandsRunAsTheUser: whoever saves a connection chooses
// the arguments of its proxy command and of its token command, so under
// --run-as they run as that user, as command steps do, not as pgrelay:
// pgrelay runs as root there (to switch users), and an allowed psql or sh
// run as root reads the data dir, the master key and every secret.
func TestConnectionCommandsRunAsTheUser(t *testing.T) {
	t.Parallel()
	u := testenv.NewOSUser(t) // skips unless root
	ra, err := jobs.LookupRunAs(u.Name)
	if err != nil {
		t.Fatal(err)
	}
	// Where the commands write who they ran as: a directory anyone may
	// write, as the user cannot reach the test's own.
	dir, err := os.MkdirTemp("", "pgrelay-runas-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	ranAs := func(file string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			t.Fatalf("the command did not say who it ran as: %v", err)
		}
		return strings.TrimSpace(string(b))
	}
	ctx := context.Background()
	allow := allowlistOf(t, "sh")
	f := newServiceWith(t, func(c *app.Config) {
		c.SSH.ProxyCommands = jobs.CommandPolicy{Allow: allow, RunAs: ra}
		c.Credentials = app.CredentialConfig{AllowCommand: allow.Path, RunAs: ra}
	})

	t.Run("ProxyCommand", func(t *testing.T) {
		pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
		db := pg.NewDatabase(t)
		b := testenv.SharedBastion(t, testenv.BastionOptions{})
		spec := connection.Spec{Name: "ssm", Host: pg.Host, Port: pg.Port, Database: db.Name, User: db.User,
			Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
			Tunnel: &connection.Tunnel{Host: "bastion.internal", Port: 22, User: b.User,
				ProxyCommand: []string{"sh", "-c", `id -u > "$0/proxy" && exec socat STDIO TCP:` + b.Addr(), dir}}}
		v, err := f.svc.CreateConnection(ctx, spec)
		if err != nil {
			t.Fatal(err)
		}
		b.Authorize(t, v.SSHTunnel.PublicKey)
		var sink rowsSink
		if err := f.svc.Query(ctx, "ssm", "select 42", &sink); err != nil || sink.String() != "42" {
			t.Fatalf("query over the proxy command: %q %v", sink.String(), err)
		}
		if got := ranAs("proxy"); got != strconv.Itoa(u.UID) {
			t.Fatalf("the proxy command ran as UID %s, want %d (--run-as %s)", got, u.UID, u.Name)
		}
	})

	t.Run("TokenCommand", func(t *testing.T) {
		pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
		spec := connection.Spec{Name: "tok", Host: pg.Host, Port: pg.Port, Database: "postgres", User: "nobody",
			SSLMode: connection.SSLRequire, RequireAuth: "password",
			Auth: &connection.Auth{Kind: connection.AuthCommand, Program: "sh",
				Args: []string{"-c", `id -u > "$0/token" && echo not-a-real-token`, dir}}}
		if _, err := f.svc.CreateConnection(ctx, spec); err != nil {
			t.Fatal(err)
		}
		_, _ = f.svc.TestConnection(ctx, "tok", nil) // fetches a token first; the login may fail
		if got := ranAs("token"); got != strconv.Itoa(u.UID) {
			t.Fatalf("the token command ran as UID %s, want %d (--run-as %s)", got, u.UID, u.Name)
		}
	})
}
