package api

import (
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/jobs"
)

// MaxApplyBytes bounds the body of POST /jobs/apply (a whole jobs file).
const MaxApplyBytes = jobs.MaxFileSize

// JobInput is the body of POST /jobs and PUT /jobs/{name}, and one element
// of ApplyRequest.Jobs: the fields of a job a user sets. PUT replaces the
// whole job, so absent fields take their defaults (timeout 1h, profile and
// target "pgrelay").
type JobInput struct {
	// Name is required on create; on update it may be left out, and if
	// given must be the job's name (jobs cannot be renamed).
	Name       string `json:"name,omitempty"`
	Connection string `json:"connection"`
	// Schedule is an optional cron spec ("0 3 * * *", 6 fields with
	// seconds, or @hourly).
	Schedule     string      `json:"schedule,omitempty"`
	Timeout      JobDuration `json:"timeout,omitempty"`
	TargetSchema string      `json:"target_schema,omitempty"`
	Profile      string      `json:"profile,omitempty"`
	Target       string      `json:"target,omitempty"`
	Retries      int         `json:"retries,omitempty"`
	// StopGrace is how long a stopped run's statements have to end after
	// their cancel request before their sessions are terminated; empty
	// takes the server's.
	StopGrace JobDuration `json:"stop_grace,omitempty"`
	Steps     []jobs.Step `json:"steps"`
}

// NewJobInput returns the input for job j.
func NewJobInput(j jobs.Job) JobInput {
	return JobInput{Name: j.Name, Connection: j.Connection, Schedule: j.Schedule, Timeout: JobDuration(j.Timeout),
		TargetSchema: j.TargetSchema, Profile: j.Profile, Target: j.Target, Retries: j.Retries,
		StopGrace: JobDuration(j.StopGrace), Steps: j.Steps}
}

// Job returns the job of the input.
func (in *JobInput) Job() jobs.Job {
	return jobs.Job{Name: in.Name, Connection: in.Connection, Schedule: in.Schedule,
		Timeout: connection.Duration(in.Timeout), TargetSchema: in.TargetSchema, Profile: in.Profile,
		Target: in.Target, Retries: in.Retries, StopGrace: connection.Duration(in.StopGrace), Steps: in.Steps}
}

// JobDuration is a job's timeout or stop grace in JSON, as Duration, but
// for an explicit 0 ("0s", 0): that reads as jobs.ExplicitZero, which the
// job's validation refuses, where left out takes the default.
type JobDuration Duration

// MarshalJSON writes the duration as a string such as "30s".
func (d JobDuration) MarshalJSON() ([]byte, error) { return Duration(d).MarshalJSON() }

// UnmarshalJSON reads what Duration reads; an explicit 0 is
// jobs.ExplicitZero.
func (d *JobDuration) UnmarshalJSON(b []byte) error {
	var v Duration
	if err := v.UnmarshalJSON(b); err != nil {
		return err // a *json.UnmarshalTypeError of a Duration
	}
	if string(b) == "null" {
		return nil
	}
	if v == 0 {
		*d = JobDuration(jobs.ExplicitZero)
		return nil
	}
	*d = JobDuration(v)
	return nil
}

// JobList is the body of GET /jobs.
type JobList struct {
	Jobs []*app.JobView `json:"jobs"`
}

// ApplyRequest is the JSON body of POST /jobs/apply; the same jobs can be
// sent as a jobs YAML file (Content-Type application/yaml).
type ApplyRequest struct {
	Jobs []JobInput `json:"jobs"`
}

// ApplyResponse is the body of a successful POST /jobs/apply: what
// happened to each job, in the request's order.
type ApplyResponse struct {
	Results []app.ApplyResult `json:"results"`
}

func (a *API) listJobs(w http.ResponseWriter, r *http.Request) error {
	js, err := a.cfg.App.ListJobs(r.Context())
	if err != nil {
		return err
	}
	if js == nil {
		js = []*app.JobView{}
	}
	return writeJSON(w, http.StatusOK, JobList{Jobs: js})
}

