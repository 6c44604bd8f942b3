package testenv

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago: it
// binds port 0, reads the port the kernel chose and closes the listener.
// Another process may take the port before the caller binds it, so servers
// started on it should retry with a new port when binding fails.
func FreePort(tb testing.TB) int {
	tb.Helper()
	port, err := freePort()
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	return port
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port on 127.0.0.1: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("close probe listener on port %d: %w", port, err)
	}
	return port, nil
}

// ipv6LoopbackAvailable reports whether ::1 can be bound on this machine.
func ipv6LoopbackAvailable() bool {
	l, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	_ = l.Close()
	return true
}

// tailFile returns the last n lines of the file at path, or a note saying
// why it could not be read.
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// childEnv is the environment for server processes: the current one without
// variables that would steer PostgreSQL tools, with a fixed C locale and UTC
// time zone (which also spares initdb its slow time zone probe).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "PG"), name == "LANG", strings.HasPrefix(name, "LC_"), name == "TZ":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LANG=C", "LC_ALL=C", "TZ=UTC")
}

// ProcessTree maps the pid of each process to the pids of its children: a
// snapshot of the processes running when it was read.
type ProcessTree map[int][]int

// ReadProcessTree reads the tree of running processes from /proc (Linux
// only).
func ReadProcessTree() (ProcessTree, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list /proc: %w", err)
	}
	children := make(ProcessTree)
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // the process ended meanwhile
		}
		// The command name is in parentheses and may itself contain
		// spaces or parentheses: the fields we want follow the last ')'.
		i := bytes.LastIndexByte(data, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(data[i+1:]))
		if len(fields) < 2 {
			continue
		}
		ppid, err := strconv.Atoi(fields[1])
		if err != nil {
			continue
		}
		children[ppid] = append(children[ppid], child)
	}
	return children, nil
}

// Below returns the pids of all processes below pid (children,
// grandchildren, ...) in the tree, nearest first.
func (t ProcessTree) Below(pid int) []int {
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		out = append(out, t[p]...)
		queue = append(queue, t[p]...)
	}
	return out
}

// Descendants returns the pids of all processes below pid (children,
// grandchildren, ...), nearest first, read from /proc (Linux only). The
// tree may change while it is read.
func Descendants(pid int) ([]int, error) {
	tree, err := ReadProcessTree()
	if err != nil {
		return nil, err
	}
	return tree.Below(pid), nil
}

// signalDescendants sends sig to every descendant of pid. It repeats the
// walk until a pass finds no process it has not signalled yet, so that
// processes forked while it runs are caught too (use it with SIGSTOP or
// SIGKILL to freeze the tree first). It returns the signalled pids.
func signalDescendants(pid int, sig syscall.Signal) ([]int, error) {
	done := make(map[int]bool)
	var all []int
	for range 20 {
		pids, err := Descendants(pid)
		if err != nil {
			return all, err
		}
		fresh := false
		for _, p := range pids {
			if done[p] {
				continue
			}
			done[p] = true
			fresh = true
			all = append(all, p)
			if err := syscall.Kill(p, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
				return all, fmt.Errorf("send %v to pid %d: %w", sig, p, err)
			}
		}
		if !fresh {
			return all, nil
		}
	}
	return all, nil
}

// ProcessRunning returns the PID of a running process whose program is
// named program (the base name of its argv[0]) and whose command line holds
// marker, or 0: how a test finds a program it started through others (a
// job's command, a shell's child) to check that it ended.
func ProcessRunning(program, marker string) int {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		argv0, _, _ := strings.Cut(string(cmdline), "\x00")
		if err == nil && filepath.Base(argv0) == program && strings.Contains(string(cmdline), marker) {
			return pid
		}
	}
	return 0
}
