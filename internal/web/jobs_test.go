package web_test

import (
	"context"
	"errors"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// addConnection saves a direct connection that no test opens.
func addConnection(t *testing.T, s *stack, name string) {
	t.Helper()
	if _, err := s.App.CreateConnection(context.Background(), connection.Spec{Name: name, Host: "db.internal",
		Database: "analytics", User: "dbt", Password: secret.New("pw")}); err != nil {
		t.Fatal(err)
	}
}

// jobFields is a valid job form: one SQL step and one command step.
func jobFields(name string) url.Values {
	return url.Values{
		"mode": {"form"}, "name": {name}, "connection": {"wh"}, "schedule": {"0 3 * * *"}, "timeout": {"30m"},
		"steps[0].kind": {"sql"}, "steps[0].sql": {"create schema if not exists analytics"},
		"steps[1].kind": {"command"}, "steps[1].command": {"dbt"}, "steps[1].args": {"build\r\n--target\r\n\r\nprod\r\n"},
		"steps[1].workdir": {"/srv/dbt/project"},
	}
}

func TestJobForm(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	addConnection(t, s, "wh")
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Editor].Token)

	r := c.get("/jobs")
	contains(t, "empty job list", r.Body, "No jobs yet", `href="/jobs/new"`, `href="/jobs" aria-current="page"`)
	form := c.get("/jobs/new").Body
	contains(t, "new job form", form, `name="steps[0].kind"`, `<option value="wh"`, `id="step-template"`, "0 3 * * *")

	// CSRF: a post without the token changes nothing.
	f := jobFields("nightly")
	if r := c.post("/jobs", f); r.Status != http.StatusForbidden {
		t.Fatalf("POST /jobs without CSRF token: %d", r.Status)
	}
	token := c.csrf("/jobs/new")
	f.Set(auth.CSRFField, token)
	if r := c.post("/jobs", f, "Origin", "https://evil.example"); r.Status != http.StatusForbidden {
		t.Fatalf("cross-origin POST /jobs: %d", r.Status)
	}
	if _, err := s.App.GetJob(ctx, "nightly"); !errors.Is(err, app.ErrNotFound) {
		t.Fatalf("a refused post created the job: %v", err)
	}

	// A timeout or stop grace of 0 is refused next to its input: it took
	// the default (1h, the server's grace) without a word.
	zero := jobFields("nightly")
	zero.Set(auth.CSRFField, token)
	zero.Set("timeout", "0")
	zero.Set("stop_grace", "0s")
	if r := c.post("/jobs", zero); r.Status != http.StatusUnprocessableEntity {
		t.Fatalf("timeout 0: status %d\n%s", r.Status, r.Body)
	} else {
		contains(t, "timeout 0", r.Body, `id="f-timeout-error"`, `id="f-stop_grace-error"`, "0 is not accepted")
		excludes(t, "timeout 0", r.Body, "2562047h")
	}

	// Field errors land next to their inputs, with what was typed kept.
	bad := jobFields("nightly")
	bad.Set(auth.CSRFField, token)
	bad.Set("schedule", "every night")
	bad.Set("timeout", "soon")
	bad.Set("steps[0].sql", "")
	bad.Set("steps[1].command", "")
	bad.Set("steps[2].kind", "command")
	bad.Set("steps[2].command", "psql")
	bad.Set("steps[2].workdir", "relative/dir")
	r = c.post("/jobs", bad)
	if r.Status != http.StatusUnprocessableEntity {
		t.Fatalf("bad job: status %d\n%s", r.Status, r.Body)
	}
	contains(t, "bad job form", r.Body,
		`id="f-schedule-error"`, "is not a cron schedule",
		`id="f-timeout-error"`, "is not a duration",
		`id="f-steps-0-sql-error"`, "required: the SQL",
		`id="f-steps-1-command-error"`, "required: the program",
		`id="f-steps-2-workdir-error"`, "is not absolute",
		`href="#f-steps-2-workdir"`, "Step 3 working directory",
		`value="every night"`, `value="soon"`, `value="relative/dir"`, `value="psql"`, "build\n--target")
	if _, err := s.App.GetJob(ctx, "nightly"); err == nil {
		t.Fatal("an invalid form created the job")
	}
	// A missing connection is the use case's problem, shown at its field.
	nc := jobFields("nightly")
	nc.Set(auth.CSRFField, token)
	nc.Set("connection", "gone")
	r = c.post("/jobs", nc)
	contains(t, "missing connection", r.Body, `id="f-connection-error"`, `no connection named &#34;gone&#34;`, "gone (not found)")

	// A valid form creates the job.
	r = c.post("/jobs", f)
	if r.Status != http.StatusSeeOther || r.Location != "/jobs/nightly?created=1" {
		t.Fatalf("create: %d %q\n%s", r.Status, r.Location, r.Body)
	}
	j, err := s.App.GetJob(ctx, "nightly")
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Steps) != 2 || j.Steps[0].SQL != "create schema if not exists analytics" ||
		strings.Join(j.Steps[1].Command, "|") != "dbt|build|--target|prod" || j.Steps[1].Workdir != "/srv/dbt/project" ||
		j.Timeout.Duration() != 30*time.Minute || j.Schedule != "0 3 * * *" {
		t.Fatalf("job %+v", j.Job)
	}
	show := c.get(r.Location).Body
	contains(t, "job page", show, "Job saved", "dbt build --target prod", "0 3 * * *", `action="/jobs/nightly/run"`,
		`href="/jobs/nightly/edit"`, "connection: wh")
	if r := c.post("/jobs", f); r.Status != http.StatusUnprocessableEntity || !strings.Contains(r.Body, "already exists") {
		t.Fatalf("duplicate: %d", r.Status)
	}
	// "new" is the address of the form.
	f2 := jobFields("new")
	f2.Set(auth.CSRFField, token)
	if r := c.post("/jobs", f2); r.Status != http.StatusUnprocessableEntity || !strings.Contains(r.Body, `id="f-name-error"`) {
		t.Fatalf("job named new: %d", r.Status)
	}

	// The edit form shows the job; a change is saved.
	edit := c.get("/jobs/nightly/edit").Body
	contains(t, "edit form", edit, `id="f-name" name="name" type="text" value="nightly"`, "readonly", `value="30m"`, "build\n--target\nprod</textarea>")
	f.Set("schedule", "")
	f.Set("retries", "2")
	f.Set("stop_grace", "500ms")
	if r := c.post("/jobs/nightly/edit", f); r.Status != http.StatusUnprocessableEntity ||
		!strings.Contains(r.Body, `id="f-stop_grace-error"`) || !strings.Contains(r.Body, "accepted is 1s to 10m0s") {
		t.Fatalf("stop grace out of range: %d\n%s", r.Status, r.Body)
	}
	f.Set("stop_grace", "45s")
	r = c.post("/jobs/nightly/edit", f)
	if r.Status != http.StatusSeeOther || r.Location != "/jobs/nightly?saved=1" {
		t.Fatalf("update: %d %q\n%s", r.Status, r.Location, r.Body)
	}
	if j, _ := s.App.GetJob(ctx, "nightly"); j.Schedule != "" || j.Retries != 2 || j.NextRunAt != nil || j.StopGrace.Duration() != 45*time.Second {
		t.Fatalf("after edit: %+v", j.Job)
	}
	// The stop grace shows, and an edit that leaves it alone keeps it.
	contains(t, "edit form", c.get("/jobs/nightly/edit").Body, `name="stop_grace" type="text" value="45s"`)
	contains(t, "job page", c.get("/jobs/nightly").Body, "Stop grace")

	// Delete asks for the name.
	d := url.Values{auth.CSRFField: {token}, "confirm": {"nightl"}}
	if r := c.post("/jobs/nightly/delete", d); r.Status != http.StatusUnprocessableEntity || !strings.Contains(r.Body, "not the job") {
		t.Fatalf("delete with a wrong name: %d", r.Status)
	}
	d.Set("confirm", "nightly")
	if r := c.post("/jobs/nightly/delete", d); r.Status != http.StatusSeeOther || r.Location != "/jobs?deleted=nightly" {
		t.Fatalf("delete: %d %q", r.Status, r.Location)
	}
	contains(t, "list after delete", c.get("/jobs?deleted=nightly").Body, "Job deleted")
	if r := c.get("/jobs/nightly"); r.Status != http.StatusNotFound || !strings.Contains(r.Body, "Job not found") {
		t.Fatalf("deleted job page: %d", r.Status)
	}
}

