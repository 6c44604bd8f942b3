package cli_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pgrelay/pgrelay/internal/cli"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// pgrelayArgs, when set (a JSON array), makes the test binary pgrelay run
// with those arguments: for tests that send it signals.
const pgrelayArgs = "PGRELAY_CLI_TEST_ARGS"

func TestMain(m *testing.M) {
	if v := os.Getenv(pgrelayArgs); v != "" {
		var args []string
		if err := json.Unmarshal([]byte(v), &args); err != nil {
			os.Exit(99)
		}
		os.Exit(cli.Execute(context.Background(), cli.OSEnv(), args))
	}
	os.Exit(m.Run())
}

// startPgrelay starts pgrelay (this test binary) on h's data dir, with
// standard input not a terminal.
func (h *harness) startPgrelay(args ...string) (*exec.Cmd, *lockedBuffer) {
	h.t.Helper()
	a, _ := json.Marshal(args)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), pgrelayArgs+"="+string(a), "PGRELAY_DATA_DIR="+h.dataDir)
	for k, v := range h.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, out
}

// lockedBuffer is a buffer that a process's output is copied into while
// the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestExecSignals sends pgrelay exec real signals, as Ctrl-C does.
func TestExecSignals(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	h := newHarness(t)
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(createArgs("db", pg)...)
	// Stopped by Ctrl-C, exec exits with 130, as shells and query do.
	t.Run("InterruptExitCode", func(t *testing.T) {
		marker := "exec-interrupted-" + strconv.Itoa(os.Getpid())
		cmd, out := h.startPgrelay("exec", "db", "--", "sh", "-c", "sleep 300; : "+marker)
		waitUntil(t, "the program to run", 15*time.Second, func() bool { return testenv.ProcessRunning("sh", marker) != 0 })
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		if code := exitStatus(t, cmd, out); code != 130 {
			t.Fatalf("exit status %d, want 130:\n%s", code, out.String())
		}
		if testenv.ProcessRunning("sh", marker) != 0 {
			t.Fatal("the program outlived exec")
		}
	})

	// A second Ctrl-C leaves at once, and the program (which ignores
	// SIGINT and SIGTERM here) does not run on, orphaned, in its own
	// process group: it is killed first.
	t.Run("SecondInterruptKillsProgram", func(t *testing.T) {
		marker := "exec-twice-" + strconv.Itoa(os.Getpid())
		cmd, out := h.startPgrelay("--log-level", "debug", "exec", "db", "--", "sh", "-c", "trap '' INT TERM; echo ready; sleep 300; : "+marker)
		t.Cleanup(func() {
			if pid := testenv.ProcessRunning("sh", marker); pid != 0 {
				_ = syscall.Kill(-pid, syscall.SIGKILL)
			}
		})
		waitUntil(t, "the program to run", 15*time.Second, func() bool { return strings.Contains(out.String(), "ready\n") })
		interruptTwice(t, cmd, out, marker)
	})
}

// TestExecRefusedPassword: psql prints the server's refusal itself; exec
// adds no session-start warnings at the default log level, no "step 1"
// (exec has no steps), and says once what to do next.
func TestExecRefusedPassword(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	h := newHarness(t)
	h.env["DB_PASSWORD"] = "not-" + pg.Password
	h.ok(createArgs("db", pg)...)
	r := h.run("exec", "db", "--", "psql", "-X", "-c", "select 1")
	if r.code != 2 {
		t.Fatalf("want psql's exit status 2: %s", r)
	}
	if strings.Contains(r.stderr, "proxy session start failed") || strings.Contains(r.stderr, "step 1") {
		t.Errorf("exec repeats psql's error or speaks of steps: %s", r)
	}
	contains(t, "exec", r.stderr, "Error: psql exited with code 2", "password authentication failed")
	if n := strings.Count(r.stderr, "Next: the server refused the saved password of user "+pg.User); n != 1 {
		t.Errorf("the next step is said %d times, want once: %s", n, r)
	}
	// The endpoint logs in as the connection's user only: another role
	// is refused by it, which says nothing of the saved password.
	r = h.run("exec", "db", "--", "psql", "-X", "-U", pg.SuperUser, "-c", "select 1")
	if r.code != 2 || strings.Contains(r.stderr, "Next:") || !strings.Contains(r.stderr, "this endpoint logs in as user") {
		t.Errorf("psql as another role: want status 2, the endpoint's refusal and no next step about the saved password: %s", r)
	}
	// psql printed the endpoint's refusal too: no warning of exec's own
	// in the middle of psql's lines. Nor for a wrong password of the
	// endpoint's or a replication connection, which the client is told.
	if strings.Contains(r.stderr, "proxy session start failed") {
		t.Errorf("psql as another role: exec warns of a session its endpoint refused and told psql about: %s", r)
	}
	r = h.run("exec", "db", "--", "sh", "-c", "PGPASSWORD=wrong psql -X -c 'select 1'; psql -X 'replication=database' -c 'IDENTIFY_SYSTEM'")
	if !strings.Contains(r.stderr, "password authentication failed") || !strings.Contains(r.stderr, "replication connections cannot pass through") ||
		strings.Contains(r.stderr, "proxy session start failed") {
		t.Errorf("psql with a wrong password and as a replication client: want the endpoint's refusals from psql and no warning of exec's: %s", r)
	}
	// At info level the sessions the server refused are logged.
	r = h.run("--log-level", "info", "exec", "db", "--", "psql", "-X", "-c", "select 1")
	contains(t, "exec at info level", r.stderr, "level=INFO msg=\"proxy session start failed\"")
}

