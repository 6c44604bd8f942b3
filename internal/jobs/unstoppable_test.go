package jobs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// unprivilegedHelper, when set, makes the test binary a pgrelay that runs
// as an unprivileged user with CAP_SETUID, CAP_SETGID and CAP_CHOWN but
// without CAP_KILL, and runs a command as the user the variable names
// (NAME:UID:GID): see runUnstoppable.
const unprivilegedHelper = "PGRELAY_JOBS_TEST_RUN_AS"

func TestMain(m *testing.M) {
	if v := os.Getenv(unprivilegedHelper); v != "" {
		os.Exit(runUnstoppable(v))
	}
	if os.Getenv(jobs.RunDirChildEnv) != "" {
		// A process that holds a run directory until it is killed.
		path, err := jobs.MakeRunDir()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(path)
		time.Sleep(time.Minute)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// unstoppableReport is what the helper found.
type unstoppableReport struct {
	LookupErr string
	Status    jobs.Status
	Reason    string
	Log       []string
}

// directConn is a direct connection that nothing connects to: the run's
// endpoint is opened, but the command does not use it.
type directConn struct{ spec *connection.Spec }

func (c directConn) Spec() *connection.Spec { return c.spec }
func (c directConn) DialDatabase(context.Context) (net.Conn, error) {
	return nil, errors.New("test: no database")
}
func (c directConn) Connect(context.Context) (*pgx.Conn, error) {
	return nil, errors.New("test: no database")
}
func (c directConn) Done() <-chan struct{} { return nil }
func (c directConn) Err() error            { return nil }
func (c directConn) Close() error          { return nil }

// runUnstoppable is the helper: it checks --run-as for the user (refused:
// not root), then runs a command as that user anyway and cancels the
// run once the command has started, and prints what happened as JSON.
func runUnstoppable(who string) int {
	parts := strings.Split(who, ":")
	uid, _ := strconv.Atoi(parts[1])
	gid, _ := strconv.Atoi(parts[2])
	var rep unstoppableReport
	if _, err := jobs.LookupRunAs(parts[0]); err != nil {
		rep.LookupErr = err.Error()
	}
	allow, err := jobs.NewAllowlist([]string{"sh"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	spec := &connection.Spec{Name: "direct", Host: "127.0.0.1", Port: 1, Database: "d", User: "u", SSLMode: connection.SSLDisable}
	r := &jobs.Runner{
		Open:     func(context.Context, string) (jobs.Conn, error) { return directConn{spec}, nil },
		Commands: jobs.CommandPolicy{Allow: allow, RunAs: &jobs.RunAs{Name: parts[0], UID: uint32(uid), GID: uint32(gid)}},
		// Short graces: every signal is refused anyway.
		InterruptGrace: 100 * time.Millisecond, KillGrace: 100 * time.Millisecond,
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	j := jobs.Job{Name: "j", Connection: "direct", Steps: []jobs.Step{{Command: []string{"sh", "-c",
		"echo started; sleep 300; exit 0", "unstoppable-" + parts[0]}}}}
	j.ApplyDefaults()
	res := r.Run(ctx, j, jobs.Hooks{Log: func(l jobs.LogLine) {
		rep.Log = append(rep.Log, l.Text)
		if l.Stream == jobs.StreamStdout && l.Text == "started" {
			cancel(&jobs.CancelledError{By: "test"})
		}
	}})
	rep.Status, rep.Reason = res.Status, res.Reason
	if err := json.NewEncoder(os.Stdout).Encode(rep); err != nil {
		return 2
	}
	return 0
}

// TestUnstoppableCommandIsReported runs pgrelay (the test binary) as an
// unprivileged user with CAP_SETUID, CAP_SETGID and CAP_CHOWN, as a
// service with ambient capabilities would, but without CAP_KILL: --run-as
// is refused at set-up (not root); and a command it starts as
// another user anyway, which no signal of its reaches, is reported as
// still running when the run is cancelled, instead of the run waiting for
// it forever or passing over it.
func TestUnstoppableCommandIsReported(t *testing.T) {
	self := testenv.NewOSUser(t) // the user pgrelay runs as
	other := testenv.NewOSUser(t)
	dir, err := os.MkdirTemp("", "pgrelay-unstoppable-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The test binary, where that user may run it.
	bin := filepath.Join(dir, "jobs.test")
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	marker := "unstoppable-" + other.Name
	t.Cleanup(func() {
		if pid := testenv.ProcessRunning("sh", marker); pid != 0 {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	})
	// The run's directory goes in a temporary directory of the test's own,
	// as sticky and open as /tmp: pgrelay, not root here, cannot remove it
	// once given to the other user, and it stayed in /tmp.
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, 0o777|os.ModeSticky); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TMPDIR="+tmp,
		fmt.Sprintf("%s=%s:%d:%d", unprivilegedHelper, other.Name, other.UID, other.GID))
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uint32(self.UID), Gid: uint32(self.GID)},
		// CAP_DAC_OVERRIDE: the run's directory, once given to the
		// user, is closed to pgrelay's own user (see the report).
		AmbientCaps: []uintptr{0 /* CAP_CHOWN */, 1 /* CAP_DAC_OVERRIDE */, 6 /* CAP_SETGID */, 7 /* CAP_SETUID */},
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("the cancelled run did not end within 60 s (it waits for a command it cannot stop)\nstderr:\n%s", stderr.String())
	}
	if err != nil {
		t.Fatalf("helper: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	var rep unstoppableReport
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil {
		t.Fatalf("helper's report: %v\n%s", err, stdout.String())
	}
	if !strings.Contains(rep.LookupErr, "needs pgrelay to run as root") {
		t.Errorf("--run-as not as root: %q", rep.LookupErr)
	}
	if rep.Status != jobs.Cancelled || !strings.Contains(rep.Reason, "could not stop sh") ||
		!strings.Contains(rep.Reason, "operation not permitted") || !strings.Contains(rep.Reason, "CAP_KILL") {
		t.Errorf("result: %s: %s\nlog:\n%s", rep.Status, rep.Reason, strings.Join(rep.Log, "\n"))
	}
	// It is still running, as the run said.
	if testenv.ProcessRunning("sh", marker) == 0 {
		t.Error("the command is gone: it could be signalled after all, and this test proves nothing")
	}
}

// TestControlForgetsAnEndedGroup: once a command has exited and its
// process group is empty, a second Ctrl-C (Control.Kill) no longer
// reaches it by number, even while the step still drains the output a
// process outside the group holds open: that number could be another
// group's by then. It used to stay registered until the step returned.
func TestControlForgetsAnEndedGroup(t *testing.T) {
	t.Parallel()
	allow, err := jobs.NewAllowlist([]string{"sh"})
	if err != nil {
		t.Fatal(err)
	}
	spec := &connection.Spec{Name: "direct", Host: "127.0.0.1", Port: 1, Database: "d", User: "u", SSLMode: connection.SSLDisable}
	r := &jobs.Runner{
		Open:     func(context.Context, string) (jobs.Conn, error) { return directConn{spec}, nil },
		Commands: jobs.CommandPolicy{Allow: allow},
	}
	marker := "control-forgets-" + strconv.Itoa(os.Getpid())
	t.Cleanup(func() {
		if pid := testenv.ProcessRunning("sh", marker); pid != 0 {
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		}
	})
	// The program leaves a process of another session holding its output
	// for 3 s, so the step drains it after the program's group is gone
	// (without the run's mark, which would have it ended at once).
	up := filepath.Join(t.TempDir(), "up")
	j := jobs.Job{Name: "j", Connection: "direct", Steps: []jobs.Step{{Command: []string{"sh", "-c",
		"env -u " + jobs.RunMarkEnv + " setsid sh -c ': > " + up + "; sleep 3; : " + marker + "' & while [ ! -e " + up + " ]; do sleep 0.01; done"}}}}
	j.ApplyDefaults()
	control := jobs.NewControl()
	ctx := jobs.WithControl(context.Background(), control)
	done := make(chan jobs.Result, 1)
	go func() { done <- r.Run(ctx, j, jobs.Hooks{}) }()
	for deadline := time.Now().Add(10 * time.Second); testenv.ProcessRunning("sh", marker) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the program did not start the process holding its output")
		}
	}
	forgotten := false
	for deadline := time.Now().Add(2500 * time.Millisecond); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if control.Commands() == 0 {
			forgotten = true
			break
		}
	}
	select {
	case res := <-done:
		t.Fatalf("the step ended before its output was drained (%s): the test proves nothing", res.Status)
	default:
	}
	if !forgotten {
		t.Error("the command stayed registered for Kill after its process group was gone")
	}
	<-done
}
