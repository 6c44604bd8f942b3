package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// env is a real PostgreSQL behind a real OpenSSH bastion (behind a fault
// proxy that can freeze it), and a service with a tunnelled connection
// "wh" and a direct connection "direct".
type env struct {
	pg *testenv.Postgres // shared by the package's tests
	b  *testenv.Bastion  // shared unless the test has its own (setupOwnBastion)
	// db and user are the test's database on pg and its owner role.
	db, user string
	fp       *testenv.FaultProxy
	svc      *app.Service
	pw       string
	// storeFile is the SQLite store's file.
	storeFile string
}

func setup(t *testing.T, interval time.Duration, count int) *env {
	t.Helper()
	return setupWith(t, interval, count, testenv.SharedBastion(t, testenv.BastionOptions{}))
}

// setupOwnBastion is setup with a bastion of the test's own, for tests
// that kill and restart it.
func setupOwnBastion(t *testing.T, interval time.Duration, count int) *env {
	t.Helper()
	return setupWith(t, interval, count, testenv.StartBastion(t, testenv.BastionOptions{}))
}

func setupWith(t *testing.T, interval time.Duration, count int, b *testenv.Bastion) *env {
	t.Helper()
	e := setupDirect(t)
	e.b = b
	e.fp = testenv.StartFaultProxy(t, e.b.Addr())
	v, err := e.svc.CreateConnection(context.Background(), connection.Spec{Name: "wh", Host: e.pg.Host, Port: e.pg.Port,
		Database: e.db, User: e.user, Password: secret.New(e.pw), SSLMode: connection.SSLDisable, Schema: "marts",
		Tunnel: &connection.Tunnel{Host: e.fp.Host(), Port: e.fp.Port(), User: e.b.User,
			KeepaliveInterval: connection.Duration(interval), KeepaliveCountMax: count}})
	if err != nil {
		t.Fatal(err)
	}
	e.b.Authorize(t, v.SSHTunnel.PublicKey)
	return e
}

// setupDirect is setup without a bastion: the env has only the direct
// connection "direct" (no b, no fp, no "wh"), for tests of what runs
// around the connection.
func setupDirect(t *testing.T) *env {
	t.Helper()
	e := &env{pg: testenv.SharedPostgres(t, testenv.PostgresOptions{})}
	d := e.pg.NewDatabase(t)
	e.db, e.user, e.pw = d.Name, d.User, d.Password
	e.svc, e.storeFile = newServiceAt(t)
	if _, err := e.svc.CreateConnection(context.Background(), connection.Spec{Name: "direct", Host: e.pg.Host, Port: e.pg.Port,
		Database: e.db, User: e.user, Password: secret.New(e.pw), SSLMode: connection.SSLDisable}); err != nil {
		t.Fatal(err)
	}
	return e
}

// newService returns a service on a new SQLite store.
func newService(t *testing.T) *app.Service {
	svc, _ := newServiceAt(t)
	return svc
}

// newServiceAt returns a service on a new SQLite store, and the store's
// file.
func newServiceAt(t *testing.T) (*app.Service, string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), sqlite.FileName)
	st, err := sqlite.Open(context.Background(), file)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	kr, _ := secret.NewKeyring(make([]byte, 32))
	svc, err := app.New(app.Config{Store: st, Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	return svc, file
}

// runner returns a runner that may run sh and psql, as `pgrelay serve
// --allow-command sh --allow-command psql`.
func (e *env) runner(t *testing.T) *jobs.Runner {
	t.Helper()
	return &jobs.Runner{
		Open:           func(ctx context.Context, name string) (jobs.Conn, error) { return e.svc.Open(ctx, name) },
		Commands:       jobs.CommandPolicy{Allow: allowlist(t, "sh", "psql")},
		InterruptGrace: time.Second,
		KillGrace:      2 * time.Second,
	}
}

// allowlist allows programs, as `pgrelay serve --allow-command` does.
func allowlist(t *testing.T, programs ...string) *jobs.Allowlist {
	t.Helper()
	a, err := jobs.NewAllowlist(programs)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// recorder collects a run's log and step updates.
type recorder struct {
	mu    sync.Mutex
	lines []jobs.LogLine
	steps []jobs.RunStep
}

func (r *recorder) hooks() jobs.Hooks {
	return jobs.Hooks{
		Log:  func(l jobs.LogLine) { r.mu.Lock(); r.lines = append(r.lines, l); r.mu.Unlock() },
		Step: func(s jobs.RunStep) { r.mu.Lock(); r.steps = append(r.steps, s); r.mu.Unlock() },
	}
}

func (r *recorder) text() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for _, l := range r.lines {
		fmt.Fprintf(&b, "[%d %s] %s\n", l.Step, l.Stream, l.Text)
	}
	return b.String()
}

// linesOf returns the text of step's lines on stream.
func (r *recorder) linesOf(step int, stream jobs.Stream) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, l := range r.lines {
		if l.Step == step && l.Stream == stream {
			out = append(out, l.Text)
		}
	}
	return out
}

