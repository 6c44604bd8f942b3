package app_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/credential"
	"github.com/pgrelay/pgrelay/internal/credential/credentialtest"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/metrics"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// Roles of the token tests. Like Lakebase and AlloyDB, the server asks
// them for their password (the token) in clear text, inside TLS.
const (
	lakeRole  = "lake_sp"
	lakeRole2 = "lake_sp2"
	alloyRole = "etl@proj.iam"
	alloySA   = "etl@proj.iam.gserviceaccount.com"
)

// tokenEnv is a PostgreSQL that only accepts TLS, the local Databricks
// and Google token servers that rotate its roles' passwords, and what a
// service needs to reach them.
type tokenEnv struct {
	pg     *testenv.Postgres
	su     credentialtest.Superuser
	db     *credentialtest.Databricks
	db2    *credentialtest.Databricks // for lakeRole2
	google *credentialtest.Google
	key    string // a live service-account key of alloySA
	client *http.Client

	mu     sync.Mutex
	issued []string // every token the servers handed out
}

func startTokenEnv(t *testing.T) *tokenEnv {
	t.Helper()
	e := &tokenEnv{}
	e.pg = testenv.StartPostgres(t, testenv.PostgresOptions{SSLOnly: true, HBA: []string{
		"hostssl all " + lakeRole + " 127.0.0.1/32 password",
		"hostssl all " + lakeRole2 + " 127.0.0.1/32 password",
		`hostssl all "` + alloyRole + `" 127.0.0.1/32 password`,
	}})
	for _, r := range []string{lakeRole, lakeRole2, alloyRole, "rotor", "stale"} {
		e.pg.CreateRole(t, r, "initial-"+credentialtest.RandomToken())
	}
	e.pg.Exec(t, "GRANT CREATE ON SCHEMA public TO "+lakeRole)
	e.su = credentialtest.Superuser{Host: e.pg.Host, Port: e.pg.Port, User: e.pg.SuperUser, Password: e.pg.SuperPassword}
	super := e.pg.ConnString(e.pg.SuperUser, e.pg.SuperPassword, "postgres")
	record := func(issue credentialtest.IssueFunc) credentialtest.IssueFunc {
		return func(ctx context.Context, life time.Duration) (string, error) {
			tok, err := issue(ctx, life)
			if err == nil {
				e.mu.Lock()
				e.issued = append(e.issued, tok)
				e.mu.Unlock()
			}
			return tok, err
		}
	}
	e.db = credentialtest.NewDatabricks(t, record(credentialtest.Rotator(super, lakeRole)))
	e.db2 = credentialtest.NewDatabricks(t, record(credentialtest.Rotator(super, lakeRole2)))
	e.google = credentialtest.NewGoogle(t, record(credentialtest.Rotator(super, alloyRole)))
	e.key = e.google.NewKey(t, alloySA, true)
	pool := x509.NewCertPool()
	pool.AddCert(e.db.Srv.Certificate())
	pool.AddCert(e.db2.Srv.Certificate())
	pool.AddCert(e.google.Srv.Certificate())
	e.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	return e
}

// tokens returns the tokens handed out so far.
func (e *tokenEnv) tokens() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.issued...)
}

// service returns a service that fetches tokens from e's servers and may
// run the credential commands allowed.
func (e *tokenEnv) service(t *testing.T, cache credential.CacheConfig, allowed ...string) *fixture {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	m := metrics.New()
	svc, err := app.New(app.Config{Store: st, Keyring: newKeyring(t, 9), DialTimeout: 5 * time.Second, Metrics: m,
		Credentials: app.CredentialConfig{HTTPClient: e.client, Cache: cache, AllowCommand: func(p string) (string, error) {
			for _, a := range allowed {
				if p == a {
					return p, nil
				}
			}
			return "", errors.New("not on the test's list")
		}}})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{svc: svc, store: st, metrics: m}
}

// spec returns a connection of e's server with auth a, verifying the
// server's certificate (which clear-text token logins need by default).
func (e *tokenEnv) spec(name string, flavor connection.Flavor, user string, a *connection.Auth) connection.Spec {
	return connection.Spec{Name: name, Flavor: flavor, Host: e.pg.Host, Port: e.pg.Port, Database: "postgres", User: user,
		SSLMode: connection.SSLVerifyFull, SSLRootCert: string(e.pg.CAPEM), Auth: a}
}