func TestJobFormYAML(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	addConnection(t, s, "wh")
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Admin].Token)
	token := c.csrf("/jobs/new")

	// A blank form switches to the example; blank steps are left out.
	r := c.post("/jobs", url.Values{auth.CSRFField: {token}, "mode": {"form"}, "steps[0].kind": {"sql"}, "op": {"mode-yaml"}})
	contains(t, "blank form as YAML", r.Body, `name="mode" value="yaml"`, "name: nightly", "connection: warehouse")
	r = c.post("/jobs", url.Values{auth.CSRFField: {token}, "mode": {"form"}, "name": {"x"}, "steps[0].kind": {"sql"}, "op": {"mode-yaml"}})
	contains(t, "form with a name as YAML", r.Body, `name="mode" value="yaml"`, "name: x", "steps: []")

	// Fields to YAML and back, without saving.
	f := jobFields("nightly")
	f.Set(auth.CSRFField, token)
	f.Set("op", "mode-yaml")
	r = c.post("/jobs", f)
	if r.Status != http.StatusOK {
		t.Fatalf("switch to YAML: %d\n%s", r.Status, r.Body)
	}
	contains(t, "YAML mode", r.Body, `name="mode" value="yaml"`, `id="f-yaml"`, "name: nightly", "- sql: create schema if not exists analytics",
		"- dbt", "workdir: /srv/dbt/project", `aria-pressed="true" id="mode-yaml"`)
	excludes(t, "YAML mode", r.Body, `name="steps[0].kind"`)
	if _, err := s.App.GetJob(ctx, "nightly"); err == nil {
		t.Fatal("switching modes saved the job")
	}
	yaml := "name: nightly\nconnection: wh\nsteps:\n  - sql: select 1\n  - command: [sh, -c, echo hi]\n"
	r = c.post("/jobs", url.Values{auth.CSRFField: {token}, "mode": {"yaml"}, "yaml": {yaml}, "op": {"mode-form"}})
	contains(t, "back to fields", r.Body, `name="mode" value="form"`, `name="steps[1].kind" value="command" checked`,
		`value="sh"`, "-c\necho hi</textarea>")

	// Step operations without JavaScript.
	ops := jobFields("nightly")
	ops.Set(auth.CSRFField, token)
	ops.Set("op", "up-1")
	contains(t, "move up", c.post("/jobs", ops).Body, `name="steps[0].command" type="text" value="dbt"`)
	ops.Set("op", "remove-0")
	r = c.post("/jobs", ops)
	excludes(t, "remove", r.Body, "create schema if not exists")
	ops.Set("op", "add-command")
	contains(t, "add", c.post("/jobs", ops).Body, `name="steps[2].kind" value="command" checked`)

	// Saving from YAML; a bare job is accepted as well as a jobs file.
	r = c.post("/jobs", url.Values{auth.CSRFField: {token}, "mode": {"yaml"}, "yaml": {yaml}})
	if r.Status != http.StatusSeeOther || r.Location != "/jobs/nightly?created=1" {
		t.Fatalf("create from YAML: %d %q\n%s", r.Status, r.Location, r.Body)
	}
	j, err := s.App.GetJob(ctx, "nightly")
	if err != nil || len(j.Steps) != 2 || strings.Join(j.Steps[1].Command, " ") != "sh -c echo hi" {
		t.Fatalf("job from YAML: %+v %v", j, err)
	}

	// YAML problems are listed at the YAML, with the text kept.
	for name, tc := range map[string]struct{ yaml, want string }{
		"syntax":  {"jobs:\n  - name: [oops\n", "yaml:"},
		"unknown": {"jobs:\n  - name: x\n    conection: wh\n", "conection"},
		"invalid": {"jobs:\n  - name: Bad Name\n    connection: wh\n    steps:\n      - {}\n", "steps[0]"},
		"two":     {"jobs:\n  - name: a\n    connection: wh\n    steps: [{sql: select 1}]\n  - name: b\n    connection: wh\n    steps: [{sql: select 1}]\n", "holds 2 jobs"},
	} {
		r := c.post("/jobs", url.Values{auth.CSRFField: {token}, "mode": {"yaml"}, "yaml": {tc.yaml}})
		if r.Status != http.StatusUnprocessableEntity {
			t.Errorf("%s: status %d", name, r.Status)
			continue
		}
		contains(t, name, r.Body, `id="f-yaml-error"`, tc.want, `href="#f-yaml"`)
	}
	// The edit form's YAML cannot rename the job.
	renamed := strings.Replace(yaml, "name: nightly", "name: daily", 1)
	r = c.post("/jobs/nightly/edit", url.Values{auth.CSRFField: {token}, "mode": {"yaml"}, "yaml": {renamed}})
	contains(t, "rename", r.Body, "cannot be renamed")
	// A change through the edit form's YAML is saved.
	r = c.post("/jobs/nightly/edit", url.Values{auth.CSRFField: {token}, "mode": {"yaml"},
		"yaml": {strings.Replace(yaml, "select 1", "select 2", 1)}})
	if r.Status != http.StatusSeeOther {
		t.Fatalf("edit from YAML: %d\n%s", r.Status, r.Body)
	}
	if j, _ := s.App.GetJob(ctx, "nightly"); j.Steps[0].SQL != "select 2" {
		t.Fatalf("after YAML edit: %+v", j.Steps)
	}

	// A job the fields cannot show opens as YAML.
	if _, _, err := s.App.PutJob(ctx, jobs.Job{Name: "odd", Connection: "wh",
		Steps: []jobs.Step{{Command: []string{"sh", "-c", "echo a\necho b"}}}}); err != nil {
		t.Fatal(err)
	}
	contains(t, "odd job", c.get("/jobs/odd/edit").Body, `name="mode" value="yaml"`, "edit it as YAML")

	// A job named "new" (from the CLI) lives at /jobs/new/.
	if _, _, err := s.App.PutJob(ctx, jobs.Job{Name: "new", Connection: "wh", Steps: []jobs.Step{{SQL: "select 1"}}}); err != nil {
		t.Fatal(err)
	}
	contains(t, "job list", c.get("/jobs").Body, `href="/jobs/new/"`)
	contains(t, "page of job new", c.get("/jobs/new/").Body, `action="/jobs/new/run"`, `href="/jobs/new/edit"`)
	contains(t, "new job form", c.get("/jobs/new").Body, "New job")

	// Without a queue, Run now says why it cannot start.
	r = c.post("/jobs/nightly/run", url.Values{auth.CSRFField: {token}})
	if r.Status != http.StatusServiceUnavailable || !strings.Contains(r.Body, "Runs cannot start here") {
		t.Fatalf("run without a queue: %d", r.Status)
	}
}

