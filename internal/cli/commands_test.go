package cli_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestLocalJobRunObeysCommandRules: a local `job run` runs only the
// programs given with --allow-command or PGRELAY_ALLOW_COMMANDS, and a
// refused step fails the run before any step runs.
func TestLocalJobRunObeysCommandRules(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	h := newHarness(t)
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(createArgs("wh", pg)...)
	// A workdir inside the allowed directory that leads out of it.
	allowed := t.TempDir()
	escape := filepath.Join(allowed, "escape")
	if err := os.Symlink(t.TempDir(), escape); err != nil {
		t.Fatal(err)
	}
	h.applyJobs(`jobs:
  - name: guarded
    connection: wh
    steps:
      - sql: create table if not exists guarded_marker (n int)
      - name: refresh models
        command: [sh, -c, "echo step two ran"]
  - name: escape
    connection: wh
    steps:
      - command: [sh, -c, "pwd"]
        workdir: ` + escape + `
`)

	r := h.fail(1, "job", "run", "guarded")
	contains(t, "refused run", r.stdout+r.stderr, `step 2 (refresh models) refused, nothing was run: program "sh" is not allowed`,
		"--allow-command or PGRELAY_ALLOW_COMMANDS (now: none)", "add --allow-command sh")
	contains(t, "no table", h.ok("query", "wh", "select to_regclass('guarded_marker') is null as absent", "-o", "csv").stdout, "absent\nt\n")

	contains(t, "allowed by flag", h.ok("job", "run", "guarded", "--allow-command", "sh").stdout, "step two ran", "succeeded")
	h.env["PGRELAY_ALLOW_COMMANDS"] = "psql, sh"
	contains(t, "allowed by env", h.ok("job", "run", "guarded").stdout, "step two ran", "succeeded")
	// A flag replaces the environment's list.
	r = h.fail(1, "job", "run", "guarded", "--allow-command", "psql")
	contains(t, "flag wins", r.stdout+r.stderr, `program "sh" is not allowed`, "(now: psql)")

	r = h.fail(2, "job", "run", "guarded", "--allow-command", "no-such-program-pgrelay")
	contains(t, "unknown program", r.stderr, "--allow-command no-such-program-pgrelay: not found")

	r = h.fail(1, "job", "run", "escape", "--allow-workdir", allowed)
	contains(t, "workdir", r.stdout+r.stderr, "refused, nothing was run: workdir "+escape+" is not allowed", "--allow-workdir")
	r = h.fail(2, "job", "run", "escape", "--allow-workdir", "relative/dir")
	contains(t, "relative workdir", r.stderr, `--allow-workdir "relative/dir": give an absolute path`)
}

