package jobs

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Backend is a PostgreSQL server process a run opened: by a SQL step, or by
// a command step's client through the run's local endpoint. With its
// secret key it can be cancelled by a CancelRequest from anywhere that
// reaches the server, so any process sharing the store can clean up after
// a run.
type Backend struct {
	// PID is the server process ID (pg_backend_pid()).
	PID uint32 `json:"pid"`
	// SecretKey is the cancel key from BackendKeyData. It is never shown.
	SecretKey []byte `json:"-"`
	// Step is the index of the step that opened it.
	Step int `json:"step"`
	// User and Database are what the session logged in as.
	User     string `json:"user"`
	Database string `json:"database"`
	// OpenedAt is when the session was established.
	OpenedAt time.Time `json:"opened_at"`
}

// CleanupStatus is the state of a run's cleanup on the server.
type CleanupStatus string

// Cleanup statuses.
const (
	// CleanupPending: the run ended but its statements are still being
	// stopped: the server could not be reached yet (the tunnel dropped)
	// and pgrelay keeps trying in the background, or the run's process
	// was lost and the process that declared it lost is stopping them.
	CleanupPending CleanupStatus = "pending"
	// CleanupDone: no statement of the run is active on the server.
	CleanupDone CleanupStatus = "done"
	// CleanupFailed: pgrelay gave up; statements may still be running.
	CleanupFailed CleanupStatus = "failed"
)

// Cleanup is what pgrelay did to stop a run's statements on the server
// after the run was cancelled, timed out, lost its tunnel or its process.
type Cleanup struct {
	Status CleanupStatus `json:"status"`
	// Cancelled are the backends whose statement stopped after a
	// CancelRequest; Terminated those ended with pg_terminate_backend
	// after the grace period; Idle those that had nothing running.
	Cancelled  []uint32 `json:"cancelled,omitempty"`
	Terminated []uint32 `json:"terminated,omitempty"`
	Idle       []uint32 `json:"idle,omitempty"`
	// Remaining are backends still active when pgrelay gave up (or, while
	// pending, those it could not reach yet).
	Remaining []uint32 `json:"remaining,omitempty"`
	// Message says it in one line, e.g. "cancelled 2 statements on the
	// server (pid 4312, 4313)", or what could not be done and why.
	Message string `json:"message"`
	// Attempts counts cleanup attempts (more than one after a tunnel drop).
	Attempts  int       `json:"attempts"`
	UpdatedAt time.Time `json:"updated_at"`
	// RunAttempt is the attempt of the run whose statements this cleanup
	// is about (0 when not known): a store keeps a final outcome against
	// a late pending record of the same attempt, and a newer attempt's
	// record against an older attempt's (store.BackendStore.PutRunCleanup).
	RunAttempt int `json:"run_attempt,omitempty"`
}

// Summarize sets Message from the lists.
func (c *Cleanup) Summarize() {
	var parts []string
	plural := func(n int, one, many string) string {
		if n == 1 {
			return one
		}
		return many
	}
	if n := len(c.Cancelled); n > 0 {
		parts = append(parts, fmt.Sprintf("cancelled %d %s on the server (%s)", n,
			plural(n, "statement", "statements"), pidList(c.Cancelled)))
	}
	if n := len(c.Terminated); n > 0 {
		parts = append(parts, fmt.Sprintf("terminated %d %s that did not stop after the cancel (%s)", n,
			plural(n, "session", "sessions"), pidList(c.Terminated)))
	}
	if n := len(c.Remaining); n > 0 {
		parts = append(parts, fmt.Sprintf("%d %s may still be running on the server (%s)", n,
			plural(n, "statement", "statements"), pidList(c.Remaining)))
	}
	if len(parts) == 0 {
		c.Message = "no statement of the run was running on the server"
		return
	}
	c.Message = strings.Join(parts, "; ")
}

// add joins the outcome of stopping more backends into c.
func (c *Cleanup) add(o Cleanup) {
	c.Cancelled = append(c.Cancelled, o.Cancelled...)
	c.Terminated = append(c.Terminated, o.Terminated...)
	c.Idle = append(c.Idle, o.Idle...)
	c.Remaining = append(c.Remaining, o.Remaining...)
	if o.Status == CleanupFailed {
		c.Status = CleanupFailed
	}
	c.UpdatedAt = o.UpdatedAt
	c.Summarize()
}

func pidList(pids []uint32) string {
	s := slices.Clone(pids)
	slices.Sort(s)
	parts := make([]string, len(s))
	for i, p := range s {
		parts[i] = fmt.Sprint(p)
	}
	return "pid " + strings.Join(parts, ", ")
}

// markCancelled moves pids that were cancelled before the cleanup looked
// (and then found idle or gone) into Cancelled, and updates the message.
func (c *Cleanup) markCancelled(pids []uint32) {
	for _, p := range pids {
		if slices.Contains(c.Cancelled, p) || slices.Contains(c.Terminated, p) || slices.Contains(c.Remaining, p) {
			continue
		}
		c.Idle = slices.DeleteFunc(c.Idle, func(q uint32) bool { return q == p })
		c.Cancelled = append(c.Cancelled, p)
	}
	c.Summarize()
}