// addRun saves a run of job in the given end state, with a log.
func addRun(t *testing.T, s *stack, job jobs.Job, status jobs.Status, reason string, lines ...jobs.LogLine) *jobs.Run {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC()
	r := jobs.NewRun(job, jobs.Manual, now.Add(-time.Minute))
	if err := s.store.CreateRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	if status == jobs.Queued {
		return r
	}
	start := now.Add(-50 * time.Second)
	r.Status, r.Reason, r.StartedAt, r.Worker, r.Attempt = status, reason, &start, "host:1", 1
	if status.Terminal() {
		r.EndedAt = &now
	}
	for i := range r.Steps {
		r.Steps[i].Status = jobs.Succeeded
		if status == jobs.Failed && i == len(r.Steps)-1 {
			code := 3
			r.Steps[i].Status, r.Steps[i].ExitCode, r.Steps[i].Error = jobs.Failed, &code, "exit status 3"
		}
	}
	if err := s.store.UpdateRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	if len(lines) > 0 {
		if err := s.store.AppendRunLog(ctx, r.ID, lines); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// TestRunsOlderPages follows the run history's "Older runs" links through
// more runs than a page, all queued at the same instant: each run is
// listed exactly once, newest first (the ID descending among equal
// times), the filter stays on each page, and a link to a run that is gone
// starts again at the newest.
func TestRunsOlderPages(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	addConnection(t, s, "wh")
	export := jobs.Job{Name: "export", Connection: "wh", Steps: []jobs.Step{{SQL: "select 1"}}}
	other := jobs.Job{Name: "other", Connection: "wh", Steps: []jobs.Step{{SQL: "select 1"}}}
	for _, j := range []jobs.Job{export, other} {
		if _, _, err := s.App.PutJob(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Now().UTC().Add(-time.Hour)
	var all, exports []string
	for i := range 230 {
		j := export
		if i%10 == 0 {
			j = other
		}
		r := jobs.NewRun(j, jobs.Manual, at)
		if err := s.store.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		all = append(all, r.ID)
		if j.Name == "export" {
			exports = append(exports, r.ID)
		}
	}
	desc := func(ids []string) []string {
		slices.Sort(ids)
		slices.Reverse(ids)
		return ids
	}
	all, exports = desc(all), desc(exports)

	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Viewer].Token)
	runID := regexp.MustCompile(`class="run-id" href="/runs/([^"]+)"`)
	older := regexp.MustCompile(`href="([^"]+)" id="runs-older"`)
	// pages follows the Older links from path and returns the runs listed
	// and how many each page had.
	pages := func(path string) (ids []string, sizes []int) {
		t.Helper()
		for path != "" && len(sizes) < 10 {
			r := c.get(path)
			if r.Status != http.StatusOK {
				t.Fatalf("GET %s: %d", path, r.Status)
			}
			ms := runID.FindAllStringSubmatch(r.Body, -1)
			for _, m := range ms {
				ids = append(ids, m[1])
			}
			sizes = append(sizes, len(ms))
			path = ""
			if m := older.FindStringSubmatch(r.Body); m != nil {
				path = html.UnescapeString(m[1])
				if len(ids) > 0 && !strings.Contains(path, "before="+ids[len(ids)-1]) {
					t.Errorf("older link %q does not start after the last run listed, %s", path, ids[len(ids)-1])
				}
			} else {
				contains(t, "last page", r.Body, `id="runs-newest"`)
			}
		}
		return ids, sizes
	}
	ids, sizes := pages("/runs")
	if !slices.Equal(ids, all) || !slices.Equal(sizes, []int{100, 100, 30}) {
		t.Errorf("pages of every run: %v runs in pages of %v, want each of the %d once in order (pages of 100, 100, 30)",
			len(ids), sizes, len(all))
	}
	ids, sizes = pages("/runs?job=export")
	if !slices.Equal(ids, exports) || !slices.Equal(sizes, []int{100, 100, 7}) {
		t.Errorf("pages of job export: %v runs in pages of %v, want each of the %d once in order (pages of 100, 100, 7)",
			len(ids), sizes, len(exports))
	}
	// The first page of the newest runs says so and offers the next.
	first := c.get("/runs").Body
	contains(t, "first page", first, "Showing the 100 newest runs", `id="runs-older"`)
	excludes(t, "first page", first, `id="runs-newest"`)

	gone := c.get("/runs?job=export&before=nosuchrun")
	contains(t, "gone run", gone.Body, "No run has the ID “nosuchrun”", exports[0], `<option value="export" selected>`)
	excludes(t, "gone run", gone.Body, `id="runs-newest"`)
}

func TestRunPages(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	addConnection(t, s, "wh")
	job := jobs.Job{Name: "export", Connection: "wh", Steps: []jobs.Step{{SQL: "select 1"}, {Command: []string{"sh", "-c", "exit 3"}}}}
	if _, _, err := s.App.PutJob(ctx, job); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	failed := addRun(t, s, job, jobs.Failed, "step 2 (sh -c exit 3) failed: exit status 3",
		jobs.LogLine{Time: now, Stream: "system", Step: -1, Text: "opening connection wh"},
		jobs.LogLine{Time: now, Stream: "stdout", Step: 0, Text: "SELECT 1"},
		jobs.LogLine{Time: now, Stream: "stderr", Step: 1, Text: "<script>alert(1)</script> went wrong"})
	cancelled := addRun(t, s, job, jobs.Cancelled, "cancelled by bob")
	queued := addRun(t, s, job, jobs.Queued, "")

	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Editor].Token)
	list := c.get("/runs").Body
	contains(t, "runs", list, failed.ID, cancelled.ID, queued.ID, "status-failed", "status-cancelled", "status-queued",
		"step 2 (sh -c exit 3) failed", `href="/jobs/export"`)
	fl := c.get("/runs?status=failed&job=export").Body
	contains(t, "filtered runs", fl, failed.ID, `<option value="failed" selected>`, `<option value="export" selected>`, "Clear")
	excludes(t, "filtered runs", fl, cancelled.ID, queued.ID)
	contains(t, "empty filter", c.get("/runs?job=other").Body, "There are no runs of <strong>other</strong>")
	contains(t, "bad filter", c.get("/runs?status=exploded").Body, "is not a run status", failed.ID)

	page := c.get("/runs/" + failed.ID).Body
	contains(t, "failed run", page, `class="run-banner run-banner-failed"`, "Run failed at step 2",
		"step 2 (sh -c exit 3) failed: exit status 3", `class="ll ll-stderr ll-newstep"`, `id="log-step-2"`,
		"&lt;script&gt;alert(1)&lt;/script&gt; went wrong", "exit status 3", `data-after="3"`, "host:1", `id="rerun-form"`)
	excludes(t, "failed run", page, "<script>alert(1)")
	// The log's times say their zone: each a <time> with the full time in
	// UTC as its title, and the log's head says they are in UTC. They
	// were bare times of day ("14:02:07").
	contains(t, "log times", page, `<span class="log-zone" id="log-zone">Times in UTC</span>`)
	logTime := regexp.MustCompile(`<time class="ll-t" datetime="(\d{4}-\d\d-\d\dT[0-9:.]+Z)" title="\d{1,2} [A-Z][a-z]{2} \d{4}, (\d\d:\d\d:\d\d) UTC">(\d\d:\d\d:\d\d)</time>`)
	times := logTime.FindAllStringSubmatch(page, -1)
	if len(times) != 3 {
		t.Errorf("%d log lines with a labelled time, want 3", len(times))
	}
	for _, m := range times {
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil || at.Format("15:04:05") != m[3] || m[2] != m[3] {
			t.Errorf("log time %q: datetime %s (%v), title %s, shown %s", m[0], m[1], err, m[2], m[3])
		}
	}
	contains(t, "failed run", page, `id="cancel-form" hidden`) // shown again only by the script, never for an ended run
	cp := c.get("/runs/" + cancelled.ID).Body
	contains(t, "cancelled run", cp, `class="run-banner run-banner-cancelled"`, "Run cancelled", "cancelled by bob")
	contains(t, "cancelled run without cleanup", cp, `id="run-cleanup" hidden`)
	// The run page says what was done on the server, and while the
	// server cannot be reached, that the statement may still run.
	done := &jobs.Cleanup{Status: jobs.CleanupDone, Cancelled: []uint32{4312, 4313}, UpdatedAt: now}
	done.Summarize()
	if _, err := s.store.PutRunCleanup(ctx, cancelled.ID, done); err != nil {
		t.Fatal(err)
	}
	contains(t, "cleanup done", c.get("/runs/"+cancelled.ID).Body, `data-status="done"`,
		"On the server: cancelled 2 statements on the server (pid 4312, 4313).")
	pending := &jobs.Cleanup{Status: jobs.CleanupPending, Remaining: []uint32{77}, UpdatedAt: now}
	pending.Summarize()
	if _, err := s.store.PutRunCleanup(ctx, failed.ID, pending); err != nil {
		t.Fatal(err)
	}
	contains(t, "cleanup pending", c.get("/runs/"+failed.ID).Body, `data-status="pending"`,
		"1 statement may still be running on the server (pid 77)", "test the connection", "idle connections in under 30 s")

	// Cancelling needs the CSRF token; a queued run is cancelled at once.
	if r := c.post("/runs/"+queued.ID+"/cancel", url.Values{}); r.Status != http.StatusForbidden {
		t.Fatalf("cancel without CSRF: %d", r.Status)
	}
	qp := c.get("/runs/" + queued.ID).Body
	contains(t, "queued run", qp, `id="cancel-run"`, "Cancel run", `class="run-banner run-banner-queued" id="run-banner" role="alert" aria-labelledby="run-banner-title" hidden`)
	token := c.csrf("/runs/" + queued.ID)
	r := c.post("/runs/"+queued.ID+"/cancel", url.Values{auth.CSRFField: {token}})
	if r.Status != http.StatusSeeOther || r.Location != "/runs/"+queued.ID {
		t.Fatalf("cancel: %d %q", r.Status, r.Location)
	}
	if got, _ := s.App.GetRun(ctx, queued.ID); got.Status != jobs.Cancelled || got.Reason != "cancelled by alice-editor" {
		t.Fatalf("after cancel: %+v", got)
	}
	r = c.post("/runs/"+queued.ID+"/cancel", url.Values{auth.CSRFField: {token}})
	if r.Status != http.StatusSeeOther || r.Location != "/runs/"+queued.ID+"?cancel=ended" {
		t.Fatalf("cancel of an ended run: %d %q", r.Status, r.Location)
	}
	contains(t, "ended flash", c.get(r.Location).Body, "Nothing to cancel")
	if r := c.get("/runs/nope"); r.Status != http.StatusNotFound || !strings.Contains(r.Body, "Run not found") {
		t.Fatalf("unknown run: %d", r.Status)
	}

	// The job page lists its runs; the job list its last one.
	contains(t, "job page", c.get("/jobs/export").Body, failed.ID, cancelled.ID, `href="/runs?job=export"`)
	contains(t, "job list", c.get("/jobs").Body, `href="/jobs/export"`, "Run now: export", "SQL · sh")
	// A deleted job's runs stay, without links to the job.
	if err := s.App.DeleteJob(ctx, "export"); err != nil {
		t.Fatal(err)
	}
	gone := c.get("/runs/" + failed.ID).Body
	excludes(t, "run of a deleted job", gone, `href="/jobs/export"`, `id="rerun-form"`)
	contains(t, "runs of a deleted job", c.get("/runs?job=export").Body, failed.ID, `<option value="export" selected>`)
}

