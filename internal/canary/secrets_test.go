package canary_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/remote"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// canaryEnv is the world of the secrets canary: servers, canaries, the
// data dir and what was recorded.
type canaryEnv struct {
	t  *testing.T
	ev *evidence
	cn *canaries

	pg      *testenv.Postgres
	bastion *testenv.Bastion
	// pw1 is the password of role appUser, owner of database db; pw2 that
	// of updUser, set on connection "upd" by update.
	pw1, pw2 string
	// db, appUser and updUser are names of the test's own on the shared
	// cluster pg.
	db, appUser, updUser string

	dataDir string
	// tmpDir is TMPDIR of every pgrelay process: runs make their
	// directories (profiles.yml) there.
	tmpDir string
	// copies receives copies of run directories made by command steps.
	copies string
	// gateDir holds the files by which the gated job and the test meet.
	gateDir string

	common    []string // environment of every pgrelay process
	masterB64 string
	keys      *keyReader
	// tokens by name: admin, editor, viewer, and revoke-me (revoked by
	// the local CLI, then used against the servers).
	tokens map[string]string
}

// TestSecretsCanary saves connections and jobs with canary secrets,
// exercises every CLI command (locally and against a server), every API
// route, every web page and form, and jobs that print their environment or
// fail, then searches everything they produced for the secrets.
func TestSecretsCanary(t *testing.T) {
	t.Parallel()
	start := time.Now()
	e := &canaryEnv{t: t, ev: &evidence{}, cn: &canaries{}, tokens: map[string]string{}}
	e.pw1, e.pw2 = newPassword("1"), newPassword("2")
	e.cn.addText("password 1", e.pw1)
	e.cn.addText("password 2", e.pw2)

	var wg sync.WaitGroup
	wg.Go(func() { e.bastion = testenv.SharedBastion(t, testenv.BastionOptions{}) })
	e.pg = testenv.SharedPostgres(t, testenv.PostgresOptions{})
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	app := e.pg.NewDatabase(t)
	app.SetPassword(t, e.pw1)
	upd := e.pg.NewDatabase(t) // its role connects to app's database
	upd.SetPassword(t, e.pw2)
	e.db, e.appUser, e.updUser = app.Name, app.User, upd.User
	e.dataDir, e.tmpDir, e.copies, e.gateDir = t.TempDir(), t.TempDir(), t.TempDir(), t.TempDir()
	e.common = e2etest.ProcessEnv("PGRELAY_DATA_DIR="+e.dataDir, "TMPDIR="+e.tmpDir)
	t.Logf("servers ready in %v", time.Since(start).Round(time.Millisecond))

	phase := time.Now()
	e.localCLI()
	t.Logf("local CLI: %v", time.Since(phase).Round(time.Millisecond))

	phase = time.Now()
	srvEnv := append(append([]string(nil), e.common...), secret.MasterKeyEnv+"="+e.masterB64)
	a := e2etest.StartServer(t, binary, "A (text log)", e2etest.Options{Env: srvEnv, Args: []string{
		"--log-level", "debug", "--allow-command", "sh", "--lost-after", "5s", "--reap-interval", "1s"}})
	e.ev.add(fmt.Sprintf("environment of server A (pid %d)", a.Pid()), environ(t, a.Pid()), "master key")
	e.remoteCLI(a)
	t.Logf("remote CLI: %v", time.Since(phase).Round(time.Millisecond))
	phase = time.Now()
	e.webUI(a)
	t.Logf("web UI: %v", time.Since(phase).Round(time.Millisecond))
	phase = time.Now()
	e.serverRuns(a)
	t.Logf("runs on the server: %v", time.Since(phase).Round(time.Millisecond))
	stopAndRecord(t, a, e.ev)

	phase = time.Now()
	b := e2etest.StartServer(t, binary, "B (json log)", e2etest.Options{Env: srvEnv, Args: []string{
		"--log-level", "debug", "--log-format", "json", "--allow-command", "sh", "--lost-after", "5s", "--reap-interval", "1s"}})
	e.ev.add(fmt.Sprintf("environment of server B (pid %d)", b.Pid()), environ(t, b.Pid()), "master key")
	e.apiWalk(b)
	stopAndRecord(t, b, e.ev)
	t.Logf("API walk: %v", time.Since(phase).Round(time.Millisecond))

	// Everything on disk: the store (and its WAL), the master key file
	// (which may hold the master key, nothing else), what runs left in
	// TMPDIR, and the copies of run directories.
	e.keys.collect(t, e.cn)
	n := e.ev.addTree(t, "data dir", e.dataDir, func(path string) []string {
		if filepath.Base(path) == secret.MasterKeyFile {
			return []string{"master key"}
		}
		return nil
	})
	for _, f := range []string{"pgrelay.db", "pgrelay.db-wal", "pgrelay.db-shm"} {
		if !e.ev.has("data dir file " + f) {
			t.Errorf("the data dir has no %s to search (%d files)", f, n)
		}
	}
	e.ev.addTree(t, "TMPDIR of pgrelay processes", e.tmpDir, nil)
	if e.ev.addTree(t, "copy of a run directory", e.copies, nil) < 3 {
		t.Errorf("fewer than 3 run directories were copied by command steps (exec, local run, server run)")
	}
	e.ev.add("environment of the test process", []byte(strings.Join(os.Environ(), "\x00")))
	e.ev.check(t, e.cn)
	t.Logf("secrets canary done in %v", time.Since(start).Round(time.Millisecond))
}

// withPW passes pw in DB_PASSWORD, for --password-env DB_PASSWORD.
func withPW(pw string) cmdOpts { return cmdOpts{env: []string{"DB_PASSWORD=" + pw}} }

// connArgs returns `connection create NAME` arguments for the canary
// database as user.
func (e *canaryEnv) connArgs(name, user string, tunnel bool) []string {
	args := []string{"connection", "create", name, "--host", e.pg.Host, "--port", strconv.Itoa(e.pg.Port),
		"--database", e.db, "--user", user, "--password-env", "DB_PASSWORD"}
	if tunnel {
		args = append(args, "--ssh-host", e.bastion.Host, "--ssh-port", strconv.Itoa(e.bastion.Port),
			"--ssh-user", e.bastion.User)
	}
	return args
}

// jobsYAML is the jobs file of the test: a job whose command step prints
// its environment and profile and copies its run directory, a job whose
// command step waits at a gate (so that the server's processes can be
// looked at while it runs), a job whose SQL step fails, and a plain one.
func (e *canaryEnv) jobsYAML(prefix, conn string) string {
	script := strings.Join([]string{
		`env`,
		`echo "pgpassword=$PGPASSWORD"`,
		`cat "$DBT_PROFILES_DIR/profiles.yml"`,
		`cp -r "$DBT_PROFILES_DIR" "` + e.copies + `/run-$$"`,
		`psql -tAc "select 'psql-ok:' || current_user"`,
	}, "\n")
	gate := strings.Join([]string{
		`touch "` + e.gateDir + `/ready"`,
		`i=0`,
		`while [ ! -e "` + e.gateDir + `/go" ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done`,
		`echo "gate passed, pgpassword=$PGPASSWORD"`,
	}, "\n")
	q := strconv.Quote
	return fmt.Sprintf(`jobs:
  - name: %[1]senvjob
    connection: %[2]s
    steps:
      - sql: "select 1"
      - command: ["sh", "-c", %[3]s]
  - name: %[1]sgatejob
    connection: %[2]s
    steps:
      - command: ["sh", "-c", %[4]s]
  - name: %[1]ssqlfail
    connection: direct
    steps:
      - sql: "select 1"
      - sql: "select * from no_such_table_canary"
  - name: %[1]ssqljob
    connection: direct
    steps:
      - sql: "select 1"
`, prefix, conn, q(script), q(gate))
}

