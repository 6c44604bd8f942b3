package api

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/pgrelay/pgrelay/apiwire"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
)

// Limits of the run routes.
const (
	// DefaultRunsLimit is how many runs GET /runs returns without ?limit.
	DefaultRunsLimit = 50
	// MaxRunsLimit is the largest ?limit of GET /runs.
	MaxRunsLimit = apiwire.MaxRunsLimit
	// DefaultLogLimit is how many lines GET /runs/{id}/log returns
	// without ?limit.
	DefaultLogLimit = 1000
	// MaxLogLimit is the largest ?limit of GET /runs/{id}/log.
	MaxLogLimit = apiwire.MaxLogLimit
)

// RunList is the body of GET /runs: runs newest first, by queued_at
// descending and, among runs queued at the same instant, by ID descending.
// NextBefore, when set, is the before of the next (older) page; it is
// absent on the last page.
type RunList struct {
	Runs       []*jobs.Run `json:"runs"`
	NextBefore string      `json:"next_before,omitempty"`
}

// RunLog is the body of GET /runs/{id}/log.
type RunLog struct {
	// Lines are the log lines after the requested sequence number, in
	// order; fewer than the limit means the log so far is complete.
	Lines []jobs.LogLine `json:"lines"`
	// NextAfter is the sequence number to pass as ?after= for the next
	// page (the last line's, or the request's when there were none).
	NextAfter int64 `json:"next_after"`
}

// runJob queues a run of the job (trigger "api"): 202 with the queued run.
func (a *API) runJob(w http.ResponseWriter, r *http.Request) error {
	run, err := a.cfg.App.RunJob(r.Context(), r.PathValue("name"), jobs.API)
	if err != nil {
		return err
	}
	w.Header().Set("Location", Prefix+"/runs/"+url.PathEscape(run.ID))
	return writeJSON(w, http.StatusAccepted, run)
}

func (a *API) listRuns(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := store.RunFilter{Job: q.Get("job"), Limit: DefaultRunsLimit}
	if s := q.Get("status"); s != "" {
		for _, part := range strings.Split(s, ",") {
			st := jobs.Status(strings.TrimSpace(part))
			switch st {
			case jobs.Queued, jobs.Running, jobs.Succeeded, jobs.Failed, jobs.Cancelled:
				f.Statuses = append(f.Statuses, st)
			default:
				return fieldError(http.StatusBadRequest, CodeValidationFailed, "status",
					strconv.Quote(part)+" is not a run status: accepted are queued, running, succeeded, failed and cancelled, comma-separated")
			}
		}
	}
	limit, err := intParam(r, "limit", DefaultRunsLimit, 1, MaxRunsLimit)
	if err != nil {
		return err
	}
	f.Limit = int(limit)
	if q.Has("before") {
		// The ID of the last run of the previous page; one naming no run
		// is the app's validation error of the field "before".
		if f.Before = q.Get("before"); f.Before == "" {
			return fieldError(http.StatusBadRequest, CodeValidationFailed, "before",
				"empty: give the ID of a run, such as the next_before of the previous page")
		}
	}
	page, err := a.cfg.App.ListRunsPage(r.Context(), f)
	if err != nil {
		return err
	}
	runs := page.Runs
	if runs == nil {
		runs = []*jobs.Run{}
	}
	return writeJSON(w, http.StatusOK, RunList{Runs: runs, NextBefore: page.NextBefore})
}

func (a *API) getRun(w http.ResponseWriter, r *http.Request) error {
	run, err := a.cfg.App.GetRun(r.Context(), r.PathValue("id"))
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, run)
}

// cancelRun cancels a run on behalf of the caller's token: the reason
// becomes "cancelled by <token name>".
func (a *API) cancelRun(w http.ResponseWriter, r *http.Request) error {
	p := auth.PrincipalFrom(r.Context())
	if p == nil {
		return app.ErrUnauthenticated
	}
	run, err := a.cfg.App.CancelRun(r.Context(), r.PathValue("id"), p.Name)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, run)
}

func (a *API) runLog(w http.ResponseWriter, r *http.Request) error {
	after, err := intParam(r, "after", 0, 0, 1<<62)
	if err != nil {
		return err
	}
	limit, err := intParam(r, "limit", DefaultLogLimit, 1, MaxLogLimit)
	if err != nil {
		return err
	}
	lines, err := a.cfg.App.RunLog(r.Context(), r.PathValue("id"), after, int(limit))
	if err != nil {
		return err
	}
	out := RunLog{Lines: lines, NextAfter: after}
	if out.Lines == nil {
		out.Lines = []jobs.LogLine{}
	}
	if n := len(lines); n > 0 {
		out.NextAfter = lines[n-1].Seq
	}
	return writeJSON(w, http.StatusOK, out)
}

// intParam reads an integer query parameter between lo and hi, or def
// when it is absent.
func intParam(r *http.Request, name string, def, lo, hi int64) (int64, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < lo || v > hi {
		return 0, fieldError(http.StatusBadRequest, CodeValidationFailed, name,
			fmt.Sprintf("%q is not accepted: give an integer from %d to %d", s, lo, hi))
	}
	return v, nil
}
