package queue_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

type fixture struct {
	svc *app.Service
	st  *sqlite.Store
	q   *queue.Queue
	// qdb is River's handle on the store's file.
	qdb *sql.DB
}

// start builds a service on a fresh SQLite store with a direct connection
// "db" to pg, and a started queue.
// sqliteStore opens an embedded store in a temporary directory and the
// job queue's handle on its file, both closed when the test ends.
func sqliteStore(t *testing.T) (*sqlite.Store, *sql.DB) {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	qdb, err := st.OpenQueueDB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = qdb.Close() })
	return st, qdb
}

func start(t *testing.T, pg *testenv.Postgres, mod func(*queue.Config)) *fixture {
	t.Helper()
	st, qdb := sqliteStore(t)
	f := startOn(t, pg, st, queue.Backend{SQLite: qdb}, mod)
	f.st, f.qdb = st, qdb
	return f
}

// startOn builds a service on st (whose queue backend is backend) with a
// direct connection "db" to pg, and a started queue.
func startOn(t *testing.T, pg *testenv.Postgres, st store.Store, backend queue.Backend, mod func(*queue.Config)) *fixture {
	t.Helper()
	ctx := context.Background()
	f := newProcess(t, st, backend, mod)
	if _, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "db", Host: pg.Host, Port: pg.Port, Database: "postgres",
		User: pg.SuperUser, Password: secret.New(pg.SuperPassword), SSLMode: connection.SSLDisable}); err != nil {
		t.Fatal(err)
	}
	if err := f.q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.q.Stop(context.Background()) })
	return f
}

