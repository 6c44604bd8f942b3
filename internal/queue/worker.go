package queue

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/riverqueue/river"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/requestid"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/tracing"
)

// Submit saves a queued run of job and queues it: the run and its River
// job are saved in one transaction of the store, so that neither exists
// without the other (a process that stops between the two, or an insert
// that fails, leaves nothing behind). It returns an error, and no run,
// when either could not be saved.
func (q *Queue) Submit(ctx context.Context, job jobs.Job, trigger jobs.Trigger) (*jobs.Run, error) {
	r := jobs.NewRun(job, trigger, q.cfg.Now())
	err := q.cfg.Store.CreateRunWith(ctx, r, func(ctx context.Context, tx any) error {
		if err := q.insertRunTx(ctx, tx, r.ID); err != nil {
			return fmt.Errorf("queue a run of job %s: insert its River job (the run was not saved): %w", job.Name, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	q.cfg.Logger.InfoContext(ctx, "run queued", "run_id", r.ID, "job", job.Name, "trigger", trigger)
	return r, nil
}

// update applies f to the stored run, retrying on version conflicts.
func (q *Queue) update(ctx context.Context, id string, f func(*jobs.Run) bool) (*jobs.Run, error) {
	return q.updateFrom(ctx, id, nil, f)
}

// updateFrom is update starting from cur, the run as this process last
// read or wrote it (nil: read it first). Every change of a run advances
// its version, so a write based on cur fails with store.ErrConflict when
// anyone else changed the run since (a cancel request, the reaper): only
// then is the run read again and f applied to what is stored. A worker
// thus reads its run once, not before each heartbeat. f may change cur,
// which the caller must not use again after an error.
func (q *Queue) updateFrom(ctx context.Context, id string, cur *jobs.Run, f func(*jobs.Run) bool) (*jobs.Run, error) {
	return q.updateWith(ctx, id, cur, nil, f)
}

// updateWith is updateFrom that saves c, when not nil, as the run's
// cleanup in the same write as the change f makes (see
// store.BackendStore.UpdateRunCleanup): a reader never sees the one
// without the other.
func (q *Queue) updateWith(ctx context.Context, id string, cur *jobs.Run, c *jobs.Cleanup, f func(*jobs.Run) bool) (*jobs.Run, error) {
	for range 20 {
		r := cur
		cur = nil
		if r == nil {
			var err error
			if r, err = q.cfg.Store.GetRun(ctx, id); err != nil {
				return nil, err
			}
		}
		if !f(r) {
			return r, nil
		}
		err := q.cfg.Store.UpdateRunCleanup(ctx, r, c)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		return r, err
	}
	return nil, fmt.Errorf("update run %s: %w", id, store.ErrConflict)
}

func (q *Queue) finish(ctx context.Context, id string, f func(*jobs.Run)) {
	q.finishFrom(ctx, id, nil, f)
}

// finishFrom is finish starting from cur (see updateFrom).
func (q *Queue) finishFrom(ctx context.Context, id string, cur *jobs.Run, f func(*jobs.Run)) {
	if _, err := q.updateFrom(ctx, id, cur, func(r *jobs.Run) bool { f(r); return true }); err != nil {
		q.cfg.Logger.ErrorContext(ctx, "could not record run outcome", "run_id", id, "error", err)
	}
}

type runWorker struct {
	river.WorkerDefaults[RunArgs]
	q *Queue
}

// Work runs one run.
func (w *runWorker) Work(ctx context.Context, job *river.Job[RunArgs]) error {
	w.q.work(ctx, job.Args.RunID, w.q.runner)
	return nil
}

type scheduleWorker struct {
	river.WorkerDefaults[ScheduleArgs]
	q *Queue
}

// Work queues a scheduled run of the job.
func (w *scheduleWorker) Work(ctx context.Context, job *river.Job[ScheduleArgs]) error {
	rec, err := w.q.cfg.Store.GetJob(ctx, job.Args.Job)
	if errors.Is(err, store.ErrNotFound) {
		return nil // deleted since
	}
	if err != nil {
		return err
	}
	if spec := job.Args.Schedule; spec != "" && rec.Job.Schedule != spec {
		// This process still had the old schedule (it syncs every
		// ScheduleSync); the job's own is registered at the next sync.
		w.q.cfg.Logger.InfoContext(ctx, "schedule changed since it was registered; no run queued", "job", rec.Job.Name,
			"fired", spec, "schedule", rec.Job.Schedule)
		return nil
	}
	r, err := w.q.Submit(ctx, rec.Job, jobs.Schedule)
	if w.q.cfg.Scheduled != nil {
		w.q.cfg.Scheduled(ctx, rec.Job, r, err)
	}
	return err
}

// logBuffer batches log lines into the store, keeping the run's log within
// its limit: every line of a run passes through add, so output past the
// limit is dropped here, before it takes memory or reaches the store.
type logBuffer struct {
	mu    sync.Mutex
	lines []jobs.LogLine
	limit *jobs.LogLimit
	// marker is the index in lines of the truncation marker while it is
	// not saved (-1 otherwise); markerSeq is its Seq once saved.
	marker    int
	markerSeq int64
	// size is the memory lines hold (lineCost each); past maxPending,
	// full is signalled (a flush now) and waitRoom holds the program's
	// output back until taken is closed by the next take.
	size  int
	full  chan struct{}
	taken chan struct{}
}

// Bounds of the lines a run holds in memory before they are saved: a
// program that prints faster than the store takes its lines (empty lines
// at full speed, a few hundred bytes of memory each) waits for the next
// flush instead of growing the process by gigabytes before its log
// reaches its limit.
const (
	// maxPending is the memory of the lines waiting to be saved past
	// which a program's output is held back.
	maxPending = 4 << 20
	// lineOverhead is a line's memory beyond its text (time, stream,
	// step, string and slice headers).
	lineOverhead = 128
	// maxRoomWait bounds one wait for room, so that output is not held
	// back for good while the store cannot be written (the run is then
	// stopped by its fence).
	maxRoomWait = 2 * time.Second
)

func lineCost(l jobs.LogLine) int { return len(l.Text) + lineOverhead }

func newLogBuffer(limit int64) *logBuffer {
	return &logBuffer{limit: jobs.NewLogLimit(limit), marker: -1, full: make(chan struct{}, 1), taken: make(chan struct{})}
}

func (b *logBuffer) add(l jobs.LogLine) {
	b.mu.Lock()
	defer b.mu.Unlock()
	was := b.limit.Truncated()
	for _, a := range b.limit.Admit(l) {
		b.lines = append(b.lines, a)
		b.size += lineCost(a)
	}
	if !was && b.limit.Truncated() {
		b.marker = len(b.lines) - 1 // Admit puts the marker last
	}
	if b.size > maxPending {
		select {
		case b.full <- struct{}{}:
		default:
		}
	}
}

// waitRoom returns once the lines waiting to be saved hold less than
// maxPending of memory, or the next flush took them, or maxRoomWait has
// passed: a program's output is read (and the program runs on) no faster
// than its log is saved. It is called outside the run's locks, before
// each line of a program's output.
func (b *logBuffer) waitRoom() {
	b.mu.Lock()
	if b.size <= maxPending {
		b.mu.Unlock()
		return
	}
	taken := b.taken
	b.mu.Unlock()
	t := time.NewTimer(maxRoomWait)
	defer t.Stop()
	select {
	case <-taken:
	case <-t.C:
	}
}

func (b *logBuffer) take() (lines []jobs.LogLine, marker int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines, marker = b.lines, b.marker
	b.lines, b.marker, b.size = nil, -1, 0
	close(b.taken)
	b.taken = make(chan struct{})
	return lines, marker
}

// putBack returns lines that take gave and that could not be saved to the
// front of the buffer, before the lines added since, for the next flush.
// They are within the log's limit, as every line in the buffer is.
func (b *logBuffer) putBack(lines []jobs.LogLine, marker int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case marker >= 0:
		b.marker = marker
	case b.marker >= 0:
		b.marker += len(lines)
	}
	b.lines = append(lines, b.lines...)
	for _, l := range lines {
		b.size += lineCost(l)
	}
}

// pending reports whether the buffer holds lines not saved yet.
func (b *logBuffer) pending() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.lines) > 0
}

// flushLogs saves the lines in b to the run's log. Lines that cannot be
// saved (the store out of reach) stay in b for the next flush, so that a
// run's log keeps what was said while the store could not be written (the
// run stopped for the outage, its cleanup), unless the run is gone.
func (q *Queue) flushLogs(ctx context.Context, id string, b *logBuffer) {
	lines, marker := b.take()
	if len(lines) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, q.writeTimeout())
	defer cancel()
	if err := q.cfg.Store.AppendRunLog(ctx, id, lines); err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			b.putBack(lines, marker)
		}
		q.cfg.Logger.ErrorContext(ctx, "could not save run log", "run_id", id, "lines", len(lines), "error", err)
		return
	}
	if marker >= 0 {
		b.mu.Lock()
		b.markerSeq = lines[marker].Seq
		b.mu.Unlock()
	}
}

