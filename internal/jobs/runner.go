package jobs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgrelay/pgrelay/internal/childenv"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/pg"
	"github.com/pgrelay/pgrelay/internal/proxy"
	"github.com/pgrelay/pgrelay/internal/relay"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/tracing"
)

// Conn is an opened connection a run works over: one SSH connection (when
// tunnelled) shared by every database session and command of the run.
type Conn interface {
	// Spec is the connection's spec, password included.
	Spec() *connection.Spec
	// DialDatabase opens a byte stream to the database server.
	DialDatabase(ctx context.Context) (net.Conn, error)
	// Connect opens a database session.
	Connect(ctx context.Context) (*pgx.Conn, error)
	// Done is closed when the tunnel drops (nil for direct connections).
	Done() <-chan struct{}
	// Err is why the tunnel ended.
	Err() error
	// Close closes the tunnel.
	Close() error
}

// ReusedConn is a Conn that may run on a tunnel kept open after an
// earlier run of its connection (a server's --ssh-warm) instead of one
// opened for it; the run's log says which.
type ReusedConn interface {
	// Reused reports whether the tunnel was kept from an earlier run, and
	// how long it had been kept.
	Reused() (time.Duration, bool)
}

// Opener opens a saved connection by name.
type Opener func(ctx context.Context, name string) (Conn, error)

// Hooks receive a run's progress. They are called from the runner's
// goroutines, one call at a time, except WaitLogRoom, which each output
// stream's reader calls on its own.
type Hooks struct {
	// Step is called when a step starts and when it ends.
	Step func(RunStep)
	// Log receives each log line as it comes (secrets already masked).
	Log func(LogLine)
	// WaitLogRoom, when set, is called before each line of a program's
	// output is read into the log, outside the run's locks: it may block
	// (until the lines before are saved) to hold back a program that
	// prints faster than its log is stored; the program then waits on
	// its output, as it would behind a slow terminal.
	WaitLogRoom func()
	// Backend is called when the run opens a database session: a SQL
	// step's, or a command's through the run's endpoint.
	Backend func(Backend)
	// Cleanup is called, after Run has returned, with the outcome of a
	// cleanup that had to wait for the server (Result.Cleanup pending).
	Cleanup func(Cleanup)
	// CleanupPending is called when the run's cleanup has to wait for the
	// server (its tunnel dropped), before it is retried.
	CleanupPending func(Cleanup)
}

// Stdio attaches a command directly to a terminal (pgrelay exec) instead
// of capturing its output into the log.
type Stdio struct {
	In       io.Reader
	Out, Err io.Writer
}

// Runner executes jobs.
type Runner struct {
	// Open opens the job's connection.
	Open Opener
	// Commands is which programs command steps may run, as which user and
	// where; every command step of a job is checked against it before the
	// run opens its connection. The zero value runs no program.
	Commands CommandPolicy
	// InterruptGrace is how long a stopped command has between SIGINT
	// (on which dbt cancels its own queries) and SIGTERM; default 5s.
	InterruptGrace time.Duration
	// KillGrace is how long a command has between SIGTERM and SIGKILL;
	// default 10s.
	KillGrace time.Duration
	// StopGrace is how long a stopped run's backends have to end after
	// their statements were cancelled before they are terminated; default
	// DefaultStopGrace.
	StopGrace time.Duration
	// CleanupFor bounds the retries, after the tunnel dropped, to reach the
	// server again and stop the run's backends; default DefaultCleanupFor.
	CleanupFor time.Duration
	// WaitCleanup makes Run itself retry such a cleanup before it returns,
	// for a process that exits when its run ends (a local `job run`,
	// `pgrelay exec`): retried in the background, the cleanup would die
	// with it and leave the statements running. It retries until the
	// cleanup is done or CleanupFor passes (the job's time limit does not
	// shorten it), or until the user stops the wait: a cancel of the
	// context given to Run that comes while it waits, or, when a cancel
	// (or the time limit) stopped the run first, Control.StopWaiting on
	// the Control that context carries (WithControl). A wait stopped so
	// records the cleanup as failed, with the sessions to check. Without
	// WaitCleanup Run returns with the cleanup pending and reports its
	// outcome to Hooks.Cleanup.
	WaitCleanup bool
	// CountCancels, when set, counts what was done to backends by outcome
	// (OutcomeCancelled, OutcomeTerminated, OutcomeFailed,
	// OutcomeUnreachable).
	CountCancels func(outcome string, n int)
	// Stdio, when set, attaches commands to it instead of the log.
	Stdio *Stdio
	// BaseEnv is the environment commands start from (before the
	// connection's variables are added); default: this process's, without
	// pgrelay's own secrets and PG*/DBT_PROFILES_DIR variables. With
	// Commands.RunAs it is not used: commands get a minimal environment.
	BaseEnv []string
	Logger  *slog.Logger
	// Tracer, when set, traces each step, its statements (by digest) and
	// commands (by program name) as children of the run's context's span.
	Tracer trace.Tracer

	// onHandOver, when set, is called with the run's directory once it
	// was given to Commands.RunAs's user (tests act as that user then).
	onHandOver func(dir string)
}

// Result is a run's outcome.
type Result struct {
	Status Status
	// Err is why the run did not succeed (nil on success), typed for code
	// that decides by it: a *CancelledError, a *TimeoutError, the
	// connection's error when its tunnel dropped (one that wraps a
	// *tunnel.DroppedError), a *StepError, or the error of opening the
	// connection. Its text is not masked: show Reason.
	Err error
	// Reason is Err's text for people and the store, with the password
	// masked (empty on success).
	Reason string
	Steps  []RunStep
	// ExitCode is the exit code of the last command step that ran, or -1.
	ExitCode int
	// Cleanup is what was done to stop the run's statements on the server
	// when it did not succeed (nil when it had none to stop). When it is
	// pending (the tunnel dropped), the outcome comes later through
	// Hooks.Cleanup.
	Cleanup *Cleanup
	// Next, when set, says what to do about why a command's step failed:
	// the server refused the saved password of a session the command
	// started (the command printed the server's error itself, if at all).
	// The run's log says it too.
	Next string
	// Superseded is set by the job queue, not by Run: this attempt's
	// outcome is not the run's, which another process resolved first (its
	// reaper declared the attempt's worker lost, and ended the attempt or
	// queued the run again). Status and Err say what the attempt did.
	Superseded bool
}

