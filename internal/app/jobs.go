package app

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"time"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
)

// JobQueue queues and stops runs (package queue).
type JobQueue interface {
	// Submit saves a queued run of job and queues it.
	Submit(ctx context.Context, job jobs.Job, trigger jobs.Trigger) (*jobs.Run, error)
	// Cancel stops a run working in this process; false when it is not.
	Cancel(runID string, cause error) bool
	// SyncSchedules makes the schedules match the stored jobs.
	SyncSchedules(ctx context.Context) error
	// RunLocal saves a run of job and works it in this process now,
	// calling started once it is saved; it returns the ended run.
	RunLocal(ctx context.Context, job jobs.Job, trigger jobs.Trigger, started func(*jobs.Run)) (*jobs.Run, error)
}

// JobView is what faces show of a job.
type JobView struct {
	jobs.Job
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	NextRunAt *time.Time `json:"next_run_at,omitempty"`
	LastRun   *jobs.Run  `json:"last_run,omitempty"`
}

// ApplyResult says what ApplyJobs did with one job.
type ApplyResult struct {
	Name string `json:"name"`
	// Action is created, updated or unchanged.
	Action string `json:"action"`
}

func (s *Service) jobView(ctx context.Context, rec *store.JobRecord) *JobView {
	v := &JobView{Job: rec.Job, CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt}
	if rec.Job.Schedule != "" {
		if sched, err := jobs.ScheduleFor(rec.Job.Schedule, rec.UpdatedAt); err == nil {
			next := sched.Next(s.now()).UTC()
			v.NextRunAt = &next
		}
	}
	if runs, err := s.store.ListRuns(ctx, store.RunFilter{Job: rec.Job.Name, Limit: 1}); err == nil && len(runs) > 0 {
		v.LastRun = runs[0]
	}
	return v
}

// prepareJob applies defaults and validates a job, including that its
// connection exists.
func (s *Service) prepareJob(ctx context.Context, j *jobs.Job) error {
	j.ApplyDefaults()
	var probs []fielderr.Problem
	if err := j.Validate(); err != nil {
		var ve *ValidationError
		if !errors.As(err, &ve) {
			return err
		}
		probs = ve.Problems
	}
	if j.Connection != "" && connection.ValidateName(j.Connection) == nil {
		if _, err := s.store.GetConnection(ctx, j.Connection); errors.Is(err, store.ErrNotFound) {
			probs = append(probs, fielderr.Problem{Field: "connection",
				Problem: fmt.Sprintf("no connection named %q: create it first (pgrelay connection create %s ...)", j.Connection, j.Connection)})
		} else if err != nil {
			return err
		}
	}
	if len(probs) > 0 {
		return &ValidationError{Subject: fielderr.Job, Problems: probs}
	}
	return nil
}

// ApplyJobs creates or updates every job, after validating all of them: an
// invalid file changes nothing.
func (s *Service) ApplyJobs(ctx context.Context, js []jobs.Job) (out []ApplyResult, err error) {
	defer func() {
		// One record per job created or updated; one for the whole apply
		// when it changed nothing (or failed before it could).
		changed := 0
		for _, r := range out {
			if r.Action == "unchanged" {
				continue
			}
			changed++
			action := "job.update"
			if r.Action == "created" {
				action = "job.create"
			}
			var jerr error
			s.audited(ctx, &entry{action: action, targetKind: audit.TargetJob, target: r.Name, detail: "applied"}, &jerr)
		}
		if changed == 0 || err != nil {
			var names []string
			for _, j := range js {
				names = append(names, j.Name)
			}
			s.audited(ctx, &entry{action: "job.apply", targetKind: audit.TargetJob, detail: "jobs " + joinNames(names)}, &err)
		}
	}()
	var probs []fielderr.Problem
	for i := range js {
		if err := s.prepareJob(ctx, &js[i]); err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) {
				return nil, err
			}
			for _, p := range ve.Problems {
				probs = append(probs, fielderr.Problem{Field: fmt.Sprintf("jobs[%d](%s).%s", i, js[i].Name, p.Field), Problem: p.Problem})
			}
		}
	}
	if len(probs) > 0 {
		return nil, &ValidationError{Subject: fielderr.Job, Problems: probs}
	}
	out = make([]ApplyResult, 0, len(js))
	for i := range js {
		j := js[i]
		action := "updated"
		if cur, err := s.store.GetJob(ctx, j.Name); err == nil && reflect.DeepEqual(cur.Job, j) {
			out = append(out, ApplyResult{Name: j.Name, Action: "unchanged"})
			continue
		}
		created, err := s.store.PutJob(ctx, &j, s.now().UTC())
		if err != nil {
			return out, err
		}
		if created {
			action = "created"
		}
		out = append(out, ApplyResult{Name: j.Name, Action: action})
		s.logger.InfoContext(ctx, "job "+action, "job", j.Name, "connection", j.Connection, "schedule", j.Schedule)
	}
	s.syncSchedules(ctx)
	return out, nil
}

