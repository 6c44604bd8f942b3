package cli

import (
	"time"

	"github.com/pgrelay/pgrelay/internal/daemon"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
)

// queueFlags are serve's flags for the job queue.
type queueFlags struct {
	maxRuns int
	// lostAfter is how long a running run may go without a heartbeat
	// before another process (or this one, after a restart) fails it.
	lostAfter time.Duration
	// reapInterval is how often this process looks for lost runs.
	reapInterval time.Duration
	// runLogLimit is how many bytes of text a run's log keeps.
	runLogLimit int64
	// runRetention is how long ended runs are kept (0: forever).
	runRetention time.Duration
	// healthChecks runs the connections' scheduled tests in this process
	// (serve --health-checks, on by default).
	healthChecks bool
	// sshWarm keeps a run's tunnel open this long after the run for the
	// next run of the same connection (serve --ssh-warm; 0: close at once).
	sshWarm time.Duration
	// stopGrace is the stop grace of runs whose job sets none.
	stopGrace time.Duration
}

// maxSSHWarm is the longest --ssh-warm.
const maxSSHWarm = 15 * time.Minute

// heartbeatInterval is how often a running run's heartbeat is refreshed:
// a third of lostAfter, at most the queue's default.
func (f queueFlags) heartbeatInterval() time.Duration {
	return heartbeatEvery(f.lostAfter)
}

// heartbeatEvery is the heartbeat interval of a process whose --lost-after
// is lostAfter: a third of it, at most the queue's default.
func heartbeatEvery(lostAfter time.Duration) time.Duration {
	return min(queue.DefaultHeartbeatInterval, lostAfter/3)
}

// checkLostAfter refuses a --lost-after (serve's, or a local job run's)
// out of 1s to 1h.
func checkLostAfter(lostAfter time.Duration) error {
	if lostAfter < time.Second || lostAfter > time.Hour {
		return usagef("--lost-after %s: accepted is 1s to 1h (e.g. 30s); use the same value in every process sharing a store", lostAfter)
	}
	return nil
}

func (f queueFlags) validate() error {
	if f.maxRuns < 1 || f.maxRuns > 1000 {
		return usagef("--max-runs %d: accepted is 1 to 1000", f.maxRuns)
	}
	if err := checkLostAfter(f.lostAfter); err != nil {
		return err
	}
	switch {
	case f.reapInterval < 100*time.Millisecond || f.reapInterval > time.Hour:
		return usagef("--reap-interval %s: accepted is 100ms to 1h (e.g. 10s)", f.reapInterval)
	case f.stopGrace < time.Second || f.stopGrace > jobs.MaxStopGrace:
		return usagef("--stop-grace %s: accepted is 1s to %s (e.g. 10s)", f.stopGrace, jobs.MaxStopGrace)
	case f.sshWarm < 0 || f.sshWarm > maxSSHWarm:
		return usagef("--ssh-warm %s: accepted is 0 (close each run's tunnel when it ends) to %s (e.g. 60s)", f.sshWarm, maxSSHWarm)
	}
	return nil
}

// jobsConfig is the job queue of serve: f with the command policy.
func (f queueFlags) jobsConfig(commands jobs.CommandPolicy) *daemon.JobsConfig {
	return &daemon.JobsConfig{Commands: commands, MaxRuns: f.maxRuns, LostAfter: f.lostAfter, ReapInterval: f.reapInterval,
		HeartbeatInterval: f.heartbeatInterval(), LogLimit: f.runLogLimit, RunRetention: f.runRetention, StopGrace: f.stopGrace,
		HealthChecks: f.healthChecks}
}
