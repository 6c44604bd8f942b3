package jobs_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// statementGone bounds how long a statement may outlive the client that
// was killed while it ran.
const statementGone = 10 * time.Second

// superConn opens a direct superuser session for checks.
func superConn(t *testing.T, pg *testenv.Postgres) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.ConnString(pg.SuperUser, pg.SuperPassword, "postgres"))
	if err != nil {
		t.Fatalf("superuser connect: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// poll checks cond every 20 ms until it holds, failing after within.
func poll(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("waited %v for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// sleeperPID returns the PID of the backend in database db running
// pg_sleep(300) for a run's command, once it runs.
func sleeperPID(t *testing.T, super *pgx.Conn, db string) int64 {
	t.Helper()
	var pid int64
	poll(t, 20*time.Second, "the command's statement to run", func() bool {
		return super.QueryRow(context.Background(), `SELECT pid FROM pg_stat_activity
			WHERE datname = $1 AND application_name = 'pgrelay-run' AND state = 'active' AND query LIKE '%pg_sleep(300)%'`, db).Scan(&pid) == nil
	})
	return pid
}

func backendGone(t *testing.T, super *pgx.Conn, pid int64) bool {
	t.Helper()
	var n int
	if err := super.QueryRow(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&n); err != nil {
		t.Fatalf("read pg_stat_activity: %v", err)
	}
	return n == 0
}

// processWith returns the PID of the process below this one whose command
// line holds marker (tests run in parallel: each kills its own).
func processWith(t *testing.T, marker string) int {
	t.Helper()
	var found int
	poll(t, 10*time.Second, "the process running "+marker, func() bool {
		pids, err := testenv.Descendants(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pids {
			cmdline, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p), "cmdline"))
			argv0, _, _ := strings.Cut(string(cmdline), "\x00")
			if err == nil && filepath.Base(argv0) == "psql" && strings.Contains(string(cmdline), marker) {
				found = p
				return true
			}
		}
		return false
	})
	return found
}

// TestKilledCommandLeavesNoStatement kills psql (SIGKILL: it cannot say
// goodbye) while its statement runs, in a command step that goes on
// afterwards: the run's endpoint cancels the statement and ends the
// backend by itself, well before the run ends.
func TestKilledCommandLeavesNoStatement(t *testing.T) {
	t.Parallel()
	e := setup(t, 30*time.Second, 10)
	super := superConn(t, e.pg)
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	done := make(chan jobs.Result, 1)
	go func() {
		done <- e.runner(t).Run(ctx, job("wh", jobs.Step{Command: []string{"sh", "-c",
			"psql -X -c 'select pg_sleep(300) -- killed-command'; echo psql ended; sleep 300"}}), jobs.Hooks{})
	}()
	pid := sleeperPID(t, super, e.db)
	psql := processWith(t, "killed-command")
	if err := syscall.Kill(psql, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	took := poll(t, statementGone, "the killed client's backend to end", func() bool { return backendGone(t, super, pid) })
	t.Logf("backend %d ended %v after psql was killed", pid, took)
	select {
	case res := <-done:
		t.Fatalf("the run ended early: %+v", res)
	default:
	}
	cancel(&jobs.CancelledError{By: "test"})
	<-done
}

// TestCancelledRunStopsCommandStatement cancels a run whose psql step is
// running a statement: psql ends on SIGTERM without closing its session,
// and the endpoint cancels the statement.
func TestCancelledRunStopsCommandStatement(t *testing.T) {
	t.Parallel()
	e := setup(t, 30*time.Second, 10)
	super := superConn(t, e.pg)
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	done := make(chan jobs.Result, 1)
	go func() {
		done <- e.runner(t).Run(ctx, job("wh", jobs.Step{Command: []string{"psql", "-X", "-c", "select pg_sleep(300)"}}), jobs.Hooks{})
	}()
	pid := sleeperPID(t, super, e.db)
	cancel(&jobs.CancelledError{By: "alice"})
	if res := <-done; res.Status != jobs.Cancelled {
		t.Fatalf("run: %+v", res)
	}
	took := poll(t, statementGone, "the cancelled run's statement to end", func() bool { return backendGone(t, super, pid) })
	t.Logf("backend %d ended %v after the run was cancelled", pid, took)
}

// verifyFullOptions are those of the shared server that the verify-full
// tests use: SSL only, its certificate for "localhost" alone.
func verifyFullOptions() testenv.PostgresOptions {
	return testenv.PostgresOptions{SSLOnly: true, TLSHosts: []string{"localhost"}}
}

// TestCommandsWithVerifyFull runs commands over a connection whose sslmode
// is verify-full: they connect to the local endpoint with that sslmode
// (trusting its certificate), and the database hop is verified and
// encrypted by pgrelay.
func TestCommandsWithVerifyFull(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, verifyFullOptions())
	d := pg.NewDatabase(t)
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	kr, _ := secret.NewKeyring(make([]byte, 32))
	svc, err := app.New(app.Config{Store: st, Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	for name, ca := range map[string][]byte{"vf": pg.CAPEM, "otherca": testenv.NewTLSCert(t).CAPEM} {
		if _, err := svc.CreateConnection(context.Background(), connection.Spec{Name: name, Host: "localhost", Port: pg.Port,
			Database: d.Name, User: d.User, Password: secret.New(d.Password),
			SSLMode: connection.SSLVerifyFull, SSLRootCert: string(ca)}); err != nil {
			t.Fatal(err)
		}
	}
	r := &jobs.Runner{Open: func(ctx context.Context, name string) (jobs.Conn, error) { return svc.Open(ctx, name) },
		Commands: jobs.CommandPolicy{Allow: allowlist(t, "sh", "psql")}}
	var rec recorder
	res := r.Run(context.Background(), job("vf",
		jobs.Step{Command: []string{"sh", "-c", `echo "mode=$PGSSLMODE"`}},
		jobs.Step{Command: []string{"psql", "-X", "-At", "-c",
			"select 'server_ssl=' || ssl from pg_stat_ssl where pid = pg_backend_pid()"}},
		jobs.Step{Command: []string{"psql", "-X", "-At", "-c", `\conninfo`}},
	), rec.hooks())
	log := rec.text()
	if res.Status != jobs.Succeeded {
		t.Fatalf("run: %+v\n%s", res, log)
	}
	for _, want := range []string{"mode=verify-full", "server_ssl=true", "SSL connection"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	// The server's certificate is checked by pgrelay, and the command
	// hears why it failed.
	rec = recorder{}
	res = r.Run(context.Background(), job("otherca", jobs.Step{Command: []string{"psql", "-X", "-c", "select 1"}}), rec.hooks())
	log = rec.text()
	if res.Status != jobs.Failed || !strings.Contains(log, "certificate signed by unknown authority") {
		t.Errorf("verify-full with another CA: %+v\n%s", res, log)
	}
}
