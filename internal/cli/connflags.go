package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// flagForField names the flag (or argument) that sets a spec field, as
// named in validation errors.
func flagForField(field string) string {
	switch field {
	case "name":
		return "NAME"
	case "password":
		return "--password-env/--password-stdin"
	case "ssl_root_cert":
		return "--ssl-root-cert"
	case "fingerprint":
		return "--fingerprint"
	}
	if f, ok := authFlagForField(field); ok {
		return f
	}
	if rest, ok := strings.CutPrefix(field, "ssh_tunnel."); ok {
		switch rest {
		case "host_authorities":
			return "--ssh-host-authority"
		}
		return "--ssh-" + strings.ReplaceAll(rest, "_", "-")
	}
	if rest, ok := strings.CutPrefix(field, "ssh_hops."); ok {
		n, sub, _ := strings.Cut(rest, ".")
		if i, err := strconv.Atoi(n); err == nil {
			if sub == "known_host" {
				return fmt.Sprintf("--ssh-hop-known-host %d=...", i+1)
			}
			if sub == "own_key" {
				return "--ssh-hop-own-key"
			}
			return fmt.Sprintf("--ssh-hop (hop %d) %s", i+1, sub)
		}
		return "--ssh-hop"
	}
	return "--" + strings.ReplaceAll(field, "_", "-")
}

// connFlags are the flags of `connection create` and `connection update`.
type connFlags struct {
	flavor, host, database, user       string
	port                               int
	passwordEnv                        string
	passwordStdin                      bool
	passwordFlag                       string
	sslMode, sslRootCert, schema, role string
	requireAuth                        string
	threads                            int
	healthCheckInterval                time.Duration
	sshHost, sshUser, sshKeyType       string
	sshPort                            int
	sshKeepaliveInterval               time.Duration
	sshKeepaliveCountMax               int
	noSSHTunnel                        bool
	sshKnownHost                       []string
	// hops are the flags of chains of hops, proxy commands, certificate
	// logins and host authorities (hops.go).
	hops hopFlags
}

func (f *connFlags) register(cmd *cobra.Command, update bool) {
	fl := cmd.Flags()
	fl.StringVar(&f.flavor, "flavor", "", "server kind: postgres, alloydb or lakebase (default postgres)")
	fl.StringVar(&f.host, "host", "", "database host: DNS name, IPv4 or IPv6 address (as seen from the bastion when tunnelled)")
	intVar(fl, &f.port, "port", 0, "database port (default 5432)")
	fl.StringVar(&f.database, "database", "", "database name, e.g. analytics (Lakebase: databricks_postgres)")
	fl.StringVar(&f.user, "user", "", "database user")
	fl.StringVar(&f.passwordEnv, "password-env", "", "read the database password from this environment variable")
	fl.BoolVar(&f.passwordStdin, "password-stdin", false, "read the database password from standard input")
	fl.StringVar(&f.passwordFlag, "password", "", "not accepted: see --password-env and --password-stdin")
	_ = fl.MarkHidden("password")
	fl.StringVar(&f.sslMode, "sslmode", "", "disable, allow, prefer, require, verify-ca or verify-full (default prefer; require for alloydb and lakebase)")
	fl.StringVar(&f.requireAuth, "require-auth", "",
		"authentication methods to accept from the server, as libpq 16's require_auth: e.g. scram-sha-256, or !password,!md5; "+
			"\"\" is the default: any method except a clear-text password unless the server certificate is verified (verify-ca, verify-full)")
	fl.StringVar(&f.sslRootCert, "ssl-root-cert", "", "PEM file of the CA that signed the server certificate (verify-ca, verify-full)")
	fl.StringVar(&f.schema, "schema", "", "default schema (dbt target schema)")
	fl.StringVar(&f.role, "role", "", "a role every session acts as, set at login (current_user is the role, session_user the user; \"\" removes it)")
	intVar(fl, &f.threads, "threads", 0, "dbt threads (default 4)")
	fl.DurationVar(&f.healthCheckInterval, "health-check-interval", 0,
		"how often pgrelay serve tests the connection on its own and records it in the connection's health (e.g. 15m; 10s to 168h); 0, the default, never")
	fl.StringVar(&f.sshHost, "ssh-host", "", "SSH bastion host; setting it enables the SSH tunnel")
	intVar(fl, &f.sshPort, "ssh-port", 0, "SSH bastion port (default 22)")
	fl.StringVar(&f.sshUser, "ssh-user", "", "user on the SSH bastion")
	fl.StringVar(&f.sshKeyType, "ssh-key-type", "", "key pair to generate: ed25519 (default) or rsa (3072 bits, SHA-2 signatures)")
	fl.DurationVar(&f.sshKeepaliveInterval, "ssh-keepalive-interval", 0, "time between keepalives to the bastion (default 30s)")
	intVar(fl, &f.sshKeepaliveCountMax, "ssh-keepalive-count-max", 0, "missed keepalive replies before the tunnel counts as dropped (default 10)")
	fl.StringArrayVar(&f.sshKnownHost, "ssh-known-host", nil, "the bastion's host key, pinned at once instead of trusting "+
		"the first key it presents: \"ssh-ed25519 AAAA...\" (its /etc/ssh/ssh_host_*_key.pub) or a known_hosts line "+
		"\"host ssh-ed25519 AAAA...\" / \"[host]:port ...\"; repeat for several keys, or @FILE to read them from a file")
	f.hops.register(cmd)
	if update {
		fl.BoolVar(&f.noSSHTunnel, "no-ssh-tunnel", false, "remove the SSH tunnel (and its key pair): connect directly")
	}
}

