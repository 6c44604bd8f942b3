package canary_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// binary is the pgrelay binary built by TestMain; set once, before any
// test runs.
var binary string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

// runMain builds the binary into a temporary directory, runs the tests and
// removes the directory.
func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "pgrelay-canary-bin-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "canary: %v\n", err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary, err = e2etest.Build(dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "canary: %v\n", err)
		return 1
	}
	return m.Run()
}

// baseEnv is the environment of a pgrelay process: this one's without
// variables that would steer pgrelay or PostgreSQL tools, plus extra.
func baseEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "PG") || name == "TMPDIR" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// result is the outcome of one pgrelay command.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// pgrelayCLI runs pgrelay commands as processes with a fixed environment
// and records their output as evidence.
type pgrelayCLI struct {
	t    *testing.T
	ev   *evidence
	mode string // "local" or "remote", for evidence labels
	env  []string
}

// cmdOpts are the extras of one command run.
type cmdOpts struct {
	env   []string
	stdin string
	// allow names canaries this output may show (a created token).
	allow []string
}

// run runs pgrelay --log-level debug ARGS to its end.
func (c *pgrelayCLI) run(o cmdOpts, args ...string) result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	full := append([]string{"--log-level", "debug"}, args...)
	cmd := exec.CommandContext(ctx, binary, full...)
	cmd.Env = append(append([]string(nil), c.env...), o.env...)
	cmd.Stdin = strings.NewReader(o.stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		c.t.Fatalf("pgrelay %s: %v", strings.Join(args, " "), err)
	}
	label := fmt.Sprintf("cli %s `pgrelay %s`", c.mode, strings.Join(args, " "))
	c.ev.add(label+" stdout", stdout.Bytes(), o.allow...)
	c.ev.add(label+" stderr", stderr.Bytes(), o.allow...)
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// ok runs a command that must succeed.
func (c *pgrelayCLI) ok(args ...string) result {
	c.t.Helper()
	return c.okWith(cmdOpts{}, args...)
}

func (c *pgrelayCLI) okWith(o cmdOpts, args ...string) result {
	c.t.Helper()
	r := c.run(o, args...)
	if r.code != 0 {
		c.t.Fatalf("cli %s: pgrelay %s: %s", c.mode, strings.Join(args, " "), r)
	}
	return r
}

// fail runs a command that must fail with code.
func (c *pgrelayCLI) fail(code int, args ...string) result {
	c.t.Helper()
	return c.failWith(cmdOpts{}, code, args...)
}

func (c *pgrelayCLI) failWith(o cmdOpts, code int, args ...string) result {
	c.t.Helper()
	r := c.run(o, args...)
	if r.code != code {
		c.t.Fatalf("cli %s: pgrelay %s: want exit %d, got %s", c.mode, strings.Join(args, " "), code, r)
	}
	return r
}

// syncBuffer collects a process's output; safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.b.Bytes()...)
}

// server is a running `pgrelay serve` process.
type server struct {
	t       *testing.T
	name    string
	URL     string
	cmd     *exec.Cmd
	stdout  *syncBuffer
	stderr  *syncBuffer
	exited  chan struct{}
	waitErr error
}

// startServer starts `pgrelay serve --addr <free port> ARGS` with env and
// waits until it answers /readyz. It is stopped when the test ends.
func startServer(t *testing.T, name string, env []string, args ...string) *server {
	t.Helper()
	var last error
	for range 3 {
		s, err := launch(t, name, env, args)
		if err == nil {
			return s
		}
		last = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	t.Fatalf("start server %s: %v", name, last)
	return nil
}

func launch(t *testing.T, name string, env, args []string) (*server, error) {
	addr := "127.0.0.1:" + strconv.Itoa(testenv.FreePort(t))
	s := &server{t: t, name: name, URL: "http://" + addr, stdout: &syncBuffer{}, stderr: &syncBuffer{},
		exited: make(chan struct{})}
	s.cmd = exec.Command(binary, append([]string{"serve", "--addr", addr}, args...)...)
	s.cmd.Env = env
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(s.stop)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-s.exited:
			return nil, fmt.Errorf("server %s exited before it was ready (%v):\n%s", name, s.waitErr, s.stderr.Bytes())
		default:
		}
		if resp, err := http.Get(s.URL + "/readyz"); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("server %s not ready after 30s:\n%s", name, s.stderr.Bytes())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// Pid is the server's process ID.
func (s *server) Pid() int { return s.cmd.Process.Pid }

// stop stops the server gracefully (SIGTERM), or kills it with its
// children after 10 s.
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
	case <-time.After(10 * time.Second):
	}
	s.t.Errorf("server %s (pid %d) did not stop within 10 s of SIGTERM; killing it", s.name, s.Pid())
	_ = syscall.Kill(s.Pid(), syscall.SIGSTOP)
	if pids, err := descendants(s.Pid()); err == nil {
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	}
	_ = syscall.Kill(s.Pid(), syscall.SIGKILL)
	<-s.exited
}

// stopAndRecord stops the server and records its output as evidence.
func (s *server) stopAndRecord(ev *evidence) {
	s.t.Helper()
	s.stop()
	ev.add("server "+s.name+" stdout", s.stdout.Bytes())
	ev.add("server "+s.name+" stderr (log)", s.stderr.Bytes())
	if s.waitErr != nil {
		s.t.Errorf("server %s exited with %v", s.name, s.waitErr)
	}
	if s.t.Failed() {
		// The detail of unexpected errors is only in the log.
		n := 0
		for _, l := range strings.Split(string(s.stderr.Bytes()), "\n") {
			if (strings.Contains(l, "request failed") || strings.Contains(l, "panic")) && n < 20 {
				s.t.Logf("server %s: %s", s.name, l)
				n++
			}
		}
	}
}

// descendants returns the pids below pid, read from /proc.
func descendants(pid int) ([]int, error) {
	children, err := childMap()
	if err != nil {
		return nil, err
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

// childMap maps each pid to its children's pids.
func childMap() (map[int][]int, error) {
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
	return children, nil
}

// cmdline returns a process's command line, arguments joined by spaces.
func cmdline(pid int) string {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	return strings.TrimSpace(string(bytes.ReplaceAll(b, []byte{0}, []byte{' '})))
}

// environ returns a process's initial environment (NUL-separated).
func environ(t *testing.T, pid int) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "environ"))
	if err != nil {
		t.Fatalf("read environment of pid %d: %v", pid, err)
	}
	return b
}

// waitFile waits until path exists.
func waitFile(t *testing.T, path string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within %v", path, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
