// Package e2etest runs pgrelay as its users run it, for process-level tests
// in any package: it builds the binary ([Build], or [Main] from TestMain),
// runs commands ([Run], [Command]), starts `pgrelay serve` processes
// ([StartServer]) with their own environment, drives them through the Go
// API client, stops or kills them (with their children) and reads their
// Prometheus metrics from outside ([Server.Metrics]) to find goroutine and
// file descriptor leaks.
//
// Every process a test starts is stopped when the test ends; a failing test
// prints the tail of each server's standard error.
package e2etest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/client"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/remote"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// Build runs `go build ./cmd/pgrelay` in the module's root (found with
// `go env GOMOD` from the current directory) into dir and returns the
// binary's path. Call it once, from TestMain.
func Build(dir string) (string, error) {
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

// Main is the body of a TestMain that runs pgrelay processes: it builds the
// binary into a temporary directory, sets *binary to its path, runs the
// tests and removes the directory. It returns the exit code for os.Exit;
// name (the package's) prefixes the temporary directory and messages.
//
//	func TestMain(m *testing.M) { os.Exit(e2etest.Main(m, "e2e", &binary)) }
func Main(m *testing.M, name string, binary *string) int {
	dir, err := os.MkdirTemp("", "pgrelay-"+name+"-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if *binary, err = Build(dir); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", name, err)
		return 1
	}
	return m.Run()
}

// MainSlow is Main for a package whose every test is slow (pgrelay
// processes under faults, load, restarts): with -short (make test-short)
// it builds nothing and runs no test.
func MainSlow(m *testing.M, name string, binary *string) int {
	flag.Parse()
	if testing.Short() {
		fmt.Printf("%s: skipped with -short: its tests run pgrelay processes through faults and restarts (make test runs them)\n", name)
		return 0
	}
	return Main(m, name, binary)
}

// NewMasterKey returns a random master key as PGRELAY_MASTER_KEY holds it.
func NewMasterKey() string {
	b := make([]byte, secret.KeySize)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// ProcessEnv is the environment of a pgrelay process: this one's without
// variables that would steer pgrelay or PostgreSQL tools (PGRELAY_*,
// PGHOST, PGPASSWORD, ...), plus extra.
func ProcessEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, "PG") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// Result is what a pgrelay command that ran to its end wrote, and how it
// ended.
type Result struct {
	Stdout, Stderr string
	// Code is the exit code; -1 when a signal ended the command.
	Code int
}

// Run runs the pgrelay binary with args to its end, with env as its whole
// environment and stdin as its standard input (nil: the null device), and
// returns what it wrote and its exit code. A command still running after a
// minute is killed. err is set only when the command could not be run; a
// failing command is a Result with a Code other than 0.
func Run(binary string, env []string, stdin io.Reader, args ...string) (Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = env
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.Code, err = ee.ExitCode(), nil
	}
	return r, err
}

