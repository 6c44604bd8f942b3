package cli

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/term"

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
If the tunnel drops, the program gets SIGTERM (SIGKILL 10 s later) and exec fails
with the tunnel's error. The exit code is the program's.`,
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
			job := jobs.Job{Name: "exec", Connection: args[0], Profile: profile, Target: target, TargetSchema: schema,
				Steps: []jobs.Step{{Command: args[1:], Workdir: workdir}}}
			job.ApplyDefaults() // exec itself has no time limit: the timeout is not applied
			if err := job.Validate(); err != nil {
				return err
			}
			svc, err := r.service(cmd.Context())
			if err != nil {
				return err
			}
			ctx, cancel := context.WithCancelCause(cmd.Context())
			defer cancel(nil)
			interactive := false
			if f, ok := r.env.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
				interactive = true
			}
			sigs := make(chan os.Signal, 2)
			if interactive {
				// Ctrl-C belongs to the program (psql cancels its query).
				signal.Ignore(syscall.SIGINT)
				signal.Notify(sigs, syscall.SIGTERM, syscall.SIGHUP)
			} else {
				signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
			}
			defer signal.Stop(sigs)
			go func() {
				select {
				case s := <-sigs:
					cancel(&jobs.CancelledError{By: "signal " + s.String()})
				case <-ctx.Done():
				}
			}()
			rn := &jobs.Runner{
				Open: func(ctx context.Context, name string) (jobs.Conn, error) {
					return svc.Open(ctx, name)
				},
				// The local user runs their own command, given explicitly.
				Commands: jobs.CommandPolicy{AnyProgram: true},
				Stdio:    &jobs.Stdio{In: r.env.Stdin, Out: r.env.Stdout, Err: r.env.Stderr},
				Logger:   r.logger,
			}
			svc.AuditExec(ctx, args[0], args[1:])
			res := rn.Run(ctx, job, jobs.Hooks{Log: func(l jobs.LogLine) {
				if l.Stream == "system" {
					r.logger.Debug(l.Text)
				}
			}})
			if res.Status == jobs.Succeeded {
				return nil
			}
			code := res.ExitCode
			if code <= 0 {
				code = exitFailure
			}
			return &exitCodeError{code: code, msg: res.Reason}
		},
	}
	cmd.Flags().StringVar(&profile, "profile", jobs.DefaultProfile, "dbt profile name in the generated profiles.yml")
	cmd.Flags().StringVar(&target, "target", jobs.DefaultTarget, "dbt target name in the generated profiles.yml")
	cmd.Flags().StringVar(&schema, "schema", "", "schema for the dbt profile (default: the connection's)")
	cmd.Flags().StringVar(&workdir, "workdir", "", "working directory of the program (absolute; default: the current one)")
	return cmd
}
