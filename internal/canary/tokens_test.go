package canary_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/credential/credentialtest"
	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestTokenCanary is the secrets canary of token credentials: connections
// whose password is a token from a command, from Databricks Lakebase (an
// OAuth client secret) and from AlloyDB IAM (a service-account key) are
// saved, tested, queried, run as jobs, exec'd, proxied and shown through
// every face (local CLI, a server's API and CLI, the web pages) with debug
// logs. Then the client secret, the key's private key, every workspace
// OAuth access token and every database token handed out are searched for
// in every output, log, response, file of the data dir and of the runs,
// and environment of a server: none may appear.
func TestTokenCanary(t *testing.T) {
	t.Parallel()
	ev, cn := &evidence{}, &canaries{}
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{SSLOnly: true, HBA: []string{
		"hostssl all lake_sp 127.0.0.1/32 password", `hostssl all "etl@proj.iam" 127.0.0.1/32 password`}})
	for _, r := range []string{"lake_sp", "etl@proj.iam", "rotor"} {
		pg.CreateRole(t, r, "initial-"+credentialtest.RandomToken())
	}
	super := pg.ConnString(pg.SuperUser, pg.SuperPassword, "postgres")
	var mu sync.Mutex
	var issued []string
	record := func(issue credentialtest.IssueFunc) credentialtest.IssueFunc {
		return func(ctx context.Context, life time.Duration) (string, error) {
			tok, err := issue(ctx, life)
			if err == nil {
				mu.Lock()
				issued = append(issued, tok)
				mu.Unlock()
			}
			return tok, err
		}
	}
	db := credentialtest.NewDatabricks(t, record(credentialtest.Rotator(super, "lake_sp")))
	db.ClientSecret = newPassword("oauth")
	cn.addText("Lakebase client secret", db.ClientSecret)
	google := credentialtest.NewGoogle(t, record(credentialtest.Rotator(super, "etl@proj.iam")))
	key := google.NewKey(t, "etl@proj.iam.gserviceaccount.com", true)
	var kf struct {
		PrivateKey string `json:"private_key"`
	}
	if err := json.Unmarshal([]byte(key), &kf); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(kf.PrivateKey))
	// Lines of the key's base64 body, as they are in the key file.
	body := strings.Split(string(pem.EncodeToMemory(block)), "\n")
	for _, line := range body[2:5] {
		cn.add("service-account private key", "plain", []byte(line))
	}
	cmdProg, calls := credentialtest.RotateCommand(t, credentialtest.Superuser{Host: pg.Host, Port: pg.Port, User: pg.SuperUser,
		Password: pg.SuperPassword}, time.Hour)

	private := t.TempDir() // the user's own files: not pgrelay's to search
	keyFile := filepath.Join(private, "key.json")
	caFile := filepath.Join(private, "ca.pem")
	certs := filepath.Join(private, "token-servers.pem")
	for f, b := range map[string][]byte{keyFile: []byte(key), caFile: pg.CAPEM,
		certs: append(credentialtest.CertPEM(db.Srv), credentialtest.CertPEM(google.Srv)...)} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dataDir, tmpDir, copies := t.TempDir(), t.TempDir(), t.TempDir()
	master := e2etest.NewMasterKey()
	common := e2etest.ProcessEnv("PGRELAY_DATA_DIR="+dataDir, "TMPDIR="+tmpDir, "SSL_CERT_FILE="+certs,
		secret.MasterKeyEnv+"="+master, "PGRELAY_ALLOW_COMMANDS="+cmdProg+",sh,psql")
	c := &pgrelayCLI{t: t, ev: ev, mode: "local", env: common}

	port := strconv.Itoa(pg.Port)
	conn := []string{"--host", pg.Host, "--port", port, "--database", "postgres", "--sslmode", "verify-full", "--ssl-root-cert", caFile}
	c.okWith(cmdOpts{stdin: db.ClientSecret}, append([]string{"connection", "create", "lb", "--flavor", "lakebase", "--user", "lake_sp",
		"--auth", "lakebase", "--workspace-url", db.Srv.URL, "--client-id", db.ClientID, "--client-secret-stdin", "--instance", db.Instance}, conn...)...)
	c.ok(append([]string{"connection", "create", "ad", "--flavor", "alloydb", "--user", "etl@proj.iam", "--auth", "alloydb-iam",
		"--service-account-key-file", keyFile}, conn...)...)
	c.ok(append([]string{"connection", "create", "cmd", "--user", "rotor", "--auth", "command", "--auth-program", cmdProg,
		"--auth-arg", "rotor"}, conn...)...)
	// A wrong secret typed once: it must not come back either.
	wrong := newPassword("wrong")
	cn.addText("a wrong client secret", wrong)
	c.okWith(cmdOpts{env: []string{"WRONG=" + wrong}}, append([]string{"connection", "create", "bad", "--flavor", "lakebase",
		"--user", "lake_sp", "--auth", "lakebase", "--workspace-url", db.Srv.URL, "--client-id", db.ClientID,
		"--client-secret-env", "WRONG", "--instance", db.Instance}, conn...)...)
	c.fail(1, "connection", "test", "bad")
	c.fail(1, "query", "bad", "select 1")

	script := strings.Join([]string{`env`, `echo "pgpassword=$PGPASSWORD"`, `cat "$DBT_PROFILES_DIR/profiles.yml"`,
		`cp -r "$DBT_PROFILES_DIR" "` + copies + `/run-$$"`, `psql -XAtc "select 'psql-ok:' || current_user"`}, "\n")
	var jobs strings.Builder
	jobs.WriteString("jobs:\n")
	for _, name := range []string{"lb", "ad", "cmd"} {
		fmt.Fprintf(&jobs, "  - name: %[1]s-job\n    connection: %[1]s\n    steps:\n      - sql: \"select 1\"\n      - command: [\"sh\", \"-c\", %[2]s]\n",
			name, strconv.Quote(script))
	}
	jobsFile := filepath.Join(private, "jobs.yml")
	if err := os.WriteFile(jobsFile, []byte(jobs.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	c.ok("job", "apply", "-f", jobsFile)
	for _, name := range []string{"lb", "ad", "cmd"} {
		c.ok("connection", "test", name)
		c.ok("connection", "test", name, "-o", "json")
		c.ok("connection", "show", name)
		c.ok("connection", "show", name, "-o", "json")
		c.ok("query", name, "select current_user")
		if r := c.ok("job", "run", name+"-job"); !strings.Contains(r.stdout+r.stderr, "psql-ok:") {
			t.Fatalf("job run %s-job: %s", name, r)
		}
		if r := c.ok("exec", name, "--", "sh", "-c", script); !strings.Contains(r.stdout, "psql-ok:") {
			t.Fatalf("exec %s: %s", name, r)
		}
		c.ok("connection", "update", name, "--schema", "public")
		c.run(cmdOpts{}, "grants", name) // exit 1 when a privilege is missing
	}
	c.ok("connection", "list")
	c.ok("connection", "list", "-o", "json")
	c.okWith(cmdOpts{stdin: db.ClientSecret}, "connection", "update", "lb", "--client-secret-stdin")
	var tok struct {
		Token string `json:"token"`
	}
	out := c.run(cmdOpts{}, "token", "create", "--role", "admin", "--name", "canary-admin", "-o", "json")
	if err := json.Unmarshal([]byte(out.stdout), &tok); err != nil {
		t.Fatalf("token create: %s", out)
	}

	// A server: its API, CLI against it, pages, runs and metrics.
	srv := e2etest.StartServer(t, binary, "token canary", e2etest.Options{Env: common, Args: []string{
		"--log-level", "debug", "--allow-command", "sh", "--allow-command", cmdProg}})
	ev.add(fmt.Sprintf("environment of the server (pid %d)", srv.Pid()), environ(t, srv.Pid()), "master key")
	rc := &pgrelayCLI{t: t, ev: ev, mode: "remote", env: append(append([]string(nil), common...),
		"PGRELAY_SERVER="+srv.URL, "PGRELAY_TOKEN="+tok.Token)}
	w := newWeb(t, ev, srv.URL)
	sess, _ := w.signIn(tok.Token, "admin")
	for _, name := range []string{"lb", "ad", "cmd"} {
		rc.ok("connection", "test", name)
		rc.ok("connection", "show", name)
		rc.ok("connection", "show", name, "-o", "json")
		rc.ok("query", name, "select current_user")
		rc.ok("job", "run", name+"-job", "--wait", "--follow")
		rc.run(cmdOpts{}, "grants", name)
		for _, p := range []string{"/connections/" + name, "/connections/" + name + "/edit", "/connections"} {
			if r := w.do(req{method: http.MethodGet, path: p, session: sess, label: "page " + p}); r.status != http.StatusOK {
				t.Errorf("page %s: %d", p, r.status)
			}
		}
		for _, p := range []string{"/api/v1/connections/" + name, "/api/v1/connections"} {
			w.do(req{method: http.MethodGet, path: p, bearer: tok.Token, label: "API " + p})
		}
		w.do(req{method: http.MethodPost, path: "/api/v1/connections/" + name + "/test", bearer: tok.Token, label: "API test " + name})
	}
	rc.fail(1, "connection", "test", "bad")
	w.do(req{method: http.MethodGet, path: "/metrics", label: "metrics"})
	stopAndRecord(t, srv, ev)

	// Everything pgrelay wrote, then every token handed out.
	ev.addTree(t, "data dir", dataDir, func(path string) []string {
		if filepath.Base(path) == secret.MasterKeyFile {
			return []string{"master key"}
		}
		return nil
	})
	ev.addTree(t, "TMPDIR of pgrelay processes", tmpDir, nil)
	if ev.addTree(t, "copy of a run directory", copies, nil) < 6 {
		t.Errorf("fewer than 6 run directories were copied by command steps")
	}
	mu.Lock()
	all := append(append(append([]string(nil), issued...), db.AccessTokens()...), credentialtest.IssuedTokens(t, calls)...)
	mu.Unlock()
	if len(all) < 4 {
		t.Fatalf("only %d tokens were handed out", len(all))
	}
	for i, tk := range all {
		cn.addText(fmt.Sprintf("token %d", i), tk)
	}
	ev.check(t, cn)
	t.Logf("searched %d bytes for %d tokens and secrets", ev.size(), len(cn.list()))
}
