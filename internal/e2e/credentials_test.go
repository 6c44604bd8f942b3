package e2e_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/credential/credentialtest"
	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// tokenServers are a PostgreSQL that only accepts TLS and asks the token
// roles for their password in clear text (as Lakebase and AlloyDB do),
// and the local Databricks and Google token servers that rotate them.
type tokenServers struct {
	pg     *testenv.Postgres
	caFile string
	db     *credentialtest.Databricks
	google *credentialtest.Google
	// env is a pgrelay process's environment: its own data dir, and the
	// token servers' certificate as SSL_CERT_FILE.
	env []string

	mu     sync.Mutex
	issued []string
}

func startTokenServers(t *testing.T) *tokenServers {
	t.Helper()
	s := &tokenServers{}
	// A cluster of the test's own: the roles have fixed names (the token
	// issuers' principals) whose passwords the issuers rotate.
	s.pg = testenv.StartPostgres(t, testenv.PostgresOptions{SSLOnly: true, HBA: []string{
		"hostssl all lake_sp 127.0.0.1/32 password", `hostssl all "etl@proj.iam" 127.0.0.1/32 password`}})
	for _, r := range []string{"lake_sp", "etl@proj.iam", "rotor"} {
		s.pg.CreateRole(t, r, "initial-"+credentialtest.RandomToken())
	}
	super := s.pg.ConnString(s.pg.SuperUser, s.pg.SuperPassword, "postgres")
	record := func(issue credentialtest.IssueFunc) credentialtest.IssueFunc {
		return func(ctx context.Context, life time.Duration) (string, error) {
			tok, err := issue(ctx, life)
			if err == nil {
				s.mu.Lock()
				s.issued = append(s.issued, tok)
				s.mu.Unlock()
			}
			return tok, err
		}
	}
	s.db = credentialtest.NewDatabricks(t, record(credentialtest.Rotator(super, "lake_sp")))
	s.google = credentialtest.NewGoogle(t, record(credentialtest.Rotator(super, "etl@proj.iam")))
	dir := t.TempDir()
	certs := filepath.Join(dir, "token-servers.pem")
	pem := append(credentialtest.CertPEM(s.db.Srv), credentialtest.CertPEM(s.google.Srv)...)
	if err := os.WriteFile(certs, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	s.caFile = filepath.Join(dir, "pg-ca.pem")
	if err := os.WriteFile(s.caFile, s.pg.CAPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	s.env = e2etest.ProcessEnv("PGRELAY_DATA_DIR="+filepath.Join(dir, "data"), "PGRELAY_MASTER_KEY="+e2etest.NewMasterKey(),
		"SSL_CERT_FILE="+certs)
	return s
}

func (s *tokenServers) tokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.issued...)
}