// CancelledError is the cause of a cancelled run.
type CancelledError struct {
	// By says who or what cancelled (a user, a signal), if known.
	By string
	// Reason, when set, is the reason recorded with the cancel request
	// (see app.CancelRun), shown as it is.
	Reason string
}

func (e *CancelledError) Error() string {
	switch {
	case e.Reason != "":
		return e.Reason
	case e.By == "":
		return "cancelled"
	}
	return "cancelled by " + e.By
}

// StepError is why a run failed in one of its steps.
type StepError struct {
	// Step is the step's index; Label its label.
	Step  int
	Label string
	// Refused is set when the step was refused before the run started
	// (a command the policy does not allow): nothing ran.
	Refused bool
	Err     error
}

func (e *StepError) Error() string {
	if e.Refused {
		return fmt.Sprintf("step %d (%s) refused, nothing was run: %v", e.Step+1, e.Label, e.Err)
	}
	return fmt.Sprintf("step %d (%s) failed: %v", e.Step+1, e.Label, e.Err)
}

// Unwrap returns the step's error.
func (e *StepError) Unwrap() error { return e.Err }

// SignalledError is why a command step failed whose program a signal
// killed (not one of pgrelay's own, sent as the run stopped): it has no
// exit code.
type SignalledError struct {
	Program string
	State   *os.ProcessState
}

func (e *SignalledError) Error() string {
	return fmt.Sprintf("%s was killed by a signal (%v)", e.Program, e.State)
}

// Signal is the signal that killed the program (0 when unknown).
func (e *SignalledError) Signal() syscall.Signal {
	if ws, ok := e.State.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ws.Signal()
	}
	return 0
}

// TimeoutError is the cause of a run that ran out of time.
type TimeoutError struct{ After time.Duration }

func (e *TimeoutError) Error() string { return fmt.Sprintf("timed out after %s", e.After) }

// run is the state of one execution.
type run struct {
	r      *Runner
	job    Job
	hooks  Hooks
	conn   Conn
	secret string
	// localSecret is the run's own password of its local endpoint, when
	// the endpoint authenticates commands itself (EndpointLogin).
	localSecret string

	mu      sync.Mutex // serialises hook calls
	steps   []RunStep
	dbConn  *pgx.Conn
	px      *proxy.Proxy
	pxAddr  string
	workDir string
	// runDir is workDir with its lock (nil until made).
	runDir  *runDir
	env     []string
	curStep int
	// passwordRefused is set when the server refused the saved password
	// of a session a command started.
	passwordRefused bool
	// mark is the environment entry (RunMarkEnv) of the run's commands.
	mark string
	// backends are the database sessions the run opened (SQL steps', and
	// commands' through the endpoint).
	backends []Backend
	// endpoint holds the sessions open through px now.
	endpoint *relay.Registry
	// cancelledPIDs are backends whose statement pgx cancelled when the
	// run's context ended during a SQL step.
	cancelledPIDs []uint32
	// programs are the absolute paths of the command steps' programs
	// (by step index), resolved before the run starts.
	programs []string
	// unstopped says which programs (or what they left in their process
	// group) a stopped run could not stop: they are still running.
	unstopped []error
	// dropErr is the tunnel's error once read (see tunnelErr), under
	// dropMu.
	dropMu  sync.Mutex
	dropErr error
}

// Run executes job until it ends, its context is done (the cause becomes
// the reason: use context.WithCancelCause with a *CancelledError, or
// WithTimeoutCause with a *TimeoutError), or its tunnel drops.
// A Runner may run several jobs at once; Run does not change it.
func (r *Runner) Run(ctx context.Context, job Job, hooks Hooks) Result {
	rc := *r // with the defaults, for this run
	if rc.Logger == nil {
		rc.Logger = slog.New(slog.DiscardHandler)
	}
	if rc.KillGrace == 0 {
		rc.KillGrace = DefaultKillGrace
	}
	if rc.InterruptGrace == 0 {
		rc.InterruptGrace = DefaultInterruptGrace
	}
	x := &run{r: &rc, job: job, hooks: hooks, curStep: -1}
	for i, s := range job.Steps {
		x.steps = append(x.steps, RunStep{Index: i, Label: s.Label(), Kind: s.Kind(), Status: Queued})
	}
	res := x.exec(ctx)
	x.finish(ctx, &res)
	res.Steps = x.steps
	if res.Err != nil {
		res.Reason = CleanText(x.mask(res.Err.Error()))
	}
	for i := range res.Steps {
		res.Steps[i].Error = CleanText(x.mask(res.Steps[i].Error))
	}
	return res
}

// Default grace periods of a stopped command (Runner.InterruptGrace,
// Runner.KillGrace).
const (
	DefaultInterruptGrace = 5 * time.Second
	DefaultKillGrace      = 10 * time.Second
)

// stopSlack is what StopTime allows, beyond the grace periods, for the
// session that stops a run's statements, its cancel requests and
// pg_terminate_backend.
const stopSlack = 5 * time.Second

// StopTime is how long a run of job may take to end once it is stopped
// (cancelled, timed out, or its process shutting down): its command gets
// SIGINT, SIGTERM after InterruptGrace and SIGKILL after KillGrace, what
// it left in its process group gets groupGrace, what it left outside it
// (carrying the run's mark) groupGrace again, and its statements are
// terminated after the job's stop grace. A process that exits when its
// runs end must wait this long for them: before that, a command may not
// have had its SIGKILL yet and a statement may still run on the server.
func (r *Runner) StopTime(job Job) time.Duration {
	interrupt, kill := r.InterruptGrace, r.KillGrace
	if interrupt == 0 {
		interrupt = DefaultInterruptGrace
	}
	if kill == 0 {
		kill = DefaultKillGrace
	}
	grace := job.StopGraceOr(r.StopGrace)
	if grace <= 0 {
		grace = DefaultStopGrace
	}
	return interrupt + kill + 2*groupGrace + grace + stopSlack
}

