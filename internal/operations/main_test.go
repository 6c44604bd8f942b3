package operations_test

import (
	"context"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// binary is the pgrelay binary built by TestMain; set once, before any
// test runs.
var binary string

func TestMain(m *testing.M) {
	os.Exit(e2etest.Main(m, "operations", &binary))
}

var bg = context.Background()

// world is the servers a test's pgrelay talks to: a PostgreSQL with a
// warehouse database (role dbt, database analytics, a table) and databases
// for stores, and an OpenSSH bastion.
type world struct {
	pg      *testenv.Postgres
	bastion *testenv.Bastion
	n       int
}

const warehousePassword = "dbt-Pw-0p5"

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{pg: testenv.StartPostgres(t, testenv.PostgresOptions{}), bastion: testenv.StartBastion(t, testenv.BastionOptions{})}
	w.pg.CreateRole(t, "dbt", warehousePassword)
	w.pg.CreateDatabase(t, "analytics", "dbt")
	w.pg.CreateRole(t, "pgrelay", "store-Pw")
	return w
}

// storeURL creates a new empty database for a PostgreSQL store and
// returns its URL.
func (w *world) storeURL(t *testing.T) string {
	t.Helper()
	w.n++
	name := "store_" + strconv.Itoa(w.n)
	w.pg.CreateDatabase(t, name, "pgrelay")
	return w.pg.ConnString("pgrelay", "store-Pw", name)
}

// site is a data dir and the environment of the pgrelay processes that use
// it.
type site struct {
	t   *testing.T
	dir string
	env []string
	// bin is the pgrelay binary this site runs; "" is the one built for
	// this test run.
	bin string
}

func (s *site) binary() string {
	if s.bin != "" {
		return s.bin
	}
	return binary
}

func newSite(t *testing.T, extra ...string) *site {
	t.Helper()
	dir := t.TempDir()
	return &site{t: t, dir: dir, env: e2etest.ProcessEnv(append([]string{"PGRELAY_DATA_DIR=" + dir, "DB_PASSWORD=" + warehousePassword}, extra...)...)}
}

// with returns the site with more environment.
func (s *site) with(extra ...string) *site {
	return &site{t: s.t, dir: s.dir, env: append(append([]string(nil), s.env...), extra...), bin: s.bin}
}

