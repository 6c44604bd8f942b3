package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/pgrelay/pgrelay/apiwire"
	"github.com/pgrelay/pgrelay/client"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/daemon"
	"github.com/pgrelay/pgrelay/internal/elapsed"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/remote"
	"github.com/pgrelay/pgrelay/internal/store"
)

// jobsBackend is the set of job and run use cases the CLI calls, locally
// (app.Service) or through the API (client).
type jobsBackend interface {
	ApplyJobs(ctx context.Context, js []jobs.Job) ([]app.ApplyResult, error)
	ListJobs(ctx context.Context) ([]*app.JobView, error)
	GetJob(ctx context.Context, name string) (*app.JobView, error)
	DeleteJob(ctx context.Context, name string) error
	RunJob(ctx context.Context, name string, trigger jobs.Trigger) (*jobs.Run, error)
	ListRuns(ctx context.Context, f store.RunFilter) ([]*jobs.Run, error)
	ListRunsPage(ctx context.Context, f store.RunFilter) (*app.RunPage, error)
	GetRun(ctx context.Context, id string) (*jobs.Run, error)
	RunLog(ctx context.Context, id string, afterSeq int64, limit int) ([]jobs.LogLine, error)
	CancelRun(ctx context.Context, id, by string) (*jobs.Run, error)
}

var (
	_ jobsBackend = (*app.Service)(nil)
	_ jobsBackend = (*remote.Client)(nil)
	_ runFollower = (*remote.Client)(nil)
)

// runFollower follows a run as it happens (the API client, through the
// server's event stream) instead of polling.
type runFollower interface {
	FollowRun(ctx context.Context, id string, fn func(jobs.LogLine)) (*jobs.Run, error)
}

func (r *runner) jobs(ctx context.Context) (jobsBackend, error) {
	if r.remote != nil {
		jb, ok := r.remote.(jobsBackend)
		if !ok {
			return nil, usagef("this client does not support jobs")
		}
		return jb, nil
	}
	return r.service(ctx)
}

func (r *runner) jobCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "job",
		Short: "Define jobs (SQL and command steps over a connection) and run them",
		Long: `A job is a list of steps run over one connection: SQL steps run in-process through
the connection (and its tunnel); command steps (dbt, psql, ...) run with PGHOST/PGPORT
of a local endpoint that exists only for the run and DBT_PROFILES_DIR pointing at a
generated profiles.yml. Jobs are defined in YAML and applied with 'job apply'.`,
	}
	cmd.AddCommand(r.jobApplyCommand(), r.jobListCommand(), r.jobShowCommand(), r.jobDeleteCommand(), r.jobRunCommand())
	return cmd
}