// finishLog brings the saved truncation marker up to date with how much
// output was dropped in the end, after the last flush.
func (q *Queue) finishLog(ctx context.Context, id string, b *logBuffer) {
	b.mu.Lock()
	seq, truncated, text, dropped := b.markerSeq, b.limit.Truncated(), b.limit.Marker(), b.limit.Dropped()
	b.mu.Unlock()
	if !truncated {
		return
	}
	q.cfg.Logger.WarnContext(ctx, "run log truncated", "run_id", id, "limit_bytes", q.cfg.LogLimit, "dropped_bytes", dropped)
	if seq == 0 {
		return // the marker could not be saved (logged above)
	}
	if err := q.cfg.Store.UpdateRunLogText(ctx, id, seq, text); err != nil {
		q.cfg.Logger.ErrorContext(ctx, "could not update the run log's truncation marker", "run_id", id, "error", err)
	}
}

// work executes the run with the given ID in this process, with runner.
func (q *Queue) work(parent context.Context, id string, runner *jobs.Runner) {
	ctx := context.WithoutCancel(parent) // store writes outlive a shutdown
	// The run is known to Cancel (and to the cancel listener's check)
	// before it is taken, not only once it was: a cancel request saved
	// just after the take below would otherwise find no run to stop here
	// and be lost until the run's next heartbeat, which comes when its
	// first step has started.
	stopCtx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	check := make(chan struct{}, 1)
	// This execution's own entry: another one of the same run may be in
	// this process (see Queue.active), and neither may replace or remove
	// the other's.
	self := &activeRun{cancel: cancel, check: check, stopTime: runner.StopTime(jobs.Job{})}
	q.addActive(id, self)
	defer q.removeActive(id, self)
	now := q.cfg.Now().UTC()
	var job jobs.Job
	var cancelledBefore string
	r, err := q.update(ctx, id, func(r *jobs.Run) bool {
		job = r.Job
		switch {
		case r.Status.Terminal():
			return false
		case r.Status == jobs.Running && r.HeartbeatAt != nil && now.Sub(*r.HeartbeatAt) < q.cfg.LostAfter:
			return false // another worker has it
		case r.CancelRequested:
			cancelledBefore = r.Reason
			r.Status, r.EndedAt = jobs.Cancelled, &now
			for i := range r.Steps {
				r.Steps[i].Status = jobs.Skipped
			}
			return true
		}
		r.Status, r.StartedAt, r.HeartbeatAt, r.Worker = jobs.Running, &now, &now, q.cfg.Worker
		r.EndedAt, r.Attempt = nil, r.Attempt+1
		return true
	})
	if err != nil {
		q.cfg.Logger.ErrorContext(ctx, "could not start run", "run_id", id, "error", err)
		return
	}
	if r.Status != jobs.Running || r.Worker != q.cfg.Worker {
		if cancelledBefore != "" {
			q.cfg.Logger.InfoContext(ctx, "run cancelled before it started", "run_id", id)
		}
		return
	}
	if q.afterTake != nil {
		q.afterTake(id)
	}
	q.mu.Lock()
	self.stopTime = runner.StopTime(job)
	q.mu.Unlock()
	runCtx, span := q.tracer.Start(stopCtx, "run", trace.WithAttributes(tracing.RunID.String(id),
		tracing.JobName.String(job.Name), tracing.Connection.String(job.Connection),
		tracing.RunTrigger.String(string(r.Trigger)), tracing.RunAttempt.Int(r.Attempt)))
	defer span.End()
	// The run's context names it: SSH certificates signed for the run
	// (sshd logs their key ID) and the log lines written with it (its
	// tunnel's) do.
	runCtx = requestid.WithRun(runCtx, id)
	runCtx, cancelTimeout := context.WithTimeoutCause(runCtx, job.Timeout.Duration(),
		&jobs.TimeoutError{After: job.Timeout.Duration()})
	defer cancelTimeout()
	q.cfg.Logger.InfoContext(ctx, "run started", "run_id", id, "job", job.Name, "attempt", r.Attempt)

	logs := newLogBuffer(q.cfg.LogLimit)
	var stepsMu sync.Mutex
	steps := append([]jobs.RunStep(nil), r.Steps...)
	// cur is the run as this worker last wrote it, which the heartbeats and
	// then the end update from (see updateFrom); its own copy, as they
	// change it while this goroutine reads r.
	own := *r
	cur := &own
	cur.Steps = append([]jobs.RunStep(nil), r.Steps...)
	// A step that starts or ends is saved at once (with the log so far), not
	// only with the next heartbeat, so that a process killed right after
	// leaves the steps it finished recorded.
	stepped := make(chan struct{}, 1)
	// The attempt this execution took: its cleanup records name it, so
	// that the store keeps a newer attempt's against them.
	attempt := r.Attempt
	hooks := jobs.Hooks{
		Log:         logs.add,
		WaitLogRoom: logs.waitRoom,
		Backend: func(b jobs.Backend) {
			if err := q.cfg.Store.AddRunBackend(ctx, id, b); err != nil {
				q.cfg.Logger.WarnContext(ctx, "could not record a run's database session", "run_id", id, "pid", b.PID,
					"error", err)
			}
		},
		CleanupPending: func(c jobs.Cleanup) {
			if runner.WaitCleanup {
				return // Run itself waits for it
			}
			// Recorded now, before the retry starts, not with the run's
			// end below: the retry's outcome (Cleanup), or the shutdown's
			// (abandonCleanups), may come first. The store keeps a final
			// outcome of this attempt against it (another process's
			// reaper may have declared this worker lost and stopped the
			// run's sessions already), and a newer attempt's record.
			c.RunAttempt = attempt
			if saved, err := q.cfg.Store.PutRunCleanup(ctx, id, &c); err != nil {
				q.cfg.Logger.ErrorContext(ctx, "could not record the run's cleanup", "run_id", id, "error", err)
			} else if !saved {
				q.cfg.Logger.InfoContext(ctx, "pending cleanup not recorded: the run's record has a final one of this attempt, or a newer attempt's",
					"run_id", id, "attempt", attempt)
			}
			q.mu.Lock()
			q.pending[id] = c
			q.mu.Unlock()
		},
		Cleanup: func(c jobs.Cleanup) {
			q.mu.Lock()
			_, ours := q.pending[id]
			delete(q.pending, id)
			q.mu.Unlock()
			if ours { // else shutdown recorded that it stopped trying
				c.RunAttempt = attempt
				q.recordCleanup(ctx, id, c)
			}
		},
		Step: func(s jobs.RunStep) {
			stepsMu.Lock()
			if s.Index < len(steps) {
				steps[s.Index] = s
			}
			stepsMu.Unlock()
			select {
			case stepped <- struct{}{}:
			default:
			}
		},
	}
	snapshot := func() []jobs.RunStep {
		stepsMu.Lock()
		defer stepsMu.Unlock()
		return append([]jobs.RunStep(nil), steps...)
	}
	// Heartbeats: keep the run alive, persist progress and logs, and pick
	// up cancel requests made through another process: at once when told
	// of one (check), else at the next beat.
	//
	// On a shared PostgreSQL store a run whose heartbeats cannot be saved
	// for --lost-after (the store out of this process's reach while the
	// database is not) may be declared lost by another process, which can
	// stop the statements it knows of but neither its commands nor the
	// sessions they open after: this worker stops the run itself then
	// (fence), not only once its heartbeats reach the store again.
	fence := q.fence(stopCtx, id, now, cancel)
	hbDone := make(chan struct{})
	var hbWG sync.WaitGroup
	hbWG.Add(1)
	go func() {
		defer hbWG.Done()
		flush := time.NewTicker(250 * time.Millisecond)
		defer flush.Stop()
		beat := time.NewTicker(q.cfg.HeartbeatInterval)
		defer beat.Stop()
		// The run is this execution's while it is running, named as this
		// process's, at this attempt: a retry that another process's
		// reaper queued may be taken by this same process (see
		// Queue.active), and this attempt must then neither write over
		// the retry's record nor go on.
		ours := func(r *jobs.Run) bool {
			return r.Status == jobs.Running && r.Worker == q.cfg.Worker && r.Attempt == attempt
		}
		heartbeat := func() {
			t := q.cfg.Now().UTC()
			wrote := false
			wctx, wcancel := context.WithTimeout(ctx, q.writeTimeout())
			defer wcancel()
			next, err := q.updateFrom(wctx, id, cur, func(r *jobs.Run) bool {
				if !ours(r) {
					return false
				}
				r.HeartbeatAt, r.Steps = &t, snapshot()
				wrote = true
				return true
			})
			cur = next
			if err != nil {
				cur = nil // read it again next time
				q.storeTrouble()
				q.cfg.Logger.WarnContext(ctx, "heartbeat failed", "run_id", id, "error", err)
				return
			}
			if wrote {
				fence.beat(t)
			}
			if cur.CancelRequested {
				cancel(&jobs.CancelledError{Reason: cur.Reason})
			} else if !ours(cur) {
				cancel(&jobs.InterruptedError{Reason: "the run was resolved elsewhere (declared lost by the reaper)"})
			}
		}
		for {
			select {
			case <-hbDone:
				return
			case <-flush.C:
				q.flushLogs(ctx, id, logs)
			case <-logs.full:
				q.flushLogs(ctx, id, logs)
			case <-stepped:
				q.flushLogs(ctx, id, logs)
				heartbeat()
			case <-beat.C:
				heartbeat()
			case <-check:
				heartbeat()
			}
		}
	}()
	// The run's own log lines (its tunnel's, its endpoint's sessions')
	// name it: those logged with its context, and its runner's.
	rn := *runner
	if rn.Logger != nil {
		rn.Logger = rn.Logger.With("run_id", id)
	}
	res := rn.Run(runCtx, job, hooks)
	close(hbDone)
	hbWG.Wait()
	fence.Stop() // after the last heartbeat, which may have moved it
	q.flushLogs(ctx, id, logs)
	q.finishLog(ctx, id, logs)
	if q.beforeOutcome != nil {
		q.beforeOutcome(id)
	}
	end := q.cfg.Now().UTC()
	lateLogged := false
	// superseded is the run as recorded when this attempt's outcome is
	// not the run's: another process resolved the run first.
	var superseded *jobs.Run
	q.recordOutcome(ctx, id, cur, func(r *jobs.Run) bool {
		superseded = nil
		if r.Worker != q.cfg.Worker || r.Attempt != attempt || r.Status.Terminal() {
			// Another process's reaper declared this worker lost while its
			// heartbeats could not reach the store, and queued the run
			// again (another worker may have it now) or ended this
			// attempt. Its record stands: users and automation act on the
			// first terminal status, and a retry is that worker's. The log
			// says what this attempt did (below).
			was := *r
			superseded = &was
			return false
		}
		if r.CancelRequested && res.Status != jobs.Cancelled && !lateLogged {
			// A cancel request came too late to stop the run (after its
			// last step had ended, as it finished): its outcome stands,
			// and its log says why, before the run reads as ended (a
			// client following the log until then sees the line). A
			// request saved after this read makes the write below
			// conflict, and this is read again.
			q.logLateCancel(ctx, id, r.Reason, res)
			lateLogged = true
		}
		r.Status, r.Reason, r.EndedAt, r.Steps, r.HeartbeatAt = res.Status, res.Reason, &end, res.Steps, &end
		return true
	})
	if logs.pending() {
		// Lines the store could not take before (an outage the outcome
		// waited out): now that it can be written again.
		q.flushLogs(context.WithoutCancel(ctx), id, logs)
	}
	if res.Cleanup != nil {
		// A copy: the runner's background retry may still read the one
		// it returned.
		c := *res.Cleanup
		c.RunAttempt = attempt
		res.Cleanup = &c
	}
	final := res.Cleanup != nil && (res.Cleanup.Status != jobs.CleanupPending || runner.WaitCleanup)
	res.Superseded = superseded != nil
	switch {
	case superseded != nil:
		q.reportLateOutcome(ctx, superseded, attempt, res, final)
	case final:
		// (A pending one was recorded when it began: see CleanupPending.)
		if saved, err := q.cfg.Store.PutRunCleanup(ctx, id, res.Cleanup); err != nil {
			q.cfg.Logger.ErrorContext(ctx, "could not record the run's cleanup", "run_id", id, "error", err)
		} else if !saved {
			q.cfg.Logger.InfoContext(ctx, "cleanup not recorded: the run's record has a final one of this attempt, or a newer attempt's",
				"run_id", id, "attempt", attempt, "outcome", res.Cleanup.Message)
		}
	}
	q.cfg.Logger.InfoContext(ctx, "run ended", "run_id", id, "job", job.Name, "status", res.Status, "reason", res.Reason)
	span.SetAttributes(tracing.RunStatus.String(string(res.Status)))
	if res.Status != jobs.Succeeded {
		tracing.Fail(span, "run "+string(res.Status))
	}
	if q.cfg.RunEnded != nil {
		q.cfg.RunEnded(ctx, job, id, r.Trigger, res, end.Sub(now))
	}
}

