package cli

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/elapsed"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// authFlags are the flags of `connection create` and `connection update`
// that say where the password comes from (--auth) and what is in front of
// the database (--pooler).
type authFlags struct {
	kind                       string
	program                    string
	args                       []string
	timeout, lifetime          time.Duration
	workspaceURL, clientID     string
	clientSecretEnv            string
	clientSecretStdin          bool
	clientSecretFile           string
	instance, endpoint         string
	keyFile, keyEnv            string
	keyStdin                   bool
	scope                      string
	pooler                     string
	clientSecret, key, account string // not accepted as flag values
}

// authFlagNames are the flags that change the auth settings.
var authFlagNames = []string{"auth", "auth-program", "auth-arg", "auth-timeout", "auth-lifetime", "workspace-url", "client-id",
	"client-secret-env", "client-secret-stdin", "client-secret-file", "instance", "lakebase-endpoint",
	"service-account-key-file", "service-account-key-env", "service-account-key-stdin", "scope"}

func (f *authFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.kind, "auth", "", "where the database password comes from: password (the stored one, default), "+
		"command (a program prints a token), lakebase (Databricks OAuth machine-to-machine) or alloydb-iam (a Google service-account key); "+
		"token kinds need sslmode require or stricter")
	fl.StringVar(&f.program, "auth-program", "", "--auth command: the program that prints the token (or JSON {\"token\", \"expires_at\"}), "+
		"run without a shell; it must be allowed with --allow-command (or "+jobs.AllowCommandsEnv+") where connections are opened")
	fl.StringArrayVar(&f.args, "auth-arg", nil, "--auth command: an argument of the program (repeatable, in order)")
	fl.DurationVar(&f.timeout, "auth-timeout", 0, "--auth command: how long the program may run (default 30s)")
	fl.DurationVar(&f.lifetime, "auth-lifetime", 0, "--auth command: how long a token printed without expires_at is valid (default 15m); "+
		"--auth lakebase with --lakebase-endpoint: the credential's requested lifetime (5m to 1h, default 1h)")
	fl.StringVar(&f.workspaceURL, "workspace-url", "", "--auth lakebase: the Databricks workspace URL, e.g. https://dbc-a1b2345c-d6e7.cloud.databricks.com")
	fl.StringVar(&f.clientID, "client-id", "", "--auth lakebase: the service principal's OAuth client ID (its application ID)")
	fl.StringVar(&f.clientSecretEnv, "client-secret-env", "", "--auth lakebase: read the OAuth client secret from this environment variable")
	fl.BoolVar(&f.clientSecretStdin, "client-secret-stdin", false, "--auth lakebase: read the OAuth client secret from standard input")
	fl.StringVar(&f.clientSecretFile, "client-secret-file", "", "--auth lakebase: read the OAuth client secret from this file")
	fl.StringVar(&f.instance, "instance", "", "--auth lakebase: the database instance name (provisioned Lakebase)")
	fl.StringVar(&f.endpoint, "lakebase-endpoint", "", "--auth lakebase: the endpoint of a Lakebase project, "+
		"projects/<project>/branches/<branch>/endpoints/<endpoint> (instead of --instance)")
	fl.StringVar(&f.keyFile, "service-account-key-file", "", "--auth alloydb-iam: the service account's JSON key file")
	fl.StringVar(&f.keyEnv, "service-account-key-env", "", "--auth alloydb-iam: read the JSON key from this environment variable")
	fl.BoolVar(&f.keyStdin, "service-account-key-stdin", false, "--auth alloydb-iam: read the JSON key from standard input")
	fl.StringVar(&f.scope, "scope", "", "--auth alloydb-iam: OAuth scopes of the access token (default "+connection.DefaultAlloyDBScope+")")
	fl.StringVar(&f.pooler, "pooler", "", "the connection pooler in front of the database: none (default), "+
		"transaction (PgBouncer-style, transaction mode: pgrelay then uses no named prepared statements) or session")
	fl.StringVar(&f.clientSecret, "client-secret", "", "not accepted: see --client-secret-env, --client-secret-stdin and --client-secret-file")
	fl.StringVar(&f.key, "service-account-key", "", "not accepted: see --service-account-key-file")
	_ = fl.MarkHidden("client-secret")
	_ = fl.MarkHidden("service-account-key")
}

