// Package cli is pgrelay's command line: cobra commands that parse flags,
// call the use cases in package app, and print results for people (tables,
// text) or programs (-o json, -o csv).
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/pgrelay/pgrelay/client"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/credential"
	"github.com/pgrelay/pgrelay/internal/daemon"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/postgres"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
	"github.com/pgrelay/pgrelay/internal/tracing"
)

// Version and Commit are pgrelay's version and the commit it was built
// from, set at build time (make dist):
//
//	go build -ldflags "-X github.com/pgrelay/pgrelay/internal/cli.Version=1.2.3 -X github.com/pgrelay/pgrelay/internal/cli.Commit=abc123"
//
// They are package variables only because the linker can set nothing else;
// nothing assigns them at run time.
var (
	Version = "0.2.0-dev"
	Commit  = ""
)

// Env is what a command run sees of the outside world. Tests build their own.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Getenv reads an environment variable.
	Getenv func(string) string
	// StdinIsTerminal reports whether standard input is a terminal.
	StdinIsTerminal func() bool
}

// OSEnv returns the process's environment.
func OSEnv() Env {
	return Env{
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv,
		StdinIsTerminal: func() bool { return term.IsTerminal(int(os.Stdin.Fd())) },
	}
}

// Execute runs pgrelay with args (without the program name) and returns the
// process exit code.
func Execute(ctx context.Context, env Env, args []string) int {
	r := &runner{env: env}
	root := r.rootCommand()
	root.SetArgs(args)
	// What a command does on the data dir is done by the OS user running
	// it (the audit log's actor); serve replaces it for its own work.
	ctx = audit.WithActor(ctx, audit.LocalUser())
	err := root.ExecuteContext(ctx)
	r.close()
	if err == nil {
		return 0
	}
	code := exitCode(err)
	// An error may quote a command's output or a database's message:
	// its control characters are written out (see showControls).
	fmt.Fprintln(env.Stderr, "Error: "+showControls(describe(err)+r.remoteHint(err)))
	r.printProgramStderr(err)
	return code
}

// printProgramStderr shows, after a local command's error, what a token
// program that failed wrote to stderr: only here, in the terminal of
// someone who could run it as well, never in an error message (which is
// logged, stored and sent; see credential.ProgramStderr). Through a
// server there is none to show.
func (r *runner) printProgramStderr(err error) {
	if r.remote != nil {
		return
	}
	prog, text := credential.ProgramStderr(err)
	if text == "" {
		return
	}
	fmt.Fprintf(r.env.Stderr, "%s wrote to stderr (shown only here, never stored or sent):\n", prog)
	for _, line := range strings.Split(strings.TrimRight(showControls(text), "\n"), "\n") {
		fmt.Fprintln(r.env.Stderr, "  | "+line)
	}
}

// runner holds the state of one command run.
type runner struct {
	env      Env
	dataDir  string
	logLevel string
	level    slog.Level
	logger   *slog.Logger

	// daemon holds the local use cases (see service); daemonCfg is what
	// serve and a local job run add to it before it is built.
	daemon    *daemon.Daemon
	daemonCfg daemon.Config
	// st is the store; store or pg is its concrete backend.
	st       store.Store
	store    *sqlite.Store
	pg       *postgres.Store
	storeURL string
	// server and token are --server and --token (see setupRemote).
	server, token string
	// allowInsecureHTTP is --insecure-http (see setupRemote).
	allowInsecureHTTP bool
	// remote is the API client when --server/PGRELAY_SERVER is set.
	remote backend
	// policy holds --host-key-policy, --deny-network and --allow-network.
	policy policyFlags
	// credAllow is the allowlist of credential commands (see
	// allowCredentialCommand).
	credAllow atomic.Pointer[jobs.Allowlist]
	// commandUser is the user of --run-as (nil without it): token
	// commands run as it too (see commandPolicy).
	commandUser atomic.Pointer[jobs.RunAs]
	// localProxyPolicy is set when a local command was given the command
	// flags (a local `job run --allow-command/--run-as`): its proxy
	// commands follow them (daemonCfg.SSH.ProxyCommands) instead of
	// running any program.
	localProxyPolicy bool
	// traces is the tracer provider of OTEL_EXPORTER_OTLP_* (see
	// traceProvider).
	traces *tracing.Provider
}