// reportLateOutcome tells of the outcome res of attempt attempt of run r
// (as recorded) that another process resolved first: its reaper declared
// this worker lost and ended the attempt, or queued the run again (a
// retry that another worker may have taken since). r's record stays as it
// is, and a line in its log says what the attempt actually did. Its
// cleanup (res.Cleanup, when final says it is its last word) is saved on
// the store's terms (see store.BackendStore.PutRunCleanup): it replaces
// the reaper's record of this attempt only while that is still pending
// (stopping the sessions the reaper knew of), and never a newer attempt's.
func (q *Queue) reportLateOutcome(ctx context.Context, r *jobs.Run, attempt int, res jobs.Result, final bool) {
	did := "had succeeded"
	if res.Status != jobs.Succeeded {
		did = "ended " + string(res.Status)
		if res.Reason != "" {
			did += " (" + res.Reason + ")"
		}
	}
	var text string
	switch {
	case r.Attempt == attempt && r.Status.Terminal():
		lost := "at an unknown time"
		if r.EndedAt != nil {
			lost = "at " + r.EndedAt.UTC().Format(time.RFC3339)
		}
		text = fmt.Sprintf("worker %s, declared lost %s, came back: its attempt %s; the run stays %s as recorded then",
			q.cfg.Worker, lost, did, r.Status)
	case r.Attempt == attempt && r.Status == jobs.Queued:
		text = fmt.Sprintf("worker %s, declared lost, came back: its attempt (%d) %s; the run stays queued for attempt %d, "+
			"as it was queued again then", q.cfg.Worker, attempt, did, attempt+1)
	default:
		text = fmt.Sprintf("worker %s, declared lost, came back: its attempt (%d) %s; the run is attempt %d's now (%s), "+
			"which this does not change", q.cfg.Worker, attempt, did, r.Attempt, r.Status)
	}
	lines := []jobs.LogLine{{Time: q.cfg.Now().UTC(), Stream: jobs.StreamSystem, Step: -1, Text: text}}
	if final {
		saved, err := q.cfg.Store.PutRunCleanup(ctx, r.ID, res.Cleanup)
		switch {
		case err != nil:
			q.cfg.Logger.ErrorContext(ctx, "could not record the run's cleanup", "run_id", r.ID, "error", err)
		case saved:
			lines = append(lines, jobs.LogLine{Time: q.cfg.Now().UTC(), Stream: jobs.StreamSystem, Step: -1,
				Text: "cleanup by the worker that came back: " + res.Cleanup.Message})
		}
	}
	if err := q.cfg.Store.AppendRunLog(ctx, r.ID, lines); err != nil {
		q.cfg.Logger.WarnContext(ctx, "could not log the outcome of a run resolved elsewhere", "run_id", r.ID, "error", err)
	}
	q.cfg.Logger.WarnContext(ctx, "run was resolved by another process while this worker was lost; its record stands",
		"run_id", r.ID, "recorded", r.Status, "recorded_attempt", r.Attempt, "attempt", attempt,
		"attempt_status", res.Status, "attempt_reason", res.Reason)
}

