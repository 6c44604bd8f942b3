package web

import (
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/elapsed"
)

// The connection test in the UI: a Test connection button on the list, on
// a connection's page and on the create/edit form. With the script, the
// button streams the steps from the REST API (POST
// /api/v1/connections/{name}/test, or /api/v1/connections/test for the
// unsaved form) into the test panel as they finish. Without it, the button
// posts to the routes below, which run the test and render the same panel
// with the whole report.

// testView is the test panel of a page: the report of a test that ran on
// the server (without the script), or nil for the panel the script fills.
type testView struct {
	// Report is the outcome.
	Report *diagnose.Report
	// Draft is true for the test of the form.
	Draft bool
	// PasswordTyped says that the form's password was used: it is not sent
	// back to the browser, so it must be typed again before saving.
	PasswordTyped bool
}

// useGuard runs h only for users whose role may open connections (a test
// or an audit connects to the database).
func (u *UI) useGuard(h handler) handler {
	return u.require(auth.Use, "can look at connections but not open them (a test or a permissions check connects to the database)", h)
}

// testSaved tests a saved connection and shows its page with the report.
func (u *UI) testSaved(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	rep, err := u.cfg.App.TestConnection(r.Context(), name, nil)
	if err != nil {
		u.appError(w, r, name, err)
		return
	}
	// Load the page after the test: a first test pins the host key.
	d, err := u.loadShow(r, name)
	if err != nil {
		u.appError(w, r, name, err)
		return
	}
	d.Test = &testView{Report: rep}
	u.render(w, r, http.StatusOK, "show", &page{Title: name, Nav: "connections", Session: s, Data: d})
}

// testNewDraft tests the new connection form without saving it.
func (u *UI) testNewDraft(w http.ResponseWriter, r *http.Request, s *session) {
	u.testDraft(w, r, s, false, "", false)
}

// testEditDraft tests the edit form of a saved connection without saving
// it, with the connection's key pair and (when the field is empty) its
// password.
func (u *UI) testEditDraft(w http.ResponseWriter, r *http.Request, s *session) {
	name := r.PathValue("name")
	old, err := u.cfg.App.GetConnection(r.Context(), name)
	if err != nil {
		u.appError(w, r, name, err)
		return
	}
	u.testDraft(w, r, s, true, old.Name, old.HasPassword)
}

// testDraft reads the posted form, tests it, and shows the form again with
// the report, or with its problems when it cannot be tested.
// On the edit form, name is the saved connection, and hasPassword whether
// it has a stored password.
func (u *UI) testDraft(w http.ResponseWriter, r *http.Request, s *session, edit bool, name string, hasPassword bool) {
	pf, err := parseConnForm(r, edit, name)
	if err != nil {
		u.errorPage(w, r, s, http.StatusBadRequest, "Form not readable", "The form could not be read. Reload the page and try again.")
		return
	}
	pf.form.HasPassword = hasPassword
	pf.validate()
	if !edit {
		// A name that is not valid yet is no reason not to test.
		delete(pf.form.Errors, "name")
		pf.form.summarize()
	}
	if len(pf.form.Errors) > 0 {
		u.renderForm(w, r, s, http.StatusUnprocessableEntity, pf.form)
		return
	}
	spec := pf.spec
	if !edit {
		spec.Name = ""
	}
	rep, err := u.cfg.App.TestDraft(r.Context(), spec, name, nil)
	var ve *app.ValidationError
	if errors.As(err, &ve) {
		pf.form.addProblems(ve.Fields())
		u.renderForm(w, r, s, http.StatusUnprocessableEntity, pf.form)
		return
	}
	if errors.Is(err, app.ErrForbidden) {
		// A host key given that would replace a pinned one, with the
		// stored password: as saving the form says it.
		pf.form.addProblems(map[string]string{"form": strings.TrimPrefix(err.Error(), app.ErrForbidden.Error()+": ")})
		u.renderForm(w, r, s, http.StatusForbidden, pf.form)
		return
	}
	if err != nil {
		u.appError(w, r, name, err)
		return
	}
	pf.form.Test = &testView{Report: rep, Draft: true, PasswordTyped: !spec.Password.IsZero()}
	u.renderForm(w, r, s, http.StatusOK, pf.form)
}

// stepLabel names a step for people; the script has the same labels
// (app.js, STEP_LABELS).
func stepLabel(id diagnose.StepID) string {
	switch id {
	case diagnose.StepCredential:
		return "Fetch the token"
	case diagnose.StepResolve:
		return "Resolve the host name"
	case diagnose.StepBastionTCP:
		return "Reach the bastion"
	case diagnose.StepSSHHandshake:
		return "SSH handshake"
	case diagnose.StepSSHAuth:
		return "SSH login"
	case diagnose.StepForward:
		return "Forward to the database"
	case diagnose.StepTCP:
		return "Reach the database"
	case diagnose.StepTLS:
		return "TLS"
	case diagnose.StepPostgresAuth:
		return "PostgreSQL login"
	case diagnose.StepDatabase:
		return "Open the database"
	case diagnose.StepQuery:
		return "Run SELECT 1"
	}
	return string(id)
}

// testMS formats a step's time as every face does (package elapsed; the
// script's fmtDuration).
func testMS(ms float64) string { return elapsed.FormatMS(ms) }

// testSummary is the line under the steps: all passed, or where it failed.
func testSummary(rep *diagnose.Report) string {
	passed, notRequested := 0, 0
	for _, st := range rep.Steps {
		switch st.Status {
		case diagnose.StatusOK:
			passed++
		case diagnose.StatusSkipped:
			notRequested++
		}
	}
	if f := rep.Failed(); f != nil {
		return fmt.Sprintf("Failed at %s: %d of %d steps passed in %s.", stepTitle(*f), passed, len(rep.Steps),
			testMS(rep.DurationMS))
	}
	sum := fmt.Sprintf("All %d steps passed in %s", passed, testMS(rep.DurationMS))
	if notRequested > 0 {
		sum += fmt.Sprintf(" (%d not requested)", notRequested)
	}
	return sum + "."
}

// richText escapes s and shows `quoted` parts as code, as the hints
// quote commands and settings; line breaks are kept by the stylesheet.
func richText(s string) template.HTML {
	var b strings.Builder
	for i, part := range strings.Split(s, "`") {
		if i%2 == 1 && i < strings.Count(s, "`") {
			b.WriteString("<code>" + template.HTMLEscapeString(part) + "</code>")
			continue
		}
		if i%2 == 1 {
			b.WriteString("`") // an unpaired backtick
		}
		b.WriteString(template.HTMLEscapeString(part))
	}
	return template.HTML(b.String()) // every part is escaped above
}
