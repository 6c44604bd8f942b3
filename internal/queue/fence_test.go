package queue_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/store/postgres"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestWorkerCutOffFromTheStoreStopsItsRuns: a process that can still reach
// its runs' database but no longer the shared store (its heartbeats cannot
// be saved) stops its runs once --lost-after has passed, when another
// process may declare them lost: their statements and commands end while
// the store is still out of reach, and the runs fail saying why once it
// can be written again. They used to go on until the store came back,
// long after another process had reported them failed ("worker lost"),
// and a command's work (which no other process can stop) with them. The
// run's log says what was done: its lines written during the outage used
// to be dropped.
func TestWorkerCutOffFromTheStoreStopsItsRuns(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	ctx := context.Background()
	st, err := postgres.Open(ctx, pg.ConnString(db.User, db.Password, db.Name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	logs := &testenv.LogBuffer{}
	f := startOn(t, pg, st, queue.Backend{Postgres: st.Pool()}, func(c *queue.Config) {
		c.LostAfter = 2 * time.Second
		c.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	})
	sleeper, marker := sleepJob(t, f)
	pidFile := filepath.Join(t.TempDir(), "pid")
	if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "command", Connection: "db", Steps: []jobs.Step{
		{Command: []string{"sh", "-c", "echo $$ > " + pidFile + "; exec sleep 600"}}}}}); err != nil {
		t.Fatal(err)
	}
	sql, err := f.svc.RunJob(ctx, sleeper, jobs.API)
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := f.svc.RunJob(ctx, "command", jobs.API)
	if err != nil {
		t.Fatal(err)
	}
	pg.WaitActive(t, marker, 30*time.Second)
	pid := pollUntil(t, func() (int, bool) {
		b, _ := os.ReadFile(pidFile)
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		return n, err == nil
	})
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGKILL) })
	waitRun(t, f.svc, cmd.ID, func(r *jobs.Run) bool { return r.Status == jobs.Running })

	// The store out of reach: its role may not log in, its sessions are
	// ended. The runs' connection (another role) still works.
	admin := pg.Connect(t, "postgres")
	restore := storeOutage(t, admin, db.User)
	defer restore()

	// Both stop while the store is still out of reach.
	pollUntil(t, func() (int, bool) {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE state = 'active' AND pid <> pg_backend_pid() AND strpos(query, $1) > 0`, marker).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n, n == 0
	})
	pollUntil(t, func() (string, bool) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		return string(b), err != nil // gone (reaped by its worker)
	})

	// Its end is written once the store is back: its last log lines too.
	pollUntil(t, func() (string, bool) {
		l := logs.String()
		return l, strings.Contains(l, `"msg":"could not record run outcome; trying again","run_id":"`+sql.ID+`"`)
	})
	restore()
	for _, id := range []string{sql.ID, cmd.ID} {
		r := waitRun(t, f.svc, id, terminal)
		// Stopped one heartbeat interval (200ms) short of --lost-after,
		// before another process may declare the run lost.
		if r.Status != jobs.Failed || !strings.Contains(r.Reason, "could not save the run's heartbeat in the store for 1.8s") {
			t.Errorf("run %s after the store came back: status %s, reason %q", id, r.Status, r.Reason)
		}
	}
	// The run's log says so too: the lines written while the store was
	// out of reach are saved once it is back (they were dropped, and the
	// log of a run stopped for the outage ended with its step's start).
	lines, err := f.svc.RunLog(ctx, sql.ID, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	for _, l := range lines {
		log.WriteString(l.Text + "\n")
	}
	for _, want := range []string{"run stopped: stopped by its own process, which could not save the run's heartbeat",
		"cleanup: cancelled 1 statement on the server"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log of run %s lacks %q:\n%s", sql.ID, want, log.String())
		}
	}
}