func job(conn string, steps ...jobs.Step) jobs.Job {
	j := jobs.Job{Name: "j", Connection: conn, Steps: steps}
	j.ApplyDefaults()
	return j
}

func TestRunSQLAndCommandsThroughBastion(t *testing.T) {
	t.Parallel()
	e := setup(t, 30*time.Second, 10)
	var rec recorder
	dir := t.TempDir()
	j := job("wh",
		jobs.Step{SQL: "create schema if not exists marts; create table marts.t (n int)"},
		jobs.Step{SQL: "insert into t values (1), (2)"}, // search_path is the connection's schema
		jobs.Step{Name: "psql", Command: []string{"psql", "-X", "-At", "-c", "select count(*) from marts.t"}},
		jobs.Step{Command: []string{"sh", "-c", `echo "pw=$PGPASSWORD host=$PGHOST require_auth=$PGREQUIREAUTH"; cat "$DBT_PROFILES_DIR/profiles.yml"; pwd`}, Workdir: dir},
		jobs.Step{Command: []string{"sh", "-c", "pgbench -i -s 1 -q && pgbench -n -S -t 50 -c 2"}},
		// The password (the run's own: see TestCommandsNeverSeeStoredPassword)
		// across the 64 KiB read buffer's edge is masked too.
		jobs.Step{Command: []string{"sh", "-c", `head -c 65530 /dev/zero | tr '\0' x; printf '%s\n' "$PGPASSWORD"`}},
	)
	res := e.runner(t).Run(context.Background(), j, rec.hooks())
	log := rec.text()
	if res.Status != jobs.Succeeded {
		t.Fatalf("run: %+v\nlog:\n%s", res, log)
	}
	for _, want := range []string{"CREATE SCHEMA", "INSERT 0 2", "[2 stdout] 2", "pw=[redacted] host=127.0.0.1 require_auth=scram-sha-256",
		"type: postgres", "password: \"{{ env_var('PGPASSWORD') }}\"", `schema: "marts"`, "[3 stdout] " + dir,
		"number of transactions actually processed: 100", "xxxx[redacted]"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, e.pw) {
		t.Fatal("password in the run log")
	}
	for i, s := range res.Steps {
		if s.Status != jobs.Succeeded || s.StartedAt == nil || s.EndedAt == nil {
			t.Errorf("step %d: %+v", i, s)
		}
	}
	if c := res.Steps[2].ExitCode; c == nil || *c != 0 {
		t.Errorf("psql exit code %v", c)
	}
}

func TestRunFailureSkipsRest(t *testing.T) {
	t.Parallel()
	e := setup(t, 30*time.Second, 10)
	var rec recorder
	res := e.runner(t).Run(context.Background(), job("direct",
		jobs.Step{Command: []string{"sh", "-c", "echo boom >&2; exit 3"}},
		jobs.Step{SQL: "select 1"}), rec.hooks())
	// The reason ends with the command's last line on stderr.
	if res.Status != jobs.Failed || !strings.Contains(res.Reason, "exited with code 3: boom") || res.ExitCode != 3 {
		t.Fatalf("result %+v", res)
	}
	if res.Steps[1].Status != jobs.Skipped {
		t.Fatalf("second step %+v", res.Steps[1])
	}
	if !strings.Contains(rec.text(), "[0 stderr] boom") {
		t.Fatalf("stderr not captured:\n%s", rec.text())
	}
	res = e.runner(t).Run(context.Background(), job("direct", jobs.Step{SQL: "select * from nope"}), jobs.Hooks{})
	if res.Status != jobs.Failed || !strings.Contains(res.Reason, "42P01") {
		t.Fatalf("sql failure: %+v", res)
	}
	r := e.runner(t)
	r.Commands.Allow = allowlist(t, "psql")
	res = r.Run(context.Background(), job("direct", jobs.Step{Command: []string{"rm", "-rf", "/nope"}}), jobs.Hooks{})
	if res.Status != jobs.Failed || !strings.Contains(res.Reason, "not allowed") {
		t.Fatalf("disallowed: %+v", res)
	}
}