// logLateCancel says in the log of run id, which ended with res, that a
// cancel request (whose reason is reason) reached this worker only once
// the run had ended: the run is recorded with cancel_requested and the
// outcome it had. Only a run that succeeded ended with its last step; one
// that failed may have been stopped first (the fence, its time limit, a
// shutdown), and its line says so by its outcome.
func (q *Queue) logLateCancel(ctx context.Context, id, reason string, res jobs.Result) {
	text := fmt.Sprintf("a cancel request (%s) arrived after the run's last step had ended; the run succeeded and was not cancelled",
		reason)
	if res.Status != jobs.Succeeded {
		text = fmt.Sprintf("a cancel request (%s) reached the worker only after the run had ended %s", reason, res.Status)
		if res.Reason != "" {
			text += " (" + res.Reason + ")"
		}
		text += "; the run is recorded so, not as cancelled"
	}
	line := jobs.LogLine{Time: q.cfg.Now().UTC(), Stream: jobs.StreamSystem, Step: -1, Text: text}
	if err := q.cfg.Store.AppendRunLog(ctx, id, []jobs.LogLine{line}); err != nil {
		q.cfg.Logger.WarnContext(ctx, "could not log a late cancel request", "run_id", id, "error", err)
	}
	q.cfg.Logger.InfoContext(ctx, "cancel request arrived after the run's last step had ended", "run_id", id,
		"status", res.Status, "cancel", reason)
}

