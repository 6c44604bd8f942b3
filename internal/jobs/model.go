// Package jobs defines pgrelay's jobs and runs: a job is a list of SQL and
// command steps run over one connection, on demand or on a cron schedule; a
// run is one execution of a job, with per-step outcomes and a log. The
// package also parses the jobs YAML file, validates jobs, and runs them.
package jobs

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"path/filepath"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/robfig/cron/v3"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/pg"
)

// Status is a run's (or a step's) state.
type Status string

// Run and step states.
const (
	Queued    Status = "queued"
	Running   Status = "running"
	Succeeded Status = "succeeded"
	Failed    Status = "failed"
	Cancelled Status = "cancelled"
	// Skipped is only used for steps after a failure.
	Skipped Status = "skipped"
)

// Terminal reports whether the status is final.
func (s Status) Terminal() bool { return s == Succeeded || s == Failed || s == Cancelled }

// Trigger says what started a run.
type Trigger string

// Triggers.
const (
	Manual   Trigger = "manual"
	Schedule Trigger = "schedule"
	API      Trigger = "api"
)

// Defaults and limits.
const (
	DefaultTimeout = time.Hour
	MaxTimeout     = 7 * 24 * time.Hour
	MaxSteps       = 100
	MaxSQLLen      = 1 << 20
	DefaultProfile = "pgrelay"
	DefaultTarget  = "pgrelay"
)

// Step is one step of a job: exactly one of SQL or Command.
type Step struct {
	// Name is optional, for display.
	Name string `json:"name,omitempty" yaml:"name,omitempty"`
	// SQL runs in-process through the connection.
	SQL string `json:"sql,omitempty" yaml:"sql,omitempty"`
	// Command is a program and its arguments, run with the connection's
	// environment (PGHOST, DBT_PROFILES_DIR, ...).
	Command []string `json:"command,omitempty" yaml:"command,omitempty"`
	// Workdir is the command's working directory (absolute).
	Workdir string `json:"workdir,omitempty" yaml:"workdir,omitempty"`
}

// StepKind says what a step runs.
type StepKind string

// Step kinds.
const (
	// StepSQL runs SQL in-process through the connection.
	StepSQL StepKind = "sql"
	// StepCommand runs a program with the connection's environment.
	StepCommand StepKind = "command"
)

// Kind is StepSQL or StepCommand.
func (s Step) Kind() StepKind {
	if s.SQL != "" {
		return StepSQL
	}
	return StepCommand
}

// Label describes the step in one line.
func (s Step) Label() string {
	if s.Name != "" {
		return s.Name
	}
	if s.SQL != "" {
		l := strings.Join(strings.Fields(s.SQL), " ")
		if len(l) > 60 {
			l = l[:57] + "..."
		}
		return l
	}
	return ShellJoin(s.Command)
}

// Job is a named list of steps over one connection.
type Job struct {
	Name       string `json:"name" yaml:"name"`
	Connection string `json:"connection" yaml:"connection"`
	// Schedule is an optional cron spec: 5 fields (minute hour dom month
	// dow), 6 with a leading seconds field, or a descriptor like @hourly,
	// in the process's time zone or a CRON_TZ= prefix's (ParseSchedule).
	Schedule string `json:"schedule,omitempty" yaml:"schedule,omitempty"`
	// Timeout bounds a whole run; default 1h.
	Timeout connection.Duration `json:"timeout" yaml:"timeout,omitempty"`
	// TargetSchema overrides the connection's schema for this job (dbt
	// profiles and search_path of SQL steps).
	TargetSchema string `json:"target_schema,omitempty" yaml:"target_schema,omitempty"`
	// Profile and Target name the dbt profile and target in the generated
	// profiles.yml; default "pgrelay".
	Profile string `json:"profile,omitempty" yaml:"profile,omitempty"`
	Target  string `json:"target,omitempty" yaml:"target,omitempty"`
	// Retries is how often a run lost with its worker is retried; default 0
	// (it fails with the reason).
	Retries int `json:"retries,omitempty" yaml:"retries,omitempty"`
	// StopGrace is how long the statements of a stopped run (cancelled,
	// timed out, tunnel lost) have to end after their CancelRequest before
	// their sessions are terminated with pg_terminate_backend; 0 takes the
	// server's (serve --stop-grace, default 10s).
	StopGrace connection.Duration `json:"stop_grace,omitempty" yaml:"stop_grace,omitempty"`
	Steps     []Step              `json:"steps" yaml:"steps"`
}

