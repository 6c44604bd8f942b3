//go:build linux

package jobs

import (
	"bytes"
	"os"
	"strconv"
)

// markedProcesses returns the processes whose environment holds the entry
// mark ("NAME=value"), this process excepted. Each is found by a pidfd
// before its environment is read, so a signal sent to it never reaches a
// process that took its ID later.
func markedProcesses(mark string) []*os.Process {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	want := []byte(mark)
	self := os.Getpid()
	var out []*os.Process
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		p, err := os.FindProcess(pid)
		if err != nil {
			continue
		}
		env, err := os.ReadFile("/proc/" + e.Name() + "/environ")
		if err != nil || !hasEnvEntry(env, want) {
			_ = p.Release()
			continue
		}
		out = append(out, p)
	}
	return out
}

// hasEnvEntry reports whether environ (NUL-separated, as in
// /proc/PID/environ) holds entry.
func hasEnvEntry(environ, entry []byte) bool {
	for len(environ) > 0 {
		e, rest, _ := bytes.Cut(environ, []byte{0})
		if bytes.Equal(e, entry) {
			return true
		}
		environ = rest
	}
	return false
}