// minWriteTimeout is the least writeTimeout.
const minWriteTimeout = 3 * time.Second

// writeTimeout bounds one heartbeat, log flush or outcome write of a run:
// a store that stops answering (a network path gone silent) fails the
// write in time for the next heartbeat, the fence and recordOutcome's
// retries, rather than holding the run's end until TCP gives up. A third
// of LostAfter, at least minWriteTimeout.
func (q *Queue) writeTimeout() time.Duration {
	return max(q.cfg.LostAfter/3, minWriteTimeout)
}

// Bounds of recordOutcome's retries.
const (
	outcomeRetryFor   = 30 * time.Second
	outcomeRetryFirst = 250 * time.Millisecond
	outcomeRetryMax   = 5 * time.Second
)

// recordOutcome writes a run's end with f (see updateFrom), trying again
// for a while when the store cannot be reached (each try bounded by
// writeTimeout): a run whose end was not
// recorded stays running until the reaper declares it lost, and one that
// succeeded would then fail, or run again when it has retries. The write
// goes on when ctx is cancelled (the process shutting down) for as long
// as the retries last.
func (q *Queue) recordOutcome(ctx context.Context, id string, cur *jobs.Run, f func(*jobs.Run) bool) {
	wctx := context.WithoutCancel(ctx)
	deadline := time.Now().Add(outcomeRetryFor)
	for wait := outcomeRetryFirst; ; wait = min(2*wait, outcomeRetryMax) {
		actx, cancel := context.WithTimeout(wctx, q.writeTimeout())
		_, err := q.updateFrom(actx, id, cur, f)
		cancel()
		if err == nil {
			return
		}
		q.storeTrouble()
		if time.Now().Add(wait).After(deadline) {
			q.cfg.Logger.ErrorContext(ctx, "could not record run outcome", "run_id", id, "error", err)
			return
		}
		q.cfg.Logger.WarnContext(ctx, "could not record run outcome; trying again", "run_id", id, "in", wait, "error", err)
		cur = nil // read it again
		time.Sleep(wait)
	}
}