// openPTY opens a pseudo-terminal and returns its controlling side and
// the terminal a program gets as its standard input.
func openPTY(t *testing.T) (ptm, pts *os.File) {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { _ = ptm.Close() })
	if err := unix.IoctlSetPointerInt(int(ptm.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(ptm.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	pts, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pts.Close() })
	return ptm, pts
}

// TestExecInteractiveProgramGetsCtrlC: on a terminal, Ctrl-C belongs to
// the program, which must be able to handle it: pgrelay used to ignore
// SIGINT while the program ran, and an ignored signal stays ignored in
// the program (dbt, a shell script could not be interrupted at all).
func TestExecInteractiveProgramGetsCtrlC(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	h := newHarness(t)
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(createArgs("db", pg)...)
	_, pts := openPTY(t)
	a, _ := json.Marshal([]string{"exec", "db", "--", "sh", "-c", "grep '^SigIgn' /proc/self/status"})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), pgrelayArgs+"="+string(a), "PGRELAY_DATA_DIR="+h.dataDir)
	for k, v := range h.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = pts, &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Run(); err != nil {
		t.Fatalf("exec: %v\n%s", err, out.String())
	}
	var mask uint64
	for _, line := range strings.Split(out.String(), "\n") {
		if v, ok := strings.CutPrefix(line, "SigIgn:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			mask = m
			break
		}
	}
	if !strings.Contains(out.String(), "SigIgn:") {
		t.Fatalf("no SigIgn line in the program's output:\n%s", out.String())
	}
	if mask&(1<<(int(syscall.SIGINT)-1)) != 0 {
		t.Errorf("the program started with SIGINT ignored (SigIgn %x): Ctrl-C could not reach it", mask)
	}
}

// exitStatus waits for pgrelay to exit and returns its exit status,
// failing the test if it has not within 60 s.
func exitStatus(t *testing.T, cmd *exec.Cmd, out *lockedBuffer) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return cmd.ProcessState.ExitCode()
	case <-time.After(60 * time.Second):
		t.Fatalf("pgrelay did not exit within 60 s:\n%s", out.String())
		return 0
	}
}

// startJobRun starts a local `pgrelay job run` (with args) of a job whose
// one command step is sh -c script; script says "ready" once it runs,
// and ends with `: MARKER` so that testenv.ProcessRunning finds it (killed
// at the test's end if still there). It returns once the step said ready.
func startJobRun(t *testing.T, script string, args ...string) (cmd *exec.Cmd, out *lockedBuffer, marker string) {
	t.Helper()
	pg := sharedDB(t)
	h := newHarness(t)
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(createArgs("db", pg)...)
	marker = strings.ReplaceAll(t.Name(), "/", "-") + "-" + strconv.Itoa(os.Getpid())
	h.applyJobs(`jobs:
  - name: j
    connection: db
    steps:
      - command: [sh, -c, "` + script + `; : ` + marker + `"]
`)
	t.Cleanup(func() {
		if pid := testenv.ProcessRunning("sh", marker); pid != 0 {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	})
	cmd, out = h.startPgrelay(append(args, "job", "run", "j", "--allow-command", "sh")...)
	// Its output, not the step line that quotes the script.
	waitUntil(t, "the command to run", 15*time.Second, func() bool { return strings.Contains(out.String(), "ready\n") })
	return cmd, out, marker
}

// TestJobRunSignals: a local job run stopped by Ctrl-C exits with 130, and
// a second Ctrl-C leaves at once without leaving the command (which
// ignores SIGINT and SIGTERM here) running in its own process group.
func TestJobRunSignals(t *testing.T) {
	t.Parallel()
	cmd, out, marker := startJobRun(t, "trap '' INT TERM; echo ready; sleep 300", "--log-level", "debug")
	interruptTwice(t, cmd, out, marker)
}

// interruptTwice sends a running pgrelay (at debug level, its program sh
// ignoring SIGINT and SIGTERM) a Ctrl-C, and another once it is stopping
// the program: it must exit with 130 and leave no sh with marker running.
func interruptTwice(t *testing.T, cmd *exec.Cmd, out *lockedBuffer, marker string) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	// The run is stopping the program (its debug log says so).
	waitUntil(t, "the program to be stopped", 15*time.Second, func() bool { return strings.Contains(out.String(), "stopping sh") })
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := exitStatus(t, cmd, out); code != 130 {
		t.Errorf("exit status %d, want 130:\n%s", code, out.String())
	}
	waitUntil(t, "the program to end", 5*time.Second, func() bool { return testenv.ProcessRunning("sh", marker) == 0 })
}