// ExplicitZero is what a job's Timeout or StopGrace holds when its input
// gave 0 explicitly (timeout: 0, "0s"), which Validate refuses: without
// it, 0 reads as left out and takes the default (a run meant to go without
// a time limit would stop after an hour, without a word). The inputs that
// can tell the two apart (jobs files, the API, the web form) set it.
const ExplicitZero = connection.Duration(math.MinInt64)

// StopGraceOr returns the job's stop grace, or def (the server's) when the
// job sets none.
func (j *Job) StopGraceOr(def time.Duration) time.Duration {
	if g := j.StopGrace.Duration(); g > 0 {
		return g
	}
	return def
}

// ApplyDefaults fills unset fields.
func (j *Job) ApplyDefaults() {
	if j.Timeout == 0 {
		j.Timeout = connection.Duration(DefaultTimeout)
	}
	if j.Profile == "" {
		j.Profile = DefaultProfile
	}
	if j.Target == "" {
		j.Target = DefaultTarget
	}
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// cronParser accepts standard 5-field specs, an optional leading seconds
// field, and descriptors (@hourly, @every 5m).
func cronParser() cron.Parser {
	return cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
}

// ParseSchedule parses a cron spec. It is evaluated on the wall clock of
// the zone named by a CRON_TZ= prefix, else of the time it is given (the
// process's local zone: River's periodic jobs and next_run_at both pass
// time.Now()). A spec at fixed hours fires once for each wall-clock time
// it names when the clocks change (see dstSchedule).
func ParseSchedule(spec string) (cron.Schedule, error) {
	const accepted = "accepted are 5 fields \"minute hour day-of-month month day-of-week\" such as \"0 3 * * *\", 6 fields with leading seconds, or @hourly/@daily/@every 10m"
	if (strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=")) && !strings.Contains(spec, " ") {
		// cron's parser panics on a zone prefix with no space after it.
		return nil, fmt.Errorf("%q is not a cron schedule: a CRON_TZ= prefix names a zone, then a space and the schedule, "+
			"e.g. \"CRON_TZ=Europe/Berlin 0 3 * * *\"; %s", spec, accepted)
	}
	s, err := cronParser().Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("%q is not a cron schedule (%v): %s", spec, err, accepted)
	}
	if every, ok := everyInterval(spec); ok && every < time.Second {
		// cron would run it every second.
		return nil, fmt.Errorf("%q: the interval of @every must be at least 1s; %s", spec, accepted)
	}
	if s.Next(time.Now()).IsZero() {
		// cron gives up after five years without a match.
		return nil, fmt.Errorf("%q never fires: no date matches its day-of-month and month (such as 30 2 for February 30); %s", spec, accepted)
	}
	if ss, ok := s.(*cron.SpecSchedule); ok && bits.OnesCount64(ss.Hour&(1<<24-1)) < 24 {
		return dstSchedule{ss}, nil
	}
	return s, nil
}

// ScheduleFor returns the schedule of a job saved at saved with spec (see
// ParseSchedule): an @every interval counts from saved (its firings are
// saved + n × interval, whole seconds), not from whenever a process
// registers it, so that every process agrees on its instants and a
// restart or a change of leader neither delays it nor, restarting more
// often than the interval, keeps it from ever firing.
func ScheduleFor(spec string, saved time.Time) (cron.Schedule, error) {
	s, err := ParseSchedule(spec)
	if err != nil {
		return nil, err
	}
	if d, ok := s.(cron.ConstantDelaySchedule); ok {
		return everySchedule{every: d.Delay, anchor: saved.Truncate(time.Second)}, nil
	}
	return s, nil
}