// mask replaces the connection's password, and the run's own password of
// its local endpoint, in text.
func (x *run) mask(text string) string {
	for _, s := range []string{x.secret, x.localSecret} {
		if s != "" && strings.Contains(text, s) {
			text = strings.ReplaceAll(text, s, "[redacted]")
		}
	}
	return text
}

func (x *run) log(step int, stream Stream, text string) {
	x.logLine(LogLine{Stream: stream, Step: step, Text: text})
}

// logLine hands l, masked and stamped with the time, to the Log hook.
func (x *run) logLine(l LogLine) {
	l.Text, l.Time = x.mask(l.Text), time.Now().UTC()
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.hooks.Log != nil {
		x.hooks.Log(l)
	}
}

func (x *run) setStep(i int, f func(*RunStep)) {
	x.mu.Lock()
	defer x.mu.Unlock()
	f(&x.steps[i])
	// A step's error may quote the password (a SQL error about a value,
	// a command's last words).
	x.steps[i].Error = x.mask(x.steps[i].Error)
	if x.hooks.Step != nil {
		x.hooks.Step(x.steps[i])
	}
}

// reason returns why the run stopped: the cause of the context's end, or
// its tunnel's error when the tunnel dropped. When both happened, the
// first names it: the tunnel's error when the drop is what ended the
// context (or the context has not ended: a step saw the drop before the
// watcher in exec did), else the context's cause (a time limit, a cancel,
// a shutdown that came first, and stopping the run found the tunnel gone)
// with the tunnel's error as detail. Both stay in the chain for errors.As.
func (x *run) reason(ctx context.Context) error {
	cause := context.Cause(ctx)
	dropped := x.tunnelErr()
	switch {
	case dropped == nil:
		return cause
	case cause == nil || cause == context.Canceled || errors.Is(cause, dropped):
		// (A context cancelled without a cause says less than the
		// tunnel's error.)
		return dropped
	}
	return fmt.Errorf("%w; its tunnel dropped as the run stopped: %w", cause, dropped)
}

// tunnelErr is the run's tunnel's error once it dropped (nil before, and
// for a direct connection): the first one read, always the same value, so
// that reason can tell it in the run context's cause.
func (x *run) tunnelErr() error {
	if x.conn == nil {
		return nil
	}
	x.dropMu.Lock() // not mu: reason runs under it (setStep)
	defer x.dropMu.Unlock()
	if x.dropErr == nil {
		x.dropErr = x.conn.Err()
	}
	return x.dropErr
}

func (x *run) exec(parent context.Context) Result {
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	// Every command step is vetted before anything starts: a refused one
	// must not leave earlier steps done or a tunnel opened.
	if i, err := x.vet(); err != nil {
		x.setStep(i, func(s *RunStep) { s.Status, s.Error = Failed, err.Error() })
		for j := range x.steps {
			if j != i {
				x.setStep(j, func(s *RunStep) { s.Status = Skipped })
			}
		}
		serr := &StepError{Step: i, Label: x.job.Steps[i].Label(), Refused: true, Err: err}
		x.log(i, StreamSystem, serr.Error())
		return Result{Status: Failed, Err: serr, ExitCode: -1}
	}
	x.log(-1, StreamSystem, fmt.Sprintf("opening connection %s", x.job.Connection))
	conn, err := x.r.Open(ctx, x.job.Connection)
	if err != nil {
		if c := context.Cause(ctx); c != nil && parent.Err() != nil {
			err = c
		}
		x.skipFrom(0)
		x.log(-1, StreamSystem, "could not open the connection: "+err.Error())
		return Result{Status: statusFor(err), Err: err, ExitCode: -1}
	}
	x.conn = conn
	x.secret = conn.Spec().Password.Reveal()
	if t := conn.Spec().Tunnel; t != nil {
		how := "up"
		if rc, ok := conn.(ReusedConn); ok {
			if d, reused := rc.Reused(); reused {
				how = fmt.Sprintf("reused (kept open %s after an earlier run; its keepalive answered)", d.Round(time.Millisecond))
			}
		}
		x.log(-1, StreamSystem, fmt.Sprintf("SSH tunnel %s via %s (keepalive every %s, dropped after %d missed)",
			how, hopsText(conn.Spec()), t.KeepaliveInterval, t.KeepaliveCountMax))
	}
	// The tunnel dropping stops the run with the tunnel's error.
	if done := conn.Done(); done != nil {
		go func() {
			select {
			case <-done:
				cancel(x.tunnelErr())
			case <-ctx.Done():
			}
		}()
	}
	exitCode := -1
	for i, step := range x.job.Steps {
		if ctx.Err() != nil {
			x.skipFrom(i)
			return x.stopped(ctx, exitCode)
		}
		start := time.Now().UTC()
		x.mu.Lock()
		x.curStep = i
		x.mu.Unlock()
		x.setStep(i, func(s *RunStep) { s.Status = Running; s.StartedAt = &start })
		x.log(i, StreamSystem, fmt.Sprintf("step %d: %s", i+1, step.Label()))
		var code *int
		var serr error
		stepCtx, stepSpan := x.tracer().Start(ctx, fmt.Sprintf("step %d", i+1),
			trace.WithAttributes(tracing.StepIndex.Int(i+1), tracing.StepKind.String(string(step.Kind()))))
		if step.SQL != "" {
			serr = x.runSQL(stepCtx, i, step)
		} else {
			cmdCtx, cmdSpan := x.tracer().Start(stepCtx, "command", trace.WithAttributes(
				tracing.Program.String(filepath.Base(step.Command[0]))))
			code, serr = x.runCommand(cmdCtx, i, step)
			if code != nil {
				exitCode = *code
				cmdSpan.SetAttributes(tracing.ExitCode.Int(*code))
			}
			if serr != nil {
				tracing.Fail(cmdSpan, "command failed")
			}
			cmdSpan.End()
		}
		if serr != nil {
			tracing.Fail(stepSpan, "step failed")
		}
		stepSpan.End()
		end := time.Now().UTC()
		if serr == nil {
			x.setStep(i, func(s *RunStep) {
				s.Status, s.EndedAt, s.DurationMS, s.ExitCode = Succeeded, &end, end.Sub(start).Milliseconds(), code
			})
			continue
		}
		stopped := ctx.Err() != nil
		if !stopped && x.conn.Err() != nil {
			// The tunnel dropped and closed the step's connections (a
			// command exits with an error) before the watcher above
			// cancelled the run: the tunnel is why the step failed.
			cancel(x.tunnelErr())
			stopped = true
		}
		x.setStep(i, func(s *RunStep) {
			s.Status, s.EndedAt, s.DurationMS, s.ExitCode, s.Error = Failed, &end, end.Sub(start).Milliseconds(), code, serr.Error()
			if stopped && statusFor(x.reason(ctx)) == Cancelled {
				s.Status = Cancelled
			}
		})
		x.skipFrom(i + 1)
		if stopped {
			return x.stopped(ctx, exitCode)
		}
		failed := &StepError{Step: i, Label: step.Label(), Err: serr}
		x.log(i, StreamSystem, failed.Error())
		x.mu.Lock()
		refused := x.passwordRefused
		x.mu.Unlock()
		res := Result{Status: Failed, Err: failed, ExitCode: exitCode}
		if next := x.conn.Spec().PasswordRefusedNext(); refused && next != "" {
			res.Next = next
			x.log(i, StreamSystem, "Next: "+next)
		}
		return res
	}
	x.log(-1, StreamSystem, "all steps succeeded")
	return Result{Status: Succeeded, ExitCode: exitCode}
}