func TestCancelAndTimeoutStopCommands(t *testing.T) {
	t.Parallel()
	e := setup(t, 30*time.Second, 10)
	marker := filepath.Join(t.TempDir(), "term")
	// The command traps SIGINT (on which dbt cancels its queries) to
	// prove it got it, then exits.
	sleeper := jobs.Step{Command: []string{"sh", "-c", "trap 'touch " + marker + "; exit 130' INT; while true; do sleep 0.1; done"}}

	ctx, cancel := context.WithCancelCause(context.Background())
	time.AfterFunc(500*time.Millisecond, func() { cancel(&jobs.CancelledError{By: "alice"}) })
	res := e.runner(t).Run(ctx, job("wh", sleeper, jobs.Step{SQL: "select 1"}), jobs.Hooks{})
	if res.Status != jobs.Cancelled || res.Reason != "cancelled by alice" || res.Steps[1].Status != jobs.Skipped {
		t.Fatalf("cancel: %+v", res)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("command did not get SIGINT: %v", err)
	}

	// A command that ignores SIGINT and SIGTERM is killed after the grace
	// periods.
	ctx2, cancel2 := context.WithTimeoutCause(context.Background(), 300*time.Millisecond, &jobs.TimeoutError{After: 300 * time.Millisecond})
	defer cancel2()
	start := time.Now()
	res = e.runner(t).Run(ctx2, job("wh", jobs.Step{Command: []string{"sh", "-c", "trap '' INT TERM; while true; do sleep 0.1; done"}}), jobs.Hooks{})
	if res.Status != jobs.Failed || !strings.Contains(res.Reason, "timed out after 300ms") {
		t.Fatalf("timeout: %+v", res)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("SIGKILL after grace took %v", d)
	}
	// SQL is cancelled too.
	ctx3, cancel3 := context.WithTimeoutCause(context.Background(), 500*time.Millisecond, &jobs.TimeoutError{After: 500 * time.Millisecond})
	defer cancel3()
	res = e.runner(t).Run(ctx3, job("wh", jobs.Step{SQL: "select pg_sleep(30)"}), jobs.Hooks{})
	if res.Status != jobs.Failed || !strings.Contains(res.Reason, "timed out") {
		t.Fatalf("sql timeout: %+v", res)
	}
}

func TestTunnelDropFailsRun(t *testing.T) {
	t.Parallel()
	const interval, count = 200 * time.Millisecond, 3
	e := setup(t, interval, count)
	var frozenAt time.Time
	var once sync.Once
	var rec recorder
	hooks := rec.hooks()
	log := hooks.Log
	hooks.Log = func(l jobs.LogLine) {
		log(l)
		if l.Stream == "stdout" && l.Text == "started" {
			once.Do(func() { frozenAt = time.Now(); e.fp.Freeze() })
		}
	}
	defer e.fp.Thaw()
	res := e.runner(t).Run(context.Background(), job("wh",
		jobs.Step{Command: []string{"sh", "-c", "echo started; psql -X -c 'select pg_sleep(60)'"}}), hooks)
	elapsed := time.Since(frozenAt)
	if res.Status != jobs.Failed || !strings.Contains(res.Reason, "SSH tunnel") || !strings.Contains(res.Reason, "dropped") {
		t.Fatalf("result %+v\nlog:\n%s", res, rec.text())
	}
	// interval × count, plus the kill grace of the command, plus a margin.
	if bound := interval*count + 2*time.Second + time.Second; elapsed > bound {
		t.Fatalf("run ended %v after the freeze, want within %v", elapsed, bound)
	}
	t.Logf("run failed %v after the freeze: %s", elapsed, res.Reason)
}