// apply sets the auth flags the user gave onto spec; password is whether
// a database password is given with this command line too.
func (f *authFlags) apply(cmd *cobra.Command, spec *connection.Spec, env Env, passwordStdin bool) error {
	ch := cmd.Flags().Changed
	if ch("client-secret") {
		return usagef("--client-secret: a secret is never taken as a flag value (it would show in `ps` and shell history): " +
			"use --client-secret-env VAR, --client-secret-stdin or --client-secret-file FILE")
	}
	if ch("service-account-key") {
		return usagef("--service-account-key: give the key file with --service-account-key-file FILE (or -env VAR, -stdin)")
	}
	stdins := 0
	for _, b := range []bool{passwordStdin, f.clientSecretStdin, f.keyStdin} {
		if b {
			stdins++
		}
	}
	if stdins > 1 {
		return usagef("--password-stdin, --client-secret-stdin and --service-account-key-stdin: only one may read standard input")
	}
	if ch("pooler") {
		spec.Pooler = connection.Pooler(strings.ToLower(strings.TrimSpace(f.pooler)))
		if spec.Pooler == connection.PoolerNone {
			spec.Pooler = ""
		}
	}
	if ch("auth") {
		kind := connection.AuthKind(strings.ToLower(strings.TrimSpace(f.kind)))
		switch {
		case kind == connection.AuthPassword:
			spec.Auth = nil
		case spec.Auth == nil || spec.Auth.Kind != kind:
			// Another kind: its settings start afresh.
			spec.Auth = &connection.Auth{Kind: kind}
		}
		if kind.IsToken() && !ch("sslmode") && cmd.Name() == "update" && !spec.SSLMode.Encrypts() {
			// Let the default apply; validation names sslmode if the
			// flavor's default is not strict enough.
			spec.SSLMode = ""
		}
	}
	anyAuth := false
	for _, n := range authFlagNames[1:] {
		anyAuth = anyAuth || ch(n)
	}
	if !anyAuth {
		return nil
	}
	if spec.Auth == nil {
		// Validation names the fields that password does not use.
		spec.Auth = &connection.Auth{Kind: connection.AuthPassword}
	}
	a := spec.Auth
	if ch("auth-program") {
		a.Program = f.program
	}
	if ch("auth-arg") {
		a.Args = f.args
	}
	if ch("auth-timeout") {
		a.Timeout = connection.Duration(f.timeout)
	}
	if ch("auth-lifetime") {
		a.Lifetime = connection.Duration(f.lifetime)
	}
	if ch("workspace-url") {
		a.WorkspaceURL = f.workspaceURL
	}
	if ch("client-id") {
		a.ClientID = f.clientID
	}
	if ch("instance") {
		a.Instance = f.instance
		if f.instance != "" {
			a.Endpoint = ""
		}
	}
	if ch("lakebase-endpoint") {
		a.Endpoint = f.endpoint
		if f.endpoint != "" {
			a.Instance = ""
		}
	}
	if ch("scope") {
		a.Scope = f.scope
	}
	v, err := readSecretFlag(env, "client-secret", f.clientSecretEnv, f.clientSecretStdin, f.clientSecretFile)
	if err != nil {
		return err
	}
	a.ClientSecret = v
	if v, err = readSecretFlag(env, "service-account-key", f.keyEnv, f.keyStdin, f.keyFile); err != nil {
		return err
	}
	a.ServiceAccountKey = v
	if !v.IsZero() {
		// Read from the new key.
		a.ServiceAccount = ""
	}
	return nil
}

// readSecretFlag reads a secret from --NAME-env, --NAME-stdin or
// --NAME-file (at most one); zero when none was given.
func readSecretFlag(env Env, name, envVar string, stdin bool, file string) (secret.Value, error) {
	given := 0
	for _, b := range []bool{envVar != "", stdin, file != ""} {
		if b {
			given++
		}
	}
	switch {
	case given > 1:
		return secret.Value{}, usagef("--%s-env, --%s-stdin and --%s-file: give only one", name, name, name)
	case envVar != "":
		v := env.Getenv(envVar)
		if v == "" {
			return secret.Value{}, usagef("--%s-env: environment variable %s is not set or empty", name, envVar)
		}
		return secret.New(v), nil
	case stdin:
		v, err := readSecretLine(env.Stdin)
		if err != nil {
			return secret.Value{}, usagef("--%s-stdin: %v", name, err)
		}
		return secret.New(v), nil
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return secret.Value{}, usagef("--%s-file: %v", name, err)
		}
		s := strings.TrimRight(string(b), "\r\n")
		if s == "" {
			return secret.Value{}, usagef("--%s-file: %s is empty", name, file)
		}
		return secret.New(s), nil
	}
	return secret.Value{}, nil
}