func TestJobsViewer(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	addConnection(t, s, "wh")
	job := jobs.Job{Name: "export", Connection: "wh", Steps: []jobs.Step{{SQL: "select 1"}}}
	if _, _, err := s.App.PutJob(ctx, job); err != nil {
		t.Fatal(err)
	}
	running := addRun(t, s, job, jobs.Running, "")
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Viewer].Token)
	for _, p := range []string{"/jobs", "/jobs/export", "/runs", "/runs/" + running.ID} {
		r := c.get(p)
		if r.Status != http.StatusOK {
			t.Errorf("viewer GET %s: %d", p, r.Status)
		}
		excludes(t, "viewer "+p, r.Body, "/jobs/new", "/edit", "/delete", "/run\"", "/cancel", "Run now", "Cancel run")
	}
	token := c.csrf("/jobs")
	for _, p := range []string{"/jobs/new", "/jobs/export/edit", "/jobs/export/delete"} {
		if r := c.get(p); r.Status != http.StatusForbidden {
			t.Errorf("viewer GET %s: %d", p, r.Status)
		}
	}
	for _, p := range []string{"/jobs", "/jobs/export/edit", "/jobs/export/delete", "/jobs/export/run", "/runs/" + running.ID + "/cancel"} {
		f := jobFields("other")
		f.Set(auth.CSRFField, token)
		f.Set("confirm", "export")
		r := c.post(p, f)
		if r.Status != http.StatusForbidden {
			t.Errorf("viewer POST %s: %d", p, r.Status)
		}
		contains(t, "viewer 403 page", r.Body, "viewer role", "jobs and runs")
	}
	if js, _ := s.App.ListJobs(ctx); len(js) != 1 || len(js[0].Steps) != 1 {
		t.Fatalf("viewer changed jobs: %+v", js)
	}
	if r, _ := s.App.GetRun(ctx, running.ID); r.Status != jobs.Running || r.CancelRequested {
		t.Fatalf("viewer cancelled the run: %+v", r)
	}
}

