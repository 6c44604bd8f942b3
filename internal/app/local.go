package app

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/relay"
)

// RunJobLocally runs the saved job name in this process, now, with the job
// queue's rules (its command policy and log limit) but without its
// workers: the CLI's local `job run`. started is called once the run is
// saved. The run is recorded in the audit log as started locally.
// Cancelling ctx with a *jobs.CancelledError cancels the run.
func (s *Service) RunJobLocally(ctx context.Context, name string, started func(*jobs.Run)) (*jobs.Run, error) {
	jv, err := s.GetJob(ctx, name)
	if err != nil {
		return nil, err
	}
	if s.queue == nil {
		return nil, ErrNoQueue
	}
	return s.queue.RunLocal(ctx, jv.Job, jobs.Manual, func(r *jobs.Run) {
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

// ExecResult is how an exec ended.
type ExecResult struct {
	jobs.Result
	// Next, when set, says what to do about why it failed: the server
	// refused the saved password of a session the program opened (the
	// program has printed the server's error itself).
	Next string
}

// Exec runs the request's program over its connection and returns how it
// ended. The local user runs their own program, given explicitly, so any
// program may run; the audit log records it (its command masked).
// Cancelling ctx with a *jobs.CancelledError stops it. When the tunnel
// dropped with statements of the program's running, Exec returns once
// they were stopped (or it gave up, or the wait was stopped: see
// jobs.Runner.WaitCleanup), logging the cleanup's progress as warnings.
// A session the server refused is logged at info level, not as a warning:
// the program got the server's error and prints it itself.
func (s *Service) Exec(ctx context.Context, req ExecRequest) (ExecResult, error) {
	job, err := req.Job()
	if err != nil {
		return ExecResult{}, err
	}
	s.AuditExec(ctx, req.Connection, req.Command)
	var refused atomic.Bool
	var spec atomic.Pointer[connection.Spec]
	rn := &jobs.Runner{
		Open: func(ctx context.Context, name string) (jobs.Conn, error) {
			c, err := s.OpenConn(ctx, name)
			if err == nil {
				spec.Store(c.Spec())
			}
			return c, err
		},
		Commands:    jobs.CommandPolicy{AnyProgram: true},
		Stdio:       req.Stdio,
		Logger:      slog.New(&execLogHandler{Handler: s.logger.Handler(), passwordRefused: &refused}),
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
	res := ExecResult{Result: rn.Run(ctx, job, hooks)}
	if pending && res.Cleanup != nil {
		s.logger.Warn("cleanup: " + res.Cleanup.Message)
	}
	if sp := spec.Load(); res.Status != jobs.Succeeded && refused.Load() && sp != nil {
		res.Next = passwordRefusedNext(sp)
	}
	return res, nil
}

// execLogHandler is the log of an exec's local endpoint: a session the
// server refused as it started (a *relay.RefusedError: the program got the
// server's error and prints it itself) is logged at info level instead of as a
// warning, so the terminal does not show it twice; a refused password
// (SQLSTATE 28P01) is noted for the Next hint.
type execLogHandler struct {
	slog.Handler
	passwordRefused *atomic.Bool
}

// Enabled implements slog.Handler.
func (h *execLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.Handler.Enabled(ctx, l)
}

// Handle implements slog.Handler.
func (h *execLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level != slog.LevelWarn {
		return h.Handler.Handle(ctx, r)
	}
	var refusal *relay.RefusedError
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && errors.As(err, &refusal) {
			return false
		}
		return true
	})
	if refusal == nil {
		return h.Handler.Handle(ctx, r)
	}
	if refusal.Err.Code == "28P01" { // invalid_password
		h.passwordRefused.Store(true)
	}
	if !h.Handler.Enabled(ctx, slog.LevelInfo) {
		return nil
	}
	info := slog.NewRecord(r.Time, slog.LevelInfo, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool { info.AddAttrs(a); return true })
	return h.Handler.Handle(ctx, info)
}

// WithAttrs implements slog.Handler.
func (h *execLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &execLogHandler{Handler: h.Handler.WithAttrs(as), passwordRefused: h.passwordRefused}
}

// WithGroup implements slog.Handler.
func (h *execLogHandler) WithGroup(name string) slog.Handler {
	return &execLogHandler{Handler: h.Handler.WithGroup(name), passwordRefused: h.passwordRefused}
}
