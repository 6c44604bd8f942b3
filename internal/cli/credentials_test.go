package cli_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/credential/credentialtest"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestAuthFlags: --auth and its fields, locally and against a server:
// secrets come from the environment, standard input or a file and never
// from a flag's value, validation names the flags, `connection show` says
// which source is used, and an update that keeps the secret works while
// one that moves it elsewhere asks for it again.
func TestAuthFlags(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	key := credentialtest.NewGoogle(t, nil).NewKey(t, "etl@proj.iam.gserviceaccount.com", true)
	keyFile := filepath.Join(t.TempDir(), "key.json")
	if err := os.WriteFile(keyFile, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, remote := range []bool{false, true} {
		h := newHarnessOn(t, srv, remote)
		h.env["LB_SECRET"] = "dose-cli-secret-77aa"
		lake := []string{"connection", "create", "lb", "--flavor", "lakebase", "--host", "instance-1.database.cloud.databricks.com",
			"--database", "databricks_postgres", "--user", "sp", "--auth", "lakebase", "--workspace-url", "https://dbc-1.cloud.databricks.com",
			"--client-id", "sp", "--instance", "instance-1", "--pooler", "transaction"}

		r := h.fail(2, append(lake, "--client-secret", "dose-in-argv")...)
		contains(t, "secret as a flag value", r.stderr, "never taken as a flag value", "--client-secret-env")
		r = h.fail(2, lake...)
		contains(t, "no secret", r.stderr, "--client-secret-env/--client-secret-stdin/--client-secret-file", "required")
		r = h.fail(2, append(lake, "--client-secret-stdin", "--password-stdin")...)
		contains(t, "two stdins", r.stderr, "only one may read standard input")
		r = h.fail(2, append(lake, "--client-secret-env", "LB_SECRET", "--sslmode", "prefer")...)
		contains(t, "unencrypted token", r.stderr, "--sslmode", "only accepts encrypted connections")
		r = h.fail(2, append(lake[:len(lake)-2], "--client-secret-env", "LB_SECRET", "--pooler", "sometimes")...)
		contains(t, "bad pooler", r.stderr, "--pooler", "transaction")

		h.ok(append(lake, "--client-secret-env", "LB_SECRET")...)
		r = h.ok("connection", "show", "lb")
		contains(t, "show", r.stdout, "lakebase (Databricks Lakebase OAuth)", "Client secret:", "set (encrypted at rest)",
			"Pooler:", "transaction mode", "none held by this process")
		if strings.Contains(r.stdout+r.stderr, "dose-cli-secret-77aa") {
			t.Fatal("show prints the client secret")
		}
		h.ok("connection", "update", "lb", "--schema", "marts")
		r = h.fail(2, "connection", "update", "lb", "--workspace-url", "https://evil.cloud.databricks.com")
		contains(t, "moved without the secret", r.stderr, "give the client secret again", "workspace URL or client ID")
		h.ok("connection", "update", "lb", "--workspace-url", "https://dbc-2.cloud.databricks.com", "--client-secret-env", "LB_SECRET")

		h.ok("connection", "create", "ad", "--flavor", "alloydb", "--host", "10.0.0.5", "--database", "postgres",
			"--user", "etl@proj.iam", "--auth", "alloydb-iam", "--service-account-key-file", keyFile)
		r = h.ok("connection", "show", "ad", "-o", "json")
		contains(t, "show json", r.stdout, `"service_account": "etl@proj.iam.gserviceaccount.com"`, `"has_service_account_key": true`)
		if strings.Contains(r.stdout, "PRIVATE KEY") {
			t.Fatal("show prints the key")
		}
		r = h.fail(2, "connection", "update", "ad", "--user", "someone")
		contains(t, "wrong IAM user", r.stderr, "--user", "etl@proj.iam")
		// Back to a password: the source's settings go.
		h.env["DB_PASSWORD"] = "pw"
		h.ok("connection", "update", "ad", "--auth", "password", "--password-env", "DB_PASSWORD")
		contains(t, "password again", h.ok("connection", "show", "ad").stdout, "password (the stored one)")

		h.ok("connection", "create", "cmd", "--host", "db.internal", "--database", "d", "--user", "u", "--sslmode", "require",
			"--auth", "command", "--auth-program", "/usr/local/bin/db-token", "--auth-arg", "--role", "--auth-arg", "etl")
		contains(t, "command", h.ok("connection", "show", "cmd").stdout, "/usr/local/bin/db-token --role etl (no shell)")
		r = h.fail(2, "connection", "update", "cmd", "--auth-program", "db token")
		contains(t, "program with a space", r.stderr, "--auth-program", "without a shell")
	}
}

// TestLakebaseProblemsNameTheFlags: the problems of a lakebase connection
// with neither an instance nor an endpoint, and no client ID, name the
// flags that fix them, locally and against a server (whose answer names
// the API's fields), and no empty client ID.
func TestLakebaseProblemsNameTheFlags(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	for _, remote := range []bool{false, true} {
		h := newHarnessOn(t, srv, remote)
		r := h.fail(2, "connection", "create", "lb", "--flavor", "lakebase", "--host", "instance-1.database.cloud.databricks.com",
			"--database", "databricks_postgres", "--user", "sp", "--auth", "lakebase", "--workspace-url", "https://dbc-1.cloud.databricks.com")
		contains(t, "no instance", r.stderr, "--instance: required: --instance, the name of a database instance",
			"or --lakebase-endpoint, an endpoint projects/<project>/branches/<branch>/endpoints/<endpoint>",
			"--client-secret-env/--client-secret-stdin/--client-secret-file: required: the OAuth secret of the service principal\n")
		if strings.Contains(r.stderr, "auth.") || strings.Contains(r.stderr, "client ID )") {
			t.Errorf("remote %v: the problems name API fields or an empty client ID:\n%s", remote, r.stderr)
		}
		r = h.fail(2, "connection", "create", "lb", "--flavor", "lakebase", "--host", "instance-1.database.cloud.databricks.com",
			"--database", "databricks_postgres", "--user", "sp", "--auth", "lakebase", "--workspace-url", "https://dbc-1.cloud.databricks.com",
			"--client-id", "sp", "--lakebase-endpoint", "projects/p/branches/b/endpoints/e")
		contains(t, "client ID", r.stderr, "the OAuth secret of the service principal (client ID sp)")
	}
}

// TestCredentialCommandRunsTheAllowedPath: a credential command runs the
// program the allowlist resolved at start, like a command step: allowed as
// /opt/x/get-token and named get-token, it is that file that runs, never
// another get-token found on PATH.
func TestCredentialCommandRunsTheAllowedPath(t *testing.T) {
	marks := t.TempDir()
	install := func(dir, mark string) string {
		t.Helper()
		src, path := filepath.Join(dir, "get-token.txt"), filepath.Join(dir, "get-token")
		if err := os.WriteFile(src, []byte("#!/bin/sh\ntouch "+filepath.Join(marks, mark)+"\necho tok-"+mark+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("install", "-m", "0755", src, path).CombinedOutput(); err != nil {
			t.Fatalf("install %s: %v %s", path, err, out)
		}
		return path
	}
	allowed := install(t.TempDir(), "allowed")
	otherDir := t.TempDir()
	install(otherDir, "other")
	// Not parallel: PATH is this process's. The allowed program's directory
	// is not on it; another program of the same name is.
	t.Setenv("PATH", otherDir+string(filepath.ListSeparator)+os.Getenv("PATH"))

	h := newHarness(t)
	h.env["PGRELAY_ALLOW_COMMANDS"] = allowed
	h.ok("connection", "create", "cmd", "--host", "127.0.0.1", "--port", strconv.Itoa(testenv.FreePort(t)), "--database", "d",
		"--user", "u", "--sslmode", "require", "--auth", "command", "--auth-program", "get-token")
	h.run("connection", "test", "cmd") // the database is not there: only the credential step matters
	if _, err := os.Stat(filepath.Join(marks, "other")); err == nil {
		t.Fatalf("the credential command ran %s from PATH instead of the allowed %s", filepath.Join(otherDir, "get-token"), allowed)
	}
	if _, err := os.Stat(filepath.Join(marks, "allowed")); err != nil {
		t.Fatalf("the allowed program %s did not run: %v", allowed, err)
	}
}

// TestTokenProgramStderrOnlyLocal: what a failed token program writes to
// stderr may quote a secret (curl -v prints the Authorization header), so
// it is not in the error a server logs, stores in the connection's health
// or sends: through a server the test says the program failed and no
// more; a local command shows the stderr in its own terminal, once, and
// keeps it out of the store.
func TestTokenProgramStderrOnlyLocal(t *testing.T) {
	t.Parallel()
	const secret = "c2VjcmV0LWluLXN0ZGVyci05MQ"
	dir := t.TempDir()
	src, prog := filepath.Join(dir, "db-token.txt"), filepath.Join(dir, "db-token")
	script := "#!/bin/sh\necho '> Authorization: Basic " + secret + "' >&2\necho 'curl: (22) The requested URL returned error: 403' >&2\nexit 3\n"
	if err := os.WriteFile(src, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("install", "-m", "0755", src, prog).CombinedOutput(); err != nil {
		t.Fatalf("install %s: %v %s", prog, err, out)
	}
	create := []string{"connection", "create", "tp", "--host", "127.0.0.1", "--port", "1", "--database", "d", "--user", "u",
		"--sslmode", "require", "--auth", "command", "--auth-program", prog}
	noSecret := func(what, text string) {
		t.Helper()
		if strings.Contains(text, secret) {
			t.Errorf("%s holds the program's stderr:\n%s", what, text)
		}
	}

	// Through a server.
	tokenFile := filepath.Join(t.TempDir(), "admin.token")
	s := startServe(t, nil, "serve", "--listen", "127.0.0.1:0", "--allow-command", prog, "--admin-token-file", tokenFile, "--log-level", "info")
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	remote := newHarness(t)
	remote.env["PGRELAY_SERVER"], remote.env["PGRELAY_TOKEN"] = s.url, strings.TrimSpace(string(token))
	remote.ok(create...)
	r := remote.fail(1, "connection", "test", "tp")
	contains(t, "the test through the server", r.stdout, "exited with code 3", "shown only by a pgrelay command run on this machine")
	noSecret("the test through the server", r.stdout+r.stderr)
	noSecret("the connection's health through the server", remote.ok("connection", "show", "tp", "-o", "json").stdout)
	s.stop(t)
	noSecret("the server's log", s.stderr.String()+s.stdout.String())

	// Locally.
	local := newHarness(t)
	local.env["PGRELAY_ALLOW_COMMANDS"] = prog
	local.ok(create...)
	r = local.fail(1, "connection", "test", "tp")
	noSecret("the local test's report", r.stdout)
	contains(t, "the local test's stderr", r.stderr, "db-token wrote to stderr (shown only here, never stored or sent):",
		"  | > Authorization: Basic "+secret, "  | curl: (22)")
	if n := strings.Count(r.stderr, "wrote to stderr"); n != 1 {
		t.Errorf("the program's stderr is shown %d times:\n%s", n, r.stderr)
	}
	noSecret("the connection's health", local.ok("connection", "show", "tp", "-o", "json").stdout)
	err = filepath.WalkDir(local.dataDir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err == nil && strings.Contains(string(b), secret) {
			t.Errorf("%s holds the program's stderr", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