// apply sets the flags the user gave onto spec.
func (f *connFlags) apply(cmd *cobra.Command, spec *connection.Spec) error {
	ch := cmd.Flags().Changed
	if ch("flavor") {
		spec.Flavor = connection.Flavor(strings.ToLower(f.flavor))
		if !ch("sslmode") && cmd.Name() == "update" {
			// Let the new flavor's default apply unless the user chose one.
			spec.SSLMode = ""
		}
	}
	if ch("host") {
		spec.Host = f.host
	}
	if ch("port") {
		if f.port == 0 {
			return usagef("--port 0: accepted is 1 to 65535 (leave --port out for 5432)")
		}
		spec.Port = f.port
	}
	if ch("database") {
		spec.Database = f.database
	}
	if ch("user") {
		spec.User = f.user
	}
	if ch("sslmode") {
		spec.SSLMode = connection.SSLMode(strings.ToLower(f.sslMode))
	}
	if ch("require-auth") {
		spec.RequireAuth = strings.TrimSpace(f.requireAuth)
	}
	if ch("ssl-root-cert") {
		if f.sslRootCert == "" {
			spec.SSLRootCert = ""
		} else {
			b, err := os.ReadFile(f.sslRootCert)
			if err != nil {
				return usagef("--ssl-root-cert: %v", err)
			}
			spec.SSLRootCert = string(b)
		}
	}
	if ch("schema") {
		spec.Schema = f.schema
	}
	if ch("role") {
		spec.Role = f.role
	}
	if ch("health-check-interval") {
		spec.HealthCheckInterval = connection.Duration(f.healthCheckInterval)
	}
	if ch("threads") {
		if f.threads == 0 {
			return usagef("--threads 0: accepted is 1 to %d (leave --threads out for %d)", connection.MaxThreads, connection.DefaultThreads)
		}
		spec.Threads = f.threads
	}
	if f.noSSHTunnel {
		for _, n := range append([]string{"ssh-host", "ssh-port", "ssh-user", "ssh-key-type", "ssh-keepalive-interval", "ssh-keepalive-count-max", "ssh-known-host"}, hopFlagNames()...) {
			if ch(n) {
				return usagef("--no-ssh-tunnel cannot be combined with --%s", n)
			}
		}
		spec.Tunnel = nil
		return nil
	}
	if err := f.hops.apply(cmd, spec); err != nil {
		return err
	}
	anySSH := false
	for _, n := range []string{"ssh-host", "ssh-port", "ssh-user", "ssh-key-type", "ssh-keepalive-interval", "ssh-keepalive-count-max", "ssh-known-host"} {
		anySSH = anySSH || ch(n)
	}
	if !anySSH {
		return nil
	}
	if spec.Tunnel == nil {
		spec.Tunnel = &connection.Tunnel{}
	}
	t := spec.Tunnel
	if ch("ssh-host") {
		t.Host = f.sshHost
	}
	if ch("ssh-port") {
		if f.sshPort == 0 {
			return usagef("--ssh-port 0: accepted is 1 to 65535 (leave --ssh-port out for 22)")
		}
		t.Port = f.sshPort
	}
	if ch("ssh-user") {
		t.User = f.sshUser
	}
	if ch("ssh-key-type") {
		t.KeyType = strings.ToLower(f.sshKeyType)
	}
	if ch("ssh-keepalive-interval") {
		if f.sshKeepaliveInterval == 0 {
			return usagef("--ssh-keepalive-interval 0s: accepted is %s to %s (leave it out for %s)", connection.MinKeepalive,
				connection.MaxKeepalive, connection.DefaultKeepaliveInterval)
		}
		t.KeepaliveInterval = connection.Duration(f.sshKeepaliveInterval)
	}
	if ch("ssh-keepalive-count-max") {
		if f.sshKeepaliveCountMax == 0 {
			return usagef("--ssh-keepalive-count-max 0: accepted is 1 to %d (leave it out for %d)", connection.MaxKeepaliveMax,
				connection.DefaultKeepaliveCountMax)
		}
		t.KeepaliveCountMax = f.sshKeepaliveCountMax
	}
	if ch("ssh-known-host") {
		known, err := readKnownHostFlag("--ssh-known-host", f.sshKnownHost)
		if err != nil {
			return err
		}
		t.KnownHost = known
	}
	return nil
}