// recordCleanup saves a cleanup outcome that came after the run ended,
// with a line in its log. The store keeps the run's record when it is a
// final outcome of the same attempt (c.RunAttempt), saved first, or a
// newer attempt's: c is then only logged by this process.
func (q *Queue) recordCleanup(ctx context.Context, id string, c jobs.Cleanup) {
	saved, err := q.cfg.Store.PutRunCleanup(ctx, id, &c)
	if err != nil {
		q.cfg.Logger.ErrorContext(ctx, "could not record the run's cleanup", "run_id", id, "error", err)
	} else if !saved {
		q.cfg.Logger.InfoContext(ctx, "run cleanup not recorded: the run's record has a final one of this attempt, or a newer attempt's",
			"run_id", id, "attempt", c.RunAttempt, "status", c.Status, "outcome", c.Message)
		return
	}
	line := jobs.LogLine{Time: q.cfg.Now().UTC(), Stream: jobs.StreamSystem, Step: -1, Text: "cleanup: " + c.Message}
	if err := q.cfg.Store.AppendRunLog(ctx, id, []jobs.LogLine{line}); err != nil {
		q.cfg.Logger.WarnContext(ctx, "could not log the run's cleanup", "run_id", id, "error", err)
	}
	q.cfg.Logger.InfoContext(ctx, "run cleanup", "run_id", id, "status", c.Status, "outcome", c.Message)
}

// lostCleanup is the pending cleanup of a lost run whose process had
// recorded backends: saved with the write that ends the run (or queues it
// again), so that no reader sees the run resolved without it while its
// statements may still run. nil when there are none. The caller sets its
// RunAttempt, the lost attempt's.
func (q *Queue) lostCleanup(backends []jobs.Backend) *jobs.Cleanup {
	if len(backends) == 0 {
		return nil
	}
	c := &jobs.Cleanup{Status: jobs.CleanupPending, UpdatedAt: q.cfg.Now().UTC()}
	for _, b := range backends {
		c.Remaining = append(c.Remaining, b.PID)
	}
	c.Summarize()
	c.Message += "; stopping them (the run's process was lost)"
	return c
}

// stopLostRun stops, in the background, the backends a lost run's process
// had opened (listed before the run was resolved, before a retry may add
// its own): a process that died cannot cancel its statements, so another
// one does. The outcome replaces the pending cleanup saved with the run's
// end (lostCleanup), unless the lost worker came back and recorded its
// own first, or a retry of the run (attempt, the lost one, + 1 or more)
// recorded one since.
func (q *Queue) stopLostRun(ctx context.Context, r *jobs.Run, attempt int, backends []jobs.Backend) {
	if len(backends) == 0 {
		return
	}
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		cctx, cancel := context.WithTimeout(ctx, jobs.DefaultCleanupFor)
		defer cancel()
		go func() {
			select {
			case <-q.stop: // the process is shutting down
				cancel()
			case <-cctx.Done():
			}
		}()
		tmpl := jobs.Stopper{Grace: r.Job.StopGraceOr(q.cfg.StopGrace), Count: q.cfg.CountCancels}
		c := jobs.StopAfterReconnect(cctx, q.cfg.Open, r.Job.Connection, backends, tmpl, 0, 0, jobs.ProcessLost, q.cfg.Logger)
		c.RunAttempt = attempt
		q.recordCleanup(ctx, r.ID, c)
	}()
}

