package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestLocalRunWaitsForCleanup: a local `pgrelay job run` and a `pgrelay
// exec` whose tunnel drops (the bastion frozen) while psql runs a
// statement keep trying to stop it, and exit only once it is stopped.
// They used to leave the retry to a goroutine that died with the process:
// the statement ran on while the run said pgrelay would stop it.
func TestLocalRunWaitsForCleanup(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		t.Skip("psql not installed")
	}
	t.Parallel()
	// Keepalives every 200 ms: the freeze is taken for a drop at once.
	env, fp, admin := frozenConnection(t, "frozen", "200ms")
	jobsYAML := "jobs:\n  - name: hang\n    connection: frozen\n    steps:\n      - command: [psql, -X, -c, \"select pg_sleep(60) /* cleanup-job-run */\"]\n"
	if r, err := e2etest.Run(binary, env, strings.NewReader(jobsYAML), "job", "apply", "-f", "-"); err != nil || r.Code != 0 {
		t.Fatalf("job apply: %v %+v", err, r)
	}

	for _, tc := range []struct {
		name string
		args []string
		tag  string
	}{
		{"JobRun", []string{"job", "run", "hang", "--allow-command", "psql"}, "cleanup-job-run"},
		{"Exec", []string{"exec", "frozen", "--", "psql", "-X", "-c", "select pg_sleep(60) /* cleanup-exec */"}, "cleanup-exec"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			active := func() int {
				var n int
				if err := admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
					WHERE datname = current_database() AND state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()`,
					tc.tag).Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			cmd := exec.Command(binary, tc.args...)
			cmd.Env = env
			// The run's log goes to stdout (job run), the warnings to
			// stderr (exec): both are watched for the pending cleanup.
			// The readers only signal it: admin is one session, queried
			// by this goroutine alone (the readers used to count on it
			// too, racing with the loop below and with each other).
			pending := make(chan struct{}, 1)
			said, exited := startWatched(t, cmd, func() {
				select {
				case pending <- struct{}{}:
				default:
				}
			})
			for end := time.Now().Add(20 * time.Second); active() != 1; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(end) {
					t.Fatalf("the statement never ran; pgrelay said:\n%s", said.String())
				}
			}
			fp.Freeze()
			select {
			case <-pending:
				if n := active(); n != 1 {
					t.Fatalf("%d statements running when the cleanup went pending: this test proves nothing", n)
				}
				fp.Thaw()
			case <-time.After(30 * time.Second):
				t.Fatalf("no pending cleanup said within 30 s of the freeze; pgrelay said:\n%s", said.String())
			}
			select {
			case <-exited:
			case <-time.After(60 * time.Second):
				t.Fatal("pgrelay did not exit within 60 s of the bastion answering again")
			}
			// By the time pgrelay exits, the statement is gone.
			if n := active(); n != 0 {
				t.Fatalf("pgrelay exited with %d statements of its run still running; it said:\n%s", n, said.String())
			}
			if !strings.Contains(said.String(), "once the server could be reached again") {
				t.Fatalf("no cleanup outcome said:\n%s", said.String())
			}
			if m := regexp.MustCompile(`Run (\S+) of job hang started`).FindStringSubmatch(said.String()); m != nil {
				// The run's record says so too.
				show := e2etest.Command(t, binary, env, "run", "show", m[1])
				if !strings.Contains(show, "Cleanup: done: once the server could be reached again") {
					t.Fatalf("run show:\n%s", show)
				}
			} else if tc.name == "JobRun" {
				t.Fatalf("no run ID said:\n%s", said.String())
			}
		})
	}

	// serve retries in the background; shut down meanwhile, it records
	// that it stopped trying instead of leaving the cleanup pending.
	t.Run("ServeShutdown", func(t *testing.T) {
		tag := "cleanup-job-run" // the job's
		srv := e2etest.StartServer(t, binary, "cleanup", e2etest.Options{Env: env, Args: []string{"--allow-command", "psql"}})
		c := srv.Client(t, srv.AdminToken)
		r, err := c.RunJob(bg, "hang", jobs.API)
		if err != nil {
			t.Fatal(err)
		}
		for end := time.Now().Add(20 * time.Second); activeTag(t, admin, tag) != 1; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatal("the statement never ran")
			}
		}
		fp.Freeze()
		t.Cleanup(func() {
			fp.Thaw()
			_, _ = admin.Exec(bg, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()`, tag)
		})
		// The pending cleanup is recorded as the run ends, a moment before
		// its outcome: wait for both.
		ended := e2etest.WaitRun(t, c, r.ID, 30*time.Second, func(r *jobs.Run) bool {
			return r.Status.Terminal() && r.Cleanup != nil && r.Cleanup.Status == jobs.CleanupPending
		})
		if ended.Status != jobs.Failed {
			t.Fatalf("run %s: %s", ended.Status, ended.Reason)
		}
		srv.Stop()
		show := e2etest.Command(t, binary, env, "run", "show", r.ID)
		if !strings.Contains(show, "Cleanup: failed: pgrelay shut down before it could reach the server again") ||
			!strings.Contains(show, "pg_cancel_backend") {
			t.Fatalf("run show after the shutdown:\n%s", show)
		}
		if activeTag(t, admin, tag) != 1 {
			t.Fatal("the statement is gone: the record should have said so")
		}
	})
}

