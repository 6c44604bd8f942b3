package web

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
)

// jobRunsShown is how many of a job's runs its page lists.
const jobRunsShown = 15

// jobURL is the address of a job's page. A job named "new" lives at
// /jobs/new/, since /jobs/new is the form for a new job.
func jobURL(name string) string {
	if name == reservedJobName {
		return "/jobs/" + reservedJobName + "/"
	}
	return "/jobs/" + url.PathEscape(name)
}

// jobAction is the address of a page or action of a job: "edit",
// "delete", "run".
func jobAction(name, action string) string {
	return "/jobs/" + url.PathEscape(name) + "/" + action
}

// jobsData is the data of the job list.
type jobsData struct {
	Jobs []*app.JobView
}

func (u *UI) jobsList(w http.ResponseWriter, r *http.Request, s *session) {
	js, err := u.cfg.App.ListJobs(r.Context())
	if err != nil {
		u.serverError(w, r, err)
		return
	}
	p := &page{Title: "Jobs", Nav: "jobs", Session: s, Data: jobsData{Jobs: js}}
	if name := r.URL.Query().Get("deleted"); name != "" && connection.ValidateName(name) == nil {
		p.Flash = &flash{Kind: "success", Title: "Job deleted",
			Message: "“" + name + "” will not run again. Its runs stay in the run history."}
	}
	u.render(w, r, http.StatusOK, "jobs", p)
}

// jobData is the data of a job's page.
type jobData struct {
	J    *app.JobView
	Runs []*jobs.Run
	// YAML is the job as a jobs file.
	YAML string
	// MoreRuns is true when the job has more runs than listed.
	MoreRuns bool
}

func (u *UI) showJob(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	name := r.PathValue("name")
	j, err := u.cfg.App.GetJob(ctx, name)
	if err != nil {
		u.jobError(w, r, name, err)
		return
	}
	runs, err := u.cfg.App.ListRuns(ctx, store.RunFilter{Job: name, Limit: jobRunsShown + 1})
	if err != nil {
		u.serverError(w, r, err)
		return
	}
	d := jobData{J: j, Runs: runs}
	if len(runs) > jobRunsShown {
		d.Runs, d.MoreRuns = runs[:jobRunsShown], true
	}
	if y, err := jobs.Marshal([]jobs.Job{j.Job}); err == nil {
		d.YAML = string(y)
	}
	p := &page{Title: name, Nav: "jobs", Session: s, Data: d}
	q := r.URL.Query()
	switch {
	case q.Has("created"):
		msg := "Start a run with Run now."
		if j.NextRunAt != nil {
			msg = "It runs on its schedule, next " + fmtTime(*j.NextRunAt) + ", and whenever you press Run now."
		}
		p.Flash = &flash{Kind: "success", Title: "Job saved", Message: msg}
	case q.Has("saved"):
		p.Flash = &flash{Kind: "success", Title: "Changes saved", Message: "Runs from now on use the new definition; runs already queued keep the one they started with."}
	}
	u.render(w, r, http.StatusOK, "job", p)
}

// jobFormData is the data of the job form.
type jobFormData struct {
	Form *jobForm
}

func (u *UI) renderJobForm(w http.ResponseWriter, r *http.Request, s *session, status int, f *jobForm) {
	cs, err := u.cfg.App.ListConnections(r.Context())
	if err != nil {
		u.serverError(w, r, err)
		return
	}
	f.Connections = f.Connections[:0]
	for _, c := range cs {
		f.Connections = append(f.Connections, c.Name)
	}
	title := "New job"
	if f.Edit {
		title = "Edit " + f.Name
	}
	u.render(w, r, status, "job-form", &page{Title: title, Nav: "jobs", Session: s, Data: jobFormData{Form: f}})
}

func (u *UI) newJobForm(w http.ResponseWriter, r *http.Request, s *session) {
	f := blankJobForm()
	if c := r.URL.Query().Get("connection"); connection.ValidateName(c) == nil {
		f.Values["connection"] = c
	}
	u.renderJobForm(w, r, s, http.StatusOK, f)
}

func (u *UI) editJobForm(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	j, err := u.cfg.App.GetJob(r.Context(), name)
	if err != nil {
		u.jobError(w, r, name, err)
		return
	}
	u.renderJobForm(w, r, s, http.StatusOK, jobFormFor(j.Job))
}

func (u *UI) createJob(w http.ResponseWriter, r *http.Request, s *session) {
	u.saveJob(w, r, s, false, "")
}

func (u *UI) updateJob(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	if _, err := u.cfg.App.GetJob(r.Context(), name); err != nil {
		u.jobError(w, r, name, err)
		return
	}
	u.saveJob(w, r, s, true, name)
}

