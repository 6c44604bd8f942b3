package e2e_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/client"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// binary is the pgrelay binary built by TestMain for this test run; it is
// set once, before any test runs.
var binary string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

// run builds the binary into a temporary directory, runs the tests and
// removes the directory.
func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "pgrelay-e2e-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary, err = build(dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		return 1
	}
	return m.Run()
}

// build runs `go build ./cmd/pgrelay` in the module's root into dir.
func build(dir string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not inside the pgrelay module")
	}
	bin := filepath.Join(dir, "pgrelay")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/pgrelay")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/pgrelay: %w\n%s", err, out)
	}
	return bin, nil
}

// newMasterKey returns a random master key as PGRELAY_MASTER_KEY holds it.
func newMasterKey() string {
	b := make([]byte, secret.KeySize)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// processEnv is the environment of a pgrelay process: this one's without
// variables that would steer pgrelay or PostgreSQL tools, plus extra.
func processEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "PG") {
			continue // PGRELAY_*, PGHOST, PGPASSWORD, ...
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// pgrelay runs a pgrelay command to its end and returns its standard
// output; it fails the test when the command fails.
func pgrelay(t *testing.T, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pgrelay %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, &stdout, &stderr)
	}
	return stdout.String()
}

// createToken creates an API token with `pgrelay token create` on the
// store the environment names (before any server starts).
func createToken(t *testing.T, env []string, name string, role auth.Role) string {
	t.Helper()
	var nt struct {
		Token string `json:"token"`
	}
	out := pgrelay(t, env, "token", "create", "--role", string(role), "--name", name, "-o", "json")
	if err := json.Unmarshal([]byte(out), &nt); err != nil || !auth.LooksLikeToken(nt.Token) {
		t.Fatalf("token create: %q, %v", out, err)
	}
	return nt.Token
}

// logBuffer collects a process's output; safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// tail returns the last n lines.
func (b *logBuffer) tail(n int) string {
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// server is a running `pgrelay serve` process.
type server struct {
	t    *testing.T
	name string
	// URL is the server's base URL.
	URL string
	// AdminToken is the admin token the first start on an empty store
	// printed, or "".
	AdminToken string
	cmd        *exec.Cmd
	stdout     *logBuffer
	stderr     *logBuffer
	exited     chan struct{}
	waitErr    error
}

// serverOpts configures startServer.
type serverOpts struct {
	// env is the process's environment (see processEnv).
	env []string
	// args are serve flags besides --addr.
	args []string
}

var tokenRE = regexp.MustCompile(regexp.QuoteMeta(auth.TokenPrefix) + `[A-Za-z0-9_-]{43}`)

// startServer starts `pgrelay serve` on a free loopback port and waits
// until it answers /readyz. The process (and its children) is killed when
// the test ends; when the test failed, the tail of its log is printed.
func startServer(t *testing.T, name string, opts serverOpts) *server {
	t.Helper()
	var lastErr error
	for range 3 {
		s, err := launch(t, name, opts)
		if err == nil {
			return s
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	t.Fatalf("start server %s: %v", name, lastErr)
	return nil
}

func launch(t *testing.T, name string, opts serverOpts) (*server, error) {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	s := &server{t: t, name: name, URL: "http://" + addr, stdout: &logBuffer{}, stderr: &logBuffer{},
		exited: make(chan struct{})}
	s.cmd = exec.Command(binary, append([]string{"serve", "--addr", addr}, opts.args...)...)
	s.cmd.Env = opts.env
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("--- server %s (pid %d) stderr, last lines ---\n%s", s.name, s.cmd.Process.Pid, s.stderr.tail(60))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-s.exited:
			return nil, fmt.Errorf("server %s exited before it was ready (%v):\n%s", name, s.waitErr, s.stderr.tail(30))
		default:
		}
		if resp, err := http.Get(s.URL + "/readyz"); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("server %s not ready after 30s:\n%s", name, s.stderr.tail(30))
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.AdminToken = tokenRE.FindString(s.stdout.String())
	t.Logf("server %s (pid %d) ready on %s", name, s.cmd.Process.Pid, s.URL)
	return s, nil
}

// Pid is the server's process ID.
func (s *server) Pid() int { return s.cmd.Process.Pid }

// Worker is the name the server's queue gives itself in runs.
func (s *server) Worker(t *testing.T) string {
	t.Helper()
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	return host + ":" + strconv.Itoa(s.Pid())
}

// Client returns an API client of the server with token.
func (s *server) Client(t *testing.T, token string) *client.Client {
	t.Helper()
	c, err := client.New(s.URL, token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Kill sends SIGKILL to the server and every process below it, and waits
// until it exited.
func (s *server) Kill() {
	s.t.Helper()
	if err := killTree(s.Pid()); err != nil {
		s.t.Errorf("kill server %s: %v", s.name, err)
	}
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.t.Errorf("server %s (pid %d) did not exit after SIGKILL", s.name, s.Pid())
	}
}

// stop stops a running server: SIGTERM, then after a few seconds SIGKILL
// (with its children, which a server stopped gracefully stops itself).
func (s *server) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return
	case <-time.After(3 * time.Second):
	}
	s.Kill()
}

// killTree sends SIGKILL to pid and every process below it. The tree is
// walked from /proc first, so that orphans cannot escape to init.
func killTree(pid int) error {
	_ = syscall.Kill(pid, syscall.SIGSTOP) // no new children while we look
	pids, err := descendants(pid)
	for _, p := range append(pids, pid) {
		if kerr := syscall.Kill(p, syscall.SIGKILL); kerr != nil && !errors.Is(kerr, syscall.ESRCH) && err == nil {
			err = fmt.Errorf("kill pid %d: %w", p, kerr)
		}
	}
	return err
}

// descendants returns the pids below pid, read from /proc.
func descendants(pid int) ([]int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list /proc: %w", err)
	}
	children := map[int][]int{}
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // it ended meanwhile
		}
		// The fields after the command name, which is in parentheses and
		// may contain anything: state, ppid, ...
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:]))
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, children[p]...)
		queue = append(queue, children[p]...)
	}
	return out, nil
}

var bg = context.Background()

// waitRun polls the run until want holds or within fails the test.
func waitRun(t *testing.T, c *client.Client, id string, within time.Duration, want func(*jobs.Run) bool) *jobs.Run {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r, err := c.GetRun(bg, id)
		if err != nil {
			t.Fatalf("get run %s: %v", id, err)
		}
		if want(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s did not reach the wanted state within %v: %+v", id, within, r)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ended(r *jobs.Run) bool   { return r.Status.Terminal() }
func running(r *jobs.Run) bool { return r.Status == jobs.Running }