// TestStoppedRunStopsItsStatements: when a run is cancelled or times out
// in a SQL step, or its tunnel drops, the statement stops on the server
// (asserted on pg_stat_activity), a held row lock is released, and the
// run's cleanup says what was done.
func TestStoppedRunStopsItsStatements(t *testing.T) {
	t.Parallel()
	const interval, count = 200 * time.Millisecond, 3
	e := setup(t, interval, count)
	admin := e.pg.Connect(t, e.db)
	ctx := context.Background()
	if _, err := admin.Exec(ctx, `CREATE TABLE public.locked (id int PRIMARY KEY, v int); INSERT INTO public.locked VALUES (1, 0);
		GRANT ALL ON public.locked TO `+pgx.Identifier{e.user}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	var adminMu sync.Mutex // the subtests share admin
	sleeping := func(tag string) int {
		adminMu.Lock()
		defer adminMu.Unlock()
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%' || $1 || '%'
			AND pid <> pg_backend_pid()`, tag).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitFor := func(what string, within time.Duration, cond func() bool) {
		t.Helper()
		for end := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("timed out after %v waiting for %s", within, what)
			}
		}
	}
	r := e.runner(t)
	r.StopGrace = 5 * time.Second

	for _, tc := range []struct {
		name string
		stop func(cancel context.CancelCauseFunc)
		want jobs.Status
	}{
		{"Cancel", func(cancel context.CancelCauseFunc) { cancel(&jobs.CancelledError{By: "alice"}) }, jobs.Cancelled},
		{"Timeout", func(cancel context.CancelCauseFunc) { cancel(&jobs.TimeoutError{After: time.Second}) }, jobs.Failed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag := "stop-" + strings.ToLower(tc.name)
			sql := "BEGIN; UPDATE public.locked SET v = v + 1 WHERE id = 1; SELECT pg_sleep(300) /* " + tag + " */"
			rctx, cancel := context.WithCancelCause(ctx)
			stopped := make(chan struct{})
			go func() {
				defer close(stopped)
				waitFor("the statement to run", 15*time.Second, func() bool { return sleeping(tag) == 1 })
				tc.stop(cancel)
			}()
			res := r.Run(rctx, job("wh", jobs.Step{SQL: sql}), jobs.Hooks{})
			<-stopped // done with admin, which is for one goroutine at a time
			if res.Status != tc.want || res.Cleanup == nil || res.Cleanup.Status != jobs.CleanupDone ||
				len(res.Cleanup.Cancelled) != 1 || !strings.HasPrefix(res.Cleanup.Message, "cancelled 1 statement on the server (pid ") {
				t.Fatalf("result %+v, cleanup %+v", res, res.Cleanup)
			}
			// Stopped by the time the run reports its end.
			if n := sleeping(tag); n != 0 {
				t.Fatalf("%d sessions of the run still on the server after it ended", n)
			}
			if _, err := admin.Exec(ctx, `SET lock_timeout = '2s'`); err != nil {
				t.Fatal(err)
			}
			if _, err := admin.Exec(ctx, `UPDATE public.locked SET v = 0 WHERE id = 1`); err != nil {
				t.Fatalf("the run's row lock is still held: %v", err)
			}
		})
	}

	t.Run("TunnelDrop", func(t *testing.T) {
		tag := "stop-drop"
		cleanups := make(chan jobs.Cleanup, 1)
		hooks := jobs.Hooks{Cleanup: func(c jobs.Cleanup) { cleanups <- c }}
		go func() {
			waitFor("the statement to run", 15*time.Second, func() bool { return sleeping(tag) == 1 })
			e.fp.Freeze()
		}()
		defer e.fp.Thaw()
		res := r.Run(ctx, job("wh", jobs.Step{SQL: "SELECT pg_sleep(300) /* " + tag + " */"}), hooks)
		if res.Status != jobs.Failed || !strings.Contains(res.Reason, "dropped") || res.Cleanup == nil ||
			res.Cleanup.Status != jobs.CleanupPending || !strings.Contains(res.Cleanup.Message, "may still be running") {
			t.Fatalf("result %+v, cleanup %+v", res, res.Cleanup)
		}
		if sleeping(tag) != 1 {
			t.Fatal("the statement ended with the tunnel: this test proves nothing")
		}
		e.fp.Thaw()
		select {
		case c := <-cleanups:
			if c.Status != jobs.CleanupDone || len(c.Cancelled) != 1 || !strings.Contains(c.Message, "once the server could be reached again") {
				t.Fatalf("cleanup %+v", c)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no cleanup within 30 s of the bastion answering again")
		}
		waitFor("the statement to stop", 5*time.Second, func() bool { return sleeping(tag) == 0 })
	})

	// A process that exits with its run (a local `job run`, exec) waits
	// for the cleanup: a retry left to the background died with it, and
	// the statement ran on while the run's record said it would be stopped.
	t.Run("TunnelDropWaited", func(t *testing.T) {
		tag := "stop-drop-waited"
		w := *r
		w.WaitCleanup = true
		var pendingRunning int
		hooks := jobs.Hooks{
			Cleanup: func(jobs.Cleanup) { t.Error("a waited cleanup reported to Hooks.Cleanup") },
			CleanupPending: func(c jobs.Cleanup) {
				pendingRunning = sleeping(tag)
				e.fp.Thaw() // the bastion answers again while the run waits
			},
		}
		go func() {
			waitFor("the statement to run", 15*time.Second, func() bool { return sleeping(tag) == 1 })
			e.fp.Freeze()
		}()
		defer e.fp.Thaw()
		res := w.Run(ctx, job("wh", jobs.Step{SQL: "SELECT pg_sleep(300) /* " + tag + " */"}), hooks)
		if pendingRunning != 1 {
			t.Fatalf("%d statements running when the cleanup went pending: this test proves nothing", pendingRunning)
		}
		if res.Status != jobs.Failed || !strings.Contains(res.Reason, "dropped") || res.Cleanup == nil ||
			res.Cleanup.Status != jobs.CleanupDone || len(res.Cleanup.Cancelled)+len(res.Cleanup.Terminated) != 1 ||
			!strings.Contains(res.Cleanup.Message, "once the server could be reached again") {
			t.Fatalf("result %+v, cleanup %+v", res, res.Cleanup)
		}
		// Stopped by the time Run returned.
		if n := sleeping(tag); n != 0 {
			t.Fatalf("%d statements of the run still on the server when Run returned", n)
		}
	})

	// Interrupted while it waits (Ctrl-C), it says what is left to do.
	t.Run("TunnelDropWaitInterrupted", func(t *testing.T) {
		tag := "stop-drop-interrupted"
		w := *r
		w.WaitCleanup = true
		rctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		hooks := jobs.Hooks{CleanupPending: func(jobs.Cleanup) {
			cancel(&jobs.CancelledError{By: "signal interrupt"})
		}}
		go func() {
			waitFor("the statement to run", 15*time.Second, func() bool { return sleeping(tag) == 1 })
			e.fp.Freeze()
		}()
		res := w.Run(rctx, job("wh", jobs.Step{SQL: "SELECT pg_sleep(300) /* " + tag + " */"}), hooks)
		if res.Cleanup == nil || res.Cleanup.Status != jobs.CleanupFailed ||
			!strings.Contains(res.Cleanup.Message, "stopped trying to reach the server again (cancelled by signal interrupt)") ||
			!strings.Contains(res.Cleanup.Message, "pg_cancel_backend") {
			t.Fatalf("cleanup %+v", res.Cleanup)
		}
		e.fp.Thaw()
		if n := sleeping(tag); n != 1 {
			t.Fatalf("%d statements: the interrupted cleanup stopped something after all", n)
		}
		if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%'||$1||'%' AND pid <> pg_backend_pid()`, tag); err != nil {
			t.Fatal(err)
		}
	})
	// The job's time limit passing while the run waits for the server
	// does not cut the cleanup short: its own bound applies (a local `job
	// run` whose tunnel dropped just before its time limit).
	t.Run("TunnelDropWaitOutlivesTimeLimit", func(t *testing.T) {
		tag := "stop-drop-time-limit"
		w := *r
		w.WaitCleanup = true
		w.CleanupFor = 30 * time.Second
		rctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		hooks := jobs.Hooks{CleanupPending: func(jobs.Cleanup) {
			cancel(&jobs.TimeoutError{After: time.Minute})
			e.fp.Thaw()
		}}
		go func() {
			waitFor("the statement to run", 15*time.Second, func() bool { return sleeping(tag) == 1 })
			e.fp.Freeze()
		}()
		defer e.fp.Thaw()
		res := w.Run(rctx, job("wh", jobs.Step{SQL: "SELECT pg_sleep(300) /* " + tag + " */"}), hooks)
		if res.Cleanup == nil || res.Cleanup.Status != jobs.CleanupDone {
			t.Fatalf("cleanup %+v", res.Cleanup)
		}
		if n := sleeping(tag); n != 0 {
			t.Fatalf("%d statements of the run still on the server when Run returned", n)
		}
	})

	// A cleanup that succeeded stays done when a stop comes right after
	// it (here: as the retry logs its success).
	t.Run("TunnelDropWaitStoppedAfterSuccess", func(t *testing.T) {
		tag := "stop-drop-after-success"
		w := *r
		w.WaitCleanup = true
		rctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		w.Logger = slog.New(onMessage{"run backends stopped after reconnecting", func() {
			cancel(&jobs.CancelledError{By: "signal interrupt"})
		}})
		hooks := jobs.Hooks{CleanupPending: func(jobs.Cleanup) { e.fp.Thaw() }}
		go func() {
			waitFor("the statement to run", 15*time.Second, func() bool { return sleeping(tag) == 1 })
			e.fp.Freeze()
		}()
		defer e.fp.Thaw()
		res := w.Run(rctx, job("wh", jobs.Step{SQL: "SELECT pg_sleep(300) /* " + tag + " */"}), hooks)
		if rctx.Err() == nil {
			t.Fatal("the run was not stopped after its cleanup: this test proves nothing")
		}
		if res.Cleanup == nil || res.Cleanup.Status != jobs.CleanupDone ||
			!strings.Contains(res.Cleanup.Message, "once the server could be reached again") {
			t.Fatalf("cleanup %+v", res.Cleanup)
		}
		if n := sleeping(tag); n != 0 {
			t.Fatalf("%d statements of the run still on the server when Run returned", n)
		}
	})

	// Stopped first (Ctrl-C, then the tunnel found gone), the run waits for
	// the server for that stop; the user's next interrupt
	// (Control.StopWaiting, the CLI's second Ctrl-C) ends the wait, which
	// then says what is left to do.
	t.Run("StoppedThenDroppedWaitInterrupted", func(t *testing.T) {
		tag := "stop-then-drop-interrupted"
		w := *r
		w.WaitCleanup = true
		w.CleanupFor = 20 * time.Second
		control := jobs.NewControl()
		rctx, cancel := context.WithCancelCause(jobs.WithControl(ctx, control))
		defer cancel(nil)
		interrupted := make(chan bool, 1)
		hooks := jobs.Hooks{CleanupPending: func(jobs.Cleanup) {
			go func() {
				for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
					if control.StopWaiting(&jobs.CancelledError{By: "signal interrupt (again)"}) {
						interrupted <- true
						return
					}
				}
				interrupted <- false
			}()
		}}
		go func() {
			waitFor("the statement to run", 15*time.Second, func() bool { return sleeping(tag) == 1 })
			e.fp.Freeze()
			cancel(&jobs.CancelledError{By: "signal terminated"})
		}()
		defer e.fp.Thaw()
		res := w.Run(rctx, job("wh", jobs.Step{SQL: "SELECT pg_sleep(300) /* " + tag + " */"}), hooks)
		if !<-interrupted {
			t.Fatalf("no wait to interrupt: result %+v, cleanup %+v", res, res.Cleanup)
		}
		if res.Cleanup == nil || res.Cleanup.Status != jobs.CleanupFailed ||
			!strings.Contains(res.Cleanup.Message, "stopped trying to reach the server again (cancelled by signal interrupt (again))") ||
			!strings.Contains(res.Cleanup.Message, "pg_cancel_backend") {
			t.Fatalf("result %+v, cleanup %+v", res, res.Cleanup)
		}
		e.fp.Thaw()
		if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%'||$1||'%' AND pid <> pg_backend_pid()`, tag); err != nil {
			t.Fatal(err)
		}
	})
}