// saveJob handles a post of the job form: an operation that changes the
// form (shown again), or saving the job from the fields or the YAML.
func (u *UI) saveJob(w http.ResponseWriter, r *http.Request, s *session, edit bool, name string) {
	ctx := r.Context()
	f, err := readJobForm(r, edit, name)
	if err != nil {
		u.errorPage(w, r, s, http.StatusBadRequest, "Form not readable", "The form could not be read. Reload the page and try again.")
		return
	}
	if f.applyOp(r.PostFormValue(fieldOp)) {
		status := http.StatusOK
		if len(f.Problems) > 0 {
			status = http.StatusUnprocessableEntity
		}
		u.renderJobForm(w, r, s, status, f)
		return
	}
	var j jobs.Job
	if f.Mode == modeYAML {
		var ok bool
		if j, ok = f.parseYAML(); !ok {
			u.renderJobForm(w, r, s, http.StatusUnprocessableEntity, f)
			return
		}
	} else {
		j = f.job(true)
		if len(f.Errors) > 0 {
			f.validate(j)
			u.renderJobForm(w, r, s, http.StatusUnprocessableEntity, f)
			return
		}
	}
	if !edit {
		if j.Name == reservedJobName {
			f.addProblems([]fielderr.Problem{{Field: "name", Problem: fmt.Sprintf(
				"%q is taken by the address of this form: choose another name", reservedJobName)}})
			u.renderJobForm(w, r, s, http.StatusUnprocessableEntity, f)
			return
		}
		if _, err := u.cfg.App.GetJob(ctx, j.Name); err == nil {
			f.saveError(app.ErrExists, j.Name)
			u.renderJobForm(w, r, s, http.StatusUnprocessableEntity, f)
			return
		} else if !errors.Is(err, app.ErrNotFound) {
			u.serverError(w, r, err)
			return
		}
	}
	v, _, err := u.cfg.App.PutJob(ctx, j)
	if err != nil {
		if f.saveError(err, j.Name) {
			u.renderJobForm(w, r, s, http.StatusUnprocessableEntity, f)
			return
		}
		u.serverError(w, r, err)
		return
	}
	u.cfg.Logger.InfoContext(ctx, "web: job saved", "job", v.Name, "edit", edit, "mode", f.Mode, "token_id", s.Principal.TokenID)
	flag := "?created=1"
	if edit {
		flag = "?saved=1"
	}
	http.Redirect(w, r, jobURL(v.Name)+flag, http.StatusSeeOther)
}

// jobDeleteData is the data of the job's delete confirmation.
type jobDeleteData struct {
	J     *app.JobView
	Error string
	Typed string
}

func (u *UI) deleteJobPage(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	j, err := u.cfg.App.GetJob(r.Context(), name)
	if err != nil {
		u.jobError(w, r, name, err)
		return
	}
	u.render(w, r, http.StatusOK, "job-delete", &page{Title: "Delete " + name, Nav: "jobs", Session: s, Data: jobDeleteData{J: j}})
}

func (u *UI) deleteJob(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	name := r.PathValue("name")
	typed := strings.TrimSpace(r.PostFormValue("confirm"))
	if typed != name {
		j, err := u.cfg.App.GetJob(ctx, name)
		if err != nil {
			u.jobError(w, r, name, err)
			return
		}
		msg := "Type the job's name, " + name + ", to confirm."
		if typed != "" {
			msg = fmt.Sprintf("%q is not the job's name: type %s to confirm.", typed, name)
		}
		u.render(w, r, http.StatusUnprocessableEntity, "job-delete", &page{Title: "Delete " + name, Nav: "jobs", Session: s,
			Data: jobDeleteData{J: j, Error: msg, Typed: typed}})
		return
	}
	if err := u.cfg.App.DeleteJob(ctx, name); err != nil {
		u.jobError(w, r, name, err)
		return
	}
	u.cfg.Logger.InfoContext(ctx, "web: job deleted", "job", name, "token_id", s.Principal.TokenID)
	http.Redirect(w, r, "/jobs?deleted="+url.QueryEscape(name), http.StatusSeeOther)
}

// runJob queues a run of the job and shows it.
func (u *UI) runJob(w http.ResponseWriter, r *http.Request, s *session) {
	ctx := r.Context()
	name := r.PathValue("name")
	run, err := u.cfg.App.RunJob(ctx, name, jobs.Manual)
	if errors.Is(err, app.ErrNoQueue) {
		u.errorPage(w, r, s, http.StatusServiceUnavailable, "Runs cannot start here",
			"This pgrelay process has no job queue, so it cannot run jobs. Runs start on a server started with pgrelay serve.")
		return
	}
	if err != nil {
		u.jobError(w, r, name, err)
		return
	}
	u.cfg.Logger.InfoContext(ctx, "web: run started", "job", name, "run_id", run.ID, "token_id", s.Principal.TokenID)
	http.Redirect(w, r, "/runs/"+url.PathEscape(run.ID), http.StatusSeeOther)
}

// jobError shows the page that fits an error of a use case on job name:
// 404 when it does not exist, else a generic 500.
func (u *UI) jobError(w http.ResponseWriter, r *http.Request, name string, err error) {
	if errors.Is(err, app.ErrNotFound) {
		u.errorPageBack(w, r, http.StatusNotFound, "Job not found",
			"There is no job named “"+name+"”. It may have been deleted by someone else.", "/jobs", "Back to jobs")
		return
	}
	u.serverError(w, r, err)
}