// readKnownHostFlag joins the values of --ssh-known-host, one key per line;
// a value @FILE is replaced by the file's contents (a .pub file, or
// known_hosts lines such as the output of ssh-keyscan). An empty value is
// refused: the keys pinned are kept unless new ones are given.
func readKnownHostFlag(flag string, values []string) (string, error) {
	var lines []string
	for _, v := range values {
		if name, ok := strings.CutPrefix(v, "@"); ok {
			b, err := os.ReadFile(name)
			if err != nil {
				return "", usagef("%s: %v", flag, err)
			}
			v = string(b)
		}
		if strings.TrimSpace(v) == "" {
			return "", usagef("%s: empty: give the bastion's host key, e.g. \"ssh-ed25519 AAAA...\" or @/path/to/ssh_host_ed25519_key.pub", flag)
		}
		lines = append(lines, strings.TrimSpace(v))
	}
	return strings.Join(lines, "\n"), nil
}

// password reads the password from --password-env or --password-stdin;
// nil when neither was given.
func (f *connFlags) password(env Env) (*secret.Value, error) {
	if f.passwordFlag != "" {
		return nil, usagef("--password: a password is never taken as a flag value (it would show in `ps` and shell history): use --password-env VAR or --password-stdin")
	}
	if f.passwordEnv != "" && f.passwordStdin {
		return nil, usagef("--password-env and --password-stdin: give only one")
	}
	if f.passwordEnv != "" {
		v := env.Getenv(f.passwordEnv)
		if v == "" {
			return nil, usagef("--password-env: environment variable %s is not set or empty", f.passwordEnv)
		}
		pw := secret.New(v)
		return &pw, nil
	}
	if f.passwordStdin {
		v, err := readSecretLine(env.Stdin)
		if err != nil {
			return nil, usagef("--password-stdin: %v", err)
		}
		pw := secret.New(v)
		return &pw, nil
	}
	return nil, nil
}

// readSecretLine reads standard input up to EOF (at most 64 KiB) and drops
// one trailing newline.
func readSecretLine(r io.Reader) (string, error) {
	if r == nil {
		return "", fmt.Errorf("no standard input")
	}
	b, err := io.ReadAll(io.LimitReader(bufio.NewReader(r), 64<<10))
	if err != nil {
		return "", fmt.Errorf("read standard input: %w", err)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if s == "" {
		return "", fmt.Errorf("standard input is empty")
	}
	return s, nil
}

// connectionProblems marks the validation problems in err as a
// connection's (named by flags), when a server's answer, which does not
// say, left their subject empty. It returns err.
func connectionProblems(err error) error {
	var ve *app.ValidationError
	if errors.As(err, &ve) && ve.Subject == "" {
		ve.Subject = fielderr.Connection
	}
	return err
}

// inFlagWords rewrites the problems of err whose fix is another flag in
// the words of this command line: "db:5432" given to --host is answered
// with --host db --port 5432, not with the API's fields.
func (f *connFlags) inFlagWords(cmd *cobra.Command, err error) error {
	var ve *app.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	connectionProblems(err)
	for i, p := range ve.Problems {
		switch {
		case p.Field == "host" && cmd.Flags().Changed("host"):
			if host, port, ok := splitPortFlag(f.host); ok {
				ve.Problems[i].Problem = fmt.Sprintf("%q includes a port: give the host and the port apart, as --host %s --port %s",
					f.host, host, port)
			}
		case p.Field == "ssh_tunnel.host" && cmd.Flags().Changed("ssh-host"):
			if host, port, ok := splitPortFlag(f.sshHost); ok {
				ve.Problems[i].Problem = fmt.Sprintf("%q includes a port: give the host and the port apart, as --ssh-host %s --ssh-port %s",
					f.sshHost, host, port)
			}
		case strings.HasPrefix(p.Field, "auth."):
			// "give auth.instance or auth.endpoint": the flags.
			ve.Problems[i].Problem = authFieldRE.ReplaceAllStringFunc(p.Problem, func(field string) string {
				flag, _ := authFlagForField(field)
				return flag
			})
		}
	}
	return err
}

// authFieldRE matches the auth fields an auth problem names as the fix.
var authFieldRE = regexp.MustCompile(`\bauth\.[a-z_]+\b`)

// splitPortFlag splits "host:port" (a name or IPv4 address and a port
// number); ok is false for anything else, such as an IPv6 address.
func splitPortFlag(v string) (host, port string, ok bool) {
	host, port, found := strings.Cut(v, ":")
	if !found || host == "" || strings.Contains(port, ":") {
		return "", "", false
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return "", "", false
	}
	return host, port, true
}