// everySchedule is an @every interval counted from an anchor.
type everySchedule struct {
	every  time.Duration
	anchor time.Time
}

// Next returns the first anchor + n × every (n ≥ 1) after t.
func (s everySchedule) Next(t time.Time) time.Time {
	if t.Before(s.anchor) {
		return s.anchor.Add(s.every)
	}
	n := t.Sub(s.anchor)/s.every + 1
	return s.anchor.Add(n * s.every)
}

// everyInterval is the interval of an "@every" spec (after an optional
// TZ= or CRON_TZ= prefix), as written.
func everyInterval(spec string) (time.Duration, bool) {
	spec = strings.TrimSpace(spec)
	if strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ=") {
		_, spec, _ = strings.Cut(spec, " ")
		spec = strings.TrimSpace(spec)
	}
	rest, ok := strings.CutPrefix(spec, "@every ")
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(strings.TrimSpace(rest))
	return d, err == nil
}

// dstSchedule is a cron spec at fixed hours ("30 2 * * *") that keeps to
// its wall-clock times on the days the clocks change, as cron does:
// cron.SpecSchedule alone skips the times in the hour that does not exist
// (a daily 02:30 did not run on the day 02:00 became 03:00) and fires
// again in the hour that happens twice (it ran twice the day 03:00 became
// 02:00). Here the times in a skipped hour fire once, at the change, and
// a repeated time fires the first time only. A spec that fires every hour
// is left to cron.SpecSchedule, which follows the hours that pass.
type dstSchedule struct{ *cron.SpecSchedule }

// Next returns the next firing after t.
func (s dstSchedule) Next(t time.Time) time.Time {
	loc := s.Location
	if loc == time.Local {
		loc = t.Location()
	}
	from := t.In(loc)
	for n := s.SpecSchedule.Next(t); !n.IsZero(); n = s.SpecSchedule.Next(n) {
		if change, ok := s.skippedBetween(from, n.In(loc)); ok {
			return change.In(t.Location())
		}
		if !repeatedWallTime(n.In(loc)) {
			return n
		}
	}
	return time.Time{}
}

// skippedBetween finds the first change of the clocks after from and
// before n that skipped a wall-clock time the spec names, and returns the
// instant of that change.
func (s dstSchedule) skippedBetween(from, n time.Time) (time.Time, bool) {
	for z := from; ; {
		_, change := z.ZoneBounds()
		if change.IsZero() || !change.Before(n) {
			return time.Time{}, false
		}
		_, before := change.Add(-time.Nanosecond).Zone()
		_, after := change.Zone()
		if after > before {
			// The skipped wall times are those the old offset gives the
			// instants [change, change+(after-before)).
			old := *s.SpecSchedule
			old.Location = time.FixedZone("", before)
			if m := old.Next(change.Add(-time.Nanosecond)); !m.IsZero() &&
				m.Before(change.Add(time.Duration(after-before)*time.Second)) {
				return change, true
			}
		}
		z = change
	}
}

// repeatedWallTime reports whether t's wall-clock time already occurred
// earlier: t lies in the stretch after the clocks went back that repeats
// the one before.
func repeatedWallTime(t time.Time) bool {
	start, _ := t.ZoneBounds()
	if start.IsZero() {
		return false
	}
	_, before := start.Add(-time.Nanosecond).Zone()
	_, now := t.Zone()
	return before > now && t.Sub(start) < time.Duration(before-now)*time.Second
}