// Command runs the pgrelay binary with args to its end and returns its
// standard output; it fails the test when the command fails.
func Command(tb testing.TB, binary string, env []string, args ...string) string {
	tb.Helper()
	r, err := Run(binary, env, nil, args...)
	if err == nil && r.Code != 0 {
		err = fmt.Errorf("exit code %d", r.Code)
	}
	if err != nil {
		tb.Fatalf("pgrelay %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// CreateToken creates an API token with `pgrelay token create` on the store
// the environment names and returns it.
func CreateToken(tb testing.TB, binary string, env []string, name string, role auth.Role) string {
	tb.Helper()
	var nt struct {
		Token string `json:"token"`
	}
	out := Command(tb, binary, env, "token", "create", "--role", string(role), "--name", name, "-o", "json")
	if err := json.Unmarshal([]byte(out), &nt); err != nil || !auth.LooksLikeToken(nt.Token) {
		tb.Fatalf("token create: %q, %v", out, err)
	}
	return nt.Token
}

// Buffer collects a running process's output (as its exec.Cmd's Stdout or
// Stderr) while the test reads it; safe for concurrent use.
type Buffer struct {
	testenv.LogBuffer
}

// tail returns the last n lines, leaving out those containing any of
// skip.
func (b *Buffer) tail(n int, skip ...string) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimRight(b.String(), "\n"), "\n") {
		if !slices.ContainsFunc(skip, func(s string) bool { return strings.Contains(l, s) }) {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Options configures StartServer.
type Options struct {
	// Env is the process's environment (see ProcessEnv).
	Env []string
	// Args are `serve` flags besides --addr.
	Args []string
}

// Server is a running `pgrelay serve` process.
type Server struct {
	tb   testing.TB
	name string
	// URL is the server's base URL.
	URL string
	// AdminToken is the admin token the first start on an empty store
	// printed, or "".
	AdminToken string

	started time.Time
	cmd     *exec.Cmd
	stdout  *Buffer
	stderr  *Buffer
	exited  chan struct{}
	waitErr error
	// transport is shared by every client Client returns, so that
	// CloseIdleConnections can close their keep-alive connections before
	// resources are counted.
	transport *http.Transport
}

var tokenRE = regexp.MustCompile(regexp.QuoteMeta(auth.TokenPrefix) + `[A-Za-z0-9_-]{43}`)

// StartServer starts `binary serve` on a free loopback port and waits until
// it answers /readyz (retrying with another port when the chosen one was
// taken meanwhile). The process, with its children, is stopped when the
// test ends; when the test failed, the tail of its standard error is
// logged.
func StartServer(tb testing.TB, binary, name string, opts Options) *Server {
	tb.Helper()
	var lastErr error
	for range 3 {
		s, err := launch(tb, binary, name, opts)
		if err == nil {
			return s
		}
		lastErr = err
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	tb.Fatalf("start server %s: %v", name, lastErr)
	return nil
}

// servingRE finds the URL in serve's "serving the web UI and API on URL"
// line (the listening address when a public URL is set).
var servingRE = regexp.MustCompile(`(?:listening on |serving the web UI and API on )(https?://127\.0\.0\.1:[0-9]+)`)

func launch(tb testing.TB, binary, name string, opts Options) (*Server, error) {
	tb.Helper()
	// Port 0: the server picks a free port and prints its URL, so no
	// other process can take the port between a probe and the server's
	// listen (which made /readyz answer from another server).
	addr := "127.0.0.1:0"
	s := &Server{tb: tb, name: name, stdout: &Buffer{}, stderr: &Buffer{},
		exited: make(chan struct{}), transport: http.DefaultTransport.(*http.Transport).Clone()}
	s.transport.MaxIdleConnsPerHost = 200
	// Info lines (each request) explain a failure in the log tail below.
	s.cmd = exec.Command(binary, append([]string{"--log-level", "info", "serve", "--listen", addr}, opts.Args...)...)
	s.cmd.Env = opts.Env
	s.cmd.Stdout, s.cmd.Stderr = s.stdout, s.stderr
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	s.started = time.Now()
	go func() {
		s.waitErr = s.cmd.Wait()
		close(s.exited)
	}()
	tb.Cleanup(func() {
		s.transport.CloseIdleConnections()
		s.Stop()
		if tb.Failed() {
			tb.Logf("--- server %s (pid %d) stderr, last lines (without /metrics and /readyz requests) ---\n%s",
				s.name, s.cmd.Process.Pid, s.stderr.tail(60, "path=/metrics ", "path=/readyz "))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-s.exited:
			return nil, fmt.Errorf("server %s exited before it was ready (%v):\n%s", name, s.waitErr, s.stderr.tail(30))
		default:
		}
		if s.URL == "" {
			if m := servingRE.FindStringSubmatch(s.stdout.String()); m != nil {
				s.URL = m[1]
			}
		}
		if s.URL == "" {
			// Not listening yet.
		} else if resp, err := s.HTTPClient().Get(s.URL + "/readyz"); err == nil {
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
	tb.Logf("server %s (pid %d) ready on %s", name, s.cmd.Process.Pid, s.URL)
	return s, nil
}

// Name is the name the test gave the server.
func (s *Server) Name() string { return s.name }

// Uptime is how long ago the process was started.
func (s *Server) Uptime() time.Duration { return time.Since(s.started) }

// Pid is the server's process ID.
func (s *Server) Pid() int { return s.cmd.Process.Pid }

// Worker is the name the server's queue gives itself in runs (host:pid).
func (s *Server) Worker(tb testing.TB) string {
	tb.Helper()
	host, err := os.Hostname()
	if err != nil {
		tb.Fatal(err)
	}
	return host + ":" + strconv.Itoa(s.Pid())
}

// Client returns an API client of the server that authenticates with
// token. All clients of a server share one HTTP transport (see
// CloseIdleConnections).
func (s *Server) Client(tb testing.TB, token string, opts ...client.Option) *remote.Client {
	tb.Helper()
	opts = append([]client.Option{client.WithHTTPClient(&http.Client{Transport: s.transport})}, opts...)
	c, err := remote.Dial(s.URL, token, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// HTTPClient returns an HTTP client on the transport the API clients of
// the server share, for requests outside the API such as /readyz.
func (s *Server) HTTPClient() *http.Client { return &http.Client{Transport: s.transport} }

// CloseIdleConnections closes the idle keep-alive connections of the
// clients Client returned, so that the server's count of open file
// descriptors and goroutines does not include them.
func (s *Server) CloseIdleConnections() { s.transport.CloseIdleConnections() }

// Stdout returns everything the server wrote to its standard output (the
// admin token of a first start, the address it serves on).
func (s *Server) Stdout() string { return s.stdout.String() }

// Stderr returns everything the server wrote to its standard error (its
// log).
func (s *Server) Stderr() string { return s.stderr.String() }

// StderrTail returns the last n lines of the server's standard error.
func (s *Server) StderrTail(n int) string { return s.stderr.tail(n) }

// Exited is closed once the process has exited.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// Wait waits until the process has exited and returns how it ended, as
// exec.Cmd.Wait does: nil for exit status 0.
func (s *Server) Wait() error {
	<-s.exited
	return s.waitErr
}

// Kill sends SIGKILL to the server and every process below it, and waits
// until it exited.
func (s *Server) Kill() {
	s.tb.Helper()
	if err := KillTree(s.Pid()); err != nil {
		s.tb.Errorf("kill server %s: %v", s.name, err)
	}
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.tb.Errorf("server %s (pid %d) did not exit after SIGKILL", s.name, s.Pid())
	}
}

// Stop stops a running server: SIGTERM, then after a few seconds SIGKILL
// (with its children, which a server stopped gracefully stops itself).
func (s *Server) Stop() { s.StopWithin(3 * time.Second) }

// StopWithin stops a running server with SIGTERM and waits up to grace for
// it to exit; one still running then is killed with its children (see
// Kill). It reports whether the server exited by itself (or had already
// exited).
func (s *Server) StopWithin(grace time.Duration) bool {
	select {
	case <-s.exited:
		return true
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return true
	case <-time.After(grace):
	}
	s.Kill()
	return false
}

// KillTree sends SIGKILL to pid and every process below it. The process is
// stopped first and the tree walked from /proc, so that no child escapes
// to init meanwhile.
func KillTree(pid int) error {
	_ = syscall.Kill(pid, syscall.SIGSTOP)
	pids, err := testenv.Descendants(pid)
	for _, p := range append(pids, pid) {
		if kerr := syscall.Kill(p, syscall.SIGKILL); kerr != nil && !errors.Is(kerr, syscall.ESRCH) && err == nil {
			err = fmt.Errorf("kill pid %d: %w", p, kerr)
		}
	}
	return err
}

// WaitRun polls the run through c until want holds, and fails the test
// when it does not within the given time.
func WaitRun(tb testing.TB, c *remote.Client, id string, within time.Duration, want func(*jobs.Run) bool) *jobs.Run {
	tb.Helper()
	deadline := time.Now().Add(within)
	for {
		r, err := c.GetRun(context.Background(), id)
		if err != nil {
			tb.Fatalf("get run %s: %v", id, err)
		}
		if want(r) {
			return r
		}
		if time.Now().After(deadline) {
			tb.Fatalf("run %s did not reach the wanted state within %v: %+v", id, within, r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Ended reports whether the run reached a terminal status.
func Ended(r *jobs.Run) bool { return r.Status.Terminal() }

// Running reports whether the run is running.
func Running(r *jobs.Run) bool { return r.Status == jobs.Running }

// QuitAndDump ends the server with SIGQUIT, which makes the Go runtime
// print every goroutine's stack, and returns what it printed: for
// explaining a goroutine leak when a test has failed. The server is gone
// afterwards.
func (s *Server) QuitAndDump() string {
	select {
	case <-s.exited:
		return "(the server had already exited)"
	default:
	}
	offset := len(s.stderr.String())
	_ = s.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		s.Kill()
	}
	return s.stderr.String()[offset:]
}