// createJob creates a job; 409 when one with that name exists. The check
// and the write are two store calls: two creates racing for one name both
// succeed, the later one replacing the other (as PUT would).
func (a *API) createJob(w http.ResponseWriter, r *http.Request) error {
	var in JobInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	v, err := a.cfg.App.CreateJob(r.Context(), in.Job())
	if errors.Is(err, app.ErrExists) {
		return fmt.Errorf("job %q: %w: change it with PUT %s/jobs/%s or POST %s/jobs/apply",
			in.Name, app.ErrExists, Prefix, in.Name, Prefix)
	}
	if err != nil {
		return err
	}
	w.Header().Set("Location", Prefix+"/jobs/"+url.PathEscape(v.Name))
	return writeJSON(w, http.StatusCreated, v)
}

func (a *API) getJob(w http.ResponseWriter, r *http.Request) error {
	v, err := a.cfg.App.GetJob(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, v)
}

// putJob creates or replaces a job: 201 when it was created, 200 when it
// replaced one.
func (a *API) putJob(w http.ResponseWriter, r *http.Request) error {
	var in JobInput
	if err := decodeJSON(w, r, &in); err != nil {
		return err
	}
	name := r.PathValue("name")
	if in.Name != "" && in.Name != name {
		return fieldError(http.StatusBadRequest, CodeValidationFailed, "name",
			fmt.Sprintf("%q differs from the job in the URL (%q): jobs cannot be renamed; create the new one and delete the old", in.Name, name))
	}
	in.Name = name
	v, created, err := a.cfg.App.PutJob(r.Context(), in.Job())
	if err != nil {
		return err
	}
	if created {
		w.Header().Set("Location", Prefix+"/jobs/"+url.PathEscape(v.Name))
		return writeJSON(w, http.StatusCreated, v)
	}
	return writeJSON(w, http.StatusOK, v)
}

func (a *API) deleteJob(w http.ResponseWriter, r *http.Request) error {
	if err := a.cfg.App.DeleteJob(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// applyJobs creates or updates every job of the body, a jobs YAML file
// (application/yaml) or an ApplyRequest (application/json). Every job is
// validated first: an invalid body changes nothing.
func (a *API) applyJobs(w http.ResponseWriter, r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	var js []jobs.Job
	switch mt {
	case "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml":
		parsed, err := jobs.ParseFile(http.MaxBytesReader(w, r.Body, MaxApplyBytes))
		if err != nil {
			var ve *app.ValidationError
			var mbe *http.MaxBytesError
			if errors.As(err, &ve) || errors.As(err, &mbe) {
				return err
			}
			return &apiError{status: http.StatusBadRequest, code: CodeInvalidYAML, message: "invalid jobs YAML: " + err.Error()}
		}
		js = parsed
	case "application/json":
		var in ApplyRequest
		if err := decodeJSONLimit(w, r, &in, MaxApplyBytes); err != nil {
			return err
		}
		if len(in.Jobs) == 0 {
			return fieldError(http.StatusBadRequest, CodeValidationFailed, "jobs", "required: at least one job")
		}
		var probs []fielderr.Problem
		seen := map[string]int{}
		for i, j := range in.Jobs {
			if prev, dup := seen[j.Name]; dup && j.Name != "" {
				probs = append(probs, fielderr.Problem{Field: fmt.Sprintf("jobs[%d](%s).name", i, j.Name),
					Problem: fmt.Sprintf("duplicate: job %q is also jobs[%d]", j.Name, prev)})
			}
			seen[j.Name] = i
			js = append(js, j.Job())
		}
		if len(probs) > 0 {
			return &app.ValidationError{Subject: fielderr.Job, Problems: probs}
		}
	default:
		if ct == "" {
			ct = "(none)"
		}
		return &apiError{status: http.StatusUnsupportedMediaType, code: CodeUnsupportedMediaType,
			message: fmt.Sprintf("Content-Type %s is not accepted: send a jobs file as application/yaml, or {\"jobs\": [...]} as application/json", ct)}
	}
	res, err := a.cfg.App.ApplyJobs(r.Context(), js)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, ApplyResponse{Results: res})
}
