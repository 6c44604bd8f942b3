package cli

import (
	"time"

	"github.com/pgrelay/pgrelay/internal/elapsed"
	"github.com/pgrelay/pgrelay/internal/jobs"
)

// The CLI formats durations as the web UI does (package elapsed): "412 ms",
// "1.2 s", "3 min 12 s".

// runListDuration is a run's duration so far, or "-" before it started.
func runListDuration(run *jobs.Run, now time.Time) string {
	if run.StartedAt == nil {
		return "-"
	}
	return elapsed.FormatMS(float64(run.DurationMS(now)))
}

// stepDuration is a step's duration, or "-" before it started.
func stepDuration(s jobs.RunStep) string {
	if s.StartedAt == nil {
		return "-"
	}
	return elapsed.FormatMS(float64(s.DurationMS))
}
