package queue_test

import (
	"context"
	"path/filepath"
	"strings"
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
}

// start builds a service on a fresh SQLite store with a direct connection
// "db" to pg, and a started queue.
func start(t *testing.T, pg *testenv.Postgres, mod func(*queue.Config)) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	kr, _ := secret.NewKeyring(make([]byte, 32))
	// The order of daemon.New: the connector, the queue on its Open, the
	// service on both.
	conn, err := app.NewConnector(app.Config{Store: st, Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	qdb, err := st.OpenQueueDB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = qdb.Close() })
	cfg := queue.Config{
		Store: st, Backend: queue.Backend{SQLite: qdb},
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
	if _, err := svc.CreateConnection(ctx, connection.Spec{Name: "db", Host: pg.Host, Port: pg.Port, Database: "postgres",
		User: pg.SuperUser, Password: secret.New(pg.SuperPassword), SSLMode: connection.SSLDisable}); err != nil {
		t.Fatal(err)
	}
	if err := q.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Stop(context.Background()) })
	return &fixture{svc: svc, st: st, q: q}
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
		if err := f.st.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		r = waitRun(t, f.svc, r.ID, terminal)
		if r.Status != jobs.Failed || !strings.Contains(r.Reason, "worker deadhost:42 was lost") {
			t.Fatalf("run %+v", r)
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