// vet resolves every command step's program and checks its workdir
// against the runner's policy, and refuses a SQL step that would wait for
// COPY data; on refusal it returns the step's index.
func (x *run) vet() (int, error) {
	x.programs = make([]string, len(x.job.Steps))
	for i, s := range x.job.Steps {
		if s.SQL != "" && pg.CopiesFromStdin(s.SQL) {
			// Saved before jobs were checked for it.
			return i, errCopyFromStdin
		}
		if len(s.Command) == 0 {
			continue
		}
		path, err := x.r.Commands.program(s.Command[0])
		if err != nil {
			return i, err
		}
		if _, err := x.r.Commands.workdir(s.Workdir, true); err != nil {
			return i, err
		}
		x.programs[i] = path
	}
	return -1, nil
}

func statusFor(cause error) Status {
	var ce *CancelledError
	if errors.As(cause, &ce) {
		return Cancelled
	}
	return Failed
}

func (x *run) stopped(ctx context.Context, exitCode int) Result {
	cause := x.reason(ctx)
	if cause == nil {
		cause = errors.New("stopped")
	}
	x.mu.Lock()
	left := errors.Join(x.unstopped...)
	x.mu.Unlock()
	if left != nil {
		// The run's reason says it too: its status alone would tell that
		// everything of it has stopped.
		cause = fmt.Errorf("%w; but %w", cause, left)
	}
	x.log(-1, StreamSystem, "run stopped: "+cause.Error())
	return Result{Status: statusFor(cause), Err: cause, ExitCode: exitCode}
}

func (x *run) skipFrom(i int) {
	for j := i; j < len(x.steps); j++ {
		x.setStep(j, func(s *RunStep) { s.Status = Skipped })
	}
}

// closeClients closes the run's own database session and its local
// endpoint (and with it every client session through it). It is safe to
// call more than once.
func (x *run) closeClients() {
	x.mu.Lock()
	db, px := x.dbConn, x.px
	x.dbConn, x.px = nil, nil
	x.mu.Unlock()
	if db != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = db.Close(ctx)
		cancel()
	}
	if px != nil {
		_ = px.Close()
	}
}

// release closes everything the run holds: its sessions, its files and
// its connection (the tunnel).
func (x *run) release() {
	x.closeClients()
	x.runDir.remove()
	_ = x.conn.Close()
}

// runSQL runs a SQL step on the run's database session.
func (x *run) runSQL(ctx context.Context, i int, step Step) error {
	if x.dbConn == nil {
		cfgConn, err := x.conn.Connect(ctx)
		if err != nil {
			if r := x.reason(ctx); r != nil {
				return r
			}
			return err
		}
		x.dbConn = cfgConn
		pc := cfgConn.PgConn()
		x.addBackend(Backend{PID: pc.PID(), SecretKey: pc.SecretKey(), Step: i, User: x.conn.Spec().User,
			Database: x.conn.Spec().Database, OpenedAt: time.Now().UTC()})
		if schema := x.schema(); schema != "" && !x.conn.Spec().TransactionPooled() {
			if _, err := x.dbConn.Exec(ctx, "SET search_path TO "+pgx.Identifier{schema}.Sanitize()+", public"); err != nil {
				return fmt.Errorf("set search_path: %w", err)
			}
		}
	}
	_, span := x.tracer().Start(ctx, "db.statement", trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(tracing.StatementHash.String(pg.Digest(step.SQL))))
	defer span.End()
	sql, skip := step.SQL, 0
	if schema := x.schema(); schema != "" && x.conn.Spec().TransactionPooled() {
		// Behind a pooler in transaction mode, a SET of its own may go to
		// another server connection than the step: it is sent with the
		// step, in one message, which the pooler keeps on one.
		sql, skip = "SET search_path TO "+pgx.Identifier{schema}.Sanitize()+", public;\n"+step.SQL, 1
	}
	mrr := x.dbConn.PgConn().Exec(ctx, sql)
	for n := 0; mrr.NextResult(); n++ {
		tag, err := mrr.ResultReader().Close()
		if err != nil {
			_ = mrr.Close()
			tracing.Fail(span, sqlClass(err))
			return x.sqlErr(ctx, err)
		}
		if n >= skip {
			x.log(i, StreamStdout, tag.String())
		}
	}
	if err := mrr.Close(); err != nil {
		tracing.Fail(span, sqlClass(err))
		return x.sqlErr(ctx, err)
	}
	return nil
}

// tracer is the runner's tracer, or a no-op one.
func (x *run) tracer() trace.Tracer {
	if x.r.Tracer == nil {
		return tracing.Tracer(nil)
	}
	return x.r.Tracer
}

// sqlClass names a statement's failure for a span: its SQLSTATE, never
// the message (which can quote values).
func sqlClass(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return "sqlstate " + pe.Code
	}
	return "error"
}