func (r *runner) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "pgrelay",
		Short: "Connections to PostgreSQL, AlloyDB and Lakebase, directly or through SSH bastions",
		Long: `pgrelay keeps connections to PostgreSQL-compatible warehouses (PostgreSQL, AlloyDB,
Databricks Lakebase), reaches them directly or through an SSH bastion with a key
pair it generates, pins the bastion's host key, keeps the tunnel alive, and lets
any client (psql, dbt) use it.`,
		Version:       Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if needsNoSetup(cmd) {
				return nil
			}
			if err := r.setup(); err != nil {
				return err
			}
			if err := r.setupRemote(cmd); err != nil {
				return err
			}
			return r.policy.check(cmd, r.env.Getenv, r.remote != nil)
		},
	}
	root.PersistentFlags().StringVar(&r.dataDir, "data-dir", "", "directory of the embedded store and master key (env PGRELAY_DATA_DIR; default ~/.local/share/pgrelay)")
	root.PersistentFlags().StringVar(&r.storeURL, "store", "", "store: empty for the embedded SQLite in the data dir, or postgres://user@host/db for a shared PostgreSQL store (env PGRELAY_STORE)")
	root.PersistentFlags().StringVar(&r.logLevel, "log-level", "warn", "log level on stderr: debug, info, warn or error (info adds each request and change of serve; debug also the job queue's own lines)")
	root.PersistentFlags().StringVar(&r.server, "server", "", "URL of a pgrelay server (env PGRELAY_SERVER): commands then run there instead of on the local data dir; https://, or http:// to this machine (see --insecure-http)")
	root.PersistentFlags().StringVar(&r.token, "token", "", "API token for --server (env PGRELAY_TOKEN is preferred: flag values show in the process list)")
	root.PersistentFlags().BoolVar(&r.allowInsecureHTTP, "insecure-http", false, "allow an http:// --server that is not loopback, on a network that protects the traffic itself (a service mesh's mutual TLS, a VPN) (env PGRELAY_INSECURE_HTTP=1); "+
		"without it only https:// and http:// to 127.0.0.0/8, ::1 or localhost are accepted, as every request carries the API token")
	r.policy.register(root.PersistentFlags())
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		if a := cmd.Flags().Args(); cmd.HasSubCommands() && len(a) > 0 {
			// `pgrelay conection list -o json`: the command is what is
			// wrong, not the flag after it.
			return unknownCommand(cmd, a[0])
		}
		if cmd.Name() == "exec" && strings.HasPrefix(err.Error(), "unknown ") {
			// The program's own flags: `pgrelay exec wh psql -c …`.
			return usageError{fmt.Errorf("%w: the program's arguments go after --, e.g. pgrelay exec NAME -- psql -c 'select 1'", err)}
		}
		return usageError{flagError(err)}
	})
	root.AddCommand(r.connectionCommand(), r.queryCommand(), r.proxyCommand(), r.serveCommand(), r.tokenCommand(), r.execCommand(), r.jobCommand(), r.runCommand(), r.grantsCommand(),
		r.auditCommand())
	root.AddCommand(r.opsCommands()...)
	root.AddCommand(r.sshCACommand())
	// Cobra adds its completion command only when it runs; added now, its
	// group refuses what names no shell like every other group. (Its
	// scripts go to the writer set when it is added.)
	root.SetIn(r.env.Stdin)
	root.SetOut(r.env.Stdout)
	root.SetErr(r.env.Stderr)
	root.InitDefaultCompletionCmd()
	refuseUnknownShells(root)
	groupsRefuseUnknownCommands(root)
	return root
}

// refuseUnknownShells makes `pgrelay completion SHELL` refuse a shell it
// has no script for as a usage error naming the accepted shells. (Cobra
// printed the completion command's help and exited 0.)
func refuseUnknownShells(root *cobra.Command) {
	for _, c := range root.Commands() {
		if c.Name() != "completion" {
			continue
		}
		var shells []string
		for _, sh := range c.Commands() {
			shells = append(shells, sh.Name())
			// `pgrelay completion bash extra` is a usage error too.
			sh.Args = exactArgs(0, "")
		}
		accepted := strings.Join(shells, ", ")
		if n := len(shells); n > 1 {
			accepted = strings.Join(shells[:n-1], ", ") + " and " + shells[n-1]
		}
		c.Args = cobra.ArbitraryArgs
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmd.Help()
			}
			return usagef("unsupported shell %q for %s: accepted are %s; see %s --help",
				args[0], cmd.CommandPath(), accepted, cmd.CommandPath())
		}
	}
}