// onMessage is a log handler that calls do when a record with message
// msg is logged.
type onMessage struct {
	msg string
	do  func()
}

func (h onMessage) Enabled(context.Context, slog.Level) bool { return true }
func (h onMessage) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.do()
	}
	return nil
}
func (h onMessage) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h onMessage) WithGroup(string) slog.Handler      { return h }

// TestRunEndsStatementsEverywhere is the matrix of issue 9: a SQL step, a
// psql command step and a pgbench command step, each stopped by a cancel,
// a timeout, the bastion's sshd killed (its whole process tree) and
// started again, and the bastion frozen and thawed. In every case the
// statement is gone from pg_stat_activity (polled) once the run has ended,
// or, when the tunnel was lost, once the bastion answers again; and the
// run's cleanup says it is done.
func TestRunEndsStatementsEverywhere(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("slow: 12 stopped runs")
	}
	const interval, count = 200 * time.Millisecond, 3
	e := setupOwnBastion(t, interval, count) // it kills and restarts sshd
	admin := e.pg.Connect(t, e.db)
	ctx := context.Background()
	active := func(tag string) int {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%' || $1 || '%'
			AND state = 'active' AND pid <> pg_backend_pid()`, tag).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitFor := func(what string, within time.Duration, cond func() bool) {
		t.Helper()
		for end := time.Now().Add(within); !cond(); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(end) {
				t.Fatalf("timed out after %v waiting for %s", within, what)
			}
		}
	}
	dir := t.TempDir()
	steps := map[string]func(tag string) jobs.Step{
		"sql": func(tag string) jobs.Step { return jobs.Step{SQL: "SELECT pg_sleep(300) /* " + tag + " */"} },
		"psql": func(tag string) jobs.Step {
			return jobs.Step{Command: []string{"psql", "-X", "-c", "SELECT pg_sleep(300) /* " + tag + " */"}}
		},
		"pgbench": func(tag string) jobs.Step {
			script := filepath.Join(dir, tag+".sql")
			if err := os.WriteFile(script, []byte("SELECT pg_sleep(300) /* "+tag+" */;\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			return jobs.Step{Command: []string{"pgbench", "-n", "-t", "1", "-f", script}}
		},
	}
	r := e.runner(t)
	r.Commands = jobs.CommandPolicy{Allow: allowlist(t, "sh", "psql", "pgbench")}
	r.StopGrace = 3 * time.Second
	for _, kind := range []string{"sql", "psql", "pgbench"} {
		for _, stop := range []string{"cancel", "timeout", "sshd-killed", "frozen"} {
			t.Run(kind+"/"+stop, func(t *testing.T) {
				tag := "matrix-" + kind + "-" + stop
				rctx, cancel := context.WithCancelCause(ctx)
				defer cancel(nil)
				cleanups := make(chan jobs.Cleanup, 1)
				hooks := jobs.Hooks{Cleanup: func(c jobs.Cleanup) { cleanups <- c }}
				stopped := make(chan struct{})
				go func() {
					defer close(stopped)
					waitFor("the statement to run", 20*time.Second, func() bool { return active(tag) == 1 })
					switch stop {
					case "cancel":
						cancel(&jobs.CancelledError{By: "matrix"})
					case "timeout":
						cancel(&jobs.TimeoutError{After: time.Second})
					case "sshd-killed":
						e.b.Kill(t)
					case "frozen":
						e.fp.Freeze()
					}
				}()
				res := r.Run(rctx, job("wh", steps[kind](tag)), hooks)
				<-stopped // the fault is complete (sshd's whole tree is gone)
				if res.Status == jobs.Succeeded || res.Cleanup == nil {
					t.Fatalf("result %+v", res)
				}
				switch stop {
				case "cancel", "timeout":
					if res.Cleanup.Status != jobs.CleanupDone {
						t.Fatalf("cleanup %+v", res.Cleanup)
					}
				default:
					if res.Cleanup.Status != jobs.CleanupPending {
						t.Fatalf("cleanup after the tunnel was lost: %+v (reason %s)", res.Cleanup, res.Reason)
					}
					if stop == "sshd-killed" {
						e.b.Start(t)
					} else {
						e.fp.Thaw()
					}
					select {
					case c := <-cleanups:
						if c.Status != jobs.CleanupDone {
							t.Fatalf("cleanup once the bastion answered: %+v", c)
						}
					case <-time.After(40 * time.Second):
						t.Fatal("no cleanup within 40 s of the bastion answering again")
					}
				}
				waitFor("the statement to stop on the server", 5*time.Second, func() bool { return active(tag) == 0 })
			})
		}
	}
}

// TestStepLeftoversEndWithIt: a command step whose program leaves a psql
// running in the background (sh's `&`, which ignores SIGINT) and exits.
// The step used to wait for the leftover's output to close, and a leftover
// that closed it ran on past the run; now what the program left in its
// process group ends with it, and the statement is gone by the time the
// run reports its end.
func TestStepLeftoversEndWithIt(t *testing.T) {
	t.Parallel()
	e := setup(t, 30*time.Second, 10)
	admin := e.pg.Connect(t, e.db)
	ctx := context.Background()
	active := func(tag string) int {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()`, tag).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	r := e.runner(t)
	r.Commands = jobs.CommandPolicy{Allow: allowlist(t, "sh", "psql")}
	for _, tc := range []struct{ name, script string }{
		// The leftover keeps the step's output open.
		{"output held", `psql -X -c "select pg_sleep(300) /* TAG */" & `},
		// The leftover lets go of it.
		{"output closed", `psql -X -c "select pg_sleep(300) /* TAG */" >/dev/null 2>&1 </dev/null & `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag := "leftover-" + strings.ReplaceAll(tc.name, " ", "-")
			script := strings.ReplaceAll(tc.script, "TAG", tag) + `
				for i in $(seq 100); do
					psql -XAtc "select count(*) from pg_stat_activity where query like '%pg_sleep(300) /* ` + tag + ` */%' and state = 'active' and pid <> pg_backend_pid()" | grep -qx 1 && exit 0
					sleep 0.1
				done
				exit 3`
			ended := make(chan jobs.Result, 1)
			go func() { ended <- r.Run(ctx, job("wh", jobs.Step{Command: []string{"sh", "-c", script}}), jobs.Hooks{}) }()
			var res jobs.Result
			select {
			case res = <-ended:
			case <-time.After(60 * time.Second):
				t.Fatal("the run did not end within 60 s of its program's exit")
			}
			if res.Status != jobs.Succeeded {
				t.Fatalf("result %+v", res)
			}
			if n := active(tag); n != 0 {
				t.Fatalf("the run ended with %d statements of its leftover still running", n)
			}
		})
	}
}