func (s *Service) syncSchedules(ctx context.Context) {
	if s.queue != nil {
		if err := s.queue.SyncSchedules(ctx); err != nil {
			s.logger.WarnContext(ctx, "schedule sync failed", "error", err)
		}
	}
}

// PutJob creates or replaces one job.
func (s *Service) PutJob(ctx context.Context, j jobs.Job) (_ *JobView, _ bool, err error) {
	e := &entry{action: "job.update", targetKind: audit.TargetJob, target: j.Name}
	defer s.audited(ctx, e, &err)
	if err := s.prepareJob(ctx, &j); err != nil {
		return nil, false, err
	}
	created, err := s.store.PutJob(ctx, &j, s.now().UTC())
	if err != nil {
		return nil, false, err
	}
	if created {
		e.action = "job.create"
	}
	s.syncSchedules(ctx)
	v, err := s.GetJob(ctx, j.Name)
	return v, created, err
}

// CreateJob saves a new job; ErrExists when the name is taken.
func (s *Service) CreateJob(ctx context.Context, j jobs.Job) (_ *JobView, err error) {
	defer s.audited(ctx, &entry{action: "job.create", targetKind: audit.TargetJob, target: j.Name}, &err)
	if err := s.prepareJob(ctx, &j); err != nil {
		return nil, err
	}
	if err := s.store.CreateJob(ctx, &j, s.now().UTC()); err != nil {
		return nil, err
	}
	s.syncSchedules(ctx)
	s.logger.InfoContext(ctx, "job created", "job", j.Name, "connection", j.Connection, "schedule", j.Schedule)
	return s.GetJob(ctx, j.Name)
}

// GetJob returns a job.
func (s *Service) GetJob(ctx context.Context, name string) (*JobView, error) {
	rec, err := s.store.GetJob(ctx, name)
	if err != nil {
		return nil, err
	}
	return s.jobView(ctx, rec), nil
}

// ListJobs returns every job.
func (s *Service) ListJobs(ctx context.Context) ([]*JobView, error) {
	recs, err := s.store.ListJobs(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]*JobView, 0, len(recs))
	for _, r := range recs {
		out = append(out, s.jobView(ctx, r))
	}
	return out, nil
}

// DeleteJob removes a job; its runs stay in the history.
func (s *Service) DeleteJob(ctx context.Context, name string) (err error) {
	defer s.audited(ctx, &entry{action: "job.delete", targetKind: audit.TargetJob, target: name}, &err)
	if err := s.store.DeleteJob(ctx, name); err != nil {
		return err
	}
	s.syncSchedules(ctx)
	s.logger.InfoContext(ctx, "job deleted", "job", name)
	return nil
}

// ErrNoQueue means runs cannot be queued: no worker is configured.
var ErrNoQueue = errors.New("runs cannot be queued here: no job queue is running (use `pgrelay serve`)")

// RunJob queues a run of the job.
func (s *Service) RunJob(ctx context.Context, name string, trigger jobs.Trigger) (r *jobs.Run, err error) {
	e := &entry{action: "run.start", targetKind: audit.TargetJob, target: name, detail: string(trigger)}
	defer s.audited(ctx, e, &err)
	rec, err := s.store.GetJob(ctx, name)
	if err != nil {
		return nil, err
	}
	e.use = s.runUse(ctx, &rec.Job)
	if s.queue == nil {
		return nil, ErrNoQueue
	}
	r, err = s.queue.Submit(ctx, rec.Job, trigger)
	if r != nil {
		e.use.RunID = r.ID
	}
	return r, err
}

