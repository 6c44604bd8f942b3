package queue_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestRemovedScheduleDoesNotFire: a schedule removed (or changed) through
// another process, while this one still has the old one registered (it
// looks at the jobs' schedules every ScheduleSync), queues no run when
// the old one comes due. The firing used to queue a run of the job as it
// is now, with no schedule: a run nobody scheduled any more.
func TestRemovedScheduleDoesNotFire(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	f := start(t, pg, func(c *queue.Config) { c.ScheduleSync = time.Hour })
	ctx := context.Background()
	// Once a day, a few seconds from now (River works in local time).
	at := time.Now().Add(5 * time.Second)
	spec := fmt.Sprintf("%d %d %d * * *", at.Second(), at.Minute(), at.Hour())
	j := jobs.Job{Name: "nightly", Connection: "db", Schedule: spec, Steps: []jobs.Step{{SQL: "select 1"}}}
	if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{j}); err != nil {
		t.Fatal(err)
	}
	// Another process takes the schedule off the job: it writes the store
	// and syncs its own queue, not this one's.
	j.ApplyDefaults()
	j.Schedule = ""
	if _, err := f.st.PutJob(ctx, &j, time.Now().UTC()); err != nil {
		t.Fatal(err)
	}
	if time.Now().After(at) {
		t.Fatal("the setup took longer than the time to the firing")
	}
	// The old firing comes due in this process and is worked.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		if err := f.qdb.QueryRowContext(ctx, `SELECT count(*) FROM river_job
			WHERE kind = 'pgrelay_schedule' AND state = 'completed'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the old schedule's firing was not worked within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	runs, err := f.st.ListRuns(ctx, store.RunFilter{Job: "nightly"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range runs {
		t.Errorf("run %s (%s) queued by a schedule the job no longer has (its schedule: %q)", r.ID, r.Trigger, r.Job.Schedule)
	}
}