// reap resolves running runs whose worker stopped sending heartbeats: they
// are queued again when the job allows retries, else failed with a reason
// naming the lost worker. The sessions the lost process recorded are
// stopped from here; the write that resolves the run saves its cleanup as
// pending, so that a client never reads the run as ended with nothing
// said of statements that may still run. It then queues again the queued
// runs that no River job will work (sweepOrphans).
func (q *Queue) reap(ctx context.Context) {
	defer q.sweepOrphans(ctx)
	runs, err := q.cfg.Store.ListRuns(ctx, store.RunFilter{Statuses: []jobs.Status{jobs.Running}, Limit: 1000})
	if err != nil {
		q.storeTrouble()
		q.cfg.Logger.WarnContext(ctx, "reaper: list running runs", "error", err)
		return
	}
	now := q.cfg.Now().UTC()
	if q.holdReap(ctx, now) {
		return
	}
	for _, r := range runs {
		q.mu.Lock()
		_, mine := q.active[r.ID]
		q.mu.Unlock()
		if mine || r.HeartbeatAt == nil || now.Sub(*r.HeartbeatAt) < q.cfg.LostAfter {
			continue
		}
		backends, err := q.cfg.Store.RunBackends(ctx, r.ID)
		if err != nil {
			// Resolved at a later pass: ended now, it would say nothing of
			// the statements it may have left running.
			q.cfg.Logger.WarnContext(ctx, "reaper: list a lost run's database sessions", "run_id", r.ID, "error", err)
			continue
		}
		pending := q.lostCleanup(backends)
		retry, resolved, attempt := false, false, 0
		lost := fmt.Sprintf("worker %s was lost: no heartbeat since %s (its process died or lost the store)",
			r.Worker, r.HeartbeatAt.Format(time.RFC3339))
		_, err = q.updateWith(ctx, r.ID, nil, pending, func(c *jobs.Run) bool {
			retry, resolved = false, false
			if c.Status != jobs.Running || c.HeartbeatAt == nil || now.Sub(*c.HeartbeatAt) < q.cfg.LostAfter {
				return false
			}
			resolved, attempt = true, c.Attempt
			if pending != nil {
				pending.RunAttempt = attempt
			}
			if c.Attempt <= c.Job.Retries && !c.CancelRequested {
				retry = true
				c.Status, c.Reason, c.StartedAt, c.HeartbeatAt, c.Worker = jobs.Queued, "retrying: "+lost, nil, nil, ""
				for i := range c.Steps {
					c.Steps[i] = jobs.RunStep{Index: i, Label: c.Steps[i].Label, Kind: c.Steps[i].Kind, Status: jobs.Queued}
				}
				return true
			}
			c.Status, c.Reason, c.EndedAt = jobs.Failed, lost, &now
			for i := range c.Steps {
				if !c.Steps[i].Status.Terminal() && c.Steps[i].Status != jobs.Skipped {
					if c.Steps[i].Status == jobs.Running {
						// It ended, as far as anyone knows, with its
						// worker's last heartbeat.
						c.Steps[i].Status, c.Steps[i].Error = jobs.Failed, "interrupted: worker lost"
						end := now
						if c.HeartbeatAt != nil && c.HeartbeatAt.Before(now) {
							end = *c.HeartbeatAt
						}
						if st := c.Steps[i].StartedAt; st != nil && !end.Before(*st) {
							c.Steps[i].EndedAt, c.Steps[i].DurationMS = &end, end.Sub(*st).Milliseconds()
						}
					} else {
						c.Steps[i].Status = jobs.Skipped
					}
				}
			}
			return true
		})
		if err != nil {
			q.cfg.Logger.WarnContext(ctx, "reaper: resolve run", "run_id", r.ID, "error", err)
			continue
		}
		if !resolved {
			continue // it beat again, or another process resolved it
		}
		if q.afterReap != nil {
			q.afterReap(r.ID)
		}
		lines := []jobs.LogLine{{Time: now, Stream: jobs.StreamSystem, Step: -1, Text: lost}}
		if pending != nil {
			lines = append(lines, jobs.LogLine{Time: now, Stream: jobs.StreamSystem, Step: -1, Text: "cleanup: " + pending.Message})
		}
		_ = q.cfg.Store.AppendRunLog(ctx, r.ID, lines)
		q.stopLostRun(ctx, r, attempt, backends)
		if retry {
			q.cfg.Logger.WarnContext(ctx, "run lost with its worker; retrying", "run_id", r.ID, "worker", r.Worker)
			if err := q.Enqueue(ctx, r.ID); err != nil {
				q.cfg.Logger.ErrorContext(ctx, "reaper: re-enqueue", "run_id", r.ID, "error", err)
			}
			continue
		}
		q.cfg.Logger.WarnContext(ctx, "run lost with its worker; failed", "run_id", r.ID, "worker", r.Worker)
	}
}