// TestRunAsKeepsCommandsOutOfTheDataDir: with --run-as, command steps run
// as that user and cannot read master.key or the store; serve and job run
// refuse a data dir that user could read.
func TestRunAsKeepsCommandsOutOfTheDataDir(t *testing.T) {
	t.Parallel()
	u := testenv.NewOSUser(t)
	pg := sharedDB(t)
	// The data dir below a directory every user may enter.
	base, err := os.MkdirTemp("", "pgrelay-cli-runas-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	h.dataDir = filepath.Join(base, "data")
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(createArgs("wh", pg)...)
	h.applyJobs(`jobs:
  - name: snoop
    connection: wh
    steps:
      - command: [sh, -c, 'id -un; for f in master.key pgrelay.db; do cat "` + h.dataDir + `/$f" >/dev/null && echo "LEAK""ED $f"; done; psql -X -At -c "select 42"']
`)

	r := h.ok("job", "run", "snoop", "--allow-command", "sh", "--run-as", u.Name)
	contains(t, "run as", r.stdout, u.Name, "Permission denied", "42", "succeeded")
	if strings.Contains(r.stdout, "LEAKED ") {
		t.Fatalf("a command run as %s read the data dir:\n%s", u.Name, r)
	}

	// Opened to other users, the data dir is refused by job run and serve.
	if err := os.Chmod(h.dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	r = h.fail(2, "job", "run", "snoop", "--allow-command", "sh", "--run-as", u.Name)
	contains(t, "job run", r.stderr, "--run-as "+u.Name+": commands must not be able to read pgrelay's data dir", "chmod 700 "+h.dataDir)
	// Owned by that user, mode 0700 is no protection: the fix says chown.
	if err := os.Chmod(h.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(h.dataDir, u.UID, u.GID); err != nil {
		t.Fatal(err)
	}
	r = h.fail(2, "job", "run", "snoop", "--allow-command", "sh", "--run-as", u.Name)
	contains(t, "job run, data dir owned by the user", r.stderr, "owned by "+u.Name, "chown -R "+strconv.Itoa(os.Getuid())+" "+h.dataDir)
	if err := os.Chown(h.dataDir, os.Getuid(), os.Getgid()); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(h.dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// serve must refuse to start (a serve that starts is stopped after a
	// while, and then fails the check with exit code 0).
	serve := func(args ...string) result {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return h.runCtx(ctx, "", append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
	}
	r = serve("--allow-command", "sh", "--run-as", u.Name)
	if r.code != 2 || !strings.Contains(r.stderr, "chmod 700 "+h.dataDir) || strings.Contains(r.stdout, "serving") {
		t.Fatalf("serve with a readable data dir: %s", r)
	}
	r = serve("--run-as", "root")
	if r.code != 2 || !strings.Contains(r.stderr, "--run-as root: that is root") {
		t.Fatalf("serve --run-as root: %s", r)
	}
	r = h.fail(2, "job", "run", "snoop", "--run-as", "no-such-user-pgrelay")
	contains(t, "unknown user", r.stderr, "--run-as no-such-user-pgrelay", "useradd")
}

// TestRunAsKeepsCommandsOutOfTheMasterKeyFile: a master key given in a
// file outside the data dir (PGRELAY_MASTER_KEY_FILE) is the key to every
// secret too: with --run-as, job run and serve refuse a key file that user
// could read (a file written under umask 022 is), before any command runs.
func TestRunAsKeepsCommandsOutOfTheMasterKeyFile(t *testing.T) {
	t.Parallel()
	u := testenv.NewOSUser(t)
	pg := sharedDB(t)
	base, err := os.MkdirTemp("", "pgrelay-cli-runas-key-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(base, "master.key")
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i*7 + 3)
	}
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	h.env["PGRELAY_MASTER_KEY_FILE"] = keyFile
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(createArgs("wh", pg)...)
	h.applyJobs(`jobs:
  - name: snoop
    connection: wh
    steps:
      - command: [sh, -c, 'cat "` + keyFile + `" >/dev/null && echo "LEAK""ED key"; echo done']
`)

	r := h.run("job", "run", "snoop", "--allow-command", "sh", "--run-as", u.Name)
	if strings.Contains(r.stdout, "LEAKED ") {
		t.Fatalf("a command run as %s read the master key file:\n%s", u.Name, r)
	}
	if r.code != 2 {
		t.Fatalf("job run with a master key file %s can read: %s", u.Name, r)
	}
	contains(t, "job run", r.stderr, "--run-as "+u.Name+": commands must not be able to read the master key", keyFile, "chmod 600 "+keyFile)
	serve := func(args ...string) result {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return h.runCtx(ctx, "", append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
	}
	r = serve("--allow-command", "sh", "--run-as", u.Name)
	if r.code != 2 || !strings.Contains(r.stderr, "chmod 600 "+keyFile) || strings.Contains(r.stdout, "serving") {
		t.Fatalf("serve with a readable master key file: %s", r)
	}

	// Closed to the user, the key file is accepted and the command cannot
	// read it.
	if err := os.Chmod(keyFile, 0o600); err != nil {
		t.Fatal(err)
	}
	r = h.ok("job", "run", "snoop", "--allow-command", "sh", "--run-as", u.Name)
	contains(t, "closed key file", r.stdout, "Permission denied", "done", "succeeded")
	if strings.Contains(r.stdout, "LEAKED ") {
		t.Fatalf("a command run as %s read the master key file:\n%s", u.Name, r)
	}
}

// TestRunAsHoldsConnectionCommands: a connection's proxy command and token
// command are programs with arguments whoever saved the connection chose;
// a local `job run --run-as` runs them as that user, as it runs the
// steps. They ran as the user running pgrelay (root, to switch users),
// could read master.key, and the proxy command could be any program.
func TestRunAsHoldsConnectionCommands(t *testing.T) {
	t.Parallel()
	u := testenv.NewOSUser(t)
	pg := sharedDB(t)
	base, err := os.MkdirTemp("", "pgrelay-cli-runas-conn-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	if err := os.Chmod(base, 0o777); err != nil { // the commands write here
		t.Fatal(err)
	}
	h := newHarness(t)
	h.dataDir = filepath.Join(base, "data")
	h.env["DB_PASSWORD"] = pg.Password
	// Each says who it runs as and whether it could read the master key,
	// then fails: the run fails, having shown what its commands could do.
	snoop := func(file string) string {
		return `id -un > "` + base + `/` + file + `"; cat "` + h.dataDir + `/master.key" >/dev/null && echo LEAKED >> "` + base + `/` + file + `"; exit 3`
	}
	proxy, err := json.Marshal([]string{"sh", "-c", snoop("proxy")})
	if err != nil {
		t.Fatal(err)
	}
	h.ok(createArgs("viaproxy", pg, "--ssh-host", "bastion.internal", "--ssh-user", "jump", "--ssh-proxy-command", string(proxy))...)
	h.ok("connection", "create", "viatoken", "--host", pg.Host, "--port", strconv.Itoa(pg.Port), "--database", pg.DB,
		"--user", pg.User, "--sslmode", "require", "--require-auth", "password",
		"--auth", "command", "--auth-program", "sh", "--auth-arg=-c", "--auth-arg", snoop("token"))
	h.applyJobs(`jobs:
  - name: p
    connection: viaproxy
    steps: [{sql: "select 1"}]
  - name: t
    connection: viatoken
    steps: [{sql: "select 1"}]
`)
	for _, c := range []struct{ job, file string }{{"p", "proxy"}, {"t", "token"}} {
		r := h.run("job", "run", c.job, "--allow-command", "sh", "--run-as", u.Name)
		if r.code == 0 {
			t.Fatalf("job %s succeeded over a command that fails: %s", c.job, r)
		}
		b, err := os.ReadFile(filepath.Join(base, c.file))
		if err != nil {
			t.Fatalf("the %s command did not run: %v\n%s", c.file, err, r)
		}
		if got := string(b); got != u.Name+"\n" {
			t.Fatalf("the %s command wrote %q, want %q: it ran as another user, or read the master key", c.file, got, u.Name+"\n")
		}
	}
	// A program the flags do not allow is not run as a proxy command.
	r := h.run("job", "run", "p", "--allow-command", "psql", "--run-as", u.Name)
	contains(t, "proxy command not allowed", r.stdout+r.stderr, `program "sh" may not run here as a proxy command`)
}
