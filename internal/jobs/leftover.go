package jobs

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RunMarkEnv is the environment variable that marks the processes of a
// run's commands: each run sets its own value, which whatever they start
// inherits, also outside their process group (setsid, a daemon), so that
// those processes are found and ended with the step.
const RunMarkEnv = "PGRELAY_RUN_MARK"

// newRunMark returns the environment entry that marks a run's processes.
func newRunMark() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make the run's process mark: %w", err)
	}
	return RunMarkEnv + "=" + hex.EncodeToString(b), nil
}

// endMarked ends the processes that carry the run's mark once its step's
// program (and its process group) is gone: SIGTERM, then SIGKILL after
// groupGrace. It says what it did ("" when there were none).
func (x *run) endMarked() (string, error) {
	if x.mark == "" {
		return "", nil
	}
	procs := markedProcesses(x.mark)
	if len(procs) == 0 {
		return "", nil
	}
	defer func() {
		for _, p := range procs {
			_ = p.Release()
		}
	}()
	pids := make([]string, len(procs))
	var errs []error
	for i, p := range procs {
		pids[i] = strconv.Itoa(p.Pid)
		if err := p.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			errs = append(errs, fmt.Errorf("SIGTERM %d: %w", p.Pid, err))
		}
	}
	which := "pid " + strings.Join(pids, ", ")
	alive := func() []*os.Process {
		var out []*os.Process
		for _, p := range procs {
			if err := p.Signal(syscall.Signal(0)); err == nil {
				out = append(out, p)
			}
		}
		return out
	}
	for end := time.Now().Add(groupGrace); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if len(alive()) == 0 {
			return which + ": ended them (SIGTERM)", errors.Join(errs...)
		}
	}
	for _, p := range alive() {
		if err := p.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
			errs = append(errs, fmt.Errorf("SIGKILL %d: %w", p.Pid, err))
		}
	}
	return fmt.Sprintf("%s: still there %s after SIGTERM: SIGKILL", which, groupGrace), errors.Join(errs...)
}