func (e *tokenEnv) lakebase(name, clientSecret string) connection.Spec {
	return e.spec(name, connection.Lakebase, lakeRole, &connection.Auth{Kind: connection.AuthLakebase, WorkspaceURL: e.db.Srv.URL,
		ClientID: e.db.ClientID, ClientSecret: secret.New(clientSecret), Instance: e.db.Instance})
}

func (e *tokenEnv) alloydb(name, key string) connection.Spec {
	return e.spec(name, connection.AlloyDB, alloyRole, &connection.Auth{Kind: connection.AuthAlloyDBIAM, ServiceAccountKey: secret.New(key)})
}

// rows is a ResultSink that keeps the rows as text.
type rows struct{ out []string }

func (r *rows) Begin([]app.Column) error { return nil }
func (r *rows) Row(vals [][]byte) error {
	r.out = append(r.out, string(bytes.Join(vals, []byte(" "))))
	return nil
}
func (r *rows) End(string) error { return nil }

// runJob runs job's steps over connection name with svc, as `job run`
// (and with stdio, as `pgrelay exec`) does, and returns the result and
// the log.
func runJob(t *testing.T, svc *app.Service, name string, stdio *jobs.Stdio, steps ...jobs.Step) (jobs.Result, string) {
	t.Helper()
	job := jobs.Job{Name: "t", Connection: name, Steps: steps}
	job.ApplyDefaults()
	rn := &jobs.Runner{Open: func(ctx context.Context, name string) (jobs.Conn, error) { return svc.Open(ctx, name) },
		Commands: jobs.CommandPolicy{AnyProgram: true}, Stdio: stdio, KillGrace: 2 * time.Second}
	var mu sync.Mutex
	var log strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res := rn.Run(ctx, job, jobs.Hooks{Log: func(l jobs.LogLine) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(&log, "[%d %s] %s\n", l.Step, l.Stream, l.Text)
	}})
	mu.Lock()
	defer mu.Unlock()
	return res, log.String()
}

