// Package pid1 lets pgrelay be the first process of a container (PID 1)
// without an init such as tini in front of it.
//
// The kernel makes PID 1 the parent of every process whose parent exits
// first: what a job's command leaves behind (a daemonised helper, the
// children of a shell killed with its process group) ends up there, and
// stays a zombie, holding its process ID, until PID 1 waits for it. pgrelay
// waits only for the children it started, so as PID 1 it would gather
// zombies run after run. PID 1 also gets no default action for signals:
// one it does not handle is dropped.
//
// So when pgrelay finds itself PID 1 it runs itself again as its only
// child and does what an init does: it passes on the signals that stop
// or steer a process, waits for every process the kernel hands it,
// continues the child should a Ctrl-Z stop it (a container has no shell
// to resume it), and exits with the child's status once the child ends.
package pid1

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"
)

// Needed reports whether this process is PID 1 and should supervise
// pgrelay rather than be it.
func Needed() bool { return os.Getpid() == 1 }

// forwarded returns the signals passed on to the child: the ones a
// container runtime, an operator or a terminal sends to stop, reload or
// steer a process.
func forwarded() []os.Signal {
	return []os.Signal{
		syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH,
	}
}

// Supervise starts path with args and env as this process's child and
// waits until it exits, meanwhile passing on the signals of forwarded and
// waiting for every other process that exits as a child of this one. It
// returns the child's exit status, or 128 plus the signal's number when a
// signal ended it, and 1 if the child could not be started (said on
// stderr).
//
// The child runs in a process group of its own; on a terminal that group
// is the foreground one, so a Ctrl-C reaches the child once, from the
// terminal, and not again through this process.
func Supervise(path string, args, env []string, stderr io.Writer) int {
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs, append(forwarded(), syscall.SIGCHLD)...)
	defer signal.Stop(sigs)

	attr := &os.ProcAttr{
		Env:   env,
		Files: []*os.File{os.Stdin, os.Stdout, os.Stderr},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		attr.Sys.Foreground, attr.Sys.Ctty = true, int(os.Stdin.Fd())
	}
	argv := append([]string{path}, args...)
	child, err := os.StartProcess(path, argv, attr)
	if err != nil && attr.Sys.Foreground {
		// Not this process's controlling terminal: run in the background
		// group rather than not at all.
		attr.Sys.Foreground, attr.Sys.Ctty = false, 0
		child, err = os.StartProcess(path, argv, attr)
	}
	if err != nil {
		fmt.Fprintf(stderr, "pgrelay (PID 1): start %s: %v\n", path, err)
		return 1
	}
	defer func() { _ = child.Release() }()
	for {
		if status, done := reap(child.Pid); done {
			return status
		}
		if s := <-sigs; s != syscall.SIGCHLD {
			// The child may have exited meanwhile; the next reap says so.
			_ = child.Signal(s)
		}
	}
}

// reap waits for every child of this process that has exited, without
// blocking, and reports the exit status of main once it is among them.
// When main has stopped (Ctrl-Z on the container's terminal, which has no
// shell to resume it with fg) its process group is continued at once: the
// terminal would otherwise hang with everything stopped.
func reap(main int) (status int, done bool) {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG|syscall.WUNTRACED, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			// ECHILD (no children left) or none exited yet.
			return 0, false
		}
		if pid != main {
			continue
		}
		switch {
		case ws.Exited():
			return ws.ExitStatus(), true
		case ws.Signaled():
			return 128 + int(ws.Signal()), true
		case ws.Stopped():
			_ = syscall.Kill(-main, syscall.SIGCONT)
		}
	}
}