// TestJobRunHangup: a local job run whose terminal closed (SIGHUP) stops
// its command, which runs in a process group of its own and so does not
// get the hangup itself; pgrelay used to die at once and leave it running.
func TestJobRunHangup(t *testing.T) {
	t.Parallel()
	cmd, out, marker := startJobRun(t, "echo ready; sleep 300")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if code := exitStatus(t, cmd, out); code != 128+int(syscall.SIGHUP) {
		t.Errorf("exit status %d, want %d:\n%s", code, 128+int(syscall.SIGHUP), out.String())
	}
	waitUntil(t, "the command to end", 15*time.Second, func() bool { return testenv.ProcessRunning("sh", marker) == 0 })
}

// TestJobRunRefusedPassword: a local job run whose command's session the
// server refused for the saved password says what to do next, once.
func TestJobRunRefusedPassword(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	h := newHarness(t)
	h.env["DB_PASSWORD"] = "not-" + pg.Password
	h.ok(createArgs("db", pg)...)
	h.applyJobs("jobs:\n  - name: twice\n    connection: db\n    steps:\n" +
		"      - command: [sh, -c, \"psql -X -c 'select 1'; psql -X -c 'select 2'\"]\n")
	r := h.fail(1, "job", "run", "twice", "--allow-command", "sh")
	out := r.stdout + r.stderr
	contains(t, "job run", out, "password authentication failed")
	if strings.Contains(r.stderr, "proxy session start failed") {
		t.Errorf("the endpoint warns of sessions the server refused, which psql told: %s", r)
	}
	if n := strings.Count(out, "Next: the server refused the saved password of user "+pg.User+
		": give the right one with `pgrelay connection update db --password-env VAR`"); n != 1 {
		t.Errorf("the next step is said %d times, want once: %s", n, r)
	}
}

// TestCopyFromStdinRefused: COPY ... FROM STDIN waits for data a query or
// a SQL step cannot send; it is refused at once, naming the field and what
// to use instead, where it used to wait until a time limit (or forever).
func TestCopyFromStdinRefused(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	h := newHarness(t)
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(createArgs("db", pg)...)
	r := h.fail(2, "query", "db", "create temp table t (n int); COPY t FROM stdin")
	contains(t, "query", r.stderr, "sql: COPY ... FROM STDIN waits for data from the client", "pgrelay exec db -- psql -c '\\copy TABLE from FILE'")
	file := writeJobs(t, "jobs:\n  - name: load\n    connection: db\n    steps:\n      - sql: copy t from stdin\n")
	r = h.fail(2, "job", "apply", "-f", file)
	contains(t, "job apply", r.stderr, "steps[0].sql: COPY ... FROM STDIN waits for data from the client, which a SQL step cannot send",
		"[psql, -c, '\\copy TABLE from FILE']")
}

// TestJobRunEndsDetachedProcesses: what a command starts outside its
// process group (setsid) carries the run's mark and is ended with the
// step; it used to run on after pgrelay said the run ended.
func TestJobRunEndsDetachedProcesses(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	h := newHarness(t)
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(createArgs("db", pg)...)
	// The sleep's argument marks it: a duration no other test's sleep has
	// (a short number such as 300 matched "sleep 300" of other tests).
	marker := fmt.Sprintf("%d.%09d", 3000+os.Getpid()%1000, time.Now().UnixNano()%1_000_000_000)
	t.Cleanup(func() {
		if pid := testenv.ProcessRunning("sleep", marker); pid != 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	dir := t.TempDir()
	file := filepath.Join(dir, "jobs.yaml")
	// The script waits until the sleep has a session of its own.
	script := "setsid sh -c 'echo $$ > " + dir + "/pid; exec sleep " + marker + "' >/dev/null 2>&1 </dev/null & " +
		"while [ ! -s " + dir + "/pid ]; do sleep 0.01; done; echo started"
	if err := os.WriteFile(file, []byte("jobs:\n  - name: detach\n    connection: db\n    steps:\n"+
		"      - command: [sh, -c, "+strconv.Quote(script)+"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.ok("job", "apply", "-f", file)
	r := h.ok("job", "run", "detach", "--allow-command", "sh")
	contains(t, "job run", r.stdout+r.stderr, "started", "sh exited leaving processes outside its process group (pid ")
	if pid := testenv.ProcessRunning("sleep", marker); pid != 0 {
		t.Errorf("the detached sleep (pid %d) runs on after the run ended:\n%s", pid, r)
	}
}