// TestTokenCredentials: Lakebase and AlloyDB IAM connections against
// local servers that implement the token endpoints and rotate the roles'
// passwords: the connection test, a query, a job run (a SQL step and a
// command through the run's endpoint) and exec work, and no token
// reaches a command, its profiles.yml, a log or a view. Bad client
// secret, expired key and an endpoint that is down each fail the
// credential step with a fix.
func TestTokenCredentials(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		t.Skip("psql not installed")
	}
	t.Parallel()
	e := startTokenEnv(t)
	for _, c := range []struct {
		name   string
		spec   connection.Spec
		source string
	}{
		{"lakebase", e.lakebase("lb", e.db.ClientSecret), "lakebase"},
		{"alloydb-iam", e.alloydb("ad", e.key), "alloydb-iam"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := e.service(t, credential.CacheConfig{})
			ctx := context.Background()
			if _, err := f.svc.CreateConnection(ctx, c.spec); err != nil {
				t.Fatal(err)
			}
			name := c.spec.Name
			rep, err := f.svc.TestConnection(ctx, name, nil)
			if err != nil || !rep.OK || rep.Credential == nil || time.Until(rep.Credential.ExpiresAt) < 50*time.Minute {
				t.Fatalf("connection test: %v %+v %+v", err, rep, rep.Failed())
			}
			if st := rep.Step(diagnose.StepCredential); st == nil || st.Status != diagnose.StatusOK {
				t.Fatalf("credential step: %+v", st)
			}
			var r rows
			if err := f.svc.Query(ctx, name, "SELECT current_user", &r); err != nil || len(r.out) != 1 || r.out[0] != c.spec.User {
				t.Fatalf("query: %v %v", err, r.out)
			}
			v, err := f.svc.GetConnection(ctx, name)
			if err != nil || v.Auth == nil || v.Auth.Token == nil || time.Until(v.Auth.Token.ExpiresAt) < 50*time.Minute {
				t.Fatalf("view after a fetch: %+v %v", v.Auth, err)
			}

			// A run: a SQL step, and a command through the run's endpoint,
			// which sees neither the token in its environment nor in
			// profiles.yml, and logs in all the same.
			res, log := runJob(t, f.svc, name, nil,
				jobs.Step{SQL: "SELECT 1"},
				jobs.Step{Command: []string{"sh", "-c", `psql -XAtc "select 'who=' || current_user" && env | grep '^PG' && cat "$DBT_PROFILES_DIR/profiles.yml"`}})
			if res.Status != jobs.Succeeded || !strings.Contains(log, "who="+c.spec.User) {
				t.Fatalf("run: %s %s\n%s", res.Status, res.Reason, log)
			}
			if !strings.Contains(log, "PGPASSWORD=") || !strings.Contains(log, "env_var('PGPASSWORD')") ||
				!strings.Contains(log, "not a database") {
				t.Fatalf("the run's log lacks the environment or profiles.yml:\n%s", log)
			}
			// As `pgrelay exec` runs it: attached to a terminal's stdio.
			var out bytes.Buffer
			res, _ = runJob(t, f.svc, name, &jobs.Stdio{Out: &out, Err: &out},
				jobs.Step{Command: []string{"psql", "-XAtc", "select 'exec=' || current_user"}})
			if res.Status != jobs.Succeeded || !strings.Contains(out.String(), "exec="+c.spec.User) {
				t.Fatalf("exec: %s %s\n%s", res.Status, res.Reason, out.String())
			}

			toks := e.tokens()
			if len(toks) == 0 {
				t.Fatal("no token was issued")
			}
			views, _ := f.svc.ListConnections(ctx)
			haystack := log + out.String() + fmt.Sprintf("%+v %+v", views, rep)
			for _, tok := range toks {
				if strings.Contains(haystack, tok) {
					t.Fatalf("a token appears in a log, an environment, profiles.yml or a view")
				}
			}
			if n := fetches(t, f.metrics, c.source, "ok"); n < 1 {
				t.Fatalf("pgrelay_credential_fetches_total{source=%q,outcome=ok} = %v", c.source, n)
			}
		})
	}

	t.Run("failures", func(t *testing.T) {
		t.Parallel()
		f := e.service(t, credential.CacheConfig{Retries: -1})
		ctx := context.Background()
		closed, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		down := "https://" + closed.Addr().String()
		_ = closed.Close()
		downLake := e.lakebase("down", "whatever")
		downLake.Auth.WorkspaceURL = down
		for _, c := range []struct {
			spec      connection.Spec
			err, hint string
			outcome   string
		}{
			{e.lakebase("badsecret", "wrong-secret"), "invalid_client", "generate a new secret", "invalid_client"},
			{e.alloydb("expired", e.google.NewKey(t, alloySA, false)), "Invalid JWT Signature", "deleted, disabled or has expired", "invalid_key"},
			{downLake, "cannot reach", "Nothing accepts connections at " + closed.Addr().String(), "unreachable"},
		} {
			if _, err := f.svc.CreateConnection(ctx, c.spec); err != nil {
				t.Fatal(err)
			}
			rep, err := f.svc.TestConnection(ctx, c.spec.Name, nil)
			if err != nil {
				t.Fatal(err)
			}
			st := rep.Failed()
			if st == nil || st.ID != diagnose.StepCredential || !strings.Contains(st.Error, c.err) || !strings.Contains(st.Hint, c.hint) {
				t.Errorf("%s: failed step %+v; want credential with %q and a hint with %q", c.spec.Name, st, c.err, c.hint)
			}
			// A run fails on its first session, naming the source.
			res, log := runJob(t, f.svc, c.spec.Name, nil, jobs.Step{SQL: "SELECT 1"})
			if res.Status != jobs.Failed || !strings.Contains(res.Reason, "no token from") || !strings.Contains(res.Reason, c.err) {
				t.Errorf("%s: run %s: %s\n%s", c.spec.Name, res.Status, res.Reason, log)
			}
			if n := fetches(t, f.metrics, string(c.spec.AuthKind()), c.outcome); n < 1 {
				t.Errorf("%s: no fetch counted with outcome %s", c.spec.Name, c.outcome)
			}
		}
	})

	t.Run("clear-text token needs a verified server", func(t *testing.T) {
		t.Parallel()
		f := e.service(t, credential.CacheConfig{})
		ctx := context.Background()
		s := e.lakebase("unverified", e.db2.ClientSecret)
		s.User, s.Auth.WorkspaceURL, s.Auth.ClientID = lakeRole2, e.db2.Srv.URL, e.db2.ClientID
		s.SSLMode, s.SSLRootCert = connection.SSLRequire, ""
		if _, err := f.svc.CreateConnection(ctx, s); err != nil {
			t.Fatal(err)
		}
		rep, err := f.svc.TestConnection(ctx, "unverified", nil)
		if err != nil {
			t.Fatal(err)
		}
		st := rep.Failed()
		if st == nil || st.ID != diagnose.StepPostgresAuth || !strings.Contains(st.Hint, "verify-full") || !strings.Contains(st.Hint, "sent nothing") {
			t.Fatalf("clear-text token over an unverified hop: %+v", st)
		}
		// Accepted knowingly.
		s.RequireAuth = "password"
		if _, err := f.svc.UpdateConnection(ctx, "unverified", s, nil); err != nil {
			t.Fatal(err)
		}
		if rep, err := f.svc.TestConnection(ctx, "unverified", nil); err != nil || !rep.OK {
			t.Fatalf("with require_auth=password: %v %+v", err, rep.Failed())
		}
	})
}

