package queue_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestReaperWaitsForWorkersAfterStoreOutage: the shared store is out of
// reach of two processes for longer than --lost-after, and a run of one of
// them ends meanwhile. Once the store is back, the run is recorded as its
// worker saw it end (succeeded, at its first attempt): the other process's
// reaper, which could not reach the store either, leaves the worker the
// time to write it. It used to declare the run's worker lost at its first
// pass after the outage and, the job having retries, run it again: a run
// that had succeeded ran twice.
func TestReaperWaitsForWorkersAfterStoreOutage(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	ctx := context.Background()
	lostAfter := func(c *queue.Config) { c.LostAfter = 2 * time.Second }
	st, backend := pgStore(t, db)
	logs := &testenv.LogBuffer{}
	one := startOn(t, pg, st, backend, func(c *queue.Config) {
		lostAfter(c)
		c.Worker = "one"
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	release := filepath.Join(t.TempDir(), "release")
	if _, err := one.svc.ApplyJobs(ctx, []jobs.Job{{Name: "held", Connection: "db", Retries: 1, Steps: []jobs.Step{
		{Command: []string{"sh", "-c", "while [ ! -e " + release + " ]; do sleep 0.05; done"}}}}}); err != nil {
		t.Fatal(err)
	}
	r, err := one.svc.RunJob(ctx, "held", jobs.Manual)
	if err != nil {
		t.Fatal(err)
	}
	waitRun(t, one.svc, r.ID, func(r *jobs.Run) bool { return r.Status == jobs.Running })
	// Another process sharing the store, whose reaper looks every 200ms.
	st2, backend2 := pgStore(t, db)
	two := newProcess(t, st2, backend2, func(c *queue.Config) { lostAfter(c); c.Worker = "two" })
	startQueue(t, two)

	admin := pg.Connect(t, "postgres")
	restore := storeOutage(t, admin, db.User)
	defer restore()
	// The run ends while the store is out of reach of both processes.
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), "could not record run outcome") {
		if time.Now().After(deadline) {
			t.Fatalf("the run's end was not attempted during the outage:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Longer than --lost-after: the run's last heartbeat is stale when
	// the store comes back.
	time.Sleep(3 * time.Second)
	restore()
	got := waitRun(t, one.svc, r.ID, terminal)
	// Whatever wrote it, it stays as written: wait for the worker's own
	// write (its retries are at most 5 s apart) before reading it again.
	time.Sleep(6 * time.Second)
	got = waitRun(t, one.svc, r.ID, terminal)
	if got.Status != jobs.Succeeded || got.Attempt != 1 || got.Worker != "one" {
		t.Fatalf("run after the outage: status %s, attempt %d, worker %q, reason %q; want succeeded at attempt 1 by one",
			got.Status, got.Attempt, got.Worker, got.Reason)
	}
}
