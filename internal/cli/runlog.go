package cli

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/pflag"

	"github.com/pgrelay/pgrelay/internal/jobs"
)

// Bounds and defaults of the run log flags.
const (
	minRunLogLimit int64 = 1 << 10
	maxRunLogLimit int64 = 1 << 40
	// defaultRunRetention bounds the store's growth out of the box while
	// keeping a quarter of run history; 0 keeps runs forever.
	defaultRunRetention = 90 * 24 * time.Hour
	minRunRetention     = time.Hour
)

// sizeFlag is a number of bytes given as 10MiB, 512KiB, 1GB or 1048576.
type sizeFlag struct{ n *int64 }

func (f sizeFlag) String() string {
	if f.n == nil {
		return ""
	}
	// As it is given: 10MiB, 1000.
	return strings.ReplaceAll(strings.TrimSuffix(jobs.FormatSize(*f.n), " bytes"), " ", "")
}

func (f sizeFlag) Type() string { return "size" }

func (f sizeFlag) Set(s string) error {
	n, err := parseRunLogLimit(s)
	if err != nil {
		return err
	}
	*f.n = n
	return nil
}

// parseRunLogLimit parses a run log limit (units as go-humanize reads them:
// KiB, MiB, GiB are binary, kB, MB, GB decimal).
func parseRunLogLimit(s string) (int64, error) {
	accepted := fmt.Sprintf("accepted is a number of bytes, or a number with a unit such as 512KiB, 10MiB or 1GiB (from %s to %s)",
		jobs.FormatSize(minRunLogLimit), jobs.FormatSize(maxRunLogLimit))
	u, err := humanize.ParseBytes(strings.TrimSpace(s))
	if err != nil || strings.HasPrefix(strings.TrimSpace(s), "-") {
		return 0, fmt.Errorf("%q is not a size: %s", s, accepted)
	}
	if u > math.MaxInt64 || int64(u) < minRunLogLimit || int64(u) > maxRunLogLimit {
		return 0, fmt.Errorf("%q is out of range: %s", s, accepted)
	}
	return int64(u), nil
}

// retentionFlag is a duration with days: 90d, 720h, 36h30m, or 0 (off).
type retentionFlag struct {
	d *time.Duration
	// what the retention deletes ("runs", "records"), as its errors say
	// what 0 keeps; empty is "runs".
	what string
}

func (f retentionFlag) String() string {
	switch {
	case f.d == nil:
		return ""
	case *f.d == 0:
		return "0"
	case *f.d%(24*time.Hour) == 0:
		return strconv.FormatInt(int64(*f.d/(24*time.Hour)), 10) + "d"
	}
	return f.d.String()
}

func (f retentionFlag) Type() string { return "duration" }

func (f retentionFlag) Set(s string) error {
	what := f.what
	if what == "" {
		what = "runs"
	}
	d, err := parseRetention(s, what)
	if err != nil {
		return err
	}
	*f.d = d
	return nil
}

func parseRunRetention(s string) (time.Duration, error) { return parseRetention(s, "runs") }

// parseRetention reads a retention of what ("runs", "records"): 0, or a
// duration of at least minRunRetention, in days (90d) or as Go writes it.
// --audit-retention's errors said "0 (keep runs forever)".
func parseRetention(s, what string) (time.Duration, error) {
	accepted := "accepted is 0 (keep " + what + " forever) or a duration of at least 1h, in days such as 90d or as 720h or 36h30m"
	s = strings.TrimSpace(s)
	if s == "0" {
		return 0, nil
	}
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if err == nil && n < 0 {
			return 0, fmt.Errorf("%q is negative: %s", s, accepted)
		}
		if err != nil || n > math.MaxInt64/int64(24*time.Hour) {
			return 0, fmt.Errorf("%q is not a duration: %s", s, accepted)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("%q is not a duration: %s", s, accepted)
		}
	}
	if d < 0 {
		return 0, fmt.Errorf("%q is negative: %s", s, accepted)
	}
	if d != 0 && d < minRunRetention {
		return 0, fmt.Errorf("%q is too short: %s", s, accepted)
	}
	return d, nil
}

// addRunLogLimitFlag adds --run-log-limit (default jobs.DefaultLogLimit).
func addRunLogLimitFlag(fs *pflag.FlagSet, n *int64) {
	*n = jobs.DefaultLogLimit
	fs.Var(sizeFlag{n}, "run-log-limit",
		"keep at most this much of a run's log (e.g. 10MiB, 512KiB, or bytes); output past it is dropped and one line in the log says how much")
}

// addRunFlags adds serve's flags for run logs and run retention.
func addRunFlags(fs *pflag.FlagSet, f *queueFlags) {
	addRunLogLimitFlag(fs, &f.runLogLimit)
	addStopGraceFlag(fs, &f.stopGrace)
	f.runRetention = defaultRunRetention
	fs.Var(retentionFlag{d: &f.runRetention, what: "runs"}, "run-retention",
		"delete runs that ended longer ago than this (e.g. 90d, 720h), with their logs, at start and hourly; 0 keeps them forever. Use the same value in every process sharing a store")
}

// addStopGraceFlag adds --stop-grace (default jobs.DefaultStopGrace).
func addStopGraceFlag(fs *pflag.FlagSet, d *time.Duration) {
	fs.DurationVar(d, "stop-grace", jobs.DefaultStopGrace,
		"how long the statements of a stopped run (cancelled, timed out, tunnel lost) have to end after their cancel request "+
			"before their sessions are terminated with pg_terminate_backend, for jobs without a stop_grace of their own (1s to 10m)")
}
