package canary_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
)

// binary is the pgrelay binary built by TestMain; set once, before any
// test runs.
var binary string

func TestMain(m *testing.M) {
	os.Exit(e2etest.Main(m, "canary", &binary))
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
	r, err := e2etest.Run(binary, append(append([]string(nil), c.env...), o.env...), strings.NewReader(o.stdin),
		append([]string{"--log-level", "debug"}, args...)...)
	if err != nil {
		c.t.Fatalf("pgrelay %s: %v", strings.Join(args, " "), err)
	}
	label := fmt.Sprintf("cli %s `pgrelay %s`", c.mode, strings.Join(args, " "))
	c.ev.add(label+" stdout", []byte(r.Stdout), o.allow...)
	c.ev.add(label+" stderr", []byte(r.Stderr), o.allow...)
	return result{stdout: r.Stdout, stderr: r.Stderr, code: r.Code}
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

// stop stops the server gracefully (SIGTERM); one still running after
// 10 s is killed with its children, and fails the test.
func stop(t *testing.T, s *e2etest.Server) {
	t.Helper()
	if !s.StopWithin(10 * time.Second) {
		t.Errorf("server %s (pid %d) did not stop within 10 s of SIGTERM; killed it", s.Name(), s.Pid())
	}
}

// stopAndRecord stops the server (see stop) and records its output as
// evidence; the server must have exited with status 0.
func stopAndRecord(t *testing.T, s *e2etest.Server, ev *evidence) {
	t.Helper()
	stop(t, s)
	ev.add("server "+s.Name()+" stdout", []byte(s.Stdout()))
	ev.add("server "+s.Name()+" stderr (log)", []byte(s.Stderr()))
	if err := s.Wait(); err != nil {
		t.Errorf("server %s exited with %v", s.Name(), err)
	}
	if t.Failed() {
		// The detail of unexpected errors is only in the log.
		n := 0
		for _, l := range strings.Split(s.Stderr(), "\n") {
			if (strings.Contains(l, "request failed") || strings.Contains(l, "panic")) && n < 20 {
				t.Logf("server %s: %s", s.Name(), l)
				n++
			}
		}
	}
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