// groupsRefuseUnknownCommands makes pgrelay and each of its command groups
// (connection, job, ...) refuse an argument that names none of its
// commands as a usage error; without a command they print their help.
// (Cobra printed the group's help and exited 0 for `pgrelay connection
// lsit`, and exited 1 for `pgrelay conection`.)
func groupsRefuseUnknownCommands(c *cobra.Command) {
	if !c.HasSubCommands() {
		return
	}
	if c.Run == nil && c.RunE == nil {
		c.Args = cobra.ArbitraryArgs
		c.DisableFlagsInUseLine = true
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return unknownCommand(cmd, args[0])
			}
			return cmd.Help()
		}
	}
	for _, sub := range c.Commands() {
		groupsRefuseUnknownCommands(sub)
	}
}

// unknownCommand is the usage error for an argument of a command group
// that names none of its commands, with the commands it may have meant.
func unknownCommand(group *cobra.Command, arg string) error {
	msg := fmt.Sprintf("unknown command %q for %q", arg, group.CommandPath())
	if group.SuggestionsMinimumDistance <= 0 {
		group.SuggestionsMinimumDistance = 2 // cobra's default
	}
	if s := group.SuggestionsFor(arg); len(s) > 0 {
		msg += "; did you mean " + strings.Join(s, " or ") + "?"
	}
	return usagef("%s; see %s --help", msg, group.CommandPath())
}

// needsNoSetup reports whether cmd runs without the data dir, a server or
// the connection policies, so that their settings (PGRELAY_SERVER without
// a token, a wrong PGRELAY_HOST_KEY_POLICY) cannot break it: help, shell
// completion, and a command group's own help.
func needsNoSetup(cmd *cobra.Command) bool {
	if cmd.HasSubCommands() {
		return true
	}
	for c := cmd; c != nil && c.HasParent(); c = c.Parent() {
		switch c.Name() {
		case "help", "completion", cobra.ShellCompRequestCmd, cobra.ShellCompNoDescRequestCmd:
			return c.Parent() == cmd.Root()
		}
	}
	return false
}

func (r *runner) setup() error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(r.logLevel)); err != nil {
		return usageError{fmt.Errorf("--log-level %q: accepted are debug, info, warn and error", r.logLevel)}
	}
	r.level = level
	r.logger = slog.New(slog.NewTextHandler(r.env.Stderr, &slog.HandlerOptions{Level: level}))
	if r.dataDir == "" {
		r.dataDir = defaultDataDir(r.env.Getenv)
	}
	return nil
}

// defaultDataDir is $PGRELAY_DATA_DIR, else $XDG_DATA_HOME/pgrelay, else
// ~/.local/share/pgrelay.
func defaultDataDir(getenv func(string) string) string {
	if d := getenv("PGRELAY_DATA_DIR"); d != "" {
		return d
	}
	if d := getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "pgrelay")
	}
	home := getenv("HOME")
	if home == "" {
		if h, err := os.UserHomeDir(); err == nil {
			home = h
		}
	}
	return filepath.Join(home, ".local", "share", "pgrelay")
}

// service opens the local store and keyring on first use, and builds the
// use cases on them (daemon.New, with what serve or a local job run added
// to r.daemonCfg).
func (r *runner) service(ctx context.Context) (*app.Service, error) {
	d, err := r.localDaemon(ctx)
	if err != nil {
		return nil, err
	}
	return d.App(), nil
}

// localDaemon opens the local store and keyring on first use and
// assembles the parts on them.
func (r *runner) localDaemon(ctx context.Context) (*daemon.Daemon, error) {
	if r.daemon != nil {
		return r.daemon, nil
	}
	if err := r.checkSharedMasterKey(); err != nil {
		return nil, err
	}
	st, err := r.openStore(ctx)
	if err != nil {
		return nil, err
	}
	kr, err := r.openKeyring(ctx, st, true)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	tp, err := r.traceProvider(ctx)
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	cfg := r.daemonCfg
	cfg.Store, cfg.Keyring, cfg.Logger = st, kr, r.logger
	cfg.HostKeyPolicy, cfg.Network = r.policy.policy, r.policy.network
	cfg.Credentials = app.CredentialConfig{AllowCommand: r.allowCredentialCommand, RunAs: r.commandUser.Load()}
	cfg.SSH.KnownHosts = r.policy.trust
	if cfg.HTTP == nil && !r.localProxyPolicy {
		// A local command's proxy commands run the local user's own
		// programs; serve runs only those of its command allowlist
		// (it sets cfg.SSH.ProxyCommands with cfg.HTTP).
		cfg.SSH.ProxyCommands = jobs.CommandPolicy{AnyProgram: true}
	}
	cfg.TracerProvider = tp
	d, err := daemon.New(ctx, cfg)
	if err != nil {
		_ = st.Close()
		var ce *daemon.ConfigError
		if errors.As(err, &ce) {
			return nil, usageError{ce.Err}
		}
		return nil, err
	}
	r.st, r.daemon = st, d
	return d, nil
}

