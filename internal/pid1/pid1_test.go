package pid1_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/pid1"
)

// helperScript, when set, makes the test binary the supervisor: it runs
// the shell script as its child with pid1.Supervise (in a new PID
// namespace the binary is PID 1 there).
const helperScript = "PID1_TEST_SCRIPT"

func TestMain(m *testing.M) {
	if script := os.Getenv(helperScript); script != "" {
		if !pid1.Needed() {
			fmt.Fprintln(os.Stderr, "helper: not PID 1")
			os.Exit(99)
		}
		os.Exit(pid1.Supervise("/bin/sh", []string{"-c", script}, os.Environ(), os.Stderr))
	}
	os.Exit(m.Run())
}

// supervised starts the test binary as PID 1 of a new PID namespace
// (unshare), supervising sh -c script, and returns the unshare command and
// the supervisor's process ID as this test sees it.
func supervised(t *testing.T, script string) (*exec.Cmd, int, *bytes.Buffer) {
	t.Helper()
	cmd, out := startSupervised(t, script)
	var sup int
	waitFor(t, "the supervisor to start", func() bool {
		kids := children(cmd.Process.Pid)
		if len(kids) == 1 {
			sup = kids[0].pid
		}
		return sup != 0
	})
	return cmd, sup, out
}

// startSupervised starts the test binary as PID 1 of a new PID namespace
// supervising sh -c script.
func startSupervised(t *testing.T, script string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare (util-linux) is not installed")
	}
	args := []string{"--pid", "--fork", "--kill-child"}
	if os.Geteuid() != 0 {
		args = append([]string{"--user", "--map-root-user"}, args...)
	}
	cmd := exec.Command("unshare", append(args, os.Args[0], "-test.run=^$")...)
	cmd.Env = append(os.Environ(), helperScript+"="+script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, &out
}

type proc struct {
	pid   int
	state string
	comm  string
}

// children lists the processes whose parent is pid, from /proc.
func children(pid int) []proc {
	entries, _ := os.ReadDir("/proc")
	var out []proc
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parentheses.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		if pp, _ := strconv.Atoi(f[1]); pp == pid {
			out = append(out, proc{pid: n, state: f[0], comm: s[strings.IndexByte(s, '(')+1 : i]})
		}
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitExit waits for cmd to exit, failing the test (and killing it) if it
// has not within 15 seconds.
func waitExit(t *testing.T, cmd *exec.Cmd) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatal("the supervisor did not exit within 15 s")
		return nil
	}
}

func readyFile(t *testing.T) string {
	return filepath.Join(t.TempDir(), "ready")
}

// A process left behind by the child (its parent gone, so the kernel
// hands it to PID 1) is waited for when it exits: no zombie stays.
func TestOrphansReaped(t *testing.T) {
	t.Parallel()
	ready, release := readyFile(t), filepath.Join(t.TempDir(), "release")
	// The orphan runs until the test releases it, so the test sees it
	// handed to the supervisor alive first; the child itself stays.
	script := fmt.Sprintf(`(sh -c 'while [ ! -e %[2]s ]; do sleep 0.02; done' &); : > %[1]s; exec sleep 60`, ready, release)
	_, sup, out := supervised(t, script)
	waitFor(t, "the child to start the orphan", func() bool { _, err := os.Stat(ready); return err == nil })
	var orphan proc
	waitFor(t, "the orphan to be handed to the supervisor", func() bool {
		for _, p := range children(sup) {
			if p.comm == "sh" {
				orphan = p
				return true
			}
		}
		return false
	})
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// Gone entirely, not left as a zombie (state Z) of the supervisor.
	waitFor(t, "the orphan to be reaped", func() bool {
		for _, p := range children(sup) {
			if p.pid == orphan.pid {
				return false
			}
		}
		return true
	})
	if kids := children(sup); len(kids) != 1 || kids[0].comm != "sleep" {
		t.Errorf("supervisor's children %+v, want only the child (sleep 60); output:\n%s", kids, out)
	}
}

// A signal sent to PID 1 reaches the child, and the child's exit status
// is the supervisor's.
func TestSignalForwardedAndStatusKept(t *testing.T) {
	t.Parallel()
	ready, got := readyFile(t), filepath.Join(t.TempDir(), "got")
	script := fmt.Sprintf(`trap 'echo TERM > %[2]s; exit 7' TERM; : > %[1]s; while :; do sleep 0.02; done`, ready, got)
	cmd, sup, out := supervised(t, script)
	waitFor(t, "the child to set its trap", func() bool { _, err := os.Stat(ready); return err == nil })
	if err := syscall.Kill(sup, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := waitExit(t, cmd)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 7 {
		t.Errorf("exit %v, want status 7 (the child's); output:\n%s", err, out)
	}
	if b, _ := os.ReadFile(got); strings.TrimSpace(string(b)) != "TERM" {
		t.Errorf("the child got %q, want TERM", b)
	}
}

// A child ended by a signal makes the supervisor exit with 128 plus its
// number, as a shell reports it.
func TestStatusOfSignalledChild(t *testing.T) {
	t.Parallel()
	cmd, out := startSupervised(t, `kill -KILL $$`)
	err := waitExit(t, cmd)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 128+int(syscall.SIGKILL) {
		t.Errorf("exit %v, want status %d; output:\n%s", err, 128+int(syscall.SIGKILL), out)
	}
}

// A program that cannot be started is said so, with status 1.
func TestStartFails(t *testing.T) {
	var out bytes.Buffer
	if got := pid1.Supervise(filepath.Join(t.TempDir(), "missing"), nil, nil, &out); got != 1 {
		t.Errorf("status %d, want 1", got)
	}
	if !strings.Contains(out.String(), "missing") {
		t.Errorf("output %q does not name the program", out.String())
	}
}

// A child stopped by a Ctrl-Z (SIGTSTP; a container has no shell to
// resume it with fg) is continued: it goes on and its status is kept.
func TestStoppedChildContinued(t *testing.T) {
	t.Parallel()
	cmd, out := startSupervised(t, `kill -TSTP $$; exit 5`)
	err := waitExit(t, cmd)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 5 {
		t.Errorf("exit %v, want status 5 (the child's, once continued); output:\n%s", err, out)
	}
}
