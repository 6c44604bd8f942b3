package cli_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/cli"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// proc is a pgrelay command running in-process.
type proc struct {
	t              *testing.T
	stdout, stderr testenv.LogBuffer
	cancel         context.CancelFunc
	done           chan int
	code           int
	exited         bool
}

// startCommand runs pgrelay args against dataDir with env until the test
// ends (or stop).
func startCommand(t *testing.T, dataDir string, env map[string]string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, done: make(chan int, 1)}
	e := cli.Env{Stdin: strings.NewReader(""), Stdout: &p.stdout, Stderr: &p.stderr,
		Getenv: func(k string) string {
			if k == "PGRELAY_DATA_DIR" {
				return dataDir
			}
			return env[k]
		},
		StdinIsTerminal: func() bool { return false }}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() { p.done <- cli.Execute(ctx, e, args) }()
	t.Cleanup(func() { p.stop() })
	return p
}

// wait waits until stdout matches re and returns the match; it fails the
// test when the command exits first or 30 s pass.
func (p *proc) wait(re *regexp.Regexp) []string {
	p.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := re.FindStringSubmatch(p.stdout.String()); m != nil {
			return m
		}
		select {
		case code := <-p.done:
			p.exited, p.code = true, code
			p.t.Fatalf("exited %d before printing %s\nstdout:\n%s\nstderr:\n%s", code, re, p.stdout.String(), p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("printed no %s within 30s\nstdout:\n%s\nstderr:\n%s", re, p.stdout.String(), p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exit waits for the command to end on its own (within d) and returns its
// exit code; it fails the test when it still runs.
func (p *proc) exit(d time.Duration) int {
	p.t.Helper()
	select {
	case p.code = <-p.done:
		p.exited = true
		return p.code
	case <-time.After(d):
		p.t.Fatalf("still running after %v\nstdout:\n%s\nstderr:\n%s", d, p.stdout.String(), p.stderr.String())
	}
	return 0
}

// stop cancels the command and waits for it to end.
func (p *proc) stop() {
	p.cancel()
	if p.exited {
		return
	}
	select {
	case p.code = <-p.done:
		p.exited = true
	case <-time.After(30 * time.Second):
		p.t.Errorf("did not stop within 30s of its context ending")
	}
}

// TestProxyWarnsWhenNotLoopback: `pgrelay proxy --listen` on an address
// other than loopback says so on stderr (and in the log); on loopback it
// does not. The connection goes to a closed loopback port, so nothing is
// reachable through the endpoint.
func TestProxyWarnsWhenNotLoopback(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.env["DB_PASSWORD"] = "pw"
	h.ok("connection", "create", "px", "--host", "127.0.0.1", "--port", strconv.Itoa(testenv.FreePort(t)),
		"--database", "d", "--user", "u", "--password-env", "DB_PASSWORD")
	listening := regexp.MustCompile(`Listening on (\S+),`)
	for _, c := range []struct {
		listen string
		warn   bool
	}{{"0.0.0.0:0", true}, {"127.0.0.1:0", false}} {
		p := startCommand(t, h.dataDir, h.env, "proxy", "px", "--listen", c.listen)
		addr := p.wait(listening)[1]
		p.stop()
		stderr := p.stderr.String()
		warned := strings.Contains(stderr, "Warning: --listen "+addr+" is not a loopback address") &&
			strings.Contains(stderr, "level=WARN") && strings.Contains(stderr, "not loopback")
		if warned != c.warn {
			t.Errorf("--listen %s: warned = %v, want %v\nstderr:\n%s", c.listen, warned, c.warn, stderr)
		}
	}
}

// TestServeRefusesReadableSecretFiles: serve does not start while
// master.key or the SQLite store can be read by the group or others, and
// says which file and the chmod that fixes it.
func TestServeRefusesReadableSecretFiles(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("token", "create", "--name", "first", "--role", "admin")
	key := filepath.Join(h.dataDir, secret.MasterKeyFile)
	db := filepath.Join(h.dataDir, sqlite.FileName)
	for _, c := range []struct {
		file, holds string
		mode        os.FileMode
	}{{key, "the master key", 0o644}, {db, "the store", 0o640}, {db, "the store", 0o604}} {
		if err := os.Chmod(c.file, c.mode); err != nil {
			t.Fatal(err)
		}
		p := startCommand(t, h.dataDir, h.env, "serve", "--addr", "127.0.0.1:0")
		if code := p.exit(20 * time.Second); code == 0 {
			t.Fatalf("%s with mode %04o: serve exited 0", c.file, c.mode)
		}
		contains(t, "serve's error", p.stderr.String(), c.file+" ("+c.holds, "chmod 600 "+c.file)
		if strings.Contains(p.stdout.String(), "serving") {
			t.Fatalf("serve served with %s at mode %04o", c.file, c.mode)
		}
		if err := os.Chmod(c.file, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// With the modes fixed it serves.
	p := startCommand(t, h.dataDir, h.env, "serve", "--addr", "127.0.0.1:0")
	p.wait(servingRE)
}

// TestServeWarnsOfReadableKeyFile: serve warns at start when the file
// PGRELAY_MASTER_KEY_FILE names can be read by other users (it is not
// refused: a mounted secret's mode is often its platform's), and not once
// the file is private.
func TestServeWarnsOfReadableKeyFile(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	keyFile := filepath.Join(t.TempDir(), "master-key")
	key, err := secret.NewMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte(secret.EncodeKey(key)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(keyFile, 0o644); err != nil { // whatever the umask
		t.Fatal(err)
	}
	h.env[secret.MasterKeyFileEnv] = keyFile
	h.ok("token", "create", "--name", "first", "--role", "admin")
	const warning = "has mode 0644: users other than its owner may read it"
	p := startCommand(t, h.dataDir, h.env, "serve", "--addr", "127.0.0.1:0")
	p.wait(servingRE)
	p.stop()
	contains(t, "serve's warning", p.stderr.String(), secret.MasterKeyFileEnv+"="+keyFile+" "+warning, "chmod 600 "+keyFile)
	if err := os.Chmod(keyFile, 0o600); err != nil {
		t.Fatal(err)
	}
	p = startCommand(t, h.dataDir, h.env, "serve", "--addr", "127.0.0.1:0")
	p.wait(servingRE)
	p.stop()
	if strings.Contains(p.stderr.String(), warning) {
		t.Fatalf("warned of a private key file:\n%s", p.stderr.String())
	}
}

// TestRotateRefusedWhileServing: master-key rotate does not run while a
// serve runs on the data dir's embedded store (that process would go on
// with the old key, which the store then refuses: not ready, every run
// failing), and runs once it has stopped.
func TestRotateRefusedWhileServing(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("token", "create", "--name", "first", "--role", "admin")
	keyFile := filepath.Join(h.dataDir, secret.MasterKeyFile)
	before, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	p := startCommand(t, h.dataDir, h.env, "serve", "--addr", "127.0.0.1:0")
	p.wait(servingRE)
	r := h.fail(1, "master-key", "rotate")
	contains(t, "rotate under serve", r.stderr, "a pgrelay serve process is running on this data dir", "stop it first")
	if after, err := os.ReadFile(keyFile); err != nil || !bytes.Equal(after, before) {
		t.Fatalf("master.key changed under a refused rotation (%v)", err)
	}
	p.stop()
	contains(t, "rotate after serve stopped", h.ok("master-key", "rotate").stdout, "Sealed")
}

// TestServeExposureFlags runs serve with the first admin token written to
// a file, /metrics on its own address behind a token, and a public https
// URL: the token is in the file (mode 0600) and not on stdout, and works;
// /metrics is served only on its address and only with the token; HSTS is
// sent. A restart with the file still there serves (no new token is
// needed); a new store with the file there is refused.
func TestServeExposureFlags(t *testing.T) {
	t.Parallel()
	dataDir, dir := t.TempDir(), t.TempDir()
	tokenFile := filepath.Join(dir, "admin.token")
	metricsToken := "metrics-2b7e151628aed2a6"
	metricsTokenFile := filepath.Join(dir, "metrics.token")
	if err := os.WriteFile(metricsTokenFile, []byte(metricsToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"serve", "--addr", "127.0.0.1:0", "--admin-token-file", tokenFile, "--metrics-addr", "127.0.0.1:0",
		"--metrics-token-file", metricsTokenFile, "--public-url", "https://pgrelay.example.com", "--max-connections", "64"}
	listening := regexp.MustCompile(`serving the web UI and API on https://pgrelay\.example\.com \(listening on (http://\S+),`)
	metricsRE := regexp.MustCompile(`Prometheus metrics on (http://\S+/metrics)`)
	p := startCommand(t, dataDir, nil, args...)
	base := p.wait(listening)[1]
	metricsURL := p.wait(metricsRE)[1]

	fi, err := os.Stat(tokenFile)
	if err != nil {
		t.Fatalf("the admin token file: %v", err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("the admin token file has mode %04o, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(tokenFile)
	token := strings.TrimSpace(string(b))
	if !tokenRE.MatchString(token) || tokenRE.FindString(p.stdout.String()+p.stderr.String()) != "" {
		t.Fatalf("the token file holds %d bytes; a token on stdout or stderr: %v", len(b), tokenRE.MatchString(p.stdout.String()+p.stderr.String()))
	}
	contains(t, "serve's output", p.stdout.String(), "written to "+tokenFile)

	call := func(url, bearer string) (int, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
		return res.StatusCode, res.Header
	}
	if st, h := call(base+"/api/v1/whoami", token); st != http.StatusOK || h.Get("Strict-Transport-Security") == "" {
		t.Errorf("whoami with the token from the file: %d, HSTS %q", st, h.Get("Strict-Transport-Security"))
	}
	if st, _ := call(base+"/metrics", metricsToken); st != http.StatusNotFound {
		t.Errorf("/metrics on the main address: %d, want 404", st)
	}
	if st, _ := call(metricsURL, ""); st != http.StatusUnauthorized {
		t.Errorf("/metrics without its token: %d, want 401", st)
	}
	if st, _ := call(metricsURL, metricsToken); st != http.StatusOK {
		t.Errorf("/metrics with its token: %d, want 200", st)
	}
	p.stop()

	// A restart on the same store, the file still there: it serves.
	p = startCommand(t, dataDir, nil, args...)
	p.wait(listening)
	if strings.Contains(p.stdout.String(), "admin token was created") {
		t.Error("the restart created another admin token")
	}
	p.stop()

	// A new store with the file there: refused, the file untouched.
	p = startCommand(t, t.TempDir(), nil, args...)
	if code := p.exit(20 * time.Second); code != 2 {
		t.Fatalf("a new store with an existing --admin-token-file: exit %d, want 2\n%s", code, p.stderr.String())
	}
	contains(t, "the refusal", p.stderr.String(), "--admin-token-file "+tokenFile+" exists")
	if after, _ := os.ReadFile(tokenFile); string(after) != string(b) {
		t.Error("the existing token file was changed")
	}
}

// TestServeExposureFlagErrors: bad values of the new flags stop serve with
// exit code 2 and a message naming the flag and what is accepted.
func TestServeExposureFlagErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	short := filepath.Join(t.TempDir(), "short.token")
	if err := os.WriteFile(short, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--public-url", "pgrelay.example.com"}, []string{"--public-url", "https or http"}},
		{[]string{"--public-url", "https://pgrelay.example.com/ui"}, []string{"--public-url", "root"}},
		{[]string{"--public-url", "https://user@pgrelay.example.com"}, []string{"--public-url", "user information"}},
		{[]string{"--metrics-token-file", short}, []string{"--metrics-token-file", "at least 16 characters"}},
		{[]string{"--metrics-token-file", filepath.Join(t.TempDir(), "missing")}, []string{"--metrics-token-file", "no such file"}},
		{[]string{"--max-streams-per-token", "0"}, []string{"--max-streams-per-token 0", "1 or more"}},
		{[]string{"--max-connections", "-1"}, []string{"--max-connections -1", "0 (no limit) or more"}},
	} {
		r := h.fail(2, append([]string{"serve", "--addr", "127.0.0.1:0"}, c.args...)...)
		contains(t, strings.Join(c.args, " "), r.stderr, c.want...)
	}
}

// TestServeWarnsCommandsWithoutRunAs: allowed programs without --run-as
// run as pgrelay's own user, where an editor's arguments read every
// secret; serve says so at start, naming the programs and the fix. Without
// allowed programs there is nothing to warn about.
func TestServeWarnsCommandsWithoutRunAs(t *testing.T) {
	t.Parallel()
	listening := regexp.MustCompile(`serving the web UI and API on (http://\S+)`)
	const warning = "commands run as pgrelay's own user"

	p := startCommand(t, t.TempDir(), nil, "serve", "--addr", "127.0.0.1:0", "--allow-command", "psql")
	p.wait(listening)
	logs := p.stderr.String()
	contains(t, "serve's log with --allow-command", logs, warning)
	contains(t, "serve's log with --allow-command", logs, "--run-as USER")
	contains(t, "serve's log with --allow-command", logs, "psql")
	p.stop()

	p = startCommand(t, t.TempDir(), nil, "serve", "--addr", "127.0.0.1:0")
	p.wait(listening)
	if strings.Contains(p.stderr.String(), warning) {
		t.Errorf("serve without allowed programs warns about them:\n%s", p.stderr.String())
	}
	p.stop()
}
