package queue_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestRunEndedElsewhereStaysEnded: another process's reaper declared the
// worker lost and failed its run (its heartbeats could not reach the
// store) while the attempt went on; the worker comes back and ends the
// attempt. It used to write its own outcome over the failure, so that a
// run reported failed (which users and automation had acted on) turned
// succeeded or cancelled, with another reason and end. Now the record
// stands; the run's log says what the attempt did, and its cleanup
// replaces the reaper's only while that is still pending.
func TestRunEndedElsewhereStaysEnded(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	const lost = "worker w was lost: no heartbeat since then (its process died or lost the store)"
	for _, tc := range []struct {
		name string
		// cancel: the attempt runs a statement that is cancelled (its
		// worker stops it, with a cleanup); else it succeeds at once.
		cancel bool
		// reaper is the status of the cleanup the reaper recorded.
		reaper jobs.CleanupStatus
		// did is what the log says of the attempt; workerCleanup whether
		// the worker's cleanup replaced the reaper's.
		did           string
		workerCleanup bool
	}{
		{"Succeeded", false, jobs.CleanupPending, "its attempt had succeeded", false},
		{"StoppedReaperPending", true, jobs.CleanupPending, "its attempt ended cancelled (cancelled by bob)", true},
		{"StoppedReaperDone", true, jobs.CleanupDone, "its attempt ended cancelled (cancelled by bob)", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			st, qdb := sqliteStore(t)
			// No heartbeat but those of step changes, no reaper here: the
			// test is the other process's reaper.
			ended := make(chan string, 1)
			f := newProcess(t, st, queue.Backend{SQLite: qdb}, func(c *queue.Config) {
				c.HeartbeatInterval, c.LostAfter, c.ReapInterval = time.Hour, 2*time.Hour, time.Hour
				prev := c.RunEnded
				c.RunEnded = func(ctx context.Context, j jobs.Job, id string, tr jobs.Trigger, res jobs.Result, d time.Duration) {
					prev(ctx, j, id, tr, res, d)
					ended <- id
				}
			})
			endedAt := time.Now().UTC().Add(-time.Minute).Truncate(time.Second)
			reaper := &jobs.Cleanup{Status: tc.reaper, Remaining: []uint32{4242}, UpdatedAt: endedAt,
				Message: "the reaper's cleanup"}
			// Once the attempt has ended, before its worker records it:
			// another process's reaper fails the run, as reap writes it.
			queue.SetBeforeOutcome(f.q, func(id string) {
				for {
					r, err := st.GetRun(ctx, id)
					if err != nil {
						t.Error(err)
						return
					}
					r.Status, r.Reason, r.EndedAt = jobs.Failed, lost, &endedAt
					err = st.UpdateRunCleanup(ctx, r, reaper)
					if errors.Is(err, store.ErrConflict) {
						continue
					}
					if err != nil {
						t.Error(err)
					}
					return
				}
			})
			if _, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "db", Host: pg.Host, Port: pg.Port,
				Database: "postgres", User: pg.SuperUser, Password: secret.New(pg.SuperPassword), SSLMode: connection.SSLDisable}); err != nil {
				t.Fatal(err)
			}
			if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "quick", Connection: "db", Steps: []jobs.Step{
				{SQL: "SELECT 1"}}}}); err != nil {
				t.Fatal(err)
			}
			sleeper, marker := sleepJob(t, f)
			startQueue(t, f)
			var id string
			if tc.cancel {
				id = runOn(t, pg, f, sleeper, marker)
				cancel(t, f, id)
			} else {
				r, err := f.svc.RunJob(ctx, "quick", jobs.API)
				if err != nil {
					t.Fatal(err)
				}
				id = r.ID
			}

			// The worker has ended the attempt.
			if got := <-ended; got != id {
				t.Fatalf("run %s ended, want %s", got, id)
			}
			lines, err := f.svc.RunLog(ctx, id, 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			line := ""
			for _, l := range lines {
				if l.Stream == jobs.StreamSystem && strings.HasPrefix(l.Text, "worker ") && strings.Contains(l.Text, "came back") {
					line = l.Text
				}
			}
			if !strings.Contains(line, tc.did) || !strings.Contains(line, endedAt.Format(time.RFC3339)) {
				t.Errorf("the worker's line: %q; want it to say %q and when it was declared lost; the log:\n%s",
					line, tc.did, joinText(lines))
			}
			r, err := f.svc.GetRun(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != jobs.Failed || r.Reason != lost || r.EndedAt == nil || !r.EndedAt.Equal(endedAt) {
				t.Fatalf("run ended by the reaper, after its worker came back: %s (%q) ended %v; want failed (%q) ended %v",
					r.Status, r.Reason, r.EndedAt, lost, endedAt)
			}
			switch {
			case r.Cleanup == nil:
				t.Fatal("the run's cleanup is gone")
			case tc.workerCleanup && (r.Cleanup.Status != jobs.CleanupDone || r.Cleanup.Message == reaper.Message):
				t.Fatalf("cleanup: %+v; want the worker's (done) in place of the reaper's pending one", r.Cleanup)
			case !tc.workerCleanup && (r.Cleanup.Status != tc.reaper || r.Cleanup.Message != reaper.Message):
				t.Fatalf("cleanup: %+v; want the reaper's (%s) as it was", r.Cleanup, tc.reaper)
			}
		})
	}
}