func (r *runner) jobApplyCommand() *cobra.Command {
	var file, output string
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or update the jobs of a YAML file (idempotent; an invalid file changes nothing)",
		Example: `  pgrelay job apply -f jobs.yaml
  cat jobs.yaml | pgrelay job apply -f -`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			if file == "" {
				return usagef("-f FILE is required (use - for standard input)")
			}
			var in io.Reader = r.env.Stdin
			if file != "-" {
				f, err := os.Open(file)
				if err != nil {
					return usagef("-f: %v", err)
				}
				defer f.Close()
				in = f
			}
			js, err := jobs.ParseFile(in)
			if err != nil {
				return usageError{err}
			}
			b, err := r.jobs(cmd.Context())
			if err != nil {
				return err
			}
			res, err := b.ApplyJobs(cmd.Context(), js)
			if err != nil {
				return jobProblems(err)
			}
			if output == "json" {
				return writeJSON(r.out(), res)
			}
			for _, a := range res {
				fmt.Fprintf(r.out(), "job %s %s\n", a.Name, a.Action)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "jobs YAML file (- for standard input)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func (r *runner) jobListCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List jobs with their schedule and last run",
		Args:    exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			b, err := r.jobs(cmd.Context())
			if err != nil {
				return err
			}
			js, err := b.ListJobs(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				if js == nil {
					js = []*app.JobView{}
				}
				return writeJSON(r.out(), js)
			}
			if len(js) == 0 {
				fmt.Fprintln(r.out(), "No jobs yet. Define them in YAML and run: pgrelay job apply -f jobs.yaml")
				return nil
			}
			tw := tabwriter.NewWriter(r.out(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tCONNECTION\tSTEPS\tSCHEDULE\tNEXT RUN\tLAST RUN")
			for _, j := range js {
				sched, next, last := "-", "-", "never"
				if j.Schedule != "" {
					sched = j.Schedule
				}
				if j.NextRunAt != nil {
					next = j.NextRunAt.Local().Format("2006-01-02 15:04:05")
				}
				if lr := j.LastRun; lr != nil {
					last = fmt.Sprintf("%s %s (%s)", lr.Status, lr.QueuedAt.Local().Format("2006-01-02 15:04"), lr.ID)
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", j.Name, j.Connection, len(j.Steps), sched, next, last)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func (r *runner) jobShowCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a job (as YAML by default)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "yaml", "json"); err != nil {
				return err
			}
			b, err := r.jobs(cmd.Context())
			if err != nil {
				return err
			}
			j, err := b.GetJob(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(r.out(), j)
			}
			y, err := jobs.Marshal([]jobs.Job{j.Job})
			if err != nil {
				return err
			}
			_, err = r.out().Write(y)
			return err
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "yaml", "output format: yaml or json")
	return cmd
}

func (r *runner) jobDeleteCommand() *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a job (its runs stay in the history)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !yes && (r.env.StdinIsTerminal == nil || !r.env.StdinIsTerminal()) {
				return usagef("deleting job %s needs confirmation: add --yes", args[0])
			}
			b, err := r.jobs(cmd.Context())
			if err != nil {
				return err
			}
			if !yes {
				fmt.Fprintf(r.env.Stderr, "Delete job %q? Type the name to confirm: ", args[0])
				answer, _ := readLine(r.env.Stdin)
				if strings.TrimSpace(answer) != args[0] {
					return usagef("not deleted: confirmation did not match %q", args[0])
				}
			}
			if err := b.DeleteJob(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(r.out(), "Job %q deleted.\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "delete without asking")
	return cmd
}

func (r *runner) jobRunCommand() *cobra.Command {
	var wait, follow, raw bool
	var output string
	var logLimit int64
	var stopGrace, lostAfter time.Duration
	var cf commandFlags
	cmd := &cobra.Command{
		Use:   "run NAME",
		Short: "Run a job now (with --wait, the exit code follows the run's outcome)",
		Long: `Run a job now. Against a server (--server) the run is queued and a worker takes
it; --wait waits for it to end and --follow prints its log as it comes. Without a
server the run executes in this process, its log printed as it comes.
The log's control characters (ESC, a carriage return, ...) and bytes that
are not UTF-8 are printed written out, such as \x1b; --raw prints them as
they are (see ` + "`pgrelay run logs --help`" + `).
Exit code with --wait (and locally): 0 when the run succeeded, 1 otherwise; a local run
stopped by Ctrl-C exits with 130 (128 + the signal's number for SIGTERM and SIGHUP). While a local
run waits for the server to stop its statements (after its tunnel dropped), Ctrl-C ends
that wait (when Ctrl-C stopped the run, the next one); any further Ctrl-C kills the
run's commands and leaves at once. Against a server, Ctrl-C ends only the
wait (exit code 130): the run goes on there until ` + "`pgrelay run cancel RUN_ID`" + `.

A local run's command steps obey the same rules as the server's: only the programs
given with --allow-command (or PGRELAY_ALLOW_COMMANDS=dbt,psql) run, as the user
given with --run-as, in a workdir inside --allow-workdir; a step that breaks them
fails the run before anything starts.

A local run on a shared PostgreSQL store is registered there like a server's: the
pgrelay serve processes sharing the store declare it lost once it sent no heartbeat
for their --lost-after. Give --lost-after the value of the serve processes sharing
the store: it sets how often this process sends heartbeats (every third of it, at
most 5s) and when it stops its run whose heartbeats it could not save.`,
		Example: `  pgrelay job run nightly --allow-command dbt --allow-command psql
  PGRELAY_STORE=postgres://pgrelay@db.internal/pgrelay pgrelay job run nightly --lost-after 10s
  PGRELAY_ALLOW_COMMANDS=dbt,psql pgrelay job run nightly
  sudo pgrelay job run nightly --allow-command dbt --run-as pgrelay-jobs --allow-workdir /srv/dbt
  pgrelay job run nightly --server https://pgrelay.internal --follow`,
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			if raw && (output == "json" || (r.remote != nil && !follow)) {
				return usagef("--raw applies to the log this command prints: a local run's, or a server's run with --follow, in the text output")
			}
			if r.remote == nil {
				if stopGrace < time.Second || stopGrace > jobs.MaxStopGrace {
					return usagef("--stop-grace %s: accepted is 1s to %s (e.g. 10s)", stopGrace, jobs.MaxStopGrace)
				}
				if err := checkLostAfter(lostAfter); err != nil {
					return err
				}
				return r.runJobLocally(cmd.Context(), args[0], output, raw, logLimit, localRunTimes{stopGrace: stopGrace, lostAfter: lostAfter}, cf)
			}
			if cmd.Flags().Changed("run-log-limit") {
				return usagef("--run-log-limit applies to runs in this process: a server's runs keep the log size its pgrelay serve --run-log-limit sets")
			}
			if cmd.Flags().Changed("stop-grace") {
				return usagef("--stop-grace applies to runs in this process: a server's runs take the job's stop_grace or the server's pgrelay serve --stop-grace")
			}
			if cmd.Flags().Changed("lost-after") {
				return usagef("--lost-after applies to runs in this process: a server's runs send heartbeats as its pgrelay serve --lost-after sets")
			}
			if cf.given() {
				return usagef("--allow-command, --run-as and --allow-workdir apply to local runs: against a server, its own flags decide")
			}
			b, err := r.jobs(cmd.Context())
			if err != nil {
				return err
			}
			run, err := b.RunJob(cmd.Context(), args[0], jobs.API)
			if err != nil {
				return err
			}
			if !wait && !follow {
				if output == "json" {
					return writeJSON(r.out(), run)
				}
				fmt.Fprintf(r.out(), "Run %s of job %s queued. Follow it with: pgrelay run logs %s --follow\n", run.ID, run.JobName, run.ID)
				return nil
			}
			if output != "json" {
				fmt.Fprintf(r.env.Stderr, "Run %s of job %s queued.\n", run.ID, run.JobName)
			}
			// Ctrl-C ends the wait, not the run: it goes on on the server.
			ctx, stop := stopOnSignal(cmd.Context())
			defer stop()
			var show func(jobs.LogLine)
			if follow && output != "json" {
				show = logPrinter(r.out(), raw)
			}
			final, err := r.followRun(ctx, b, run.ID, show)
			var sig caughtSignal
			if err != nil && errors.As(context.Cause(ctx), &sig) {
				return &exitCodeError{code: exitStatusFor(sig.Signal), msg: fmt.Sprintf(
					"stopped waiting for run %s, which goes on on the server: `pgrelay run cancel %s` stops it, `pgrelay run logs %s --follow` follows it again",
					run.ID, run.ID, run.ID)}
			}
			if err != nil {
				return err
			}
			return r.runOutcome(final, output)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the run ends")
	cmd.Flags().BoolVar(&follow, "follow", false, "print the run's log as it comes (implies --wait)")
	cmd.Flags().BoolVar(&raw, "raw", false, "print the log's text as it was stored, control characters and all, rather than written out (\\x1b)")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json (the final run)")
	addRunLogLimitFlag(cmd.Flags(), &logLimit)
	addStopGraceFlag(cmd.Flags(), &stopGrace)
	cmd.Flags().DurationVar(&lostAfter, "lost-after", queue.DefaultLostAfter,
		"local runs: how long the run may go without a heartbeat before another process declares it lost; heartbeats go every third of it, at most 5s, "+
			"and on a PostgreSQL store the run is stopped once its heartbeats could not be saved for nearly this long. "+
			"Give it the value of the pgrelay serve processes sharing the store")
	cf.register(cmd)
	return cmd
}

// localRunTimes are the durations of a local run's flags.
type localRunTimes struct {
	// stopGrace is --stop-grace: the run's stop grace when its job sets
	// none.
	stopGrace time.Duration
	// lostAfter is --lost-after: it sets the run's heartbeat interval and
	// its fence, as serve's does for its runs.
	lostAfter time.Duration
}

// runOutcome prints the ended run and turns its status into the exit code.
func (r *runner) runOutcome(run *jobs.Run, output string) error {
	if output == "json" {
		if err := writeJSON(r.out(), run); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(r.out(), "Run %s %s in %s.\n", run.ID, run.Status, elapsed.FormatMS(float64(run.DurationMS(time.Now()))))
	}
	return runExit(run)
}

// runExit turns an ended run's status into the exit code of the commands
// that wait for it (job run, run logs --follow): nil when it succeeded,
// else exit code 1 with the status and the reason (a failure, a
// cancellation, the job's timeout).
func runExit(run *jobs.Run) error {
	if run.Status == jobs.Succeeded {
		return nil
	}
	return &exitCodeError{code: exitFailure, msg: fmt.Sprintf("run %s %s: %s", run.ID, run.Status, run.Reason)}
}

// runEnded says on w that a followed run succeeded, or returns its
// failure (see runExit).
func runEnded(w io.Writer, run *jobs.Run) error {
	if run.Status == jobs.Succeeded {
		fmt.Fprintf(w, "Run %s %s.\n", run.ID, run.Status)
	}
	return runExit(run)
}

// runJobLocally executes a run in this process.
func (r *runner) runJobLocally(ctx context.Context, name, output string, raw bool, logLimit int64, times localRunTimes, cf commandFlags) error {
	policy, err := r.commandPolicy(cf)
	if err != nil {
		return err
	}
	r.daemonCfg.Jobs = &daemon.JobsConfig{Commands: policy, LogLimit: logLimit, StopGrace: times.stopGrace,
		LostAfter: times.lostAfter, HeartbeatInterval: heartbeatEvery(times.lostAfter)}
	if cf.given() {
		// The run's connection may carry a proxy command, whose arguments
		// whoever saved it chose: the flags that hold the run's commands
		// hold it too (without them a local command runs any program, as
		// the user who runs pgrelay).
		r.daemonCfg.SSH.ProxyCommands, r.localProxyPolicy = policy, true
	}
	svc, err := r.service(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	control := jobs.NewControl()
	ctx = jobs.WithControl(ctx, control)
	// A first signal stops the run; a second ends a wait for the server,
	// else kills the run's commands and leaves at once.
	in := handleInterrupts(cancel, control, r.env.Stderr,
		"Stopping the run and its statements on the server (press Ctrl-C again to kill its commands and leave at once)...")
	defer in.stop()
	// SIGHUP too: the commands run in process groups of their own, so a
	// closed terminal (a dropped SSH session) reaches only pgrelay, which
	// must stop them rather than die and leave them running.
	signal.Notify(in.sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	var followErr error
	started := func(run *jobs.Run) {
		if output == "json" {
			close(done)
			return
		}
		fmt.Fprintf(r.env.Stderr, "Run %s of job %s started in this process.\n", run.ID, name)
		go func() {
			defer close(done)
			_, followErr = r.followRun(context.WithoutCancel(ctx), svc, run.ID, logPrinter(r.out(), raw))
		}()
	}
	final, err := svc.RunJobLocally(ctx, name, started)
	if err != nil {
		return err
	}
	<-done
	if followErr != nil {
		r.logger.Warn("following the log failed", "error", followErr)
	}
	err = r.runOutcome(final, output)
	var ce *exitCodeError
	if s := in.stoppedBy(); s != nil && final.Status == jobs.Cancelled && errors.As(err, &ce) {
		// Stopped by the user's Ctrl-C: exit as shells report it.
		ce.code = exitStatusFor(s)
	}
	return err
}

// followRun follows a run until it ends, giving new log lines to show
// when it is not nil: through the server's event stream when the backend
// offers it, else (locally, or when the server has no event stream) by
// polling.
func (r *runner) followRun(ctx context.Context, b jobsBackend, id string, show func(jobs.LogLine)) (*jobs.Run, error) {
	if f, ok := b.(runFollower); ok {
		run, err := f.FollowRun(ctx, id, show)
		var ce *client.Error
		if err == nil || !errors.As(err, &ce) || (ce.Status != http.StatusNotFound && ce.Status != http.StatusMethodNotAllowed) {
			return run, err
		}
		// A server without the event stream answers before any line is
		// printed: poll instead. (A missing run gets its 404 again.)
		r.logger.Debug("run event stream not available; polling", "error", err)
	}
	return r.pollRun(ctx, b, id, show)
}

// pollRun polls a run until it ends, giving new log lines to show when
// it is not nil.
func (r *runner) pollRun(ctx context.Context, b jobsBackend, id string, show func(jobs.LogLine)) (*jobs.Run, error) {
	var after int64
	for {
		run, err := b.GetRun(ctx, id)
		if err != nil {
			return nil, err
		}
		if show != nil {
			for {
				lines, err := b.RunLog(ctx, id, after, 1000)
				if err != nil {
					return nil, err
				}
				for _, l := range lines {
					show(l)
					after = l.Seq
				}
				if len(lines) < 1000 {
					break
				}
			}
		}
		if run.Status.Terminal() {
			if show != nil {
				// Lines flushed after the status changed.
				lines, _ := b.RunLog(ctx, id, after, 10000)
				for _, l := range lines {
					show(l)
				}
			}
			return run, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// logPrinter returns a function printing log lines to w (see
// printLogLine).
func logPrinter(w io.Writer, raw bool) func(jobs.LogLine) {
	return func(l jobs.LogLine) { printLogLine(w, l, raw) }
}

// printLogLine prints a log line after its time, step number and stream
// marker (! stderr, # pgrelay's own lines). Its text, which a job's
// command wrote, is printed with its control characters written out
// (see showControls), unless raw: then as it was stored.
func printLogLine(w io.Writer, l jobs.LogLine, raw bool) {
	text := l.Text
	if !raw {
		text = showControls(text)
	}
	step := "   "
	if l.Step >= 0 {
		step = fmt.Sprintf("%2d ", l.Step+1)
	}
	marker := " "
	switch l.Stream {
	case jobs.StreamStderr:
		marker = "!"
	case jobs.StreamSystem:
		marker = "#"
	}
	fmt.Fprintf(w, "%s %s%s %s\n", l.Time.Local().Format("15:04:05"), step, marker, text)
}

func (r *runner) runCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Inspect, follow and cancel job runs",
	}
	cmd.AddCommand(r.runListCommand(), r.runShowCommand(), r.runLogsCommand(), r.runCancelCommand())
	return cmd
}

func (r *runner) runListCommand() *cobra.Command {
	var output, job, status, before string
	var limit int
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List runs, newest first",
		Long: `List runs, newest first: by the time they were queued and, among runs
queued at the same instant, by ID (descending).

A page holds at most --limit runs. When there are older ones, the table
ends with the command for the next page: the same filters with --before
set to the last run listed. With -o json (a JSON array of runs), give the
last run's ID as --before for the next page; a page of fewer than --limit
runs is the last.`,
		Args: exactArgs(0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output, "table", "json"); err != nil {
				return err
			}
			if limit < 1 || limit > apiwire.MaxRunsLimit {
				// A server accepts no more; a local store would take any.
				return usagef("--limit %d: accepted is 1 to %d", limit, apiwire.MaxRunsLimit)
			}
			if cmd.Flags().Changed("before") && before == "" {
				return usagef("--before: give the ID of a run, such as the last one of the previous page")
			}
			f := store.RunFilter{Job: job, Before: before, Limit: limit}
			if status != "" {
				for _, s := range strings.Split(status, ",") {
					st := jobs.Status(strings.TrimSpace(s))
					switch st {
					case jobs.Queued, jobs.Running, jobs.Succeeded, jobs.Failed, jobs.Cancelled:
					default:
						return usagef("--status %q: accepted are queued, running, succeeded, failed, cancelled (comma-separated)", s)
					}
					f.Statuses = append(f.Statuses, st)
				}
			}
			b, err := r.jobs(cmd.Context())
			if err != nil {
				return err
			}
			page, err := b.ListRunsPage(cmd.Context(), f)
			if err != nil {
				return beforeProblem(err, before)
			}
			runs := page.Runs
			if output == "json" {
				if runs == nil {
					runs = []*jobs.Run{}
				}
				return writeJSON(r.out(), runs)
			}
			tw := tabwriter.NewWriter(r.out(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tJOB\tTRIGGER\tSTATUS\tQUEUED\tDURATION\tREASON")
			now := time.Now()
			for _, run := range runs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", run.ID, run.JobName, run.Trigger, run.Status,
					run.QueuedAt.Local().Format("2006-01-02 15:04:05"), runListDuration(run, now), reasonCell(run.Reason))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if page.NextBefore != "" {
				fmt.Fprintf(r.out(), "\nOlder runs: %s\n", nextRunsPage(cmd, page.NextBefore))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	cmd.Flags().StringVar(&job, "job", "", "only this job's runs")
	cmd.Flags().StringVar(&status, "status", "", "only runs with these statuses (comma-separated)")
	cmd.Flags().StringVar(&before, "before", "", "only runs older than the run with this ID (the next page after it)")
	intVar(cmd.Flags(), &limit, "limit", 50, "at most this many runs")
	return cmd
}

// nextRunsPage is the `run list` command line of the page after the run
// with ID next: the flags given that choose the runs and where they are
// read, with --before next. --store and --token are left out, as their
// values may be secrets (the environment is the place for those).
func nextRunsPage(cmd *cobra.Command, next string) string {
	args := []string{"pgrelay", "run", "list"}
	for _, name := range []string{"data-dir", "server", "insecure-http", "job", "status", "limit"} {
		f := cmd.Flags().Lookup(name)
		switch {
		case f == nil || !f.Changed:
		case f.Value.Type() == "bool":
			args = append(args, "--"+name+"="+f.Value.String())
		default:
			args = append(args, "--"+name, f.Value.String())
		}
	}
	return quoteArgs(append(args, "--before", next))
}

// beforeProblem makes a validation problem of the field "before" (a
// --before naming no run, found locally or by the server) a usage error
// naming the flag.
func beforeProblem(err error, before string) error {
	var ve *app.ValidationError
	if errors.As(err, &ve) {
		if _, ok := ve.Fields()["before"]; ok {
			return usagef("--before %q: no run has this ID: give the ID of a run, such as the last one of the previous page", before)
		}
	}
	return err
}

// reasonCell is a run's reason as `run list` shows it: cut to 80 bytes
// (between characters) and, as it may quote a command's last words, with
// its control characters written out (see cellText).
func reasonCell(reason string) string {
	if len(reason) > 80 {
		n := 77
		for n > 0 && !utf8.RuneStart(reason[n]) {
			n--
		}
		reason = reason[:n] + "..."
	}
	return cellText(reason)
}

func (r *runner) runShowCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "show RUN_ID",
		Short: "Show a run and its steps",
		Args:  exactArgs(1, "RUN_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output, "text", "json"); err != nil {
				return err
			}
			b, err := r.jobs(cmd.Context())
			if err != nil {
				return err
			}
			run, err := b.GetRun(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if output == "json" {
				return writeJSON(r.out(), run)
			}
			fmt.Fprintf(r.out(), "Run %s of job %s (%s, attempt %d)\nStatus: %s\n", run.ID, run.JobName, run.Trigger, run.Attempt, run.Status)
			if run.Reason != "" {
				// It may quote a command's last words: written out.
				fmt.Fprintf(r.out(), "Reason: %s\n", showControls(run.Reason))
			}
			if run.CancelRequested && run.Status != jobs.Cancelled {
				// A cancel is being acted on, or came after the run's end.
				what := "requested, not acted on yet"
				if run.Status.Terminal() {
					what = "requested too late: the run had ended (see run logs)"
				}
				fmt.Fprintf(r.out(), "Cancel: %s\n", what)
			}
			if run.Worker != "" {
				fmt.Fprintf(r.out(), "Worker: %s\n", run.Worker)
			}
			fmt.Fprintf(r.out(), "Queued: %s\n", run.QueuedAt.Local().Format(time.RFC3339))
			if run.StartedAt != nil {
				fmt.Fprintf(r.out(), "Duration: %s\n", elapsed.FormatMS(float64(run.DurationMS(time.Now()))))
			}
			if c := run.Cleanup; c != nil {
				fmt.Fprintf(r.out(), "Cleanup: %s: %s\n", c.Status, showControls(c.Message))
			}
			tw := tabwriter.NewWriter(r.out(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "\nSTEP\tKIND\tSTATUS\tEXIT\tDURATION\tLABEL")
			for _, s := range run.Steps {
				exit := "-"
				if s.ExitCode != nil {
					exit = fmt.Sprint(*s.ExitCode)
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", s.Index+1, s.Kind, s.Status, exit, stepDuration(s), cellText(s.Label))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
}

func (r *runner) runLogsCommand() *cobra.Command {
	var follow, raw bool
	cmd := &cobra.Command{
		Use:   "logs RUN_ID",
		Short: "Print a run's log (--follow: until the run ends, exiting with its outcome)",
		Long: `Print a run's log, one line per line of output: its time (in this machine's zone;
the web UI shows UTC), the step's number, a marker (! for stderr, # for pgrelay's
own lines) and the text. Without --follow, print it as far as it goes, whether the
run has ended or not; the exit code is 0 once the log is printed. With --follow,
keep printing until the run ends, then exit as job run --wait does: 0 when the run
succeeded, 1 when it failed, was cancelled or timed out (the reason on stderr).

The text is what the job's steps printed, which an editor of the job decides.
So that it cannot act on your terminal (rewrite lines, set the window title,
write the clipboard), its control characters are written out in Go's escape
syntax: ESC and the other C0 controls (but newline and tab) and DEL as \xNN
(ESC is \x1b), a carriage return as \r (but before a newline), C1 controls as
\u0080 to \u009f, and bytes that are not UTF-8 as \xNN. Backslashes are left as
they are, so the text \x1b and an ESC look alike here: --raw prints the text as
it was stored, for a file or a program that wants the exact bytes. (Through a
server, bytes that are not UTF-8 arrive as U+FFFD, as JSON carries text.)`,
		Example: `  pgrelay run logs RUN_ID
  pgrelay run logs RUN_ID --follow && echo "the run succeeded"
  pgrelay run logs RUN_ID --raw > run.log`,
		Args: exactArgs(1, "RUN_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := r.jobs(cmd.Context())
			if err != nil {
				return err
			}
			show := logPrinter(r.out(), raw)
			if follow {
				run, err := r.followRun(cmd.Context(), b, args[0], show)
				if err != nil {
					return err
				}
				return runEnded(r.env.Stderr, run)
			}
			var after int64
			for {
				lines, err := b.RunLog(cmd.Context(), args[0], after, 1000)
				if err != nil {
					return err
				}
				for _, l := range lines {
					show(l)
					after = l.Seq
				}
				if len(lines) < 1000 {
					return nil
				}
			}
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing until the run ends")
	cmd.Flags().BoolVar(&raw, "raw", false, "print the text as it was stored, control characters and all, rather than written out (\\x1b)")
	return cmd
}

func (r *runner) runCancelCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel RUN_ID",
		Short: "Cancel a queued or running run (commands get SIGINT, then SIGTERM and SIGKILL)",
		Args:  exactArgs(1, "RUN_ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := r.jobs(cmd.Context())
			if err != nil {
				return err
			}
			by := "the CLI"
			if u := r.env.Getenv("USER"); u != "" {
				by = u
			}
			run, err := b.CancelRun(cmd.Context(), args[0], by)
			if err != nil {
				return err
			}
			if run.Status == jobs.Cancelled {
				fmt.Fprintf(r.out(), "Run %s cancelled.\n", run.ID)
			} else {
				fmt.Fprintf(r.out(), "Cancel of run %s requested; its worker stops it.\n", run.ID)
			}
			return nil
		},
	}
}

// jobProblems marks the validation problems in err as a job's, when a
// server's answer, which does not say, left their subject empty (as
// connectionProblems does for connections): "invalid job: jobs[0](x)...",
// locally and remotely alike.
func jobProblems(err error) error {
	var ve *app.ValidationError
	if errors.As(err, &ve) && ve.Subject == "" {
		ve.Subject = fielderr.Job
	}
	return err
}