func (x *run) sqlErr(ctx context.Context, err error) error {
	if r := x.reason(ctx); r != nil && ctx.Err() != nil {
		if x.conn.Err() == nil && x.dbConn != nil {
			// pgx sent a CancelRequest for the statement when the run's
			// context ended (see pg.Config).
			x.mu.Lock()
			x.cancelledPIDs = append(x.cancelledPIDs, x.dbConn.PgConn().PID())
			x.mu.Unlock()
		}
		return r
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		msg := fmt.Sprintf("%s: %s (SQLSTATE %s)", pe.Severity, pe.Message, pe.Code)
		if pe.Detail != "" {
			msg += "; " + pe.Detail
		}
		return errors.New(msg)
	}
	if err := x.tunnelErr(); err != nil {
		return err
	}
	if x.dbConn != nil && x.dbConn.IsClosed() {
		// The session ended without an error from the server (e.g. a bare
		// "unexpected EOF"): say what that means.
		return fmt.Errorf("connection to the database was lost: %w: the server closed the session "+
			"(it was restarted or shut down, or the session was ended) or the network path dropped it", err)
	}
	return err
}

func (x *run) schema() string {
	if x.job.TargetSchema != "" {
		return x.job.TargetSchema
	}
	return x.conn.Spec().Schema
}