// Validate checks the job after ApplyDefaults and reports every problem at
// once as a *fielderr.Error of subject fielderr.Job (fields like "steps[1].command").
func (j *Job) Validate() error {
	var probs []fielderr.Problem
	add := func(field string, err error) {
		if err != nil {
			probs = append(probs, fielderr.Problem{Field: field, Problem: err.Error()})
		}
	}
	add("name", connection.ValidateName(j.Name))
	if j.Connection == "" {
		add("connection", errors.New("required: the name of a saved connection"))
	} else {
		add("connection", connection.ValidateName(j.Connection))
	}
	if j.Schedule != "" {
		_, err := ParseSchedule(j.Schedule)
		add("schedule", err)
	}
	if j.Timeout == ExplicitZero {
		add("timeout", fmt.Errorf("0 is not accepted: every run has a time limit, 1s to %s (e.g. 30m, 2h); leave timeout out for %s",
			MaxTimeout, DefaultTimeout))
	} else if d := j.Timeout.Duration(); d < time.Second || d > MaxTimeout {
		add("timeout", fmt.Errorf("%s is out of range: accepted is 1s to %s (e.g. 30m, 2h)", d, MaxTimeout))
	}
	if j.TargetSchema != "" && len(j.TargetSchema) > connection.MaxIdentifierLen {
		add("target_schema", fmt.Errorf("too long: at most %d bytes", connection.MaxIdentifierLen))
	}
	if !cleanText(j.TargetSchema) {
		add("target_schema", errors.New("must be valid UTF-8 without NUL characters"))
	}
	if !identRE.MatchString(j.Profile) {
		add("profile", fmt.Errorf("%q is not accepted: letters, digits and _, starting with a letter", j.Profile))
	}
	if !identRE.MatchString(j.Target) {
		add("target", fmt.Errorf("%q is not accepted: letters, digits and _, starting with a letter", j.Target))
	}
	if j.StopGrace == ExplicitZero {
		add("stop_grace", fmt.Errorf("0 is not accepted: accepted is 1s to %s (e.g. 30s), or leave stop_grace out to use the server's "+
			"(pgrelay serve --stop-grace, default %s)", MaxStopGrace, DefaultStopGrace))
	} else if g := j.StopGrace.Duration(); g != 0 && (g < time.Second || g > MaxStopGrace) {
		add("stop_grace", fmt.Errorf("%s is out of range: accepted is 1s to %s (e.g. 30s), or leave it out to use the server's (pgrelay serve --stop-grace, default %s)", g, MaxStopGrace, DefaultStopGrace))
	}
	if j.Retries < 0 || j.Retries > 10 {
		add("retries", fmt.Errorf("%d is out of range: accepted is 0 to 10", j.Retries))
	}
	switch {
	case len(j.Steps) == 0:
		add("steps", errors.New("required: at least one step (sql: ... or command: [...])"))
	case len(j.Steps) > MaxSteps:
		add("steps", fmt.Errorf("%d steps: at most %d", len(j.Steps), MaxSteps))
	}
	for i, s := range j.Steps {
		f := fmt.Sprintf("steps[%d]", i)
		switch {
		case s.SQL != "" && len(s.Command) > 0:
			add(f, errors.New("has both sql and command: give exactly one"))
		case s.SQL == "" && len(s.Command) == 0:
			add(f, errors.New("is empty: give sql: \"...\" or command: [program, args...]"))
		case len(s.SQL) > MaxSQLLen:
			add(f+".sql", fmt.Errorf("longer than %d bytes", MaxSQLLen))
		case pg.CopiesFromStdin(s.SQL):
			add(f+".sql", errCopyFromStdin)
		case len(s.Command) > 0 && strings.TrimSpace(s.Command[0]) == "":
			add(f+".command", errors.New("the program (first element) is empty"))
		}
		for _, a := range s.Command {
			if strings.ContainsRune(a, 0) {
				add(f+".command", errors.New("arguments must not contain NUL characters"))
				break
			}
		}
		if !cleanText(s.SQL) || !cleanText(s.Name) || !cleanText(s.Workdir) {
			add(f, errors.New("sql, name and workdir must be valid UTF-8 without NUL characters"))
		}
		if s.Workdir != "" && !filepath.IsAbs(s.Workdir) {
			add(f+".workdir", fmt.Errorf("%q is not absolute: give a full path such as /srv/dbt/project", s.Workdir))
		}
		if s.Workdir != "" && s.SQL != "" {
			add(f+".workdir", errors.New("only command steps have a working directory"))
		}
	}
	if len(probs) == 0 {
		return nil
	}
	return fielderr.New(fielderr.Job, probs...)
}

