package jobs_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestCommandsNeverSeeStoredPassword: a command step of a connection with
// a stored password gets a password of the run's own as PGPASSWORD, never
// the stored one: not in its environment, nor in profiles.yml or any other
// file of the run's directory. Else an editor's step with an allowed
// program (psql -h elsewhere, sh -c 'curl ... $PGPASSWORD') could send the
// stored password to any host. Through the run's endpoint, which logs in
// to the server itself, the command's psql works all the same (direct and
// through the bastion), as the connection's user only; its session is
// recorded for the run's cleanup, and the run's password is masked in the
// log as the stored one is.
func TestCommandsNeverSeeStoredPassword(t *testing.T) {
	t.Parallel()
	e := setup(t, 30*time.Second, 10)
	for _, conn := range []string{"direct", "wh"} {
		t.Run(conn, func(t *testing.T) {
			t.Parallel()
			out := t.TempDir() // outside the run's directory, which goes with the run
			script := `set -e
env > "$1/env"
cp -r "$DBT_PROFILES_DIR" "$1/rundir"
printf '%s' "$PGPASSWORD" > "$1/pgpassword"
echo "pw=$PGPASSWORD"
psql -XAtc "select 'who=' || current_user"
if psql -X -U "$2" -c 'select 1'; then echo "logged in as $2"; exit 9; fi`
			var mu sync.Mutex
			var log strings.Builder
			var backends []jobs.Backend
			hooks := jobs.Hooks{
				Log: func(l jobs.LogLine) {
					mu.Lock()
					defer mu.Unlock()
					log.WriteString(l.Text + "\n")
				},
				Backend: func(b jobs.Backend) {
					mu.Lock()
					defer mu.Unlock()
					backends = append(backends, b)
				},
			}
			res := e.runner(t).Run(context.Background(), job(conn,
				jobs.Step{Command: []string{"sh", "-c", script, "sh", out, e.pg.SuperUser}}), hooks)
			mu.Lock()
			text := log.String()
			mu.Unlock()
			if res.Status != jobs.Succeeded || !strings.Contains(text, "who="+e.user) {
				t.Fatalf("run: %s %s\n%s", res.Status, res.Reason, text)
			}

			got, err := os.ReadFile(filepath.Join(out, "pgpassword"))
			if err != nil {
				t.Fatal(err)
			}
			runPW := string(got)
			if runPW == e.pw {
				t.Fatal("the command got the connection's stored password as PGPASSWORD")
			}
			if len(runPW) < 32 {
				t.Fatalf("PGPASSWORD is %d bytes: want the run's own password", len(runPW))
			}
			env, err := os.ReadFile(filepath.Join(out, "env"))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(env), "PGREQUIREAUTH=scram-sha-256\n") {
				t.Errorf("the command's environment does not ask for SCRAM with the endpoint:\n%s", env)
			}
			files := map[string][]byte{"environment": env}
			if err := filepath.WalkDir(filepath.Join(out, "rundir"), func(path string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return err
				}
				b, err := os.ReadFile(path)
				files[path] = b
				return err
			}); err != nil {
				t.Fatal(err)
			}
			profiles := string(files[filepath.Join(out, "rundir", "profiles.yml")])
			if !strings.Contains(profiles, "env_var('PGPASSWORD')") || !strings.Contains(profiles, "this run's own password") {
				t.Errorf("profiles.yml:\n%s", profiles)
			}
			for where, b := range files {
				if strings.Contains(string(b), e.pw) {
					t.Errorf("the stored password is in the command's %s", where)
				}
			}

			// The endpoint logs in as the connection's user, and says so
			// to a client asking for another.
			if !strings.Contains(text, "this endpoint logs in as user") || strings.Contains(text, "logged in as "+e.pg.SuperUser) {
				t.Errorf("psql -U %s through the endpoint:\n%s", e.pg.SuperUser, text)
			}
			if !strings.Contains(text, "pw=[redacted]") || strings.Contains(text, runPW) || strings.Contains(text, e.pw) {
				t.Errorf("the run's password is not masked in the log:\n%s", text)
			}
			mu.Lock()
			defer mu.Unlock()
			found := false
			for _, b := range backends {
				found = found || b.PID != 0 && b.Step == 0 && b.User == e.user && len(b.SecretKey) > 0
			}
			if !found {
				t.Errorf("the command's session was not recorded for the run's cleanup: %+v", backends)
			}
		})
	}
}

// TestEndpointLoginKeepsRequireAuth: the run's endpoint logs in to the
// server under the connection's require_auth policy. A server that asks
// for the password in clear text over an unverified hop (sslmode disable,
// the default policy) gets nothing, and the command is told why; with
// clear text accepted knowingly (require_auth password) the endpoint sends
// the stored password, and the server's refusal of it makes the run say
// what to do next.
func TestEndpointLoginKeepsRequireAuth(t *testing.T) {
	t.Parallel()
	e := setupDirect(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name, requireAuth string
		sent              bool
	}{
		{"default policy", "", false},
		{"clear text accepted knowingly", "password", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			catcher := testenv.StartPasswordCatcher(t)
			name := "catcher-" + strconv.FormatBool(tc.sent)
			stored := "stored-" + name
			if _, err := e.svc.CreateConnection(ctx, connection.Spec{Name: name, Host: catcher.Host, Port: catcher.Port,
				Database: "d", User: "u", Password: secret.New(stored), SSLMode: connection.SSLDisable, RequireAuth: tc.requireAuth}); err != nil {
				t.Fatal(err)
			}
			var rec recorder
			res := e.runner(t).Run(ctx, job(name, jobs.Step{Command: []string{"psql", "-X", "-c", "select 1"}}), rec.hooks())
			log := rec.text()
			if res.Status != jobs.Failed || catcher.Connections() == 0 {
				t.Fatalf("run: %s %s; %d connections to the server\n%s", res.Status, res.Reason, catcher.Connections(), log)
			}
			got := catcher.Received()
			if !tc.sent {
				if len(got) != 0 {
					t.Fatalf("the server got the stored password %d times", len(got))
				}
				if !strings.Contains(log, "require_auth") || res.Next != "" {
					t.Errorf("the command is not told that require_auth refused the server's method (next: %q):\n%s", res.Next, log)
				}
				return
			}
			if len(got) != 1 || got[0] != stored {
				t.Fatalf("accepted knowingly, the server got %d passwords, want the stored one once", len(got))
			}
			if !strings.Contains(log, "password authentication failed") || !strings.Contains(res.Next, "refused the saved password of user u") {
				t.Errorf("the server's refusal of the stored password: next %q\n%s", res.Next, log)
			}
		})
	}
}