// storeTrouble notes that this process could not read or write the store.
func (q *Queue) storeTrouble() {
	now := q.cfg.Now().UTC()
	q.mu.Lock()
	q.storeTroubleAt = now
	q.mu.Unlock()
}

// reapHold is how long the reaper leaves lost runs be once the store is
// within its reach again after it was not: long enough for a worker
// whose heartbeats and outcome could not be saved meanwhile (the same
// outage, most often, cut every process off) to write its run's end
// (recordOutcome tries again at most outcomeRetryMax apart, each try
// bounded by writeTimeout) or, for a run that still runs, its next
// heartbeat. Without it, the reaper of a process that saw the store come
// back declared the runs of every other process lost at once, and queued
// again (with retries) runs whose attempt had succeeded.
func (q *Queue) reapHold() time.Duration {
	return max(q.cfg.LostAfter, q.writeTimeout()+outcomeRetryMax)
}

// holdReap says whether this reaper pass, at now, must leave lost runs be
// because this process could not reach the store since its last pass:
// then the heartbeats it finds stale may be those of workers cut off by
// the same outage, which are about to record their runs (see reapHold).
func (q *Queue) holdReap(ctx context.Context, now time.Time) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.storeTroubleAt.IsZero() && !q.storeTroubleAt.Before(q.reapedAt) {
		q.reapHoldUntil = now.Add(q.reapHold())
		q.cfg.Logger.InfoContext(ctx, "reaper: the store was out of this process's reach; runs are declared lost "+
			"only once their workers could record them", "until", q.reapHoldUntil)
	}
	q.reapedAt = now
	return now.Before(q.reapHoldUntil)
}

// RunLocal saves a run of job and works it in this process, now, without
// going through the queue (the CLI's local `job run`). It returns when the
// run has ended, and when its tunnel dropped with statements running, once
// they were stopped or it gave up (the process exits with the run: a
// cleanup left to the background would die with it); cancelling ctx with a
// *jobs.CancelledError cancels it, and stops that wait.
func (q *Queue) RunLocal(ctx context.Context, job jobs.Job, trigger jobs.Trigger, started func(*jobs.Run)) (*jobs.Run, error) {
	r := jobs.NewRun(job, trigger, q.cfg.Now())
	// Named as this process's from the start: were the process to stop
	// before it starts the run, the reaper of a process sharing the store
	// fails it rather than queue it for its own workers (sweepOrphans).
	r.Worker = q.cfg.Worker
	if err := q.cfg.Store.CreateRun(ctx, r); err != nil {
		return nil, err
	}
	if started != nil {
		started(r)
	}
	// A cancel request made through a server sharing the store reaches
	// the run at once, as it does a server's runs (none on SQLite).
	l := q.listenCancels(context.WithoutCancel(ctx))
	defer l.Stop()
	q.work(ctx, r.ID, q.localRunner)
	return q.cfg.Store.GetRun(context.WithoutCancel(ctx), r.ID)
}

// runFence stops a run whose heartbeats could not be saved for
// fenceAfter (see Queue.fence); the zero value does nothing.
type runFence struct {
	q     *Queue
	timer *time.Timer
}

// fence starts the fence of run id, whose context is ctx, taken at taken
// (its first heartbeat): on a shared PostgreSQL store, once no heartbeat
// of the run was saved for fenceAfter (a margin short of LostAfter), stop
// is called with a *jobs.InterruptedError. Another process may declare the
// run lost from LostAfter on; it stops the statements it knows of, but
// only this process can stop the run's commands and the sessions they
// open, which it thus starts to do first. On SQLite one process works the
// store: no fence.
func (q *Queue) fence(ctx context.Context, id string, taken time.Time, stop context.CancelCauseFunc) *runFence {
	f := &runFence{q: q}
	if q.cfg.Backend.Postgres == nil {
		return f
	}
	after := q.fenceAfter()
	f.timer = time.AfterFunc(after-q.cfg.Now().Sub(taken), func() {
		if ctx.Err() != nil {
			return // stopped already
		}
		q.cfg.Logger.WarnContext(ctx, "run stopped: its heartbeats could not be saved for nearly --lost-after", "run_id", id,
			"after", after, "lost_after", q.cfg.LostAfter)
		stop(&jobs.InterruptedError{Reason: fmt.Sprintf("stopped by its own process, which could not save the run's "+
			"heartbeat in the store for %s (another process may declare the run lost once %s have passed)",
			after, q.cfg.LostAfter)})
	})
	return f
}

// fenceAfter is how long a run's heartbeats may go unsaved before its
// own process stops it: LostAfter less one HeartbeatInterval (at most
// half of LostAfter), so that the worker's stop, which can end the run's
// commands, comes before another process may reap the run, which cannot.
func (q *Queue) fenceAfter() time.Duration {
	return q.cfg.LostAfter - min(q.cfg.HeartbeatInterval, q.cfg.LostAfter/2)
}

// beat moves the fence: a heartbeat written at t was saved.
func (f *runFence) beat(t time.Time) {
	if f.timer != nil {
		f.timer.Reset(f.q.fenceAfter() - f.q.cfg.Now().Sub(t))
	}
}

// Stop ends the fence.
func (f *runFence) Stop() {
	if f.timer != nil {
		f.timer.Stop()
	}
}