// errCopyFromStdin refuses a SQL step with COPY ... FROM STDIN: it would
// wait for data until the run's time limit.
var errCopyFromStdin = errors.New("COPY ... FROM STDIN waits for data from the client, which a SQL step cannot send: " +
	"use a command step such as [psql, -c, '\\copy TABLE from FILE'] (or [psql, -f, FILE] for a pg_dump script), " +
	"or COPY ... FROM a file on the server")

// RunStep is the outcome of one step of a run.
type RunStep struct {
	Index      int        `json:"index"`
	Label      string     `json:"label"`
	Kind       StepKind   `json:"kind"`
	Status     Status     `json:"status"`
	ExitCode   *int       `json:"exit_code,omitempty"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	EndedAt    *time.Time `json:"ended_at,omitempty"`
	DurationMS int64      `json:"duration_ms"`
	Error      string     `json:"error,omitempty"`
}

// Run is one execution of a job. Job is a snapshot of the job when the run
// was queued.
type Run struct {
	ID        string     `json:"id"`
	JobName   string     `json:"job"`
	Job       Job        `json:"-"`
	Trigger   Trigger    `json:"trigger"`
	Status    Status     `json:"status"`
	Reason    string     `json:"reason,omitempty"`
	QueuedAt  time.Time  `json:"queued_at"`
	StartedAt *time.Time `json:"started_at,omitempty"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
	Steps     []RunStep  `json:"steps"`
	// Worker names the process that runs it (host:pid).
	Worker string `json:"worker,omitempty"`
	// HeartbeatAt is refreshed while the run is running; a running run
	// whose heartbeat stops is failed as "worker lost".
	HeartbeatAt *time.Time `json:"heartbeat_at,omitempty"`
	Attempt     int        `json:"attempt"`
	// CancelRequested is set by a cancel request; the worker stops the run.
	CancelRequested bool `json:"cancel_requested,omitempty"`
	// Cleanup is what was done to stop the run's statements on the server
	// after it ended without success (kept apart from the run's record;
	// filled in by readers that show one run).
	Cleanup *Cleanup `json:"cleanup,omitempty"`
	Version int64    `json:"-"`
}

// DurationMS is the run's duration so far (or in total), in milliseconds.
func (r *Run) DurationMS(now time.Time) int64 {
	if r.StartedAt == nil {
		return 0
	}
	end := now
	if r.EndedAt != nil {
		end = *r.EndedAt
	}
	return end.Sub(*r.StartedAt).Milliseconds()
}

// Stream says where a log line comes from.
type Stream string

// Streams of log lines.
const (
	// StreamStdout and StreamStderr are a program's output.
	StreamStdout Stream = "stdout"
	StreamStderr Stream = "stderr"
	// StreamSystem are pgrelay's own lines (steps started and ended,
	// tunnel, cleanup, markers).
	StreamSystem Stream = "system"
)

// LogLine is one line of a run's log.
type LogLine struct {
	Seq    int64     `json:"seq"`
	Time   time.Time `json:"time"`
	Stream Stream    `json:"stream"`
	Step   int       `json:"step"` // -1 for run-level lines
	Text   string    `json:"text"`
	// piece marks a part of a line too long to log at once (see
	// capture), which no line break of its own ended: LogLimit counts
	// one byte more for the others.
	piece bool
}

// NewRun returns a queued run of job (a snapshot of it) with a new ID that
// sorts by creation time.
func NewRun(job Job, trigger Trigger, now time.Time) *Run {
	var b [5]byte
	_, _ = rand.Read(b[:])
	id := fmt.Sprintf("%012x%s", now.UnixMilli(), hex.EncodeToString(b[:]))
	r := &Run{ID: id, JobName: job.Name, Job: job, Trigger: trigger, Status: Queued, QueuedAt: now.UTC()}
	for i, s := range job.Steps {
		r.Steps = append(r.Steps, RunStep{Index: i, Label: s.Label(), Kind: s.Kind(), Status: Queued})
	}
	return r
}

func cleanText(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

// CleanText makes s storable text: valid UTF-8 without NUL characters.
func CleanText(s string) string {
	if cleanText(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}
