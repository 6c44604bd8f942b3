package apiwire

import "time"

// RunStatus is a run's (or a run step's) status.
type RunStatus string

// Run statuses.
const (
	Queued    RunStatus = "queued"
	Running   RunStatus = "running"
	Succeeded RunStatus = "succeeded"
	Failed    RunStatus = "failed"
	Cancelled RunStatus = "cancelled"
)

// Terminal reports whether the status is final.
func (s RunStatus) Terminal() bool { return s == Succeeded || s == Failed || s == Cancelled }

// Job is a job as the API shows it and takes it.
type Job struct {
	Name       string `json:"name"`
	Connection string `json:"connection"`
	// Schedule is an optional cron spec ("0 3 * * *", or @hourly).
	Schedule string `json:"schedule,omitempty"`
	// Timeout bounds a whole run; default 1h.
	Timeout      Duration `json:"timeout"`
	TargetSchema string   `json:"target_schema,omitempty"`
	Profile      string   `json:"profile,omitempty"`
	Target       string   `json:"target,omitempty"`
	Retries      int      `json:"retries,omitempty"`
	// StopGrace is how long a stopped run's statements have to end after
	// their cancel request before their sessions are terminated; empty
	// takes the server's (default 10s).
	StopGrace Duration `json:"stop_grace,omitempty"`
	Steps     []Step   `json:"steps"`
}

// Step is one step of a job: SQL, or a command with its arguments.
type Step struct {
	Name    string   `json:"name,omitempty"`
	SQL     string   `json:"sql,omitempty"`
	Command []string `json:"command,omitempty"`
	Workdir string   `json:"workdir,omitempty"`
}

// JobInput is the body of POST /jobs and PUT /jobs/{name}, and one job of
// an ApplyRequest.
type JobInput struct {
	// Name is required on create; on update it may be left out.
	Name         string   `json:"name,omitempty"`
	Connection   string   `json:"connection"`
	Schedule     string   `json:"schedule,omitempty"`
	Timeout      Duration `json:"timeout,omitempty"`
	TargetSchema string   `json:"target_schema,omitempty"`
	Profile      string   `json:"profile,omitempty"`
	Target       string   `json:"target,omitempty"`
	Retries      int      `json:"retries,omitempty"`
	StopGrace    Duration `json:"stop_grace,omitempty"`
	Steps        []Step   `json:"steps"`
}

// NewJobInput returns the input of a job.
func NewJobInput(j Job) JobInput {
	return JobInput{Name: j.Name, Connection: j.Connection, Schedule: j.Schedule, Timeout: j.Timeout,
		TargetSchema: j.TargetSchema, Profile: j.Profile, Target: j.Target, Retries: j.Retries, StopGrace: j.StopGrace, Steps: j.Steps}
}

// JobView is a saved job with its times and last run.
type JobView struct {
	Job
	CreatedAt time.Time  `json:"created_at"`
	UpdatedAt time.Time  `json:"updated_at"`
	NextRunAt *time.Time `json:"next_run_at,omitempty"`
	LastRun   *Run       `json:"last_run,omitempty"`
}

// JobList is the body of GET /jobs.
type JobList struct {
	Jobs []*JobView `json:"jobs"`
}

// ApplyRequest is the JSON body of POST /jobs/apply.
type ApplyRequest struct {
	Jobs []JobInput `json:"jobs"`
}

// ApplyResult says what apply did with one job.
type ApplyResult struct {
	Name string `json:"name"`
	// Action is created, updated or unchanged.
	Action string `json:"action"`
}

// ApplyResponse is the body of POST /jobs/apply.
type ApplyResponse struct {
	Results []ApplyResult `json:"results"`
}

// Run is one run of a job.
type Run struct {
	ID      string    `json:"id"`
	JobName string    `json:"job"`
	Trigger string    `json:"trigger"`
	Status  RunStatus `json:"status"`
	// Reason says why a run failed or was cancelled.
	Reason    string     `json:"reason,omitempty"`
	QueuedAt  time.Time  `json:"queued_at"`
	StartedAt *time.Time `json:"started_at,omitempty"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
	Steps     []RunStep  `json:"steps"`
	// Worker names the process that runs it (host:pid).
	Worker      string     `json:"worker,omitempty"`
	HeartbeatAt *time.Time `json:"heartbeat_at,omitempty"`
	Attempt     int        `json:"attempt"`
	// CancelRequested is set by a cancel request.
	CancelRequested bool `json:"cancel_requested,omitempty"`
	// Cleanup is what was done to stop the run's statements on the
	// server after it ended without success.
	Cleanup *Cleanup `json:"cleanup,omitempty"`
}

// DurationMS is how long the run took (or has been running at now), in
// milliseconds; 0 before it started.
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

// RunStep is the outcome of one step of a run.
type RunStep struct {
	Index int    `json:"index"`
	Label string `json:"label"`
	// Kind is sql or command.
	Kind       string     `json:"kind"`
	Status     RunStatus  `json:"status"`
	ExitCode   *int       `json:"exit_code,omitempty"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	EndedAt    *time.Time `json:"ended_at,omitempty"`
	DurationMS int64      `json:"duration_ms"`
	Error      string     `json:"error,omitempty"`
}

// Cleanup is what was done to a run's sessions on the database server.
type Cleanup struct {
	Status     string   `json:"status"`
	Cancelled  []uint32 `json:"cancelled,omitempty"`
	Terminated []uint32 `json:"terminated,omitempty"`
	Idle       []uint32 `json:"idle,omitempty"`
	Remaining  []uint32 `json:"remaining,omitempty"`
	// Message says it in one line.
	Message   string    `json:"message"`
	Attempts  int       `json:"attempts"`
	UpdatedAt time.Time `json:"updated_at"`
	// RunAttempt is the attempt of the run whose statements it is about
	// (absent when not known).
	RunAttempt int `json:"run_attempt,omitempty"`
}

// RunList is the body of GET /runs: runs newest first, by queued_at
// descending and, among runs queued at the same instant, by ID descending.
type RunList struct {
	Runs []*Run `json:"runs"`
	// NextBefore is the RunFilter.Before of the next (older) page; empty
	// on the last page.
	NextBefore string `json:"next_before,omitempty"`
}

// LogLine is one line of a run's log.
type LogLine struct {
	Seq  int64     `json:"seq"`
	Time time.Time `json:"time"`
	// Stream is stdout, stderr or system.
	Stream string `json:"stream"`
	// Step is the step's index, -1 for run-level lines.
	Step int    `json:"step"`
	Text string `json:"text"`
}

// RunLog is the body of GET /runs/{id}/log.
type RunLog struct {
	Lines []LogLine `json:"lines"`
	// NextAfter is the sequence number to pass as ?after= next.
	NextAfter int64 `json:"next_after"`
}

// RunFilter selects runs for GET /runs.
type RunFilter struct {
	Job      string
	Statuses []RunStatus
	// Before, when set, is the ID of a run: only the runs older than it
	// in the list's order are listed (a RunList's NextBefore gives the
	// next page's).
	Before string
	Limit  int
}