// run runs pgrelay to its end.
func (s *site) run(args ...string) e2etest.Result {
	s.t.Helper()
	r, err := e2etest.Run(s.binary(), s.env, nil, args...)
	if err != nil {
		s.t.Fatalf("pgrelay %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// ok runs a command that must succeed and returns its stdout.
func (s *site) ok(args ...string) string {
	s.t.Helper()
	return e2etest.Command(s.t, s.binary(), s.env, args...)
}

// fail runs a command that must fail with code and returns its stderr.
func (s *site) fail(code int, args ...string) string {
	s.t.Helper()
	r := s.run(args...)
	if r.Code != code {
		s.t.Fatalf("pgrelay %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.Code, code, r.Stdout, r.Stderr)
	}
	return r.Stderr
}

// json runs a command with -o json and decodes its output into v.
func (s *site) json(v any, args ...string) {
	s.t.Helper()
	out := s.ok(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		s.t.Fatalf("pgrelay %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func (s *site) serve(name string, args ...string) *e2etest.Server {
	s.t.Helper()
	return e2etest.StartServer(s.t, s.binary(), name, e2etest.Options{Env: s.env, Args: args})
}

// state is what pgrelay shows of a store's records.
type state struct {
	Connections []map[string]any `json:"connections"`
	Jobs        []map[string]any `json:"jobs"`
	Runs        []map[string]any `json:"runs"`
	Logs        map[string]string
	Tokens      []map[string]any `json:"tokens"`
	// SSHCA is pgrelay's SSH CA: its public key and its principals.
	SSHCA map[string]any `json:"ssh_ca"`
}

// readState reads every record through the CLI of s.
func (s *site) readState() *state {
	s.t.Helper()
	var st state
	s.json(&st.Connections, "connection", "list")
	s.json(&st.Jobs, "job", "list")
	s.json(&st.Runs, "run", "list", "--limit", "1000")
	s.json(&st.Tokens, "token", "list")
	if s.bin == "" { // releases before the SSH CA have no ssh-ca command
		// A store without a CA (one an older release made) says so: that
		// is its state, as a CA and its principals are.
		if r := s.run("ssh-ca", "show", "-o", "json"); r.Code != 0 {
			st.SSHCA = map[string]any{"none": strings.TrimSpace(r.Stderr)}
		} else if err := json.Unmarshal([]byte(r.Stdout), &st.SSHCA); err != nil {
			s.t.Fatalf("pgrelay ssh-ca show -o json: %v\n%s", err, r.Stdout)
		}
	}
	st.Logs = map[string]string{}
	for _, r := range st.Runs {
		id := r["id"].(string)
		st.Logs[id] = s.ok("run", "logs", id)
	}
	return &st
}

// equalState compares two states as JSON (times as text).
func equalState(t *testing.T, what string, want, got *state) {
	t.Helper()
	w, _ := json.MarshalIndent(want, "", " ")
	g, _ := json.MarshalIndent(got, "", " ")
	if string(w) != string(g) {
		t.Fatalf("%s: records differ\nwant %s\n got %s", what, w, g)
	}
}

// population is what populate saved.
type population struct {
	token string
	// runID is the run populate made.
	runID string
}

const jobsYAML = `jobs:
  - name: nightly
    connection: direct
    steps:
      - name: count
        sql: select count(*) from pg_class
      - name: hello
        sql: select 'hello from nightly'
`

// populate saves, through the CLI of s: a direct connection with a
// password, a connection through the bastion (its key authorized there and
// its host key pinned by a query), a job with a run and its log, an admin
// token, and the SSH CA with the bastion's user as its one principal.
func populate(t *testing.T, s *site, w *world) population {
	t.Helper()
	base := []string{"--host", w.pg.Host, "--port", strconv.Itoa(w.pg.Port), "--database", "analytics", "--user", "dbt",
		"--password-env", "DB_PASSWORD"}
	s.ok(append([]string{"connection", "create", "direct"}, base...)...)
	s.ok(append([]string{"connection", "create", "tunneled", "--ssh-host", w.bastion.Host, "--ssh-port",
		strconv.Itoa(w.bastion.Port), "--ssh-user", w.bastion.User}, base...)...)
	var view app.ConnectionView
	s.json(&view, "connection", "show", "tunneled")
	if view.SSHTunnel == nil || view.SSHTunnel.PublicKey == "" {
		t.Fatalf("tunneled connection has no public key: %+v", view)
	}
	w.bastion.Authorize(t, view.SSHTunnel.PublicKey)
	for _, c := range []string{"direct", "tunneled"} {
		if out := s.ok("query", c, "select current_user"); !strings.Contains(out, "dbt") {
			t.Fatalf("query %s: %s", c, out)
		}
	}
	jobsFile := filepath.Join(t.TempDir(), "jobs.yaml")
	if err := os.WriteFile(jobsFile, []byte(jobsYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	s.ok("job", "apply", "-f", jobsFile)
	var run jobs.Run
	s.json(&run, "job", "run", "nightly")
	if run.Status != jobs.Succeeded {
		t.Fatalf("run of nightly: %+v", run)
	}
	if s.bin == "" { // releases before the SSH CA have no ssh-ca command
		s.ok("ssh-ca", "init", "--principal", w.bastion.User)
		var ca app.SSHCAView
		if s.json(&ca, "ssh-ca", "show"); ca.AnyPrincipal || len(ca.Principals) != 1 || ca.Principals[0] != w.bastion.User {
			t.Fatalf("SSH CA made with --principal %s: %+v", w.bastion.User, ca)
		}
	}
	tok := e2etest.CreateToken(t, s.binary(), s.env, "ops-admin", auth.Admin)
	return population{token: tok, runID: run.ID}
}

// sink collects a query's values as text.
type sink struct{ rows [][]string }

func (s *sink) Begin([]app.Column) error { return nil }
func (s *sink) Row(vs [][]byte) error {
	var r []string
	for _, v := range vs {
		r = append(r, string(v))
	}
	s.rows = append(s.rows, r)
	return nil
}
func (s *sink) End(string) error { return nil }

// checkServes checks that a server on a store populate filled works: the
// copied token authenticates, queries work directly and through the
// bastion (the same key pair and pinned host key), a job runs, and the web
// UI signs in with the token and lists the connections.
func checkServes(t *testing.T, srv *e2etest.Server, p population) {
	t.Helper()
	c := srv.Client(t, p.token)
	if who, err := c.WhoAmI(bg); err != nil || who.Role != auth.Admin {
		t.Fatalf("copied token: %+v %v", who, err)
	}
	for _, name := range []string{"direct", "tunneled"} {
		var out sink
		if err := c.Query(bg, name, "select current_user, 1+1", &out); err != nil {
			t.Fatalf("query %s: %v", name, err)
		}
		if len(out.rows) != 1 || out.rows[0][0] != "dbt" || out.rows[0][1] != "2" {
			t.Fatalf("query %s: %v", name, out.rows)
		}
	}
	r, err := c.RunJob(bg, "nightly", jobs.API)
	if err != nil {
		t.Fatal(err)
	}
	if r = e2etest.WaitRun(t, c, r.ID, time.Minute, e2etest.Ended); r.Status != jobs.Succeeded {
		t.Fatalf("job run: %+v", r)
	}
	lines, err := c.RunLog(bg, p.runID, 0, 0)
	if err != nil || len(lines) == 0 {
		t.Fatalf("log of the copied run: %v %v", lines, err)
	}
	webSignIn(t, srv, p.token, "direct", "tunneled")
}

var csrfRE = regexp.MustCompile(`name="` + auth.CSRFField + `" value="([^"]+)"`)

// webSignIn signs in to the web UI with token as a browser does and
// checks that the connections page lists names.
func webSignIn(t *testing.T, srv *e2etest.Server, token string, names ...string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) (int, string) {
		resp, err := hc.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	_, page := get("/login")
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("sign-in page without CSRF field:\n%.1000s", page)
	}
	resp, err := hc.PostForm(srv.URL+"/login", url.Values{auth.CSRFField: {html.UnescapeString(m[1])}, "token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign in: status %d", resp.StatusCode)
	}
	code, body := get("/connections")
	if code != http.StatusOK {
		t.Fatalf("connections page after sign-in: %d", code)
	}
	for _, n := range names {
		if !strings.Contains(body, n) {
			t.Errorf("connections page does not list %s", n)
		}
	}
}

// mustContain fails when s lacks any of subs.
func mustContain(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not say %q:\n%s", what, sub, s)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