// backend returns the use cases: remote through the API when a server is
// configured, else local on the data dir.
func (r *runner) backend(ctx context.Context) (backend, error) {
	if r.remote != nil {
		return r.remote, nil
	}
	return r.service(ctx)
}

func (r *runner) close() {
	if r.daemon != nil {
		ctx, cancel := context.WithTimeout(context.Background(), queue.DefaultShutdownGrace+30*time.Second)
		if err := r.daemon.Stop(ctx); err != nil {
			r.logger.Warn("job queue stop", "error", err)
		}
		cancel()
	}
	r.closeTracing()
	if r.st != nil {
		_ = r.st.Close()
	}
}

func (r *runner) out() io.Writer { return r.env.Stdout }

// usageError marks bad command-line input (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// Exit codes.
const (
	exitFailure  = 1 // the operation failed (connection, query, server)
	exitUsage    = 2 // bad input: flags, arguments, validation
	exitNotFound = 3 // the named record does not exist
	exitAuth     = 4 // the server refused the token (unknown, revoked) or its role
)

func exitCode(err error) int {
	var ue usageError
	var ve *app.ValidationError
	var ce *exitCodeError
	switch {
	case errors.As(err, &ce):
		return ce.code
	case errors.As(err, &ue), errors.As(err, &ve), errors.Is(err, app.ErrInvalid), errors.Is(err, app.ErrExists):
		return exitUsage
	case errors.Is(err, app.ErrNotFound):
		return exitNotFound
	case errors.Is(err, app.ErrUnauthenticated), errors.Is(err, client.ErrForbidden), errors.Is(err, app.ErrForbidden):
		return exitAuth
	}
	return exitFailure
}

// describe renders an error for a person; validation problems name what
// the user gives on this command line (see cliField).
func describe(err error) string {
	var ve *app.ValidationError
	if errors.As(err, &ve) {
		return ve.Format(cliField(ve.Subject))
	}
	msg := err.Error()
	if errors.Is(err, app.ErrInvalid) {
		// "invalid request" is the API's category of the error (its code
		// and exit status stay): a person reads the problem itself.
		msg = strings.TrimPrefix(msg, app.ErrInvalid.Error()+": ")
	}
	return msg
}

// cliField names a field of a validation problem in the CLI's words: a
// connection's fields are set by flags (and NAME), a token's by --name and
// --role; anything else (a job's fields, from a jobs YAML file) keeps its
// path in the file, such as jobs[0](nightly).steps[1].sql.
func cliField(subject string) func(string) string {
	switch subject {
	case fielderr.Connection:
		return flagForField
	case fielderr.Token:
		return func(field string) string { return "--" + strings.ReplaceAll(field, "_", "-") }
	}
	return func(field string) string { return field }
}

// flagError says what a flag accepts instead of the parser's own words
// (`strconv.ParseInt: parsing "5432x": invalid syntax`); the errors of
// pgrelay's own flag values already say it, and are kept.
func flagError(err error) error {
	var iv *pflag.InvalidValueError
	if !errors.As(err, &iv) {
		return err
	}
	f := iv.GetFlag()
	var num *strconv.NumError
	var what string
	switch cause := errors.Unwrap(iv); {
	case errors.As(cause, &num) && f.Value.Type() == "bool":
		what = "true or false"
	case errors.As(cause, &num) && strings.HasSuffix(f.Name, "port"):
		what = "a port number, 1 to 65535"
	case errors.As(cause, &num):
		what = "a whole number"
	case cause != nil && strings.HasPrefix(cause.Error(), "time: "):
		what = "a duration with a unit, e.g. 30s, 5m or 1h"
	default:
		return err
	}
	return fmt.Errorf("--%s %q: accepted is %s", f.Name, iv.GetValue(), what)
}

// decimalInt is an int flag value read in base 10, as the API and the web
// form read numbers: pflag's own int reads "05432" as octal (2842) and
// "0x10" as hex.
type decimalInt int

func (d *decimalInt) String() string { return strconv.Itoa(int(*d)) }

// Set reads s in base 10; a strconv.NumError says what was wrong (see
// flagError).
func (d *decimalInt) Set(s string) error {
	v, err := strconv.ParseInt(s, 10, strconv.IntSize)
	if err != nil {
		return err
	}
	*d = decimalInt(v)
	return nil
}

func (d *decimalInt) Type() string { return "int" }

// intVar defines an int flag read in base 10 (see decimalInt).
func intVar(fs *pflag.FlagSet, p *int, name string, value int, usage string) {
	*p = value
	fs.Var((*decimalInt)(p), name, usage)
}