// pgrelay runs the binary with extra environment and returns its output;
// code is the exit code expected.
func (s *tokenServers) pgrelay(t *testing.T, code int, extra []string, args ...string) string {
	t.Helper()
	r, err := e2etest.Run(binary, append(append([]string(nil), s.env...), extra...), nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	if r.Code != code {
		t.Fatalf("pgrelay %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.Code, code, r.Stdout, r.Stderr)
	}
	return r.Stdout + r.Stderr
}

// TestTokenSourcesThroughTheCLI: Lakebase and AlloyDB IAM connections
// made with `connection create --auth ...`, the secrets read from the
// environment and a file: `connection test`, `query`, `job run` and
// `exec` work as the pgrelay binary runs them, `connection show` names
// the source, and no token or secret shows in any output. A wrong client
// secret fails `connection test` at the credential step with its fix.
func TestTokenSourcesThroughTheCLI(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		t.Skip("psql not installed")
	}
	t.Parallel()
	s := startTokenServers(t)
	port := strconv.Itoa(s.pg.Port)
	common := []string{"--host", s.pg.Host, "--port", port, "--database", "postgres", "--sslmode", "verify-full", "--ssl-root-cert", s.caFile}
	secretEnv := []string{"LB_SECRET=" + s.db.ClientSecret, "BAD_SECRET=wrong-secret-0c1d"}
	s.pgrelay(t, 0, secretEnv, append([]string{"connection", "create", "lb", "--flavor", "lakebase", "--user", "lake_sp",
		"--auth", "lakebase", "--workspace-url", s.db.Srv.URL, "--client-id", s.db.ClientID, "--client-secret-env", "LB_SECRET",
		"--instance", s.db.Instance, "--pooler", "session"}, common...)...)
	keyFile := filepath.Join(t.TempDir(), "key.json")
	key := s.google.NewKey(t, "etl@proj.iam.gserviceaccount.com", true)
	if err := os.WriteFile(keyFile, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	s.pgrelay(t, 0, nil, append([]string{"connection", "create", "ad", "--flavor", "alloydb", "--user", "etl@proj.iam",
		"--auth", "alloydb-iam", "--service-account-key-file", keyFile}, common...)...)
	s.pgrelay(t, 0, secretEnv, append([]string{"connection", "create", "bad", "--flavor", "lakebase", "--user", "lake_sp",
		"--auth", "lakebase", "--workspace-url", s.db.Srv.URL, "--client-id", s.db.ClientID, "--client-secret-env", "BAD_SECRET",
		"--instance", s.db.Instance}, common...)...)

	jobsFile := filepath.Join(t.TempDir(), "jobs.yml")
	if err := os.WriteFile(jobsFile, []byte(`jobs:
  - name: lb-job
    connection: lb
    steps:
      - sql: SELECT 1
      - command: [psql, -XAtc, "select 'job as ' || current_user"]
  - name: ad-job
    connection: ad
    steps:
      - command: [psql, -XAtc, "select 'job as ' || current_user"]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	s.pgrelay(t, 0, nil, "job", "apply", "-f", jobsFile)

	var out strings.Builder
	for _, c := range []struct{ name, user, source string }{{"lb", "lake_sp", "lakebase"}, {"ad", "etl@proj.iam", "alloydb-iam"}} {
		o := s.pgrelay(t, 0, nil, "connection", "test", c.name)
		if !strings.Contains(o, "credential") {
			t.Fatalf("connection test %s:\n%s", c.name, o)
		}
		out.WriteString(o)
		o = s.pgrelay(t, 0, nil, "query", c.name, "select current_user")
		if !strings.Contains(o, c.user) {
			t.Fatalf("query %s:\n%s", c.name, o)
		}
		out.WriteString(o)
		o = s.pgrelay(t, 0, nil, "job", "run", c.name+"-job", "--allow-command", "psql")
		if !strings.Contains(o, "job as "+c.user) {
			t.Fatalf("job run %s-job:\n%s", c.name, o)
		}
		out.WriteString(o)
		o = s.pgrelay(t, 0, nil, "exec", c.name, "--", "sh", "-c",
			`psql -XAtc "select 'exec as ' || current_user" && env && cat "$DBT_PROFILES_DIR/profiles.yml"`)
		if !strings.Contains(o, "exec as "+c.user) || !strings.Contains(o, "PGPASSWORD=") {
			t.Fatalf("exec %s:\n%s", c.name, o)
		}
		out.WriteString(o)
		o = s.pgrelay(t, 0, nil, "connection", "show", c.name)
		if !regexp.MustCompile(`Authentication:\s+` + regexp.QuoteMeta(c.source) + ` \(`).MatchString(o) {
			t.Fatalf("connection show %s:\n%s", c.name, o)
		}
		out.WriteString(o)
		out.WriteString(s.pgrelay(t, 0, nil, "connection", "show", c.name, "-o", "json"))
	}
	o := s.pgrelay(t, 1, nil, "connection", "test", "bad")
	if !strings.Contains(o, "✗ credential") || !strings.Contains(o, "invalid_client") || !strings.Contains(o, "generate a new secret") {
		t.Fatalf("connection test with a wrong client secret:\n%s", o)
	}
	out.WriteString(o)

	all := out.String()
	for _, secret := range append(s.tokens(), s.db.ClientSecret, "wrong-secret-0c1d", "PRIVATE KEY") {
		if strings.Contains(all, secret) {
			t.Fatalf("the output of pgrelay holds a token or secret (%.8s...)", secret)
		}
	}
	if len(s.tokens()) < 2 {
		t.Fatalf("%d tokens issued", len(s.tokens()))
	}
}

// TestExecCommandTokenRotation: `pgrelay exec` of a connection whose
// token comes from a command that rotates the role's password to a token
// valid for 10 s: a program opening a new psql session every 2.5 s for
// 45 s through the endpoint succeeds every time; the command runs about
// every 8 s.
func TestExecCommandTokenRotation(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		t.Skip("psql not installed")
	}
	if testing.Short() {
		t.Skip("45 s")
	}
	t.Parallel()
	s := startTokenServers(t)
	prog, calls := credentialtest.RotateCommand(t, credentialtest.Superuser{Host: s.pg.Host, Port: s.pg.Port,
		User: s.pg.SuperUser, Password: s.pg.SuperPassword}, 10*time.Second)
	allow := []string{"PGRELAY_ALLOW_COMMANDS=" + prog}
	s.pgrelay(t, 0, nil, "connection", "create", "rotor", "--host", s.pg.Host, "--port", strconv.Itoa(s.pg.Port),
		"--database", "postgres", "--user", "rotor", "--sslmode", "verify-full", "--ssl-root-cert", s.caFile,
		"--auth", "command", "--auth-program", prog, "--auth-arg", "rotor")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, "exec", "rotor", "--", "sh", "-c", `i=0; while [ $i -lt 18 ]; do
		psql -XAtc "select 'session ' || $i || ' as ' || current_user" || exit 1; i=$((i+1)); sleep 2.5; done`)
	cmd.Env = append(append([]string(nil), s.env...), allow...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Count(string(out), " as rotor") != 18 {
		t.Fatalf("exec over %v: %v\n%s", time.Since(start).Round(time.Second), err, out)
	}
	n := len(credentialtest.CallTimes(t, calls))
	t.Logf("18 sessions over %v; the command ran %d times", time.Since(start).Round(time.Second), n)
	if n < 4 || n > 7 {
		t.Fatalf("the command ran %d times; want about 6", n)
	}
}
