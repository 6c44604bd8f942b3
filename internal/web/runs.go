package web

import (
	"errors"
	"net/http"
	"net/url"
	"slices"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
)

// Limits of the run pages.
const (
	// runsShown is how many runs the run history lists.
	runsShown = 100
	// logPageLines is how many log lines one store read returns.
	logPageLines = 1000
	// logShown is how many log lines the run page renders; the script
	// loads the rest.
	logShown = 5000
)

// runStatuses are the statuses a run can have, for the filter.
func runStatuses() []jobs.Status {
	return []jobs.Status{jobs.Queued, jobs.Running, jobs.Succeeded, jobs.Failed, jobs.Cancelled}
}

// runsData is the data of the run history.
type runsData struct {
	Runs []*jobs.Run
	// Job and Status are the filter ("" for all).
	Job    string
	Status jobs.Status
	// Jobs are the names the job filter offers.
	Jobs     []string
	Statuses []jobs.Status
	// Before is the ID of the run the page lists the runs after ("" for
	// the newest).
	Before string
	// Older is the URL of the next (older) page, "" at the end.
	Older string
	// Newest is the URL of the first page with the same filter.
	Newest string
	// BadFilter says why a filter value was ignored.
	BadFilter string
}

// Filtered reports whether a filter is set.
func (d *runsData) Filtered() bool { return d.Job != "" || d.Status != "" }

func (u *UI) runsList(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	q := r.URL.Query()
	d := &runsData{Statuses: runStatuses()}
	f := store.RunFilter{Limit: runsShown}
	if j := q.Get("job"); j != "" {
		if connection.ValidateName(j) == nil {
			d.Job, f.Job = j, j
		} else {
			d.BadFilter = "“" + j + "” is not a job name, so the list is not filtered by job."
		}
	}
	if st := jobs.Status(q.Get("status")); st != "" {
		if slices.Contains(d.Statuses, st) {
			d.Status, f.Statuses = st, []jobs.Status{st}
		} else {
			d.BadFilter = "“" + string(st) + "” is not a run status, so the list is not filtered by status."
		}
	}
	f.Before = q.Get("before")
	p, err := u.cfg.App.ListRunsPage(ctx, f)
	var ve *app.ValidationError
	if f.Before != "" && errors.As(err, &ve) {
		// The run is gone (deleted by retention since the link was
		// made, or never was): the list starts again at the newest.
		d.BadFilter = "No run has the ID “" + f.Before + "”, so the list starts again at the newest runs."
		f.Before = ""
		p, err = u.cfg.App.ListRunsPage(ctx, f)
	}
	if err != nil {
		u.serverError(w, r, err)
		return
	}
	js, err := u.cfg.App.ListJobs(ctx)
	if err != nil {
		u.serverError(w, r, err)
		return
	}
	d.Runs, d.Before = p.Runs, f.Before
	filter := url.Values{}
	if d.Job != "" {
		filter.Set("job", d.Job)
	}
	if d.Status != "" {
		filter.Set("status", string(d.Status))
	}
	d.Newest = "/runs"
	if len(filter) > 0 {
		d.Newest += "?" + filter.Encode()
	}
	if p.NextBefore != "" {
		filter.Set("before", p.NextBefore)
		d.Older = "/runs?" + filter.Encode()
	}
	for _, j := range js {
		d.Jobs = append(d.Jobs, j.Name)
	}
	if d.Job != "" && !slices.Contains(d.Jobs, d.Job) {
		d.Jobs = append(d.Jobs, d.Job) // a deleted job's runs
	}
	u.render(w, r, http.StatusOK, "runs", &page{Title: "Runs", Nav: "runs", Session: s, Data: d})
}

// runData is the data of a run's page.
type runData struct {
	R   *jobs.Run
	Log []jobs.LogLine
	// LastSeq is the sequence number of the last line rendered.
	LastSeq int64
	// More is true when the log may go on after the lines rendered.
	More bool
	// JobExists is false when the job was deleted since.
	JobExists bool
}

// FailedStep is the first step that failed, or nil.
func (d *runData) FailedStep() *jobs.RunStep {
	for i := range d.R.Steps {
		if d.R.Steps[i].Status == jobs.Failed {
			return &d.R.Steps[i]
		}
	}
	return nil
}

func (u *UI) showRun(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	id := r.PathValue("id")
	run, err := u.cfg.App.GetRun(ctx, id)
	if err != nil {
		u.runError(w, r, id, err)
		return
	}
	d := &runData{R: run}
	for len(d.Log) < logShown {
		lines, err := u.cfg.App.RunLog(ctx, id, d.LastSeq, logPageLines)
		if err != nil {
			u.serverError(w, r, err)
			return
		}
		d.Log = append(d.Log, lines...)
		if len(lines) > 0 {
			d.LastSeq = lines[len(lines)-1].Seq
		}
		if len(lines) < logPageLines {
			break
		}
	}
	d.More = len(d.Log) >= logShown
	if _, err := u.cfg.App.GetJob(ctx, run.JobName); err == nil {
		d.JobExists = true
	} else if !errors.Is(err, app.ErrNotFound) {
		u.serverError(w, r, err)
		return
	}
	p := &page{Title: "Run of " + run.JobName, Nav: "runs", Session: s, Data: d}
	if r.URL.Query().Get("cancel") == "ended" {
		p.Flash = &flash{Kind: "info", Title: "Nothing to cancel", Message: "The run had already ended when the cancel request arrived."}
	}
	u.render(w, r, http.StatusOK, "run", p)
}

// cancelRun asks the run to stop, on behalf of the signed-in token.
func (u *UI) cancelRun(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	id := r.PathValue("id")
	_, err := u.cfg.App.CancelRun(ctx, id, s.Principal.Name)
	if errors.Is(err, app.ErrInvalid) {
		http.Redirect(w, r, "/runs/"+url.PathEscape(id)+"?cancel=ended", http.StatusSeeOther)
		return
	}
	if err != nil {
		u.runError(w, r, id, err)
		return
	}
	u.cfg.Logger.InfoContext(ctx, "web: run cancel requested", "run_id", id, "token_id", s.Principal.TokenID)
	http.Redirect(w, r, "/runs/"+url.PathEscape(id), http.StatusSeeOther)
}

// runError shows the page that fits an error of a use case on run id: 404
// when it does not exist, else a generic 500.
func (u *UI) runError(w http.ResponseWriter, r *http.Request, id string, err error) {
	if errors.Is(err, app.ErrNotFound) {
		u.errorPageBack(w, r, http.StatusNotFound, "Run not found",
			"There is no run with the ID “"+id+"”. Check the address, or find the run in the run history.", "/runs", "Back to runs")
		return
	}
	u.serverError(w, r, err)
}
