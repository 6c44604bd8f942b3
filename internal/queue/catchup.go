package queue

import (
	"context"
	"fmt"
	"time"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"
	"github.com/robfig/cron/v3"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
)

// River's periodic jobs live in its leader's memory: a new leader (the
// old one stopped, or lost the store) schedules each from the moment it
// takes over, so a firing due while no process led, or in the instant of
// the election, was skipped. At each leader's start (RunOnStart), the
// catch-up job queues the last firing of each cron schedule that came
// within catchUpWindow, after the job got its schedule, and queued no run
// (firings are keyed by their instant: River's unique inserts keep the
// leaders' own firing and the catch-up's from both queuing it). @every
// schedules count from when the job was last saved (jobs.ScheduleFor), so
// they have instants too.

// catchUpWindow is how far back a missed firing is queued: one leader
// handing over to another, or a restart; not a schedule's history.
const catchUpWindow = 10 * time.Minute

// CatchUpArgs is the periodic River job that queues missed firings.
type CatchUpArgs struct{}

// Kind implements river.JobArgs.
func (CatchUpArgs) Kind() string { return "pgrelay_schedule_catchup" }

type catchUpWorker struct {
	river.WorkerDefaults[CatchUpArgs]
	q *Queue
}

func (w *catchUpWorker) Work(ctx context.Context, _ *river.Job[CatchUpArgs]) error {
	_, err := w.q.catchUp(ctx, time.Now())
	return err
}

// catchUpJob is the periodic job that runs the catch-up at each leader's
// start (and daily after, which finds nothing to do unless a firing was
// lost).
func catchUpJob() *river.PeriodicJob {
	return river.NewPeriodicJob(river.PeriodicInterval(24*time.Hour), func() (river.JobArgs, *river.InsertOpts) {
		return CatchUpArgs{}, &river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true,
			ByState: []rivertype.JobState{rivertype.JobStateAvailable, rivertype.JobStatePending,
				rivertype.JobStateRunning, rivertype.JobStateScheduled, rivertype.JobStateRetryable}}}
	}, &river.PeriodicJobOpts{RunOnStart: true, ID: "schedule-catchup"})
}

// lastFiring returns the last instant at or before now, and after since,
// at which a schedule fires; false when there is none, or when the
// schedule is an @every interval not counted from an anchor
// (jobs.ScheduleFor gives those one).
func lastFiring(sched cron.Schedule, since, now time.Time) (time.Time, bool) {
	if _, relative := sched.(cron.ConstantDelaySchedule); relative {
		return time.Time{}, false
	}
	var last time.Time
	for n := sched.Next(since); !n.IsZero() && !n.After(now); n = sched.Next(n) {
		last = n
	}
	return last, !last.IsZero()
}

// fireMargin covers River's periodic enqueuer, which fires a job up to
// 100 ms before its time ("a little preemptively"): a firing called that
// early is still for the instant ahead.
const fireMargin = 500 * time.Millisecond

// firingInstant returns the instant a firing of sched at now is for: the
// last one at or before now (plus fireMargin), within catchUpWindow.
// Only schedules whose firings are a minute or more apart have such an
// instant (a firing a little late is still for its own; those of a
// seconds-level schedule could be taken for the next one's); false for
// others.
func firingInstant(sched cron.Schedule, now time.Time) (time.Time, bool) {
	at, ok := lastFiring(sched, now.Add(-catchUpWindow), now.Add(fireMargin))
	if !ok || sched.Next(at).Sub(at) < time.Minute {
		return time.Time{}, false
	}
	return at, true
}

// scheduleInsertOpts keys a firing by its instant: a second insert of the
// same job, schedule and instant (a leader's own firing, the catch-up) is
// not queued again.
func scheduleInsertOpts(args ScheduleArgs) *river.InsertOpts {
	if args.At.IsZero() {
		return nil
	}
	return &river.InsertOpts{UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// catchUp queues, for each job whose cron schedule (of firings a minute
// or more apart) fired within catchUpWindow before now, after the job
// last changed, without a scheduled run queued since, that firing; it
// returns the jobs it queued.
func (q *Queue) catchUp(ctx context.Context, now time.Time) ([]string, error) {
	recs, err := q.cfg.Store.ListJobs(ctx)
	if err != nil {
		return nil, fmt.Errorf("schedule catch-up: %w", err)
	}
	var queued []string
	for _, rec := range recs {
		if rec.Job.Schedule == "" {
			continue
		}
		sched, err := jobs.ScheduleFor(rec.Job.Schedule, rec.UpdatedAt)
		if err != nil {
			continue
		}
		at, ok := firingInstant(sched, now)
		if !ok || at.After(now) || at.Before(rec.UpdatedAt) {
			continue // none due, or due before the job was last set (none is owed)
		}
		runs, err := q.cfg.Store.ListRuns(ctx, store.RunFilter{Job: rec.Job.Name, Limit: 20})
		if err != nil {
			return queued, fmt.Errorf("schedule catch-up: %w", err)
		}
		fired := false
		for _, r := range runs {
			if r.Trigger == jobs.Schedule && !r.QueuedAt.Before(at) {
				fired = true
				break
			}
		}
		if fired {
			continue
		}
		args := ScheduleArgs{Job: rec.Job.Name, Schedule: rec.Job.Schedule, At: at.UTC()}
		res, err := q.client.Insert(ctx, args, scheduleInsertOpts(args))
		if err != nil {
			return queued, fmt.Errorf("schedule catch-up: queue %s: %w", rec.Job.Name, err)
		}
		if res.UniqueSkippedAsDuplicate {
			continue // the leader's own firing of that instant is queued
		}
		q.cfg.Logger.InfoContext(ctx, "schedule: queued a firing missed while no process led the job queue",
			"job", rec.Job.Name, "schedule", rec.Job.Schedule, "due_at", at)
		queued = append(queued, rec.Job.Name)
	}
	if q.cfg.CaughtUp != nil {
		q.cfg.CaughtUp(queued)
	}
	return queued, nil
}