// startWatched starts cmd with its standard output (a run's log) and
// error (warnings) read line by line into the returned buffer, calling
// onPending when one says a cleanup went pending; the channel gets cmd's
// end once both are read to their end.
func startWatched(t *testing.T, cmd *exec.Cmd, onPending func()) (*testenv.LogBuffer, <-chan error) {
	t.Helper()
	said := &testenv.LogBuffer{}
	var readers sync.WaitGroup
	for _, pipe := range []func() (io.ReadCloser, error){cmd.StdoutPipe, cmd.StderrPipe} {
		r, err := pipe()
		if err != nil {
			t.Fatal(err)
		}
		readers.Go(func() {
			sc := bufio.NewScanner(r)
			for sc.Scan() {
				_, _ = said.Write([]byte(sc.Text() + "\n"))
				if strings.Contains(sc.Text(), "keeps trying to reach the server") {
					onPending()
				}
			}
			_, _ = io.Copy(io.Discard, r)
		})
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	exited := make(chan error, 1)
	go func() {
		readers.Wait()
		exited <- cmd.Wait()
	}()
	return said, exited
}

// frozenConnection saves connection name (a new database of the shared
// PostgreSQL, through the shared bastion behind a fault proxy that can
// freeze the path, with keepalives every interval, 3 missed a drop) in a
// data dir of its own, and returns the environment of pgrelay on it, the
// fault proxy and a session on the database.
func frozenConnection(t *testing.T, name, interval string) ([]string, *testenv.FaultProxy, *pgx.Conn) {
	t.Helper()
	var pg *testenv.Postgres
	var wg sync.WaitGroup
	wg.Go(func() { pg = testenv.SharedPostgres(t, testenv.PostgresOptions{}) })
	bastion := testenv.SharedBastion(t, testenv.BastionOptions{})
	wg.Wait()
	if pg == nil || t.Failed() {
		t.FailNow()
	}
	d := pg.NewDatabase(t)
	fp := testenv.StartFaultProxy(t, bastion.Addr())
	t.Cleanup(fp.Thaw)
	env := e2etest.ProcessEnv("PGRELAY_DATA_DIR="+t.TempDir(), secret.MasterKeyEnv+"="+e2etest.NewMasterKey(), "DB_PW="+d.Password)
	out := e2etest.Command(t, binary, env, "connection", "create", name, "--host", pg.Host, "--port", strconv.Itoa(pg.Port),
		"--database", d.Name, "--user", d.User, "--password-env", "DB_PW", "--sslmode", "disable",
		"--ssh-host", fp.Host(), "--ssh-port", strconv.Itoa(fp.Port()), "--ssh-user", bastion.User,
		"--ssh-keepalive-interval", interval, "--ssh-keepalive-count-max", "3", "-o", "json")
	var created struct {
		SSHTunnel struct {
			PublicKey string `json:"public_key"`
		} `json:"ssh_tunnel"`
	}
	if err := json.Unmarshal([]byte(out), &created); err != nil || created.SSHTunnel.PublicKey == "" {
		t.Fatalf("connection create: %v\n%s", err, out)
	}
	bastion.Authorize(t, created.SSHTunnel.PublicKey)
	return env, fp, pg.Connect(t, d.Name)
}

// activeTag counts the active statements of admin's database that hold tag.
func activeTag(t *testing.T, admin *pgx.Conn, tag string) int {
	t.Helper()
	var n int
	if err := admin.QueryRow(bg, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
		AND state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()`, tag).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLocalRunTimeLimitThenCtrlC: a local `job run` stopped by its time
// limit while its tunnel was silently gone waits to stop its statement
// once the bastion answers again; the first Ctrl-C ends that wait (the
// user stopped nothing before it). It used to only cancel a run already
// stopped, so the wait went on for its 10 minutes.
func TestLocalRunTimeLimitThenCtrlC(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		t.Skip("psql not installed")
	}
	t.Parallel()
	// Keepalives slow enough that the time limit (2 s) comes before the
	// silence is taken for a drop (6 s).
	env, fp, admin := frozenConnection(t, "slowdrop", "2s")
	tag := "time-limit-then-ctrl-c"
	t.Cleanup(func() {
		fp.Thaw()
		_, _ = admin.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()`, tag)
	})
	jobsYAML := "jobs:\n  - name: limited\n    connection: slowdrop\n    timeout: 2s\n    steps:\n      - command: [psql, -X, -c, \"select pg_sleep(60) /* " + tag + " */\"]\n"
	if r, err := e2etest.Run(binary, env, strings.NewReader(jobsYAML), "job", "apply", "-f", "-"); err != nil || r.Code != 0 {
		t.Fatalf("job apply: %v %+v", err, r)
	}
	cmd := exec.Command(binary, "job", "run", "limited", "--allow-command", "psql")
	cmd.Env = env
	pending := make(chan struct{}, 2)
	said, exited := startWatched(t, cmd, func() { pending <- struct{}{} })
	for end := time.Now().Add(20 * time.Second); activeTag(t, admin, tag) != 1; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the statement never ran; pgrelay said:\n%s", said.String())
		}
	}
	fp.Freeze()
	select {
	case <-pending:
	case <-time.After(30 * time.Second):
		t.Fatalf("no pending cleanup said within 30 s of the freeze; pgrelay said:\n%s", said.String())
	}
	// The time limit stopped the command before the silence was taken
	// for a drop.
	if stop, drop := strings.Index(said.String(), "stopping psql"), strings.Index(said.String(), "run stopped"); stop < 0 || drop < 0 || stop > drop {
		t.Fatalf("the time limit did not stop the run first: this test proves nothing; pgrelay said:\n%s", said.String())
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("the first Ctrl-C did not end the wait for the server (15 s); pgrelay said:\n%s", said.String())
	}
	if !strings.Contains(said.String(), "stopped trying to reach the server again") {
		t.Errorf("the cleanup does not say it stopped trying:\n%s", said.String())
	}
}