// GetRun returns a run.
func (s *Service) GetRun(ctx context.Context, id string) (*jobs.Run, error) {
	r, err := s.store.GetRun(ctx, id)
	if err != nil {
		return nil, err
	}
	if r.Cleanup, err = s.store.RunCleanup(ctx, id); err != nil {
		return nil, err
	}
	return r, nil
}

// defaultRunsLimit is how many runs ListRunsPage returns for a filter
// without a limit (as the store does for ListRuns).
const defaultRunsLimit = 100

// RunPage is one page of runs, newest first (in store.RunFilter's order).
type RunPage struct {
	Runs []*jobs.Run
	// NextBefore is the ID to give as RunFilter.Before for the next
	// (older) page; "" when there are no more runs.
	NextBefore string
}

// ListRuns lists runs, newest first, in store.RunFilter's order. A
// Before that names no run is a *ValidationError of the field "before".
func (s *Service) ListRuns(ctx context.Context, f store.RunFilter) ([]*jobs.Run, error) {
	runs, err := s.store.ListRuns(ctx, f)
	if err != nil {
		return nil, runFilterError(f, err)
	}
	if runs == nil {
		runs = []*jobs.Run{}
	}
	return runs, nil
}

// ListRunsPage lists a page of runs as ListRuns does, and says whether
// there are older ones: its NextBefore is set only when another page has
// runs.
func (s *Service) ListRunsPage(ctx context.Context, f store.RunFilter) (*RunPage, error) {
	if f.Limit <= 0 {
		f.Limit = defaultRunsLimit
	}
	limit := f.Limit
	f.Limit++ // one more tells whether there is a next page
	runs, err := s.ListRuns(ctx, f)
	if err != nil {
		return nil, err
	}
	p := &RunPage{Runs: runs}
	if len(runs) > limit {
		p.Runs = runs[:limit]
		p.NextBefore = runs[limit-1].ID
	}
	return p, nil
}

// runFilterError makes the store's error for a RunFilter.Before that
// names no run a validation problem of the field "before".
func runFilterError(f store.RunFilter, err error) error {
	if f.Before == "" || !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return fielderr.New(fielderr.Request, fielderr.Problem{Field: "before",
		Problem: fmt.Sprintf("%q is not the ID of a run: accepted is the ID of an existing run, "+
			"such as the last one of the previous page", f.Before)})
}

// RunLog returns up to limit log lines after seq.
func (s *Service) RunLog(ctx context.Context, id string, afterSeq int64, limit int) ([]jobs.LogLine, error) {
	if _, err := s.store.GetRun(ctx, id); err != nil {
		return nil, err
	}
	lines, err := s.store.RunLog(ctx, id, afterSeq, limit)
	if lines == nil && err == nil {
		lines = []jobs.LogLine{}
	}
	return lines, err
}

// CancelRun cancels a queued or running run on behalf of by.
func (s *Service) CancelRun(ctx context.Context, id, by string) (_ *jobs.Run, err error) {
	defer s.audited(ctx, &entry{action: "run.cancel", targetKind: audit.TargetRun, target: id,
		use: &audit.Use{RunID: id}}, &err)
	reason := (&jobs.CancelledError{By: by}).Error()
	for range 20 {
		r, err := s.store.GetRun(ctx, id)
		if err != nil {
			return nil, err
		}
		if r.Status.Terminal() {
			return nil, invalidf("run %s already ended (%s)", id, r.Status)
		}
		r.CancelRequested = true
		r.Reason = reason
		if r.Status == jobs.Queued {
			now := s.now().UTC()
			r.Status, r.EndedAt = jobs.Cancelled, &now
			for i := range r.Steps {
				r.Steps[i].Status = jobs.Skipped
			}
		}
		err = s.store.UpdateRun(ctx, r)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if s.queue != nil {
			s.queue.Cancel(id, &jobs.CancelledError{By: by})
		}
		s.logger.InfoContext(ctx, "run cancel requested", "run_id", id, "by", by)
		return r, nil
	}
	return nil, store.ErrConflict
}