// prepareCommands starts the run's local endpoint and writes its dbt
// profile, once per run.
func (x *run) prepareCommands(ctx context.Context) error {
	if x.px != nil {
		return nil
	}
	runAs := x.r.Commands.RunAs
	rd, err := newRunDir()
	if err != nil {
		return err
	}
	dir := rd.path
	x.runDir, x.workDir = rd, dir
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fmt.Errorf("create run directory: %w", err)
	}
	// The directory stays this process's until its files are written
	// (giveRunDir, below).
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("open local endpoint: %w", err)
	}
	spec := x.conn.Spec()
	// Sessions start through a relay: it knows each backend (to cancel
	// the statements of a command that is killed), encrypts and verifies
	// the database hop per the connection's sslmode, and answers the
	// commands' TLS with a certificate of its own, which they trust as
	// their root certificate: so the connection's sslmode, verify-full
	// included, works against the local endpoint as it is.
	pol, err := relay.PolicyFor(spec)
	if err != nil {
		_ = ln.Close()
		return err
	}
	localTLS, err := relay.NewLocalTLS(spec.Host)
	if err != nil {
		_ = ln.Close()
		return err
	}
	up := relay.Upstream{Dial: x.conn.DialDatabase, TLS: pol, Addr: net.JoinHostPort(spec.Host, strconv.Itoa(spec.Port)),
		RequireAuth: spec.EffectiveRequireAuth(), Params: connection.StartupParams(spec), User: spec.User}
	x.endpoint = relay.NewRegistry(up)
	el, err := endpointLogin(x.conn)
	if err != nil {
		_ = ln.Close()
		return err
	}
	// Without a stored credential (trust, peer) authentication passes
	// through, and the commands have no password to send.
	password := ""
	var login *relay.Login
	if el != nil {
		// The commands never see the stored password or token: the
		// endpoint checks a password of the run's own and logs in with
		// the credential itself.
		if password, err = newRunPassword(); err != nil {
			_ = ln.Close()
			return err
		}
		x.localSecret = password
		login = &relay.Login{Password: secret.New(password), User: spec.User, Connect: el.LoginUpstream}
	}
	cfg := relay.Config{Upstream: up, LocalTLS: localTLS.Config, Observer: relay.Observers(x.endpoint, x),
		Logger: x.r.Logger, Login: login, Refused: x.sessionRefused}
	if el != nil && el.TokenAuth() {
		cfg.StartupTimeout = relay.LoginStartupTimeout(tokenFetchTime(spec))
	}
	rl := relay.New(cfg)
	px := proxy.New(ln, x.conn.DialDatabase, x.r.Logger, proxy.WithHandshake(rl.Handshake))
	x.mu.Lock()
	x.px = px // closeClients takes it (under mu) while px serves
	x.mu.Unlock()
	go func() { _ = px.Serve(context.WithoutCancel(ctx)) }()
	x.pxAddr = ln.Addr().String()
	epHost, port, _ := net.SplitHostPort(x.pxAddr)
	sslmode := string(spec.SSLMode)
	// With verify-full, clients check the certificate against the server's
	// real name, which the endpoint's own certificate also names: they get
	// the name as host and the endpoint as hostaddr (PGHOSTADDR, which
	// libpq also applies to dbt's connections).
	host, hostaddr := epHost, ""
	if spec.SSLMode == connection.SSLVerifyFull {
		host, hostaddr = spec.Host, epHost
	}
	rootCert := filepath.Join(dir, "root.crt")
	if err := x.writeRunFile(rootCert, localTLS.CertPEM); err != nil {
		return fmt.Errorf("write the local endpoint's certificate: %w", err)
	}
	threads := spec.Threads
	if threads <= 0 {
		threads = connection.DefaultThreads
	}
	schema := x.schema()
	if schema == "" {
		schema = "public"
	}
	profiles := ProfilesYAML(x.job.Profile, x.job.Target, host, port, spec, schema, threads, sslmode, rootCert) +
		profileComments(spec, login != nil)
	if err := x.writeRunFile(filepath.Join(dir, "profiles.yml"), []byte(profiles)); err != nil {
		return fmt.Errorf("write profiles.yml: %w", err)
	}
	if err := x.giveRunDir(dir, tmp); err != nil {
		return err
	}
	var env []string
	if runAs != nil {
		env = runAsEnv(runAs, dir, tmp)
	} else {
		env = x.r.BaseEnv
		if env == nil {
			env = childenv.Clean(os.Environ())
		}
	}
	env = append(env[:len(env):len(env)],
		"PGHOST="+host, "PGPORT="+port, "PGUSER="+spec.User, "PGPASSWORD="+password,
		"PGDATABASE="+spec.Database, "PGSSLMODE="+sslmode, "PGAPPNAME=pgrelay-run",
		"PGCONNECT_TIMEOUT=10", "DBT_PROFILES_DIR="+dir, "DBT_PROFILE="+x.job.Profile, "DBT_TARGET="+x.job.Target,
		// Channel binding cannot pass through the relay (two TLS sessions).
		"PGSSLROOTCERT="+rootCert, "PGCHANNELBINDING=disable")
	if hostaddr != "" {
		env = append(env, "PGHOSTADDR="+hostaddr)
	}
	if x.mark, err = newRunMark(); err != nil {
		return err
	}
	env = append(env, x.mark)
	if login != nil {
		// The endpoint itself asks for SCRAM (libpq 16+ refuses anything
		// else, older ones ignore it); the connection's require_auth
		// applies to the endpoint's own login to the server.
		env = append(env, "PGREQUIREAUTH=scram-sha-256")
	} else if ra := spec.EffectiveRequireAuth(); ra != "" {
		// libpq 16+ refuses what pgrelay refuses (older ones ignore it).
		env = append(env, "PGREQUIREAUTH="+ra)
	}
	if s := x.schema(); s != "" {
		// psql and other libpq clients start in the connection's schema.
		path := pgx.Identifier{s}.Sanitize() + ",public"
		// The server splits options at any white space a backslash does
		// not escape (see connection.OptionSets).
		path = strings.NewReplacer(`\`, `\\`, " ", `\ `, "\t", "\\\t", "\n", "\\\n", "\r", "\\\r",
			"\f", "\\\f", "\v", "\\\v").Replace(path)
		env = append(env, "PGOPTIONS=-c search_path="+path)
	}
	x.env = env
	how := ""
	if login != nil {
		how = fmt.Sprintf(" (it logs in to the server itself, as user %s only: PGPASSWORD is the run's own password)", spec.User)
	}
	as := ""
	if runAs != nil {
		as = fmt.Sprintf(", run as user %s", runAs.Name)
	}
	x.log(-1, StreamSystem, fmt.Sprintf("local endpoint %s for commands%s; dbt profile %q target %q in DBT_PROFILES_DIR%s",
		x.pxAddr, how, x.job.Profile, x.job.Target, as))
	return nil
}

// writeRunFile writes a new file of the run's directory, private to the
// user commands run as. The directory is still this process's alone
// (giveRunDir comes after), and the file is made anew (O_EXCL) and given
// by its descriptor, so that nothing put in its place can redirect the
// write or the change of owner to another file.
func (x *run) writeRunFile(path string, data []byte) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	if u := x.r.Commands.RunAs; u != nil {
		if err := f.Chown(int(u.UID), int(u.GID)); err != nil {
			return err
		}
	}
	_, err = f.Write(data)
	return err
}

// giveRunDir gives the run's directory and its TMPDIR to the user
// commands run as (Commands.RunAs), once every file of the run is in it:
// from then on that user may replace what the directory holds (with a
// symlink to /etc/shadow or master.key, say, from a command of another
// run), so pgrelay, which runs as root then, writes and changes the owner
// of nothing in it any more. tmp goes first, as the directory holding it
// is still this process's.
func (x *run) giveRunDir(dir, tmp string) error {
	runAs := x.r.Commands.RunAs
	if runAs == nil {
		return nil
	}
	for _, d := range []string{tmp, dir} {
		if err := os.Lchown(d, int(runAs.UID), int(runAs.GID)); err != nil {
			return fmt.Errorf("give the run directory to user %s: %w", runAs.Name, err)
		}
	}
	if x.r.onHandOver != nil {
		x.r.onHandOver(dir)
	}
	return nil
}

// runAsEnv is the environment commands run as u start from: none of this
// process's variables but PATH (absolute entries only), LANG, LC_* and TZ.
func runAsEnv(u *RunAs, runDir, tmp string) []string {
	home := u.Home
	if home == "" {
		home = runDir
	}
	var path []string
	for _, p := range filepath.SplitList(os.Getenv("PATH")) {
		if filepath.IsAbs(p) {
			path = append(path, p)
		}
	}
	if len(path) == 0 {
		path = []string{"/usr/local/bin", "/usr/bin", "/bin"}
	}
	env := []string{"PATH=" + strings.Join(path, string(filepath.ListSeparator)), "HOME=" + home,
		"USER=" + u.Name, "LOGNAME=" + u.Name, "TMPDIR=" + tmp}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if k == "LANG" || k == "TZ" || strings.HasPrefix(k, "LC_") {
			env = append(env, kv)
		}
	}
	return env
}

// ProfilesYAML renders a dbt profiles.yml for the run's local endpoint at
// host (its address, or with verify-full the server's name, the endpoint's
// address then given in PGHOSTADDR) and port. The password is read from
// PGPASSWORD by dbt, so it is never written to disk.
func ProfilesYAML(profile, target, host, port string, spec *connection.Spec, schema string, threads int, sslmode, rootCert string) string {
	q := strconv.Quote
	var b strings.Builder
	fmt.Fprintf(&b, "# Generated by pgrelay for one run; the endpoint exists only while the run lasts.\n")
	// Names quoted: dbt reads the file as YAML 1.1, where a plain yes, on,
	// off or null (valid names) is a boolean or null, not the name.
	fmt.Fprintf(&b, "%s:\n  target: %s\n  outputs:\n    %s:\n", q(profile), q(target), q(target))
	fmt.Fprintf(&b, "      type: postgres\n      host: %s\n      port: %s\n", q(host), port)
	fmt.Fprintf(&b, "      user: %s\n      password: \"{{ env_var('PGPASSWORD') }}\"\n", q(spec.User))
	fmt.Fprintf(&b, "      dbname: %s\n      schema: %s\n      threads: %d\n", q(spec.Database), q(schema), threads)
	fmt.Fprintf(&b, "      sslmode: %s\n      connect_timeout: 10\n      retries: 0\n", sslmode)
	if rootCert != "" {
		fmt.Fprintf(&b, "      sslrootcert: %s\n", q(rootCert))
	}
	return b.String()
}

// runCommand runs a command step with the run's environment, capturing its
// output line by line, and stops it when the run is stopped (SIGINT, then
// SIGTERM after InterruptGrace and SIGKILL after KillGrace, to its whole
// process group). Once the program exited, what it left in its process
// group and what carries the run's mark outside it are ended too.
func (x *run) runCommand(ctx context.Context, i int, step Step) (*int, error) {
	prog := step.Command[0]
	path := x.programs[i]
	if path == "" {
		return nil, fmt.Errorf("program %q was not vetted", prog)
	}
	// Checked again now that earlier steps ran (one may have made a
	// symlink); the directory runs with its symlinks resolved.
	dir, err := x.r.Commands.workdir(step.Workdir, false)
	if err != nil {
		return nil, err
	}
	if err := x.prepareCommands(ctx); err != nil {
		return nil, err
	}
	pol := x.r.Commands
	if dir == "" && (pol.RunAs != nil || len(pol.Workdirs) > 0) {
		// Not this process's working directory: the run's own.
		dir = x.workDir
	}
	cmd := exec.Command(path, step.Command[1:]...)
	cmd.Env = x.env
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	as := ""
	if pol.RunAs != nil {
		cmd.SysProcAttr.Credential = pol.RunAs.Credential()
		as = " as user " + pol.RunAs.Name
	}
	var wg sync.WaitGroup
	var lastErrLine string // the command's last line on stderr, once wg is done
	var pipes []io.Closer  // closed once read to the end
	if s := x.r.Stdio; s != nil {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = s.In, s.Out, s.Err
		// Copies to writers that are not files end with the program,
		// whatever it left holding them (see below).
		cmd.WaitDelay = pipeDrain
		if f, ok := s.In.(*os.File); ok && isTerminal(f) {
			// Interactive: stay in the terminal's foreground group.
			cmd.SysProcAttr.Setpgid = false
		}
	} else {
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		stderr, err := cmd.StderrPipe()
		if err != nil {
			return nil, err
		}
		pipes = []io.Closer{stdout, stderr}
		wg.Add(2)
		go func() { defer wg.Done(); x.capture(i, StreamStdout, stdout) }()
		go func() { defer wg.Done(); lastErrLine = x.capture(i, StreamStderr, stderr) }()
	}
	registered, err := controlOf(ctx).start(cmd)
	if err != nil {
		for _, p := range pipes { // closed by exec when it started and failed, not when it did not start
			_ = p.Close()
		}
		wg.Wait()
		in := ""
		if dir != "" {
			in = " in " + dir
		}
		if pol.RunAs != nil && errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("start %s (%s)%s%s: %w: user %s must be able to enter the workdir and run the program",
				prog, path, as, in, err, pol.RunAs.Name)
		}
		return nil, fmt.Errorf("start %s (%s)%s%s: %w", prog, path, as, in, err)
	}
	// Registered until its process group is known empty (below): a group
	// killed by number after that could be another's by then.
	unregister := sync.OnceFunc(registered)
	defer unregister()
	stopDone := make(chan struct{})
	// abandoned is closed when the program could not be signalled: it
	// runs on and the step no longer waits for it.
	abandoned := make(chan struct{})
	var unstoppable error // set before abandoned is closed
	go func() {
		select {
		case <-ctx.Done():
		case <-stopDone:
			return
		}
		x.log(i, StreamSystem, fmt.Sprintf("stopping %s (SIGINT; SIGTERM after %s, SIGKILL %s later)", prog,
			x.r.InterruptGrace, x.r.KillGrace))
		failed := func(err error) {
			unstoppable = fmt.Errorf("pgrelay could not stop %s (pid %d): %w%s; it is still running: end it by hand (kill -KILL %d)",
				prog, cmd.Process.Pid, err, x.signalHint(err), cmd.Process.Pid)
			x.log(i, StreamSystem, unstoppable.Error())
			close(abandoned)
		}
		if err := x.signal(cmd, syscall.SIGINT); err != nil {
			failed(err)
			return
		}
		select {
		case <-time.After(x.r.InterruptGrace):
			x.log(i, StreamSystem, fmt.Sprintf("%s still running after SIGINT: SIGTERM", prog))
			if err := x.signal(cmd, syscall.SIGTERM); err != nil {
				failed(err)
				return
			}
		case <-stopDone:
			return
		}
		select {
		case <-time.After(x.r.KillGrace):
			x.log(i, StreamSystem, fmt.Sprintf("%s still running after %s: SIGKILL", prog, x.r.KillGrace))
			if err := x.signal(cmd, syscall.SIGKILL); err != nil {
				failed(err)
			}
		case <-stopDone:
		}
	}()
	// The step ends with its program: what the program left running in
	// its process group (a child in the background) ends with it, so that
	// nothing of the step's outlives it, also the run.
	type waited struct {
		state *os.ProcessState
		err   error
	}
	exited := make(chan waited, 1)
	go func() {
		if x.r.Stdio != nil {
			// exec's own copying of the program's standard streams is
			// waited for (and bounded by WaitDelay) only by cmd.Wait.
			werr := cmd.Wait()
			var ee *exec.ExitError
			if errors.Is(werr, exec.ErrWaitDelay) || errors.As(werr, &ee) {
				werr = nil // the exit status is in the state
			}
			exited <- waited{cmd.ProcessState, werr}
			return
		}
		state, werr := cmd.Process.Wait()
		exited <- waited{state, werr}
	}()
	var w waited
	select {
	case w = <-exited:
	case <-abandoned:
		// Its output is no longer read: the run ends without it.
		for _, p := range pipes {
			_ = p.Close()
		}
		wg.Wait()
		x.mu.Lock()
		x.unstopped = append(x.unstopped, unstoppable)
		x.mu.Unlock()
		return nil, unstoppable
	}
	close(stopDone)
	state, werr := w.state, w.err
	var groupErr error
	if cmd.SysProcAttr.Setpgid {
		n, err := x.endGroup(cmd.Process.Pid)
		if n != "" {
			x.log(i, StreamSystem, fmt.Sprintf("%s exited leaving processes in its group: %s", prog, n))
		}
		if err != nil {
			groupErr = fmt.Errorf("%s exited leaving processes in its process group %d that pgrelay could not stop: %w%s; "+
				"they are still running: end them by hand (kill -KILL -- -%d)", prog, cmd.Process.Pid, err, x.signalHint(err), cmd.Process.Pid)
			x.log(i, StreamSystem, groupErr.Error())
		}
	}
	if groupErr == nil {
		unregister()
	}
	// What it started outside its group (setsid, a daemon) carries the
	// run's mark.
	if n, err := x.endMarked(); n != "" || err != nil {
		if n != "" {
			x.log(i, StreamSystem, fmt.Sprintf("%s exited leaving processes outside its process group (%s)", prog, n))
		}
		if err != nil && groupErr == nil {
			groupErr = fmt.Errorf("%s exited leaving processes outside its process group that pgrelay could not stop: %w%s; "+
				"they are still running: end them by hand", prog, err, x.signalHint(err))
			x.log(i, StreamSystem, groupErr.Error())
		}
	}
	if !waitTimeout(&wg, pipeDrain) {
		// A process outside the group (it started a session of its own)
		// holds the output open: stop reading it.
		x.log(i, StreamSystem, fmt.Sprintf("%s exited, but a process it started outside its process group still holds its output; no longer read", prog))
	}
	for _, p := range pipes {
		_ = p.Close()
	}
	wg.Wait()
	if werr != nil {
		return nil, errors.Join(fmt.Errorf("%s: wait: %w", prog, werr), groupErr)
	}
	code := state.ExitCode()
	if groupErr != nil {
		// The step did not end with its program: whatever the program
		// said, it failed.
		if ctx.Err() != nil {
			x.mu.Lock()
			x.unstopped = append(x.unstopped, groupErr)
			x.mu.Unlock()
		}
		return &code, groupErr
	}
	if ctx.Err() != nil {
		return &code, x.reason(ctx)
	}
	if !state.Success() {
		if code < 0 {
			return &code, &SignalledError{Program: prog, State: state}
		}
		// Its last words on stderr usually say why (psql: "connection
		// to server was lost").
		return &code, fmt.Errorf("%s exited with code %d%s", prog, code, lastWords(lastErrLine))
	}
	return &code, nil
}

// pipeDrain bounds how long a step waits for its output to end after its
// program (and its process group) exited.
const pipeDrain = 5 * time.Second

// groupGrace is how long processes a program left in its group have
// between SIGTERM and SIGKILL.
const groupGrace = 2 * time.Second

// endGroup ends the processes left in process group pgid once its leader
// exited: SIGTERM, then SIGKILL after groupGrace. It says what it did
// ("" when the group was empty), and returns an error when the processes
// could not be signalled (EPERM: they run as a user this process may not
// signal), which leaves them running.
func (x *run) endGroup(pgid int) (string, error) {
	err := syscall.Kill(-pgid, syscall.SIGTERM)
	switch {
	case errors.Is(err, syscall.ESRCH):
		return "", nil // none left
	case err != nil:
		return "", fmt.Errorf("SIGTERM: %w", err)
	}
	for end := time.Now().Add(groupGrace); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH) {
			return "ended them (SIGTERM)", nil
		}
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Sprintf("still there %s after SIGTERM", groupGrace), fmt.Errorf("SIGKILL: %w", err)
	}
	return fmt.Sprintf("still there %s after SIGTERM: SIGKILL", groupGrace), nil
}

// waitTimeout waits for wg, at most d; it reports whether wg finished.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// signal sends sig to the command's process group, or to the command
// alone when it runs in the terminal's group. A process (group) that is
// gone already is no error; one this process may not signal (EPERM) is.
func (x *run) signal(cmd *exec.Cmd, sig syscall.Signal) error {
	if cmd.Process == nil {
		return nil
	}
	if cmd.SysProcAttr != nil && cmd.SysProcAttr.Setpgid {
		if err := syscall.Kill(-cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("%v to process group %d: %w", sig, cmd.Process.Pid, err)
		}
		return nil
	}
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%v: %w", sig, err)
	}
	return nil
}

// signalHint says why a signal may have been refused (EPERM), or "".
func (x *run) signalHint(err error) string {
	if !errors.Is(err, syscall.EPERM) {
		return ""
	}
	if u := x.r.Commands.RunAs; u != nil {
		return fmt.Sprintf(" (signalling the processes of user %s needs pgrelay to run as root or with CAP_KILL)", u.Name)
	}
	return " (the program runs as another user, e.g. a set-user-ID program, which pgrelay may not signal)"
}

// capture reads r line by line into the log (long lines are split at
// 64 KiB) and returns the last line that was not blank, masked.
func (x *run) capture(i int, stream Stream, r io.Reader) (last string) {
	br := bufio.NewReaderSize(r, 64<<10)
	// A line longer than the buffer comes in parts, logged as pieces of
	// about maxLogLine bytes; each piece is masked with the part before
	// it and keeps its last bytes back for the next (one fewer than the
	// longest secret masked), so that a secret across two reads is still
	// masked.
	const maxLogLine = 64 << 10
	held := max(len(x.secret), len(x.localSecret)) - 1
	var pending []byte
	emit := func(b []byte, piece bool) {
		if wait := x.hooks.WaitLogRoom; wait != nil {
			wait()
		}
		text := x.mask(strings.TrimRight(string(b), "\r\n"))
		x.logLine(LogLine{Stream: stream, Step: i, Text: text, piece: piece})
		if t := strings.TrimSpace(text); t != "" && !strings.HasPrefix(t, "HINT:") && !strings.HasPrefix(t, "DETAIL:") {
			// The line that says what went wrong, not its HINT or DETAIL.
			last = text
		} else if t != "" && last == "" {
			last = text
		}
	}
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			pending = append(pending, line...)
			if len(pending) >= maxLogLine {
				masked := []byte(x.mask(string(pending)))
				keep := min(max(held, 0), len(masked))
				emit(masked[:len(masked)-keep], true)
				pending = append(pending[:0], masked[len(masked)-keep:]...)
			}
			continue
		}
		if len(pending) > 0 {
			line = append(pending, line...)
			pending = pending[:0]
		}
		if len(line) > 0 {
			emit(line, false)
		}
		if err != nil {
			return last
		}
	}
}

// lastWords formats a command's last stderr line for its failure reason:
// ": line", cut to 200 bytes, or "" when there is none.
func lastWords(line string) string {
	line = strings.TrimSpace(line)
	if line == "" {
		return ""
	}
	if len(line) > 200 {
		line = strings.ToValidUTF8(line[:200], "") + "..."
	}
	return ": " + line
}