// authFlagForField names the flag of an auth field in validation errors.
func authFlagForField(field string) (string, bool) {
	rest, ok := strings.CutPrefix(field, "auth.")
	if !ok {
		return "", false
	}
	switch rest {
	case "kind":
		return "--auth", true
	case "program", "timeout", "lifetime":
		return "--auth-" + rest, true
	case "args":
		return "--auth-arg", true
	case "client_secret":
		return "--client-secret-env/--client-secret-stdin/--client-secret-file", true
	case "endpoint":
		return "--lakebase-endpoint", true
	case "service_account_key", "service_account":
		return "--service-account-key-file/--service-account-key-env/--service-account-key-stdin", true
	}
	return "--" + strings.ReplaceAll(rest, "_", "-"), true
}

// printAuth adds the auth and pooler rows of `connection show`.
func printAuth(row func(k, v string), v *app.ConnectionView, now time.Time) {
	switch v.Pooler {
	case connection.PoolerNone, "":
		row("Pooler:", "none (PostgreSQL itself)")
	default:
		row("Pooler:", fmt.Sprintf("%s mode", v.Pooler))
	}
	a := v.Auth
	if a == nil {
		row("Authentication:", "password (the stored one)")
		return
	}
	row("Authentication:", fmt.Sprintf("%s (%s)", a.Kind, a.Kind.Label()))
	switch a.Kind {
	case connection.AuthCommand:
		row("  Program:", strings.Join(append([]string{a.Program}, a.Args...), " ")+" (no shell)")
		row("  Timeout:", a.Timeout.String())
		row("  Lifetime:", a.Lifetime.String()+" (of a token printed without expires_at)")
	case connection.AuthLakebase:
		row("  Workspace:", a.WorkspaceURL)
		row("  Client ID:", a.ClientID)
		if a.Instance != "" {
			row("  Instance:", a.Instance)
		} else {
			row("  Endpoint:", a.Endpoint)
			row("  Lifetime:", a.Lifetime.String())
		}
		row("  Client secret:", setOrNot(a.HasClientSecret))
	case connection.AuthAlloyDBIAM:
		row("  Service account:", a.ServiceAccount)
		row("  Key:", setOrNot(a.HasServiceAccountKey))
		row("  Scope:", a.Scope)
	}
	t := a.Token
	switch {
	case t == nil:
		row("  Token:", "none held by this process (`pgrelay connection test "+v.Name+"` fetches one; with --server, the server's is shown)")
	case !t.ExpiresAt.IsZero() && t.ExpiresAt.After(now):
		row("  Token:", fmt.Sprintf("from %s, expires %s (in %s); refreshed from %s", t.Source,
			t.ExpiresAt.Local().Format(time.RFC3339), elapsed.Format(t.ExpiresAt.Sub(now)), t.RefreshAt.Local().Format(time.RFC3339)))
	case !t.ExpiresAt.IsZero():
		row("  Token:", fmt.Sprintf("from %s, expired %s", t.Source, t.ExpiresAt.Local().Format(time.RFC3339)))
	}
	if t != nil && t.LastError != "" {
		row("  Last failure:", fmt.Sprintf("%s: %s", t.LastErrorAt.Local().Format(time.RFC3339), t.LastError))
	}
}

func setOrNot(set bool) string {
	if set {
		return "set (encrypted at rest)"
	}
	return "not set"
}

// allowCredentialCommand vets the program of a connection's credential
// command, against the allowlist of the command steps when this process
// built one (serve, job run), else against PGRELAY_ALLOW_COMMANDS, and
// returns the absolute path the allowlist resolved it to: the program that
// runs, like a command step's.
func (r *runner) allowCredentialCommand(program string) (string, error) {
	a := r.credAllow.Load()
	if a == nil {
		list, err := jobs.NewAllowlist(jobs.ParseAllowCommands(nil, r.env.Getenv(jobs.AllowCommandsEnv)))
		if err != nil {
			return "", err
		}
		r.credAllow.CompareAndSwap(nil, list)
		a = r.credAllow.Load()
	}
	return a.Path(program)
}