// TestJobFormEmptyStep: a step left empty in the form is one problem, at
// its SQL or program field, in the form's words; not a second one in the
// words of YAML ("give sql: ... or command: [...]") that the form has no
// place for.
func TestJobFormEmptyStep(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	addConnection(t, s, "wh")
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Editor].Token)
	token := c.csrf("/jobs/new")
	for name, tc := range map[string]struct {
		form url.Values
		want string
	}{
		"empty SQL": {url.Values{"steps[0].kind": {"sql"}, "steps[0].sql": {""}, "steps[0].name": {""}},
			`<a href="#f-steps-0-sql">Step 1 SQL: required: the SQL to run`},
		"empty program": {url.Values{"steps[0].kind": {"command"}, "steps[0].command": {""}, "steps[0].args": {"build"}},
			`<a href="#f-steps-0-command">Step 1 program: required: the program to run`},
		"second step empty": {url.Values{"steps[0].kind": {"sql"}, "steps[0].sql": {"select 1"},
			"steps[1].kind": {"sql"}, "steps[1].sql": {""}, "steps[1].name": {"refresh"}},
			`<a href="#f-steps-1-sql">Step 2 SQL: required: the SQL to run`},
	} {
		f := tc.form
		f.Set(auth.CSRFField, token)
		f.Set("mode", "form")
		f.Set("name", "nightly")
		f.Set("connection", "wh")
		r := c.post("/jobs", f)
		if r.Status != http.StatusUnprocessableEntity {
			t.Errorf("%s: status %d", name, r.Status)
			continue
		}
		contains(t, name, r.Body, "1 problem to fix before saving", tc.want)
		excludes(t, name, r.Body, "is empty", "command: [program")
	}
}