// localCLI runs every command on the data dir.
func (e *canaryEnv) localCLI() {
	t := e.t
	c := &pgrelayCLI{t: t, ev: e.ev, mode: "local", env: e.common}
	for _, tk := range []struct{ name, role string }{
		{"admin", "admin"}, {"editor", "editor"}, {"viewer", "viewer"}, {"revoke-me", "viewer"},
	} {
		r := c.okWith(cmdOpts{allow: []string{"token " + tk.name}}, "token", "create", "--role", tk.role, "--name", tk.name, "-o", "json")
		var nt struct {
			Token string `json:"token"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &nt); err != nil || !auth.LooksLikeToken(nt.Token) {
			t.Fatalf("token create: %q, %v", r.stdout, err)
		}
		e.tokens[tk.name] = nt.Token
		e.cn.addText("token "+tk.name, nt.Token)
	}
	master, b64 := readMasterKey(t, e.dataDir, e.cn)
	e.masterB64 = b64
	e.keys = openKeys(t, e.dataDir, master)

	// Connections: direct, tunnelled, a wrong password (fixed later by
	// update), from stdin, to a closed port; and refused inputs.
	pw1 := withPW(e.pw1)
	c.okWith(pw1, e.connArgs("direct", e.appUser, false)...)
	c.okWith(pw1, e.connArgs("tun", e.appUser, true)...)
	c.okWith(pw1, e.connArgs("upd", e.updUser, false)...)
	c.okWith(cmdOpts{stdin: e.pw1 + "\n"}, "connection", "create", "stdin-conn", "--host", e.pg.Host,
		"--port", strconv.Itoa(e.pg.Port), "--database", e.db, "--user", e.appUser, "--password-stdin")
	closed := strconv.Itoa(testenv.FreePort(t))
	c.okWith(pw1, "connection", "create", "closed", "--host", "127.0.0.1", "--port", closed, "--database", e.db,
		"--user", e.appUser, "--password-env", "DB_PASSWORD", "--ssh-host", "127.0.0.1", "--ssh-port", closed, "--ssh-user", "nobody")
	c.failWith(pw1, 2, "connection", "create", "Bad Name", "--host", e.pg.Host, "--port", "70000", "--database", e.db,
		"--user", e.appUser, "--password-env", "DB_PASSWORD", "--ssh-host", "[::1]")
	c.fail(2, "connection", "create", "flagpw", "--host", "h", "--database", "d", "--user", "u", "--password", e.pw1)
	c.failWith(pw1, 2, "connection", "create", "direct", "--host", "h", "--database", "d", "--user", "u", "--password-env", "DB_PASSWORD")
	if n := e.keys.collect(t, e.cn); n != 2 {
		t.Fatalf("%d private keys in the store, want 2 (tun, closed)", n)
	}

	pub := strings.TrimSpace(c.ok("connection", "public-key", "tun").stdout)
	restricted := strings.TrimSpace(c.ok("connection", "public-key", "tun", "--restricted").stdout)
	if !strings.HasSuffix(restricted, pub) {
		t.Fatalf("restricted key %q does not end with %q", restricted, pub)
	}
	e.bastion.Authorize(t, restricted)
	c.ok("connection", "bastion-setup", "tun")
	// pgrelay's SSH CA (its private key sealed in the store) and a
	// connection that logs in with certificates it signs (the bastion
	// does not trust the CA: the login fails, naming the certificate).
	c.ok("ssh-ca", "init")
	c.ok("ssh-ca", "show", "-o", "json")
	if !e.keys.collectCA(t, e.cn) {
		t.Fatal("no SSH CA key in the store after ssh-ca init")
	}
	c.okWith(pw1, append(e.connArgs("certconn", e.appUser, true), "--ssh-auth", "certificate")...)
	if r := c.fail(1, "query", "certconn", "select 1"); !strings.Contains(r.stderr, "refused pgrelay's certificate") {
		t.Fatalf("query with a certificate the bastion does not trust: %s", r)
	}
	c.ok("connection", "bastion-setup", "certconn")
	if r := c.ok("query", "direct", "select current_user", "-o", "csv"); !strings.Contains(r.stdout, e.appUser) {
		t.Fatalf("query direct: %s", r)
	}
	c.ok("query", "tun", "select current_user, inet_server_port()", "-o", "json") // pins the host key
	// A key rotation with two live keys, left pending: logins fall back to
	// the old key; the new private key is sealed in the store.
	c.ok("connection", "rotate-key", "tun", "--start")
	c.ok("connection", "rotate-key", "tun", "--status", "-o", "json")
	e.keys.collect(t, e.cn)
	c.ok("query", "tun", "select 1")
	c.ok("query", "stdin-conn", "select 1")
	c.fail(1, "query", "direct", "select * from no_such_table_canary")
	c.fail(1, "query", "upd", "select 1") // wrong password
	c.fail(1, "query", "closed", "select 1")
	c.fail(3, "query", "no-such-conn", "select 1")
	c.fail(1, "connection", "test", "upd")
	c.fail(1, "connection", "test", "closed")
	c.ok("connection", "test", "direct")
	c.ok("connection", "test", "tun", "-o", "json")
	c.okWith(withPW(e.pw2), "connection", "update", "upd", "--password-env", "DB_PASSWORD")
	if r := c.ok("query", "upd", "select current_user", "-o", "csv"); !strings.Contains(r.stdout, e.updUser) {
		t.Fatalf("query upd after update: %s", r)
	}
	c.failWith(withPW(e.pw2), 2, "connection", "update", "upd", "--port", "70000", "--password-env", "DB_PASSWORD")
	for _, args := range [][]string{
		{"connection", "show", "tun"}, {"connection", "show", "tun", "-o", "json"}, {"connection", "show", "upd"},
		{"connection", "list"}, {"connection", "list", "-o", "json"},
	} {
		c.ok(args...)
	}
	for _, o := range []string{"text", "json", "sql"} {
		if r := c.run(cmdOpts{}, "grants", "direct", "--target-schema", "public", "-o", o); r.code > 1 {
			t.Fatalf("grants -o %s: %s", o, r)
		}
	}
	c.run(cmdOpts{}, "grants", "upd", "--target-schema", "nope", "--source-schema", "public")

	e.proxy(c)
	if r := c.ok("exec", "tun", "--", "psql", "-tAc", "select 'exec-ok:' || current_user"); !strings.Contains(r.stdout, "exec-ok:"+e.appUser) {
		t.Fatalf("exec psql: %s", r)
	}
	c.ok("exec", "direct", "--", "sh", "-c", `cp -r "$DBT_PROFILES_DIR" "`+e.copies+`/exec-$$" && echo copied`)
	c.fail(1, "exec", "closed", "--", "true")

	// A key rotated and a connection deleted: their keys were collected
	// before.
	c.okWith(pw1, e.connArgs("rot", e.appUser, true)...)
	e.keys.collect(t, e.cn)
	c.ok("connection", "rotate-key", "rot")
	c.ok("connection", "rotate-key", "rot", "-o", "json")
	e.keys.collect(t, e.cn)
	// A chain whose hop 2 has its own key pair: its line is printed, and a
	// login with it is tried (hop 2's user does not authorize it).
	hop1 := e.bastion.User + "@" + e.bastion.Addr()
	hop2 := "nobody@" + e.bastion.Addr()
	c.okWith(pw1, "connection", "create", "hopown", "--host", e.pg.Host, "--port", strconv.Itoa(e.pg.Port),
		"--database", "canarydb", "--user", "canary_app", "--password-env", "DB_PASSWORD",
		"--ssh-hop", hop1, "--ssh-hop", hop2, "--ssh-hop-own-key", hop2)
	before := len(e.keys.seen)
	if n := e.keys.collect(t, e.cn); n != before+2 {
		t.Fatalf("%d new private keys after creating hopown, want 2 (the connection's and hop 2's own)", n-before)
	}
	hopLines := strings.Split(strings.TrimSpace(c.ok("connection", "public-key", "hopown", "--restricted").stdout), "\n")
	if len(hopLines) != 2 {
		t.Fatalf("public-key hopown --restricted: %q", hopLines)
	}
	e.bastion.Authorize(t, hopLines[0])
	if r := c.fail(1, "query", "hopown", "select 1"); !strings.Contains(r.stderr, "hop 2 of 2") || !strings.Contains(r.stderr, hopLines[1]) {
		t.Fatalf("query hopown with hop 2's own key not installed: %s", r)
	}
	c.ok("connection", "show", "hopown")
	c.ok("connection", "show", "hopown", "-o", "json")
	c.fail(2, "connection", "update", "hopown", "--ssh-hop-own-key", hop1)
	c.ok("connection", "update", "hopown", "--ssh-hop-own-key", "")
	c.fail(2, "connection", "trust-host-key", "tun", "--fingerprint", "SHA256:bogus")
	c.fail(2, "connection", "rotate-key", "direct")
	c.ok("connection", "delete", "rot", "--yes")

	// Jobs, and runs in this process.
	jobsFile := filepath.Join(t.TempDir(), "jobs.yaml")
	if err := os.WriteFile(jobsFile, []byte(e.jobsYAML("", "tun")), 0o600); err != nil {
		t.Fatal(err)
	}
	c.ok("job", "apply", "-f", jobsFile)
	c.ok("job", "apply", "-f", jobsFile, "-o", "json")
	c.ok("job", "list")
	c.ok("job", "list", "-o", "json")
	c.ok("job", "show", "envjob")
	c.ok("job", "show", "envjob", "-o", "json")
	r := c.ok("job", "run", "envjob", "--allow-command", "sh")
	for _, want := range []string{"PGPASSWORD=[redacted]", "pgpassword=[redacted]", "psql-ok:" + e.appUser, "password: \"{{ env_var('PGPASSWORD') }}\""} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("local run of envjob: output lacks %q:\n%s", want, r.stdout)
		}
	}
	r = c.fail(1, "job", "run", "sqlfail")
	if !strings.Contains(r.stdout+r.stderr, "no_such_table_canary") {
		t.Errorf("local run of sqlfail does not name the missing table: %s", r)
	}
	c.ok("job", "run", "sqljob", "-o", "json")
	var runs []jobs.Run
	if err := json.Unmarshal([]byte(c.ok("run", "list", "-o", "json").stdout), &runs); err != nil || len(runs) < 2 {
		t.Fatalf("run list: %d runs, %v", len(runs), err)
	}
	c.ok("run", "list")
	// The audit log records every change and use: never a secret.
	for _, args := range [][]string{{"audit", "list"}, {"audit", "list", "-o", "json", "--limit", "10000"},
		{"audit", "verify"}, {"audit", "verify", "-o", "json"}, {"audit", "export"}} {
		c.ok(args...)
	}
	for _, run := range runs[:2] {
		c.ok("run", "show", run.ID)
		c.ok("run", "show", run.ID, "-o", "json")
		c.ok("run", "logs", run.ID)
		c.run(cmdOpts{}, "run", "cancel", run.ID)
	}
	c.fail(3, "run", "show", "no-such-run")
	c.fail(3, "job", "delete", "no-such-job", "--yes")

	c.ok("token", "list")
	c.ok("token", "list", "-o", "json")
	c.ok("token", "revoke", "revoke-me")
	c.fail(3, "token", "revoke", "no-such-token")
	// Revoking by the token itself (the ID or name was meant): it works,
	// and no output repeats the token; an unknown token is not repeated
	// either.
	var nt struct {
		Token string `json:"token"`
	}
	r = c.okWith(cmdOpts{allow: []string{"token by-value"}}, "token", "create", "--role", "viewer", "--name", "by-value", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &nt); err != nil || !auth.LooksLikeToken(nt.Token) {
		t.Fatalf("token create: %q, %v", r.stdout, err)
	}
	e.cn.addText("token by-value", nt.Token)
	c.ok("token", "revoke", nt.Token)
	unknown := auth.TokenPrefix + strings.Repeat("x", 12) + newPassword("u")[5:17] + strings.Repeat("y", 19)
	if !auth.LooksLikeToken(unknown) {
		t.Fatalf("%d", len(unknown))
	}
	e.cn.addText("unknown token", unknown)
	c.fail(3, "token", "revoke", unknown)

	// A shared store URL with a password that cannot be reached: the
	// error must not show the password.
	u := url.URL{Scheme: "postgres", User: url.UserPassword("pgrelay", e.pw1), Host: "127.0.0.1:" + closed, Path: "/pgrelay"}
	c.run(cmdOpts{}, "--store", u.String(), "connection", "list")
	c.run(cmdOpts{env: []string{"PGRELAY_STORE=" + u.String()}}, "token", "list")
}

// proxy runs `pgrelay proxy tun`, connects through it with pgx, and stops
// it with SIGINT.
func (e *canaryEnv) proxy(c *pgrelayCLI) {
	t := e.t
	port := testenv.FreePort(t)
	cmd := exec.Command(binary, "--log-level", "debug", "proxy", "tun", "--listen", "127.0.0.1:"+strconv.Itoa(port))
	cmd.Env = c.env
	stdout, stderr := &e2etest.Buffer{}, &e2etest.Buffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		e.ev.add("cli local `pgrelay proxy tun` stdout", stdout.Bytes())
		e.ev.add("cli local `pgrelay proxy tun` stderr", stderr.Bytes())
	}()
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s user=%s sslmode=disable connect_timeout=5", port, e.db, e.appUser))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Password = e.pw1
	var conn *pgx.Conn
	deadline := time.Now().Add(15 * time.Second)
	for {
		conn, err = pgx.ConnectConfig(context.Background(), cfg)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		_ = cmd.Process.Kill()
		t.Fatalf("connect through pgrelay proxy: %v\n%s", err, stderr.Bytes())
	}
	var user string
	if err := conn.QueryRow(context.Background(), "select current_user").Scan(&user); err != nil || user != e.appUser {
		t.Fatalf("query through proxy: %q, %v", user, err)
	}
	_ = conn.Close(context.Background())
	_ = cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("proxy exit: %v\n%s", err, stderr.Bytes())
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Fatal("proxy did not stop on SIGINT")
	}
}

// remoteCLI runs the commands against server s.
func (e *canaryEnv) remoteCLI(s *e2etest.Server) {
	t := e.t
	env := append(append([]string(nil), e.common...), "PGRELAY_SERVER="+s.URL)
	c := &pgrelayCLI{t: t, ev: e.ev, mode: "remote", env: append(append([]string(nil), env...), "PGRELAY_TOKEN="+e.tokens["admin"])}
	pw1 := withPW(e.pw1)
	c.okWith(pw1, e.connArgs("rdirect", e.appUser, false)...)
	c.okWith(pw1, e.connArgs("rtun", e.appUser, true)...)
	c.okWith(pw1, e.connArgs("rupd", e.updUser, false)...)
	c.okWith(cmdOpts{stdin: e.pw1 + "\n"}, "connection", "create", "rstdin", "--host", e.pg.Host,
		"--port", strconv.Itoa(e.pg.Port), "--database", e.db, "--user", e.appUser, "--password-stdin")
	c.failWith(pw1, 2, "connection", "create", "Bad Name", "--host", e.pg.Host, "--port", "70000", "--database", e.db,
		"--user", e.appUser, "--password-env", "DB_PASSWORD", "--ssh-host", "[::1]")
	c.fail(2, "connection", "create", "flagpw", "--host", "h", "--database", "d", "--user", "u", "--password", e.pw1)
	c.failWith(pw1, 2, "connection", "create", "rdirect", "--host", "h", "--database", "d", "--user", "u", "--password-env", "DB_PASSWORD")
	e.keys.collect(t, e.cn)

	e.bastion.Authorize(t, strings.TrimSpace(c.ok("connection", "public-key", "rtun", "--restricted").stdout))
	c.ok("connection", "public-key", "rtun")
	c.ok("connection", "bastion-setup", "rtun")
	if r := c.ok("query", "rdirect", "select current_user", "-o", "csv"); !strings.Contains(r.stdout, e.appUser) {
		t.Fatalf("remote query: %s", r)
	}
	c.ok("query", "rtun", "select current_user", "-o", "json")
	c.ok("query", "rstdin", "select 1")
	c.fail(1, "query", "rdirect", "select * from no_such_table_canary")
	c.fail(1, "query", "rupd", "select 1")
	c.fail(1, "query", "closed", "select 1")
	c.fail(3, "query", "no-such-conn", "select 1")
	// Connection tests and audits run on the server once the API serves
	// them; until then the CLI refuses them: either way, no secret.
	c.run(cmdOpts{}, "connection", "test", "rtun")
	c.run(cmdOpts{}, "connection", "test", "rupd", "-o", "json")
	c.run(cmdOpts{}, "grants", "rdirect", "--target-schema", "public")
	c.fail(2, "proxy", "rtun")
	c.fail(2, "exec", "rtun", "--", "true")
	c.okWith(withPW(e.pw2), "connection", "update", "rupd", "--password-env", "DB_PASSWORD")
	c.ok("query", "rupd", "select current_user")
	c.failWith(withPW(e.pw2), 2, "connection", "update", "rupd", "--port", "70000", "--password-env", "DB_PASSWORD")
	for _, args := range [][]string{
		{"connection", "show", "rtun"}, {"connection", "show", "rtun", "-o", "json"}, {"connection", "show", "tun"},
		{"connection", "list"}, {"connection", "list", "-o", "json"},
	} {
		c.ok(args...)
	}
	c.okWith(pw1, e.connArgs("rrot", e.appUser, true)...)
	e.keys.collect(t, e.cn)
	c.ok("connection", "rotate-key", "rrot")
	e.keys.collect(t, e.cn)
	c.fail(2, "connection", "trust-host-key", "rtun", "--fingerprint", "SHA256:bogus")
	c.fail(2, "connection", "trust-host-key", "rtun", "--fingerprint", "not-a-fingerprint")
	c.ok("connection", "delete", "rrot", "--yes")
	c.fail(3, "connection", "delete", "rrot", "--yes")

	jobsFile := filepath.Join(t.TempDir(), "jobs.yaml")
	if err := os.WriteFile(jobsFile, []byte(e.jobsYAML("r", "rtun")), 0o600); err != nil {
		t.Fatal(err)
	}
	c.ok("job", "apply", "-f", jobsFile)
	c.ok("job", "list")
	for _, args := range [][]string{{"audit", "list"}, {"audit", "list", "-o", "json", "--limit", "10000"},
		{"audit", "verify", "-o", "json"}, {"audit", "export"}} {
		c.ok(args...)
	}
	c.ok("job", "show", "renvjob", "-o", "json")
	r := c.ok("job", "run", "renvjob", "--follow")
	for _, want := range []string{"PGPASSWORD=[redacted]", "pgpassword=[redacted]", "psql-ok:" + e.appUser} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("remote run of renvjob: output lacks %q:\n%s", want, r.stdout)
		}
	}
	c.fail(1, "job", "run", "rsqlfail", "--wait")
	c.ok("job", "run", "rsqljob", "-o", "json")
	var runs []jobs.Run
	if err := json.Unmarshal([]byte(c.ok("run", "list", "-o", "json").stdout), &runs); err != nil || len(runs) < 3 {
		t.Fatalf("remote run list: %d runs, %v", len(runs), err)
	}
	c.ok("run", "list", "--job", "renvjob")
	for _, run := range runs[:3] {
		c.ok("run", "show", run.ID)
		c.ok("run", "logs", run.ID)
		if run.JobName == "rsqlfail" {
			// --follow exits with the run's outcome.
			c.fail(1, "run", "logs", run.ID, "--follow")
		} else {
			c.ok("run", "logs", run.ID, "--follow")
		}
		c.run(cmdOpts{}, "run", "cancel", run.ID)
	}
	c.ok("job", "delete", "rsqljob", "--yes")

	r = c.okWith(cmdOpts{allow: []string{"token remote-made"}}, "token", "create", "--role", "viewer", "--name", "remote-made")
	var made string
	for _, f := range strings.Fields(r.stdout) {
		if auth.LooksLikeToken(f) {
			made = f
		}
	}
	if made == "" {
		t.Fatalf("remote token create shows no token:\n%s", r.stdout)
	}
	e.cn.addText("token remote-made", made)
	c.ok("token", "list")
	c.ok("token", "revoke", "remote-made")
	c.fail(3, "token", "revoke", "remote-made")

	// Refused callers: a viewer changing things, a revoked token, a
	// password given as the token, no token.
	viewer := &pgrelayCLI{t: t, ev: e.ev, mode: "remote as viewer", env: append(append([]string(nil), env...), "PGRELAY_TOKEN="+e.tokens["viewer"])}
	viewer.failWith(pw1, 4, e.connArgs("vconn", e.appUser, false)...)
	viewer.fail(4, "query", "rdirect", "select 1")
	viewer.fail(4, "token", "list")
	viewer.ok("connection", "show", "rtun")
	revoked := &pgrelayCLI{t: t, ev: e.ev, mode: "remote with a revoked token", env: append(append([]string(nil), env...), "PGRELAY_TOKEN="+e.tokens["revoke-me"])}
	revoked.fail(4, "connection", "list")
	revoked.failWith(pw1, 4, e.connArgs("rv", e.appUser, false)...)
	wrong := &pgrelayCLI{t: t, ev: e.ev, mode: "remote with the password as token", env: append(append([]string(nil), env...), "PGRELAY_TOKEN="+e.pw1)}
	wrong.run(cmdOpts{}, "connection", "list")
	flag := &pgrelayCLI{t: t, ev: e.ev, mode: "remote with --token", env: env}
	flag.run(cmdOpts{}, "--token", e.pw1, "connection", "list")
	flag.fail(2, "connection", "list")
}

// webUI signs in to server s's web UI and fetches every page, and posts
// every form, with errors where the form shows what was typed.
func (e *canaryEnv) webUI(s *e2etest.Server) {
	t := e.t
	w := newWeb(t, e.ev, s.URL)
	sess, csrf := w.signIn(e.tokens["admin"], "admin")
	admin := newClient(t, e.ev, s.URL, e.tokens["admin"], "admin client")
	ended, err := admin.ListRuns(context.Background(), store.RunFilter{Job: "rsqlfail"})
	if err != nil || len(ended) == 0 {
		t.Fatalf("list runs: %d, %v", len(ended), err)
	}
	runID := ended[0].ID

	// Forms with errors: the password typed must not come back.
	conn := url.Values{"name": {"web-bad"}, "flavor": {"postgres"}, "host": {e.pg.Host}, "port": {"not-a-port"},
		"database": {e.db}, "user": {e.appUser}, "password": {e.pw1}, "sslmode": {"prefer"}, "threads": {"4"},
		"ssh_tunnel.enabled": {"on"}, "ssh_tunnel.host": {e.bastion.Host}, "ssh_tunnel.port": {strconv.Itoa(e.bastion.Port)},
		"ssh_tunnel.user": {e.bastion.User}, "ssh_tunnel.key_type": {"ed25519"}, "ssh_tunnel.keepalive_interval": {"15s"},
		"ssh_tunnel.keepalive_count_max": {"3"}}
	if r := w.postForm(sess, csrf, "/connections", conn, "new connection form with a bad port"); r.status != http.StatusUnprocessableEntity {
		t.Errorf("bad new connection form: status %d", r.status)
	}
	conn.Set("port", strconv.Itoa(e.pg.Port))
	conn.Set("name", "Bad Name")
	conn.Set("ssh_tunnel.keepalive_interval", "soon")
	if r := w.postForm(sess, csrf, "/connections", conn, "new connection form failing validation"); r.status != http.StatusUnprocessableEntity {
		t.Errorf("invalid new connection form: status %d", r.status)
	}
	conn.Set("name", "tun")
	conn.Set("ssh_tunnel.keepalive_interval", "15s")
	if r := w.postForm(sess, csrf, "/connections", conn, "new connection form with a taken name"); r.status != http.StatusUnprocessableEntity {
		t.Errorf("taken-name connection form: status %d", r.status)
	}
	edit := url.Values{}
	for k, v := range conn {
		edit[k] = v
	}
	edit.Set("password", e.pw2)
	edit.Set("threads", "many")
	if r := w.postForm(sess, csrf, "/connections/rupd/edit", edit, "edit form with a bad number"); r.status != http.StatusUnprocessableEntity {
		t.Errorf("bad edit form: status %d", r.status)
	}
	edit.Set("threads", "4")
	edit.Set("ssh_tunnel.user", "")
	if r := w.postForm(sess, csrf, "/connections/rupd/edit", edit, "edit form failing validation"); r.status != http.StatusUnprocessableEntity {
		t.Errorf("invalid edit form: status %d", r.status)
	}
	conn.Set("name", "web-new")
	if r := w.postForm(sess, csrf, "/connections", conn, "new connection form"); r.status != http.StatusSeeOther {
		t.Fatalf("new connection form: status %d: %.3000s", r.status, r.body)
	}
	e.keys.collect(t, e.cn)

	// Every page, then every form.
	posts := map[string]func(path string) response{
		"/login": func(p string) response {
			// Typed into the sign-in form: the password, a revoked token.
			page := w.do(req{method: http.MethodGet, path: p, label: "sign-in page"})
			nonce := cookieOf(page, "pgrelay_login")
			var last response
			for _, tok := range []string{e.pw1, e.tokens["revoke-me"]} {
				f := url.Values{auth.CSRFField: {csrfOf(t, page)}, "token": {tok}, "next": {"/connections"}}
				last = w.do(req{method: http.MethodPost, path: p, body: f.Encode(), contentType: "application/x-www-form-urlencoded",
					cookies: []*http.Cookie{nonce}, label: "sign in with a wrong token"})
				if last.status != http.StatusUnauthorized {
					t.Errorf("sign in with a wrong token: status %d", last.status)
				}
			}
			return last
		},
		"/logout": func(p string) response {
			other, otherCSRF := w.signIn(e.tokens["editor"], "editor")
			return w.postForm(other, otherCSRF, p, nil, "sign out")
		},
		"/connections": func(p string) response {
			return w.postForm(sess, csrf, p, url.Values{"name": {"x"}, "password": {e.pw1}}, "new connection form, most fields missing")
		},
		"/connections/{name}/edit": func(p string) response {
			return w.postForm(sess, csrf, p, url.Values{"password": {e.pw2}, "port": {"-1"}}, "edit form, most fields missing")
		},
		"/connections/{name}/delete": func(p string) response {
			return w.postForm(sess, csrf, p, url.Values{"confirm": {"not-the-name"}}, "delete with a wrong name")
		},
		"/connections/{name}/rotate-key": func(p string) response {
			e.keys.collect(t, e.cn)
			r := w.postForm(sess, csrf, p, nil, "rotate key")
			e.keys.collect(t, e.cn)
			return r
		},
		"/connections/{name}/trust-host-key": func(p string) response {
			return w.postForm(sess, csrf, p, url.Values{"fingerprint": {"SHA256:bogus"}}, "trust a wrong host key")
		},
		"/connections/{name}/rotate-key/start": func(p string) response {
			r := w.postForm(sess, csrf, p, nil, "start a key rotation with two live keys")
			e.keys.collect(t, e.cn)
			w.do(req{method: http.MethodGet, path: strings.TrimSuffix(p, "/rotate-key/start"), session: sess, label: "page during a key rotation"})
			return r
		},
		"/connections/{name}/rotate-key/finish": func(p string) response {
			return w.postForm(sess, csrf, p, nil, "finish a key rotation whose new key is not installed")
		},
		"/connections/{name}/rotate-key/cancel": func(p string) response {
			return w.postForm(sess, csrf, p, nil, "cancel a key rotation")
		},
		"/connections/{name}/test": func(p string) response {
			for _, name := range []string{"tun", "rupd", "closed"} {
				w.postForm(sess, csrf, "/connections/"+name+"/test", nil, "test a saved connection")
			}
			return w.postForm(sess, csrf, p, nil, "test a saved connection")
		},
		"/new/test": func(p string) response {
			draft := url.Values{}
			for k, v := range conn {
				draft[k] = v
			}
			draft.Del("ssh_tunnel.enabled")
			draft.Set("name", "")
			w.postForm(sess, csrf, p, draft, "test the new connection form")
			draft.Set("password", e.pw2)
			w.postForm(sess, csrf, p, draft, "test the new connection form with a wrong password")
			draft.Set("port", "not-a-port")
			return w.postForm(sess, csrf, p, draft, "test the new connection form with a bad port")
		},
		"/connections/{name}/edit/test": func(p string) response {
			draft := url.Values{}
			for k, v := range conn {
				draft[k] = v
			}
			draft.Set("password", "")
			w.postForm(sess, csrf, p, draft, "test the edit form with the stored password")
			draft.Set("password", e.pw2)
			w.postForm(sess, csrf, p, draft, "test the edit form with a typed password")
			draft.Set("ssh_tunnel.port", "x")
			return w.postForm(sess, csrf, p, draft, "test the edit form with a bad bastion port")
		},
		"/connections/{name}/grants": func(p string) response {
			w.postForm(sess, csrf, "/connections/direct/grants", url.Values{"target_schema": {"public"}, "source_schemas": {"public"}}, "audit")
			w.postForm(sess, csrf, "/connections/rupd/grants", url.Values{"target_schema": {"nope"}, "role": {"nobody"}}, "audit of another role")
			return w.postForm(sess, csrf, p, url.Values{"target_schema": {"public"}}, "audit through a bastion that refuses the key")
		},
		"/jobs": func(p string) response {
			w.postForm(sess, csrf, p, url.Values{"mode": {"yaml"}, "yaml": {"name: [unclosed"}}, "job YAML form with a syntax error")
			return w.postForm(sess, csrf, p, url.Values{"name": {"Bad Job"}, "connection": {"rtun"}, "steps[0].kind": {"command"},
				"steps[0].command": {""}}, "job form failing validation")
		},
		"/jobs/{name}/edit": func(p string) response {
			return w.postForm(sess, csrf, p, url.Values{"connection": {""}, "timeout": {"never"}, "steps[0].kind": {"sql"}}, "job edit failing validation")
		},
		"/jobs/{name}/delete": func(p string) response {
			return w.postForm(sess, csrf, p, url.Values{"confirm": {"nope"}}, "delete a job with a wrong name")
		},
		"/jobs/{name}/run": func(p string) response {
			r := w.postForm(sess, csrf, p, nil, "run a job")
			if r.status == http.StatusSeeOther {
				w.do(req{method: http.MethodGet, path: r.location(), session: sess, label: "the run started from the UI"})
			}
			return r
		},
		"/runs/{id}/cancel": func(p string) response {
			return w.postForm(sess, csrf, p, nil, "cancel an ended run")
		},
	}
	for _, rt := range webRoutes(t) {
		p := fillWeb(t, rt, "web-new", "renvjob", runID)
		switch rt.method {
		case http.MethodGet:
			r := w.do(req{method: http.MethodGet, path: p, session: sess, label: "page"})
			if r.status != http.StatusOK && (rt.pattern != "/login" || r.status != http.StatusSeeOther) {
				t.Errorf("web GET %s (%s): status %d", p, rt.pattern, r.status)
			}
			if rt.pattern == "/connections/{name}" {
				for _, q := range []string{"created=1", "saved=1", "rotated=1", "trusted=1", "rotation=started", "rotation=finished"} {
					w.do(req{method: http.MethodGet, path: p + "?" + q, session: sess, label: "page with flash"})
				}
				w.do(req{method: http.MethodGet, path: "/connections/tun", session: sess, label: "page"})
			}
		case http.MethodPost:
			post, ok := posts[rt.pattern]
			if !ok {
				t.Errorf("web route %s %s: the walk has no form for it; add one to posts", rt.method, rt.pattern)
				continue
			}
			if r := post(p); r.status >= 500 && r.status != http.StatusBadGateway {
				t.Errorf("web POST %s: status %d", p, r.status)
			}
		default:
			t.Errorf("web route %s %s: method not walked", rt.method, rt.pattern)
		}
	}
	// Missing records and pages.
	for _, p := range []string{"/connections/no-such", "/jobs/no-such", "/runs/no-such", "/no-such-page"} {
		w.do(req{method: http.MethodGet, path: p, session: sess, label: "missing"})
	}
	// The API with the session (and its CSRF token for changes).
	w.do(req{method: http.MethodGet, path: api.Prefix + "/connections", session: sess, label: "API with the session"})
	w.do(req{method: http.MethodPost, path: api.Prefix + "/connections", session: sess, csrf: csrf, label: "API create with the session",
		body: fmt.Sprintf(`{"name": "Bad Name", "host": "", "password": %q}`, e.pw1)})
	w.do(req{method: http.MethodPost, path: api.Prefix + "/connections", session: sess, label: "API create with the session, no CSRF",
		body: fmt.Sprintf(`{"name": "sess-conn", "host": "h", "database": "d", "user": "u", "password": %q}`, e.pw1)})
}

// serverRuns runs jobs on server s through the API: a job that prints its
// environment, a job that fails in SQL, and a gated job during which the
// environment of the server and of its children is read.
func (e *canaryEnv) serverRuns(s *e2etest.Server) {
	t := e.t
	ctx := context.Background()
	c := newClient(t, e.ev, s.URL, e.tokens["admin"], "admin client")
	wait := func(id string) *jobs.Run {
		t.Helper()
		var run *jobs.Run
		waitFor(t, "run "+id+" ends", 30*time.Second, func() bool {
			var err error
			if run, err = c.GetRun(ctx, id); err != nil {
				t.Fatal(err)
			}
			return run.Status.Terminal()
		})
		return run
	}
	logOf := func(id string) string {
		t.Helper()
		lines, err := c.RunLog(ctx, id, 0, 10000)
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, l := range lines {
			b.WriteString(l.Text + "\n")
		}
		return b.String()
	}

	gated, err := c.RunJob(ctx, "gatejob", jobs.API)
	if err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(e.gateDir, "ready"), 30*time.Second)
	e.childEnvironments(s)
	if err := os.WriteFile(filepath.Join(e.gateDir, "go"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if run := wait(gated.ID); run.Status != jobs.Succeeded {
		t.Errorf("gated run: %+v", run)
	}
	if l := logOf(gated.ID); !strings.Contains(l, "gate passed, pgpassword=[redacted]") {
		t.Errorf("gated run log:\n%s", l)
	}

	envRun, err := c.RunJob(ctx, "envjob", jobs.API)
	if err != nil {
		t.Fatal(err)
	}
	if run := wait(envRun.ID); run.Status != jobs.Succeeded {
		t.Errorf("envjob run on the server: %+v", run)
	}
	l := logOf(envRun.ID)
	for _, want := range []string{"PGPASSWORD=[redacted]", "pgpassword=[redacted]", "psql-ok:" + e.appUser, "env_var('PGPASSWORD')"} {
		if !strings.Contains(l, want) {
			t.Errorf("envjob log on the server lacks %q:\n%s", want, l)
		}
	}
	// The run's mark (jobs.RunMarkEnv) is the run's, for its commands: no
	// setting of the server's.
	if strings.Contains(strings.ReplaceAll(l, jobs.RunMarkEnv+"=", ""), "PGRELAY_") {
		t.Errorf("a command step sees pgrelay's own variables:\n%s", l)
	}
	failRun, err := c.RunJob(ctx, "sqlfail", jobs.API)
	if err != nil {
		t.Fatal(err)
	}
	if run := wait(failRun.ID); run.Status != jobs.Failed || !strings.Contains(run.Reason, "no_such_table_canary") {
		t.Errorf("sqlfail run on the server: %+v", run)
	}
	logOf(failRun.ID)
}

// childEnvironments reads, while the gated command step runs, the
// environment of server s and of every process below it, command steps
// (whose PGPASSWORD is the run's own password, never the stored one) and
// their children included: none may hold a secret.
func (e *canaryEnv) childEnvironments(s *e2etest.Server) {
	t := e.t
	// One snapshot of the processes serves for the steps and for the
	// rest.
	tree, err := testenv.ReadProcessTree()
	if err != nil {
		t.Fatal(err)
	}
	// Command steps are the server's children running a job's script
	// (other runs may be going on too); the gated one must be there.
	var gated int
	inStep := map[int]bool{}
	for _, p := range tree[s.Pid()] {
		cl := cmdline(p)
		if !strings.Contains(cl, "sh -c ") || !strings.Contains(cl, e.gateDir) && !strings.Contains(cl, e.copies) {
			continue
		}
		if strings.Contains(cl, e.gateDir) {
			gated = p
		}
		// A step's environment has the run's own password, and no secret.
		if env, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p), "environ")); err == nil {
			e.ev.add(fmt.Sprintf("environment of a command step (pid %d)", p), env)
		}
		inStep[p] = true
	}
	if gated == 0 {
		t.Fatalf("the gated command step is not a child of the server (pid %d)", s.Pid())
	}
	// The endpoint logs in with the stored password itself: the step gets
	// a password of the run's own.
	var runPW string
	for _, kv := range strings.Split(string(environ(t, gated)), "\x00") {
		if v, ok := strings.CutPrefix(kv, "PGPASSWORD="); ok {
			runPW = v
		}
	}
	if len(runPW) < 32 || runPW == e.pw1 {
		t.Errorf("the command step's PGPASSWORD is not a password of the run's own (%d bytes)", len(runPW))
	}
	pids := tree.Below(s.Pid())
	t.Logf("server %s has %d processes below it; %d are command steps", s.Name(), len(pids), len(inStep))
	for _, p := range pids {
		if inStep[p] {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(p), "environ"))
		if err != nil {
			continue // ended meanwhile
		}
		e.ev.add(fmt.Sprintf("environment of server child pid %d (%s)", p, cmdline(p)), b)
	}
	// The server's own environment now, with a run going.
	e.ev.add(fmt.Sprintf("environment of server %s during a run", s.Name()), environ(t, s.Pid()), "master key")
}

// apiWalk calls every route of the REST API on server s, with valid
// requests and with every error path: bad JSON (holding the password),
// validation errors, unknown names, a viewer's token, a revoked token, no
// token, the password as a token, and a web session.
func (e *canaryEnv) apiWalk(s *e2etest.Server) {
	t := e.t
	ctx := context.Background()
	w := newWeb(t, e.ev, s.URL)
	// Fixtures are made through a client whose responses are not
	// recorded (they show the tokens it creates).
	fixtures, err := remote.Dial(s.URL, e.tokens["admin"])
	if err != nil {
		t.Fatal(err)
	}
	runs, err := fixtures.ListRuns(ctx, store.RunFilter{Job: "sqlfail"})
	if err != nil || len(runs) == 0 {
		t.Fatalf("runs of sqlfail: %d, %v", len(runs), err)
	}
	endedRun := runs[0].ID
	seq := 0
	next := func() int { seq++; return seq }
	spec := func(name string, tunnel bool) connection.Spec {
		sp := connection.Spec{Name: name, Host: e.pg.Host, Port: e.pg.Port, Database: e.db, User: e.appUser,
			Password: secret.New(e.pw1)}
		if tunnel {
			sp.Tunnel = &connection.Tunnel{Host: e.bastion.Host, Port: e.bastion.Port, User: e.bastion.User}
		}
		return sp
	}
	freshConn := func(tunnel bool) string {
		name := fmt.Sprintf("walk-%d", next())
		if _, err := fixtures.CreateConnection(ctx, spec(name, tunnel)); err != nil {
			t.Fatal(err)
		}
		e.keys.collect(t, e.cn)
		return name
	}
	freshJob := func() string {
		name := fmt.Sprintf("walk-job-%d", next())
		if _, err := fixtures.CreateJob(ctx, jobs.Job{Name: name, Connection: "direct", Steps: []jobs.Step{{SQL: "select 1"}}}); err != nil {
			t.Fatal(err)
		}
		return name
	}
	freshToken := func() string {
		name := fmt.Sprintf("walk-token-%d", next())
		nt, err := fixtures.CreateToken(ctx, name, auth.Viewer)
		if err != nil {
			t.Fatal(err)
		}
		e.cn.addText("token "+name, nt.Token)
		return nt.ID
	}
	sess, csrf := w.signIn(e.tokens["admin"], "admin on server B")

	// fill returns the route's path with its parameters: unknown names
	// when missing, else records fit for the route (a record of its own
	// for routes that change or remove it).
	fill := func(rt api.Route, missing bool) string {
		p := rt.Pattern
		isJob := strings.HasPrefix(p, api.Prefix+"/jobs/")
		if strings.Contains(p, "{name}") {
			name := "tun"
			switch {
			case missing:
				name = "no-such-name"
			case isJob && rt.Method == http.MethodDelete:
				name = freshJob()
			case isJob:
				name = "sqljob"
			case rt.Method == http.MethodDelete || rt.Method == http.MethodPut:
				name = freshConn(false)
			case strings.HasSuffix(p, "/rotate-key"):
				name = freshConn(true)
			case strings.HasSuffix(p, "/query"):
				name = "direct"
			}
			p = strings.ReplaceAll(p, "{name}", name)
		}
		if strings.Contains(p, "{id}") {
			id := endedRun
			switch {
			case missing:
				id = "no-such-id"
			case !strings.HasPrefix(p, api.Prefix+"/runs/"):
				id = freshToken()
			}
			p = strings.ReplaceAll(p, "{id}", id)
		}
		if strings.Contains(p, "{") {
			t.Fatalf("route %s %s: the walk cannot fill its path parameters; add them to fill", rt.Method, rt.Pattern)
		}
		return p
	}
	tunnelJSON := fmt.Sprintf(`"ssh_tunnel": {"host": %q, "port": %d, "user": %q}`, e.bastion.Host, e.bastion.Port, e.bastion.User)
	samples := map[string]func() string{
		"POST /api/v1/connections": func() string {
			return fmt.Sprintf(`{"name": "api-%d", "host": %q, "port": %d, "database": %q, "user": %q, "password": %q, %s}`,
				next(), e.pg.Host, e.pg.Port, e.db, e.appUser, e.pw1, tunnelJSON)
		},
		"PUT /api/v1/connections/{name}": func() string {
			return fmt.Sprintf(`{"host": %q, "port": %d, "database": %q, "user": %q, "password": %q}`, e.pg.Host, e.pg.Port, e.db, e.updUser, e.pw2)
		},
		"POST /api/v1/connections/{name}/rotate-key":          func() string { return "" },
		"POST /api/v1/connections/{name}/trust-host-key":      func() string { return `{"fingerprint": "SHA256:AAAA"}` },
		"POST /api/v1/connections/{name}/query":               func() string { return `{"sql": "select current_user"}` },
		"POST /api/v1/connections/{name}/key-rotation":        func() string { return `{"old_key_lifetime": "24h"}` },
		"POST /api/v1/connections/{name}/key-rotation/finish": func() string { return "" },
		"POST /api/v1/ssh-ca":                                 func() string { return "" },
		"PUT /api/v1/ssh-ca/principals":                       func() string { return fmt.Sprintf(`{"principals": [%q]}`, e.bastion.User) },
		"POST /api/v1/jobs": func() string {
			return fmt.Sprintf(`{"name": "walk-new-%d", "connection": "direct", "steps": [{"sql": "select 1"}]}`, next())
		},
		"PUT /api/v1/jobs/{name}": func() string { return `{"connection": "direct", "timeout": "5m", "steps": [{"sql": "select 2"}]}` },
		"POST /api/v1/jobs/apply": func() string {
			return `{"jobs": [{"name": "walk-applied", "connection": "direct", "steps": [{"sql": "select 3"}]}]}`
		},
		"POST /api/v1/jobs/{name}/runs":          func() string { return "" },
		"POST /api/v1/runs/{id}/cancel":          func() string { return "" },
		"POST /api/v1/tokens":                    func() string { return fmt.Sprintf(`{"name": "made-%d", "role": "viewer"}`, next()) },
		"POST /api/v1/connections/{name}/test":   func() string { return "" },
		"POST /api/v1/connections/{name}/grants": func() string { return `{"target_schema": "public", "source_schemas": ["public"]}` },
		"POST /api/v1/connections/test": func() string {
			return fmt.Sprintf(`{"name": "draft", "host": %q, "port": %d, "database": %q, "user": %q, "password": %q, "based_on": "tun", %s}`,
				e.pg.Host, e.pg.Port, e.db, e.appUser, e.pw1, tunnelJSON)
		},
	}
	body := func(rt api.Route) string {
		if rt.Method == http.MethodGet || rt.Method == http.MethodDelete {
			return ""
		}
		s, ok := samples[rt.Method+" "+rt.Pattern]
		if !ok {
			t.Errorf("route %s %s: the walk has no sample body; add one to samples (an empty body is sent)", rt.Method, rt.Pattern)
			return ""
		}
		return s()
	}
	// call sends one request of the walk; a created token's value is
	// taken as a canary, allowed in the response that shows it.
	call := func(rt api.Route, r req) response {
		t.Helper()
		r.method = rt.Method
		if r.label == "" {
			r.label = "walk"
		}
		if rt.Method == http.MethodPost && rt.Pattern == api.Prefix+"/tokens" {
			r.allow = append(r.allow, "token made by the walk")
		}
		resp := w.do(r)
		if rt.Method == http.MethodPost && rt.Pattern == api.Prefix+"/tokens" && resp.status == http.StatusCreated {
			var nt struct {
				Token string `json:"token"`
			}
			if err := json.Unmarshal([]byte(resp.body), &nt); err == nil && nt.Token != "" {
				e.cn.addText("token made by the walk", nt.Token)
			}
		}
		return resp
	}
	want := func(rt api.Route, who string, r response, status int) {
		t.Helper()
		if r.status != status {
			t.Errorf("%s %s as %s: status %d, want %d: %.500s", rt.Method, rt.Pattern, who, r.status, status, r.body)
		}
	}
	bad := map[string]string{
		"truncated JSON with the password":     fmt.Sprintf(`{"password": %q, "name": `, e.pw1),
		"syntax error after the password":      fmt.Sprintf(`{"password": %q x}`, e.pw1),
		"unknown field holding the password":   fmt.Sprintf(`{"passwd": %q}`, e.pw1),
		"the password in a number field":       fmt.Sprintf(`{"port": %q, "password": %q}`, e.pw1, e.pw1),
		"the password as a number":             `{"password": 12345678901234567890}`,
		"two objects, the password in the 2nd": fmt.Sprintf(`{} {"password": %q}`, e.pw1),
	}
	routes := apiRoutes(t)
	for _, rt := range routes {
		unsafe := rt.Method != http.MethodGet
		b := body(rt)
		r := call(rt, req{path: fill(rt, false), body: b, bearer: e.tokens["admin"], label: "admin"})
		if r.status == http.StatusUnauthorized || r.status == http.StatusForbidden || (r.status >= 500 && r.status != http.StatusBadGateway) {
			t.Errorf("%s %s as admin: status %d: %.500s", rt.Method, rt.Pattern, r.status, r.body)
		}
		if rt.Public {
			continue
		}
		if strings.Contains(rt.Pattern, "{") {
			r := call(rt, req{path: fill(rt, true), body: body(rt), bearer: e.tokens["admin"], label: "admin, unknown name"})
			if r.status >= 500 {
				t.Errorf("%s %s for an unknown name: status %d", rt.Method, rt.Pattern, r.status)
			}
		}
		if unsafe && b != "" {
			for what, text := range bad {
				r := call(rt, req{path: fill(rt, false), body: text, bearer: e.tokens["admin"], label: "admin, " + what})
				want(rt, "admin with "+what, r, http.StatusBadRequest)
			}
			r := call(rt, req{path: fill(rt, false), body: "password=" + url.QueryEscape(e.pw1), contentType: "application/x-www-form-urlencoded",
				bearer: e.tokens["admin"], label: "admin, a form body"})
			want(rt, "admin with a form body", r, http.StatusUnsupportedMediaType)
		}
		r = call(rt, req{path: fill(rt, false), body: b, bearer: e.tokens["viewer"], label: "viewer"})
		if !auth.Viewer.Can(rt.Action) {
			want(rt, "viewer", r, http.StatusForbidden)
		}
		want(rt, "a revoked token", call(rt, req{path: fill(rt, false), body: b, bearer: e.tokens["revoke-me"], label: "revoked token"}), http.StatusUnauthorized)
		want(rt, "nobody", call(rt, req{path: fill(rt, false), body: b, label: "no credentials"}), http.StatusUnauthorized)
		want(rt, "the password as token", call(rt, req{path: fill(rt, false), body: b, bearer: e.pw1, label: "password as bearer token"}), http.StatusUnauthorized)
		want(rt, "basic auth with the password", call(rt, req{path: fill(rt, false), body: b, label: "basic auth with the password",
			header: http.Header{"Authorization": {"Basic " + basic("admin", e.pw1)}}}), http.StatusUnauthorized)
		r = call(rt, req{path: fill(rt, false), body: body(rt), session: sess, csrf: csrf, label: "admin session"})
		if r.status == http.StatusUnauthorized || r.status == http.StatusForbidden || (r.status >= 500 && r.status != http.StatusBadGateway) {
			t.Errorf("%s %s with the admin session: status %d: %.500s", rt.Method, rt.Pattern, r.status, r.body)
		}
		if unsafe {
			want(rt, "a session without CSRF token", call(rt, req{path: fill(rt, false), body: b, session: sess, label: "session without CSRF"}), http.StatusForbidden)
		}
	}
	// Errors of the use cases: a wrong password, a closed port, SQL
	// errors, validation, a taken name; and paths of the server itself.
	adminReq := func(method, path, body, label string) response {
		return w.do(req{method: method, path: path, body: body, bearer: e.tokens["admin"], label: label})
	}
	adminReq(http.MethodPost, api.Prefix+"/connections/closed/query", `{"sql": "select 1"}`, "query through a closed port")
	adminReq(http.MethodPost, api.Prefix+"/connections/direct/query", `{"sql": "select * from no_such_table_canary"}`, "SQL error")
	adminReq(http.MethodPost, api.Prefix+"/connections/direct/query", `{"sql": "select 1/0"}`, "division by zero")
	adminReq(http.MethodPost, api.Prefix+"/connections", fmt.Sprintf(`{"name": "Bad Name", "host": "", "port": 70000, "password": %q, %s}`, e.pw1,
		`"ssh_tunnel": {"host": "[::1]", "keepalive_interval": "soon"}`), "validation errors")
	adminReq(http.MethodPost, api.Prefix+"/connections", fmt.Sprintf(`{"name": "direct", "host": "h", "database": "d", "user": "u", "password": %q}`, e.pw1), "taken name")
	if r := adminReq(http.MethodPost, api.Prefix+"/connections", fmt.Sprintf(`{"name": "api-badpw", "host": %q, "port": %d, "database": %q, "user": %q, "password": %q}`,
		e.pg.Host, e.pg.Port, e.db, e.appUser, e.pw2), "a connection with a wrong password"); r.status != http.StatusCreated {
		t.Errorf("create api-badpw: %d %s", r.status, r.body)
	}
	if r := adminReq(http.MethodPost, api.Prefix+"/connections/api-badpw/query", `{"sql": "select 1"}`, "query with a wrong password"); r.status != http.StatusBadGateway {
		t.Errorf("query with a wrong password: %d %s", r.status, r.body)
	}
	if hasRoute(t, http.MethodPost, api.Prefix+"/connections/{name}/test") {
		adminReq(http.MethodPost, api.Prefix+"/connections/api-badpw/test", "", "test with a wrong password")
		adminReq(http.MethodPost, api.Prefix+"/connections/closed/test", "", "test through a closed port")
		adminReq(http.MethodPost, api.Prefix+"/connections/api-badpw/test?stream=1", "", "streamed test with a wrong password")
		adminReq(http.MethodPost, api.Prefix+"/connections/tun/test?stream=1", "", "streamed test through the bastion")
	}
	if hasRoute(t, http.MethodPost, api.Prefix+"/connections/test") {
		draft := func(pw, extra string) string {
			return fmt.Sprintf(`{"host": %q, "port": %d, "database": %q, "user": %q, "password": %q%s}`,
				e.pg.Host, e.pg.Port, e.db, e.appUser, pw, extra)
		}
		adminReq(http.MethodPost, api.Prefix+"/connections/test", draft(e.pw2, ""), "draft test with a wrong password")
		adminReq(http.MethodPost, api.Prefix+"/connections/test?stream=1", draft(e.pw1, `, "based_on": "tun", `+tunnelJSON), "streamed draft test")
		adminReq(http.MethodPost, api.Prefix+"/connections/test", draft(e.pw1, `, "port": 70000`), "draft test failing validation")
		adminReq(http.MethodPost, api.Prefix+"/connections/test", draft(e.pw1, `, "based_on": "no-such"`), "draft test based on nothing")
		adminReq(http.MethodPost, api.Prefix+"/connections/test", draft("", `, "based_on": "upd"`), "draft test with a saved password")
	}
	w.do(req{method: http.MethodPost, path: api.Prefix + "/jobs/apply", contentType: "application/yaml", bearer: e.tokens["admin"],
		body: "jobs:\n  - name: [\n", label: "jobs YAML with a syntax error"})
	w.do(req{method: http.MethodPost, path: api.Prefix + "/connections", bearer: e.tokens["admin"], label: "too large",
		body: fmt.Sprintf(`{"password": %q, "host": "%s"}`, e.pw1, strings.Repeat("h", api.MaxBodyBytes))})
	w.do(req{method: http.MethodPatch, path: api.Prefix + "/connections", bearer: e.tokens["admin"], label: "method not allowed"})
	w.do(req{method: http.MethodGet, path: api.Prefix + "/no-such-route", bearer: e.tokens["admin"], label: "unknown route"})
	w.do(req{method: http.MethodDelete, path: api.Prefix + "/tokens/" + e.tokens["revoke-me"], bearer: e.tokens["admin"], label: "revoke by token value"})
	for _, p := range []string{"/healthz", "/readyz", "/metrics", api.Prefix + "/openapi.json"} {
		w.do(req{method: http.MethodGet, path: p, label: "server"})
	}
}

// basic returns the credentials of HTTP basic auth.
func basic(user, pw string) string {
	r, _ := http.NewRequest(http.MethodGet, "http://x", nil)
	r.SetBasicAuth(user, pw)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}