// fetches reads pgrelay_credential_fetches_total{source,outcome}.
func fetches(t *testing.T, m *metrics.Metrics, source, outcome string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "pgrelay_credential_fetches_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["source"] == source && labels["outcome"] == outcome {
				return s.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestCommandTokenRotationInRuns: a command source whose script rotates a
// role's password to a fresh token valid for 10 s. A command step that
// opens a new psql session every 2.5 s for 45 s through the run's endpoint
// succeeds every time, with the script called about every 8 s; with
// refresh off (a token kept as a static password would be), sessions
// fail once it expired, with SQLSTATE 28P01.
func TestCommandTokenRotationInRuns(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		t.Skip("psql not installed")
	}
	if testing.Short() {
		t.Skip("45 s")
	}
	t.Parallel()
	e := startTokenEnv(t)
	const life = 10 * time.Second
	loop := func(n int) jobs.Step {
		return jobs.Step{Command: []string{"sh", "-c", `i=0; while [ $i -lt ` + strconv.Itoa(n) + ` ]; do
			psql -XAtc "select 'session ' || $i || ' as ' || current_user" || exit 1; i=$((i+1)); sleep 2.5; done`}}
	}

	t.Run("refreshed", func(t *testing.T) {
		t.Parallel()
		prog, calls := credentialtest.RotateCommand(t, e.su, life)
		f := e.service(t, credential.CacheConfig{}, prog)
		s := e.spec("rotor", connection.Postgres, "rotor", &connection.Auth{Kind: connection.AuthCommand, Program: prog, Args: []string{"rotor"}})
		if _, err := f.svc.CreateConnection(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		res, log := runJob(t, f.svc, "rotor", nil, loop(18))
		if res.Status != jobs.Succeeded || strings.Count(log, " as rotor") != 18 {
			t.Fatalf("run over %v: %s %s\n%s", time.Since(start).Round(time.Second), res.Status, res.Reason, log)
		}
		times := credentialtest.CallTimes(t, calls)
		t.Logf("18 sessions over %v; the script ran %d times", time.Since(start).Round(time.Second), len(times))
		if len(times) < 4 || len(times) > 7 {
			t.Fatalf("the script ran %d times in %v; want about 6 (every ~8 s)", len(times), time.Since(start))
		}
	})

	t.Run("refresh off", func(t *testing.T) {
		t.Parallel()
		prog, calls := credentialtest.RotateCommand(t, e.su, life)
		f := e.service(t, credential.CacheConfig{NoRefresh: true}, prog)
		s := e.spec("stale", connection.Postgres, "stale", &connection.Auth{Kind: connection.AuthCommand, Program: prog, Args: []string{"stale"}})
		if _, err := f.svc.CreateConnection(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		res, log := runJob(t, f.svc, "stale", nil, loop(18))
		took := time.Since(start)
		if res.Status != jobs.Failed || took < life || took > life+15*time.Second || !strings.Contains(log, "password authentication failed") {
			t.Fatalf("run with the first token kept: %s after %v: %s\n%s", res.Status, took.Round(time.Second), res.Reason, log)
		}
		// A session opened by pgrelay itself says SQLSTATE 28P01.
		res, log = runJob(t, f.svc, "stale", nil, jobs.Step{SQL: "SELECT 1"})
		if res.Status != jobs.Failed || !strings.Contains(res.Reason, "SQLSTATE 28P01") {
			t.Fatalf("SQL step with the expired token: %s %s\n%s", res.Status, res.Reason, log)
		}
		if n := len(credentialtest.CallTimes(t, calls)); n != 1 {
			t.Fatalf("the script ran %d times with refresh off; want 1", n)
		}
	})
}

// TestProxyWithTokens: `pgrelay proxy` of a Lakebase connection through
// a bastion: clients log in with the proxy's own password and get the
// database's session as the connection's user; the password is not a
// token, a wrong one gets no session and fetches none.
func TestProxyWithTokens(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		t.Skip("psql not installed")
	}
	t.Parallel()
	e := startTokenEnv(t)
	b := testenv.SharedBastion(t, testenv.BastionOptions{})
	f := e.service(t, credential.CacheConfig{})
	ctx := context.Background()
	s := e.lakebase("lbp", e.db.ClientSecret)
	s.Tunnel = &connection.Tunnel{Host: b.Host, Port: b.Port, User: b.User}
	v, err := f.svc.CreateConnection(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	ps, err := f.svc.Proxy(ctx, "lbp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = ps.Serve(ctx) }()
	t.Cleanup(func() { _ = ps.Close() })
	pw := ps.LocalPassword()
	if pw.IsZero() {
		t.Fatal("the proxy of a token connection has no password of its own")
	}
	_, port, _ := net.SplitHostPort(ps.Addr().String())
	psql := func(password, sslmode string) (string, error) {
		cmd := exec.Command("psql", "-XAtc", "select current_user")
		cmd.Env = append(cmd.Environ(), "PGHOST=127.0.0.1", "PGPORT="+port, "PGUSER="+lakeRole, "PGDATABASE=postgres",
			"PGPASSWORD="+password, "PGSSLMODE="+sslmode, "PGCONNECT_TIMEOUT=10")
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	for _, mode := range []string{"disable", "require", "prefer"} {
		// With TLS to the proxy, libpq's default channel binding (prefer)
		// is used: the proxy ends SCRAM itself, with its own certificate.
		if out, err := psql(pw.Reveal(), mode); err != nil || out != lakeRole {
			t.Fatalf("psql sslmode=%s with the proxy's password: %v: %s", mode, err, out)
		}
	}
	before := e.db.Count("/api/2.0/database/credentials")
	if out, err := psql("not-the-password", "disable"); err == nil || !strings.Contains(out, "password authentication failed") {
		t.Fatalf("psql with a wrong password: %v: %s", err, out)
	}
	if n := e.db.Count("/api/2.0/database/credentials"); n != before || n != 1 {
		t.Fatalf("credential requests: %d before the wrong password, %d after; want 1 in all", before, n)
	}
	for _, tok := range e.tokens() {
		if tok == pw.Reveal() {
			t.Fatal("the proxy's password is a token")
		}
	}
}

// TestTokenLoginRoleChosenInOptions: through a run's endpoint logging in
// with a token, a client that chose a role in its options keeps it; the
// connection's role used to override it (startup parameters apply after
// the options).
func TestTokenLoginRoleChosenInOptions(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		t.Skip("psql not installed")
	}
	t.Parallel()
	e := startTokenEnv(t)
	for _, r := range []string{"lake_reader", "lake_alt"} {
		e.pg.CreateRole(t, r, "unused-"+credentialtest.RandomToken())
		e.pg.Exec(t, "GRANT "+r+" TO "+lakeRole)
	}
	f := e.service(t, credential.CacheConfig{})
	ctx := context.Background()
	s := e.lakebase("lbr", e.db.ClientSecret)
	s.Role = "lake_reader"
	if _, err := f.svc.CreateConnection(ctx, s); err != nil {
		t.Fatal(err)
	}
	for options, want := range map[string]string{"": "lake_reader", "options='-c role=lake_alt'": "lake_alt"} {
		var out bytes.Buffer
		res, _ := runJob(t, f.svc, s.Name, &jobs.Stdio{Out: &out, Err: &out},
			jobs.Step{Command: []string{"psql", "-XAt", "-d", options, "-c", "select 'as=' || current_user"}})
		if res.Status != jobs.Succeeded || !strings.Contains(out.String(), "as="+want) {
			t.Errorf("psql -d %q: %s %s\n%s (want as=%s)", options, res.Status, res.Reason, out.String(), want)
		}
	}
}