// TestRunLeavesRunnerAsItWas: runs of one Runner start concurrently (the
// queue's workers), so Run takes its defaults for itself and writes
// nothing to the Runner (a data race under -race before).
func TestRunLeavesRunnerAsItWas(t *testing.T) {
	t.Parallel()
	r := &jobs.Runner{Open: func(context.Context, string) (jobs.Conn, error) {
		return nil, errors.New("no such connection")
	}}
	before := *r
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res := r.Run(context.Background(), job("nowhere", jobs.Step{SQL: "select 1"}), jobs.Hooks{}); res.Status != jobs.Failed {
				t.Errorf("status %s, want failed", res.Status)
			}
		}()
	}
	wg.Wait()
	if r.Logger != before.Logger || r.KillGrace != before.KillGrace || r.InterruptGrace != before.InterruptGrace {
		t.Errorf("Run changed its Runner: %+v", r)
	}
}

// TestCopyFromStdinStepRefused: a SQL step saved before jobs were checked
// for COPY ... FROM STDIN is refused before the run opens its connection;
// it used to wait for data until the run's time limit.
func TestCopyFromStdinStepRefused(t *testing.T) {
	t.Parallel()
	opened := false
	r := &jobs.Runner{Open: func(context.Context, string) (jobs.Conn, error) {
		opened = true
		return nil, errors.New("no such connection")
	}}
	res := r.Run(context.Background(), job("db", jobs.Step{SQL: "select 1"}, jobs.Step{SQL: "COPY t FROM STDIN"}), jobs.Hooks{})
	var se *jobs.StepError
	if res.Status != jobs.Failed || !errors.As(res.Err, &se) || !se.Refused || se.Step != 1 ||
		!strings.Contains(res.Reason, "COPY ... FROM STDIN waits for data from the client") || opened {
		t.Fatalf("result %+v (opened %v)", res, opened)
	}
}
