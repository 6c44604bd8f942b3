package jobs

import (
	"bufio"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestSweepRunDirs: the directory of a run whose process was SIGKILLed
// (it never removed it) is removed by the next sweep; that of a run going
// on (here, in this process) stays, and so does a lock file that is not
// this user's. Before, such directories stayed in /tmp for good.
func TestSweepRunDirs(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	logger := slog.New(slog.DiscardHandler)

	live, err := newRunDir()
	if err != nil {
		t.Fatal(err)
	}
	defer live.remove()

	child := exec.Command(os.Args[0]) // TestMain: a process that holds a run directory
	child.Env = append(os.Environ(), RunDirChildEnv+"=1")
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		_ = child.Process.Kill()
		t.Fatalf("the child printed no run directory: %v", err)
	}
	dead := strings.TrimSpace(line)
	if !strings.HasPrefix(dead, filepath.Join(tmp, runDirPrefix)) {
		_ = child.Process.Kill()
		t.Fatalf("the child's run directory %q is not in %s", dead, tmp)
	}
	if err := os.WriteFile(filepath.Join(dead, "profiles.yml"), []byte("pgrelay: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// While the child lives, its directory is in use.
	if n := SweepRunDirs(logger); n != 0 {
		t.Fatalf("a sweep removed %d directories of live runs", n)
	}
	_ = child.Process.Kill() // SIGKILL: it cannot remove anything
	go func() { _, _ = io.Copy(io.Discard, out) }()
	_ = child.Wait()

	if n := SweepRunDirs(logger); n != 1 {
		t.Fatalf("the sweep removed %d directories, want the killed process's one", n)
	}
	for _, p := range []string{dead, dead + runDirLockSuffix} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s is still there after the sweep: %v", p, err)
		}
	}
	if fi, err := os.Stat(live.path); err != nil || !fi.IsDir() {
		t.Fatalf("the live run's directory was removed: %v", err)
	}

	// A lock file of another user is not this process's to judge.
	if os.Getuid() == 0 {
		other := filepath.Join(tmp, runDirPrefix+"other")
		if err := os.Mkdir(other, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(other+runDirLockSuffix, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(other+runDirLockSuffix, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		if n := SweepRunDirs(logger); n != 0 {
			t.Fatalf("the sweep removed %d directories with another user's lock", n)
		}
	}
	// A symlink in place of a lock file is not followed.
	target := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(target, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(tmp, runDirPrefix+"link"+runDirLockSuffix)); err != nil {
		t.Fatal(err)
	}
	SweepRunDirs(logger)
	if _, err := os.Stat(target); err != nil {
		t.Fatalf("a sweep followed a symlink: %v", err)
	}
}

// TestNewRunDirWhileSweeping: runs that start while another process sweeps
// (its serve starting) keep their directories. The lock file was created
// before it was locked, and a sweep that came in between took it for a
// dead run's: the run failed with "create run directory: lock: resource
// temporarily unavailable", or lost its directory.
func TestNewRunDirWhileSweeping(t *testing.T) {
	t.Setenv("TMPDIR", t.TempDir())
	logger := slog.New(slog.DiscardHandler)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				SweepRunDirs(logger)
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	for i := range 3000 {
		d, err := newRunDir()
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if fi, err := os.Stat(d.path); err != nil || !fi.IsDir() {
			t.Fatalf("run %d: its directory was swept: %v", i, err)
		}
		d.remove()
	}
}
