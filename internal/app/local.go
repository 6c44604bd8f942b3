package app

import (
	"context"
	"sync"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/jobs"
)

// RunJobLocally runs the saved job name in this process, now, with the job
// queue's rules (its command policy and log limit) but without its
// workers: the CLI's local `job run`. started is called once the run is
// saved. The run is recorded in the audit log as started locally.
// Cancelling ctx with a *jobs.CancelledError cancels the run.
func (s *Service) RunJobLocally(ctx context.Context, name string, started func(*jobs.Run)) (_ *jobs.Run, err error) {
	// A run that could not start (no such job, or it could not be
	// saved) is recorded as failed, as the API's RunJob records it.
	begun := false
	defer func() {
		if err != nil && !begun {
			s.audited(ctx, &entry{action: "run.start", targetKind: audit.TargetJob, target: name, detail: "local"}, &err)
		}
	}()
	jv, err := s.GetJob(ctx, name)
	if err != nil {
		return nil, err
	}
	if s.queue == nil {
		return nil, ErrNoQueue
	}
	return s.queue.RunLocal(ctx, jv.Job, jobs.Manual, func(r *jobs.Run) {
		begun = true
		s.AuditLocalRun(ctx, jv.Job, r)
		if started != nil {
			started(r)
		}
	})
}

// ExecRequest is a program the local user runs over a saved connection
// (pgrelay exec): a one-step job with a local endpoint and the PG* and dbt
// environment.
type ExecRequest struct {
	// Connection names the saved connection.
	Connection string
	// Command is the program and its arguments.
	Command []string
	// Workdir is the program's working directory (absolute; default the
	// current one).
	Workdir string
	// Profile, Target and Schema name the generated dbt profile.
	Profile, Target, Schema string
	// Stdio is the program's standard input and output.
	Stdio *jobs.Stdio
	// Exited, when set, is called once the program has exited, before
	// the run's cleanup (which may wait for the server when the tunnel
	// dropped).
	Exited func()
}

// Job returns the request as a validated job. It has no time limit: an
// exec runs as long as its program.
func (r ExecRequest) Job() (jobs.Job, error) {
	job := jobs.Job{Name: "exec", Connection: r.Connection, Profile: r.Profile, Target: r.Target, TargetSchema: r.Schema,
		Steps: []jobs.Step{{Command: r.Command, Workdir: r.Workdir}}}
	job.ApplyDefaults() // the timeout is not applied
	if err := job.Validate(); err != nil {
		return jobs.Job{}, err
	}
	return job, nil
}

// Exec runs the request's program over its connection and returns how it
// ended. The local user runs their own program, given explicitly, so any
// program may run; the audit log records it (its command masked).
// Cancelling ctx with a *jobs.CancelledError stops it. When the tunnel
// dropped with statements of the program's running, Exec returns once
// they were stopped (or it gave up, or the wait was stopped: see
// jobs.Runner.WaitCleanup), logging the cleanup's progress as warnings.
// The result's Next says what to do when the server refused the saved
// password of a session the program started (the program printed the
// server's error itself).
func (s *Service) Exec(ctx context.Context, req ExecRequest) (jobs.Result, error) {
	job, err := req.Job()
	if err != nil {
		return jobs.Result{}, err
	}
	// The exec is recorded once its connection opened, or could not be
	// (the program then never ran), with that outcome.
	var audited sync.Once
	record := func(err error) {
		audited.Do(func() { s.AuditExec(ctx, req.Connection, req.Command, err) })
	}
	open := func(octx context.Context, name string) (jobs.Conn, error) {
		c, err := s.OpenConn(octx, name)
		record(err)
		return c, err
	}
	rn := &jobs.Runner{
		Open:        open,
		Commands:    jobs.CommandPolicy{AnyProgram: true},
		Stdio:       req.Stdio,
		Logger:      s.logger,
		WaitCleanup: true,
	}
	pending := false
	hooks := jobs.Hooks{
		Log: func(l jobs.LogLine) {
			if l.Stream == jobs.StreamSystem {
				s.logger.Debug(l.Text)
			}
		},
		CleanupPending: func(c jobs.Cleanup) {
			pending = true
			s.logger.Warn("cleanup: " + c.Message)
		},
	}
	if req.Exited != nil {
		hooks.Step = func(st jobs.RunStep) {
			if st.Status.Terminal() {
				req.Exited()
			}
		}
	}
	res := rn.Run(ctx, job, hooks)
	record(res.Err) // refused before the connection was opened
	if pending && res.Cleanup != nil {
		s.logger.Warn("cleanup: " + res.Cleanup.Message)
	}
	return res, nil
}
