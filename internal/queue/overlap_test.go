package queue_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestRetryTakenByTheProcessStillEndingTheLostAttempt: on a shared
// PostgreSQL store another process's reaper queues again a run whose
// heartbeats this process could not save (a store outage, a fenced run
// still stopping), and this process takes the retry while its first
// attempt has not ended. Both attempts used to share one entry among the
// process's active runs: the first attempt's heartbeat wrote its steps
// over the retry's record and went on (the run was still "running, worked
// here"), and when the first attempt ended it removed the retry's entry,
// so that a cancel of the run then reached nothing in this process and
// the run went on, its command with it. Now the first attempt stops at
// its next heartbeat, leaving the retry's record alone, and a cancel
// stops the retry.
func TestRetryTakenByTheProcessStillEndingTheLostAttempt(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	st, backend := pgStore(t, pg.NewDatabase(t))
	var mu sync.Mutex
	var ended []jobs.Result
	f := startOn(t, pg, st, backend, func(c *queue.Config) {
		// No heartbeat but those of step changes, no fence, no reaper
		// here: the test is the other process's reaper.
		c.HeartbeatInterval, c.LostAfter, c.ReapInterval = time.Hour, 2*time.Hour, time.Hour
		c.RunEnded = func(_ context.Context, _ jobs.Job, _ string, _ jobs.Trigger, res jobs.Result, _ time.Duration) {
			mu.Lock()
			ended = append(ended, res)
			mu.Unlock()
		}
	})
	ctx := context.Background()
	dir := t.TempDir()
	pids := filepath.Join(dir, "pids")
	// Step 1 of each attempt waits until its own go file exists; step 2
	// sleeps.
	wait := "echo $$ >> " + pids + "; while [ ! -e " + dir + "/go-$$ ]; do sleep 0.05; done"
	if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "twice", Connection: "db", Retries: 1, Steps: []jobs.Step{
		{Command: []string{"sh", "-c", wait}}, {Command: []string{"sleep", "600"}}}}}); err != nil {
		t.Fatal(err)
	}
	readPIDs := func() []int {
		b, _ := os.ReadFile(pids)
		var out []int
		for _, s := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(s); err == nil {
				out = append(out, n)
			}
		}
		return out
	}
	t.Cleanup(func() {
		for _, pid := range readPIDs() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	r, err := f.svc.RunJob(ctx, "twice", jobs.API)
	if err != nil {
		t.Fatal(err)
	}
	// Attempt 1 in its first step, saved (the step's heartbeat written).
	waitRun(t, f.svc, r.ID, func(r *jobs.Run) bool {
		return r.Status == jobs.Running && r.Steps[0].Status == jobs.Running
	})
	first := pollUntil(t, func() ([]int, bool) { p := readPIDs(); return p, len(p) == 1 })[0]

	// Another process's reaper queues the run again (what reap writes for a
	// run with retries left), and this process's River takes the retry.
	for {
		cur, err := st.GetRun(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		cur.Status, cur.Reason, cur.StartedAt, cur.HeartbeatAt, cur.Worker = jobs.Queued,
			"retrying: worker "+f.q.Worker()+" was lost", nil, nil, ""
		for i := range cur.Steps {
			cur.Steps[i] = jobs.RunStep{Index: i, Label: cur.Steps[i].Label, Kind: cur.Steps[i].Kind, Status: jobs.Queued}
		}
		err = st.UpdateRun(ctx, cur)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		break
	}
	if err := f.q.Enqueue(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	waitRun(t, f.svc, r.ID, func(r *jobs.Run) bool {
		return r.Attempt == 2 && r.Worker == f.q.Worker() && r.Steps[0].Status == jobs.Running
	})
	pollUntil(t, func() ([]int, bool) { p := readPIDs(); return p, len(p) == 2 })

	// Attempt 1's first step ends: its heartbeat finds the run taken again
	// (attempt 2) and the attempt stops, leaving the record as it is.
	if err := os.WriteFile(filepath.Join(dir, "go-"+strconv.Itoa(first)), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	res := pollUntil(t, func() ([]jobs.Result, bool) {
		mu.Lock()
		defer mu.Unlock()
		return append([]jobs.Result(nil), ended...), len(ended) == 1
	})[0]
	if res.Status != jobs.Failed || !strings.Contains(res.Reason, "resolved elsewhere") {
		t.Errorf("attempt 1 ended %s (%q), want failed as resolved elsewhere", res.Status, res.Reason)
	}
	got, err := f.svc.GetRun(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != jobs.Running || got.Attempt != 2 || got.Steps[0].Status != jobs.Running ||
		got.Steps[1].Status != jobs.Queued {
		t.Fatalf("the retry's record after attempt 1 ended: %s attempt %d, steps %s/%s; want running attempt 2 in step 1",
			got.Status, got.Attempt, got.Steps[0].Status, got.Steps[1].Status)
	}

	// A cancel through this process stops the retry.
	cancel(t, f, r.ID)
	got = waitRun(t, f.svc, r.ID, terminal)
	if got.Status != jobs.Cancelled || got.Attempt != 2 {
		t.Fatalf("run %s attempt %d (%q), want attempt 2 cancelled", got.Status, got.Attempt, got.Reason)
	}
	for _, pid := range readPIDs() {
		pollUntil(t, func() (string, bool) {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
			return string(b), err != nil // gone (reaped by its worker)
		})
	}
}
