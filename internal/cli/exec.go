package cli

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/jobs"
)

// exitCodeError carries a command's own exit code through cobra.
type exitCodeError struct {
	code int
	msg  string
}

func (e *exitCodeError) Error() string { return e.msg }

func (r *runner) execCommand() *cobra.Command {
	var profile, target, schema, workdir string
	cmd := &cobra.Command{
		Use:   "exec NAME -- PROGRAM [ARGS...]",
		Short: "Run a program (dbt, psql, ...) over a connection: tunnel up, PG* env and profiles.yml set",
		Long: `Open the connection (and its SSH tunnel), start a local endpoint on 127.0.0.1 that
exists only while the program runs, and run the program with PGHOST, PGPORT, PGUSER,
PGPASSWORD, PGDATABASE, PGSSLMODE and DBT_PROFILES_DIR (a generated profiles.yml with
profile and target "pgrelay", unless --profile/--target) pointing at it.
If the tunnel drops, the program gets SIGINT (SIGTERM 5 s later, SIGKILL 10 s after
that) and exec fails with the tunnel's error; its statements are cancelled on the server. The exit code is the program's,
or 128 + the signal's number when a signal killed it (137 for SIGKILL), as a shell reports it,
or 130 when Ctrl-C (SIGINT) stopped it (128 + the signal's number for SIGTERM and SIGHUP). With a
terminal on standard input, Ctrl-C is the program's while it runs (psql cancels its statement), as
without pgrelay. While pgrelay waits for the server to stop the program's statements (after a drop),
Ctrl-C ends that wait (when Ctrl-C stopped the program, the next one); any further Ctrl-C kills the
program's process group and leaves at once.

The Go runtime is set for moving one SSH connection's data, as for pgrelay proxy:
GOGC=400 and GOMAXPROCS=1, unless those environment variables are set (the
program gets the environment as it was).

PGPASSWORD is a random password of the endpoint made for this run, never the
connection's: the endpoint logs in to the server itself for each session, as the
connection's user only, with the stored password, or with the current token for
--auth command, lakebase, alloydb-iam (fetching a fresh one as tokens near expiry).
The program never sees the stored password or a token. A connection without a
stored password (trust or peer authentication) has PGPASSWORD empty.`,
		Example: `  pgrelay exec wh -- dbt build --target pgrelay
  pgrelay exec wh -- psql -c 'select 1'
  pgrelay exec wh --profile analytics --target prod -- dbt run`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 || cmd.ArgsLenAtDash() != 1 {
				return usagef("exec needs NAME -- PROGRAM [ARGS...], e.g. pgrelay exec wh -- psql -c 'select 1'")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if r.remote != nil {
				return usagef("exec runs locally: it needs the connection's secrets, which stay on the server; run it on the server host without --server")
			}
			req := app.ExecRequest{Connection: args[0], Command: args[1:], Workdir: workdir, Profile: profile, Target: target, Schema: schema,
				Stdio: &jobs.Stdio{In: r.env.Stdin, Out: r.env.Stdout, Err: r.env.Stderr}}
			if _, err := req.Job(); err != nil {
				return execProblems(err)
			}
			if workdir != "" {
				// Checked before the tunnel is up: the start of the program
				// would fail with the program's name ("fork/exec
				// /usr/bin/psql: no such file or directory").
				if fi, err := os.Stat(workdir); err != nil || !fi.IsDir() {
					return usagef("--workdir %s: not a directory here: accepted is an existing directory, e.g. /srv/dbt/project", workdir)
				}
			}
			// The local endpoint moves the program's data: runtime
			// settings as for `pgrelay proxy` (relayRuntime).
			defer r.relayRuntime()()
			svc, err := r.service(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancelCause(cmd.Context())
			defer cancel(nil)
			control := jobs.NewControl()
			ctx = jobs.WithControl(ctx, control)
			interactive := false
			if f, ok := r.env.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				interactive = true
			}
			// A first signal stops the program; a second ends a wait
			// for the server, else kills the program and leaves.
			in := handleInterrupts(cancel, control, r.env.Stderr, "")
			defer in.stop()
			if interactive {
				// Ctrl-C belongs to the program (psql cancels its query,
				// dbt stops): pgrelay catches it and lets it go. Caught,
				// not ignored: an ignored signal stays ignored in the
				// program, which then could not be interrupted at all.
				dropped := make(chan os.Signal, 1)
				signal.Notify(dropped, syscall.SIGINT)
				defer signal.Stop(dropped)
				signal.Notify(in.sigs, syscall.SIGTERM, syscall.SIGHUP)
				// Once the program has gone, Ctrl-C is pgrelay's again:
				// it stops a wait to reach the server after a drop.
				req.Exited = func() {
					signal.Notify(in.sigs, syscall.SIGINT)
					signal.Stop(dropped)
				}
			} else {
				signal.Notify(in.sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
			}
			res, err := svc.Exec(ctx, req)
			if err != nil {
				return err
			}
			if res.Status == jobs.Succeeded {
				return nil
			}
			return execFailed(res, in.stoppedBy())
		},
	}
	cmd.Flags().StringVar(&profile, "profile", jobs.DefaultProfile, "dbt profile name in the generated profiles.yml")
	cmd.Flags().StringVar(&target, "target", jobs.DefaultTarget, "dbt target name in the generated profiles.yml")
	cmd.Flags().StringVar(&schema, "schema", "", "schema for the dbt profile (default: the connection's)")
	cmd.Flags().StringVar(&workdir, "workdir", "", "working directory of the program (absolute; default: the current one)")
	return cmd
}

// execFailed is the error of an exec that did not succeed: its exit
// status is the program's, or 128 + the signal's number when a signal
// (Ctrl-C) stopped it, as shells report it; its message is the program's
// failure (exec has no steps to number) and what to do next when pgrelay
// knows.
func execFailed(res jobs.Result, stoppedBy os.Signal) error {
	code := res.ExitCode
	if res.Status == jobs.Cancelled && stoppedBy != nil {
		code = exitStatusFor(stoppedBy)
	}
	var killed *jobs.SignalledError
	if code <= 0 && errors.As(res.Err, &killed) && killed.Signal() > 0 {
		// As a shell reports it: 137 for SIGKILL (the OOM killer's).
		code = 128 + int(killed.Signal())
	}
	if code <= 0 {
		code = exitFailure
		if errors.Is(res.Err, app.ErrNotFound) {
			// No such connection: as for query and connection test.
			code = exitNotFound
		}
	}
	msg := res.Reason
	var se *jobs.StepError
	if errors.As(res.Err, &se) && se.Step < len(res.Steps) && res.Steps[se.Step].Error != "" {
		msg = res.Steps[se.Step].Error
	}
	if res.Next != "" {
		msg += "\nNext: " + res.Next
	}
	return &exitCodeError{code: code, msg: msg}
}

// execProblems names the problems of exec's one-step job by exec's own
// arguments and flags.
func execProblems(err error) error {
	var ve *app.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	words := map[string]string{"connection": "NAME", "steps[0]": "PROGRAM", "steps[0].command": "PROGRAM",
		"steps[0].workdir": "--workdir", "profile": "--profile", "target": "--target", "target_schema": "--schema"}
	out := &app.ValidationError{Subject: "invalid exec arguments"}
	for _, p := range ve.Problems {
		if w, ok := words[p.Field]; ok {
			p.Field = w
		}
		out.Problems = append(out.Problems, p)
	}
	return out
}
