package jobs

import (
	"errors"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// TestControlKillWaitsForStartingCommand: a second Ctrl-C (Kill) while a
// command is being started (forked, not yet registered) kills it too once
// it registers, before Kill returns (pgrelay exits right after), and no
// command starts after Kill.
func TestControlKillWaitsForStartingCommand(t *testing.T) {
	t.Parallel()
	c := NewControl()
	// A command being started: Kill waits for it.
	if err := c.begin(); err != nil {
		t.Fatal(err)
	}
	killed := make(chan error, 1)
	go func() { killed <- c.Kill() }()
	// Kill is waiting; the command finishes starting and registers.
	cmd := exec.Command("sleep", "300")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	select {
	case err := <-killed:
		t.Fatalf("Kill returned (%v) before the command being started registered", err)
	case <-time.After(50 * time.Millisecond):
	}
	if _, err := c.end(cmd, nil); err != nil {
		t.Fatal(err)
	}
	if err := <-killed; err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("command ended with %v, not SIGKILL", cmd.ProcessState)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a command registered while Kill ran is still running")
	}

	late := exec.Command("sleep", "300")
	if _, err := c.start(late); !errors.Is(err, ErrKilled) {
		t.Fatalf("start after Kill: %v, want ErrKilled", err)
	}
	if late.Process != nil {
		_ = late.Process.Kill()
		t.Fatal("a command started after Kill")
	}
}