// newProcess builds a service and its queue (not started) on st, whose
// queue backend is backend: one more pgrelay process on a store.
func newProcess(t *testing.T, st store.Store, backend queue.Backend, mod func(*queue.Config)) *fixture {
	t.Helper()
	kr, _ := secret.NewKeyring(make([]byte, 32))
	// The order of daemon.New: the connector, the queue on its Open, the
	// service on both.
	conn, err := app.NewConnector(app.Config{Store: st, Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	cfg := queue.Config{
		Store: st, Backend: backend,
		Open:              conn.OpenConn,
		Commands:          jobs.CommandPolicy{Allow: allowlist(t, "sh", "sleep")},
		HeartbeatInterval: 200 * time.Millisecond, LostAfter: time.Second, ReapInterval: 200 * time.Millisecond,
		ScheduleSync: 200 * time.Millisecond, KillGrace: time.Second, ShutdownGrace: time.Second,
		RunEnded: conn.RunEnded, // as daemon.New wires it
	}
	if mod != nil {
		mod(&cfg)
	}
	q, err := queue.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := app.New(app.Config{Connector: conn, Queue: q})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{svc: svc, q: q}
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

func waitRun(t *testing.T, svc *app.Service, id string, want func(*jobs.Run) bool) *jobs.Run {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := svc.GetRun(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if want(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s did not reach the wanted state: %+v", id, r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func terminal(r *jobs.Run) bool { return r.Status.Terminal() }

// TestShutdownSaysNothingOfTheConnection: a run that the process stopped
// as it shut down fails, naming the shutdown, but leaves its connection's
// health as it was; it used to count as the connection failing.
func TestShutdownSaysNothingOfTheConnection(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	f := start(t, pg, nil)
	ctx := context.Background()
	if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "slow", Connection: "db", Steps: []jobs.Step{
		{Command: []string{"sleep", "60"}}}}}); err != nil {
		t.Fatal(err)
	}
	r, err := f.svc.RunJob(ctx, "slow", jobs.Manual)
	if err != nil {
		t.Fatal(err)
	}
	waitRun(t, f.svc, r.ID, func(r *jobs.Run) bool { return r.Status == jobs.Running })
	if err := f.q.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	r, err = f.svc.GetRun(ctx, r.ID)
	if err != nil || r.Status != jobs.Failed || !strings.Contains(r.Reason, "shut down") {
		t.Fatalf("run after the shutdown: %+v, %v", r, err)
	}
	v, err := f.svc.GetConnection(ctx, "db")
	if err != nil {
		t.Fatal(err)
	}
	if v.Health == nil || v.Health.Status == app.HealthFailing {
		t.Errorf("connection health after a shutdown stopped its run: %+v", v.Health)
	}
}

func TestQueue(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	f := start(t, pg, nil)
	ctx := context.Background()

	t.Run("RunSucceedsWithLog", func(t *testing.T) {
		if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "ok", Connection: "db", Steps: []jobs.Step{
			{SQL: "select 1"}, {Command: []string{"sh", "-c", "echo hello from $PGHOST"}}}}}); err != nil {
			t.Fatal(err)
		}
		r, err := f.svc.RunJob(ctx, "ok", jobs.Manual)
		if err != nil {
			t.Fatal(err)
		}
		r = waitRun(t, f.svc, r.ID, terminal)
		if r.Status != jobs.Succeeded || r.StartedAt == nil || r.EndedAt == nil || r.Attempt != 1 || r.Worker != f.q.Worker() {
			t.Fatalf("run %+v", r)
		}
		lines, _ := f.svc.RunLog(ctx, r.ID, 0, 0)
		var all []string
		for _, l := range lines {
			all = append(all, l.Text)
		}
		if !strings.Contains(strings.Join(all, "\n"), "hello from 127.0.0.1") {
			t.Fatalf("log: %q", all)
		}
	})

	t.Run("CancelRunning", func(t *testing.T) {
		if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "slow", Connection: "db", Steps: []jobs.Step{
			{Command: []string{"sleep", "60"}}}}}); err != nil {
			t.Fatal(err)
		}
		r, _ := f.svc.RunJob(ctx, "slow", jobs.API)
		waitRun(t, f.svc, r.ID, func(r *jobs.Run) bool { return r.Status == jobs.Running })
		if _, err := f.svc.CancelRun(ctx, r.ID, "bob"); err != nil {
			t.Fatal(err)
		}
		r = waitRun(t, f.svc, r.ID, terminal)
		if r.Status != jobs.Cancelled || r.Reason != "cancelled by bob" {
			t.Fatalf("run %+v", r)
		}
		if _, err := f.svc.CancelRun(ctx, r.ID, "bob"); err == nil {
			t.Fatal("cancelling an ended run succeeded")
		}
	})

	t.Run("Timeout", func(t *testing.T) {
		if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "late", Connection: "db", Timeout: connection.Duration(time.Second),
			Steps: []jobs.Step{{SQL: "select pg_sleep(30)"}}}}); err != nil {
			t.Fatal(err)
		}
		r, _ := f.svc.RunJob(ctx, "late", jobs.Manual)
		r = waitRun(t, f.svc, r.ID, terminal)
		if r.Status != jobs.Failed || r.Reason != "timed out after 1s" {
			t.Fatalf("run %+v", r)
		}
	})

	t.Run("LostWorkerIsFailed", func(t *testing.T) {
		// A run left "running" by a process that died.
		old := time.Now().Add(-time.Minute).UTC()
		j := jobs.Job{Name: "orphan", Connection: "db", Steps: []jobs.Step{{SQL: "select 1"}}}
		j.ApplyDefaults()
		r := jobs.NewRun(j, jobs.Manual, old)
		r.Status, r.StartedAt, r.HeartbeatAt, r.Worker, r.Attempt = jobs.Running, &old, &old, "deadhost:42", 1
		// Its step was running, from its start to its last heartbeat.
		stepStart := old.Add(-2 * time.Second)
		r.StartedAt = &stepStart
		r.Steps[0].Status, r.Steps[0].StartedAt = jobs.Running, &stepStart
		if err := f.st.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		r = waitRun(t, f.svc, r.ID, terminal)
		if r.Status != jobs.Failed || !strings.Contains(r.Reason, "worker deadhost:42 was lost") {
			t.Fatalf("run %+v", r)
		}
		// The interrupted step ended, as far as anyone knows, with the
		// last heartbeat: it had no end and lasted 0 ms.
		if s := r.Steps[0]; s.Status != jobs.Failed || s.EndedAt == nil || !s.EndedAt.Equal(old) || s.DurationMS != 2000 {
			t.Fatalf("interrupted step %+v, want failed, ended at the last heartbeat %v, 2000 ms", s, old)
		}
	})

	t.Run("LostWorkerIsRetried", func(t *testing.T) {
		old := time.Now().Add(-time.Minute).UTC()
		j := jobs.Job{Name: "retry", Connection: "db", Retries: 1, Steps: []jobs.Step{{SQL: "select 1"}}}
		j.ApplyDefaults()
		r := jobs.NewRun(j, jobs.Manual, old)
		r.Status, r.StartedAt, r.HeartbeatAt, r.Worker, r.Attempt = jobs.Running, &old, &old, "deadhost:43", 1
		if err := f.st.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		r = waitRun(t, f.svc, r.ID, terminal)
		if r.Status != jobs.Succeeded || r.Attempt != 2 {
			t.Fatalf("run %+v", r)
		}
	})

	t.Run("ScheduleFires", func(t *testing.T) {
		if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "tick", Connection: "db", Schedule: "* * * * * *",
			Steps: []jobs.Step{{SQL: "select 1"}}}}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			runs, _ := f.svc.ListRuns(ctx, store.RunFilter{Job: "tick"})
			if len(runs) > 0 && runs[len(runs)-1].Trigger == jobs.Schedule {
				done := waitRun(t, f.svc, runs[len(runs)-1].ID, terminal)
				if done.Status != jobs.Succeeded {
					t.Fatalf("scheduled run %+v", done)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("schedule did not fire within 20 s")
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err := f.svc.DeleteJob(ctx, "tick"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("CommandNotAllowed", func(t *testing.T) {
		f2 := start(t, pg, func(c *queue.Config) { c.Commands = jobs.CommandPolicy{} })
		if _, err := f2.svc.ApplyJobs(ctx, []jobs.Job{{Name: "rm", Connection: "db", Steps: []jobs.Step{
			{Command: []string{"rm", "-rf", "/tmp/nothing"}}}}}); err != nil {
			t.Fatal(err)
		}
		r, _ := f2.svc.RunJob(ctx, "rm", jobs.Manual)
		r = waitRun(t, f2.svc, r.ID, terminal)
		if r.Status != jobs.Failed || !strings.Contains(r.Reason, "--allow-command rm") {
			t.Fatalf("run %+v", r)
		}
	})

	t.Run("LogLimit", func(t *testing.T) { testLogLimit(t, pg) })
	t.Run("RunRetention", func(t *testing.T) { testRunRetention(t, pg) })
	t.Run("RunReadOnce", func(t *testing.T) { testRunReadOnce(t, pg) })
	t.Run("CancelFromAnotherProcess", func(t *testing.T) { testCancelFromAnotherProcess(t, pg) })
	t.Run("FinalCleanupWins", func(t *testing.T) { testFinalCleanupWins(t, pg) })
}

// TestShutdownStopsCommandsAndStatements: a process that shuts down in
// the middle of a run whose command must be killed (it ignores SIGINT
// and SIGTERM) and that left a statement running (a psql it detached
// with setsid, outside its process group) returns from Stop only once the
// command is gone, the statement has stopped on the server and the run
// says so. Stop used to give up after KillGrace+5s, which is when the
// command only gets its SIGKILL (after InterruptGrace and KillGrace): the
// process then exited with the command alive, the statement running and
// the run still "running".
func TestShutdownStopsCommandsAndStatements(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	f := start(t, pg, func(c *queue.Config) {
		c.Commands = jobs.CommandPolicy{Allow: allowlist(t, "sh")}
	})
	ctx := context.Background()
	admin := pg.Connect(t, "postgres")
	tag := "shutdown-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	active := func() int {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE state = 'active'
			AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()`, tag).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	pidFile := filepath.Join(t.TempDir(), "pid")
	script := `setsid psql -X -c "select pg_sleep(300) /* ` + tag + ` */" >/dev/null 2>&1 </dev/null &
		trap "" INT TERM
		echo $$ > ` + pidFile + `
		while :; do sleep 0.1; done`
	if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "stubborn", Connection: "db", Steps: []jobs.Step{
		{Command: []string{"sh", "-c", script}}}}}); err != nil {
		t.Fatal(err)
	}
	r, err := f.svc.RunJob(ctx, "stubborn", jobs.Manual)
	if err != nil {
		t.Fatal(err)
	}
	waitRun(t, f.svc, r.ID, func(r *jobs.Run) bool { return r.Status == jobs.Running })
	deadline := time.Now().Add(30 * time.Second)
	for active() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the run's statement did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	var pid int
	for {
		b, _ := os.ReadFile(pidFile)
		if pid, _ = strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the command did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	// Stop's return is where a real process exits: what is not done by
	// then is not done.
	stopErr := f.q.Stop(ctx)
	cmdAlive := syscall.Kill(pid, 0) == nil
	running := active()
	r, err = f.svc.GetRun(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stopErr != nil {
		t.Errorf("stop: %v", stopErr)
	}
	if cmdAlive {
		t.Errorf("the run's command (pid %d) is still running after the shutdown", pid)
	}
	if running != 0 {
		t.Errorf("%d statements of the run still running on the server after the shutdown", running)
	}
	if !r.Status.Terminal() || !strings.Contains(r.Reason, "shut down") {
		t.Errorf("run after the shutdown: status %s, reason %q", r.Status, r.Reason)
	}
}

// TestShutdownLetsRunsFinishWithinTheGrace: the context a process starts
// its queue with ends when the process is told to stop (serve passes the
// one SIGINT and SIGTERM cancel), and Stop follows. A run that ends within
// the shutdown grace finishes as it would have, its command still reaching
// the database through the run's endpoint. The queue used to hand that
// context to River as the runs' base context, so the signal cancelled
// every run at once ("terminated signal received") with no grace at all.
func TestShutdownLetsRunsFinishWithinTheGrace(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	st, qdb := sqliteStore(t)
	f := newProcess(t, st, queue.Backend{SQLite: qdb}, func(c *queue.Config) {
		c.ShutdownGrace = 10 * time.Second
	})
	ctx := context.Background()
	if _, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "db", Host: pg.Host, Port: pg.Port, Database: "postgres",
		User: pg.SuperUser, Password: secret.New(pg.SuperPassword), SSLMode: connection.SSLDisable}); err != nil {
		t.Fatal(err)
	}
	procCtx, signal := context.WithCancel(ctx)
	defer signal()
	if err := f.q.Start(procCtx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.q.Stop(context.Background()) })
	if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "short", Connection: "db", Steps: []jobs.Step{
		{Command: []string{"sh", "-c", `sleep 1 && psql -X -Atc "select 'via the endpoint'"`}},
		{SQL: "select 1"}}}}); err != nil {
		t.Fatal(err)
	}
	r, err := f.svc.RunJob(ctx, "short", jobs.Manual)
	if err != nil {
		t.Fatal(err)
	}
	waitRun(t, f.svc, r.ID, func(r *jobs.Run) bool { return r.Status == jobs.Running })
	signal() // SIGTERM
	if err := f.q.Stop(ctx); err != nil {
		t.Errorf("stop: %v", err)
	}
	r, err = f.svc.GetRun(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != jobs.Succeeded {
		t.Errorf("run that ends within the shutdown grace: status %s, reason %q; want succeeded", r.Status, r.Reason)
	}
}

// TestStalledWorkerLeavesTheRetryAlone: a process whose heartbeats stopped
// long enough (the store out of its reach) that another process's reaper
// queued its run again, and another worker took it, stops its own attempt
// when it hears of it, and then leaves the run's record to the worker that
// has it. It used to write its attempt's end over the retry's record (the
// run shown as failed while it ran), which then made the other worker
// stop the retry too.
func TestStalledWorkerLeavesTheRetryAlone(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	ended := make(chan string, 4)
	f := start(t, pg, func(c *queue.Config) {
		c.RunEnded = func(context.Context, jobs.Job, string, jobs.Trigger, jobs.Result, time.Duration) {
			ended <- "ended"
		}
	})
	ctx := context.Background()
	if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "retried", Connection: "db", Retries: 1, Steps: []jobs.Step{
		{Command: []string{"sleep", "60"}}}}}); err != nil {
		t.Fatal(err)
	}
	r, err := f.svc.RunJob(ctx, "retried", jobs.Manual)
	if err != nil {
		t.Fatal(err)
	}
	waitRun(t, f.svc, r.ID, func(r *jobs.Run) bool { return r.Status == jobs.Running })
	// What the store holds once another process's reaper queued the run
	// again (this worker's heartbeats stopped for --lost-after) and a
	// worker of a third process took it.
	const other = "other-host:4242"
	for {
		cur, err := f.st.GetRun(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		cur.Status, cur.Reason, cur.Worker, cur.Attempt = jobs.Running, "retrying: worker lost", other, cur.Attempt+1
		cur.StartedAt, cur.HeartbeatAt, cur.EndedAt = &now, &now, nil
		for i := range cur.Steps {
			cur.Steps[i] = jobs.RunStep{Index: i, Label: cur.Steps[i].Label, Kind: cur.Steps[i].Kind, Status: jobs.Running}
		}
		err = f.st.UpdateRun(ctx, cur)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		break
	}
	select {
	case <-ended:
	case <-time.After(30 * time.Second):
		t.Fatal("this worker's attempt did not end after the run was taken by another worker")
	}
	got, err := f.svc.GetRun(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != jobs.Running || got.Worker != other || got.Attempt != 2 || got.EndedAt != nil {
		t.Fatalf("the retry's record after the stalled worker's attempt ended: status %s, worker %s, attempt %d, reason %q",
			got.Status, got.Worker, got.Attempt, got.Reason)
	}
}
