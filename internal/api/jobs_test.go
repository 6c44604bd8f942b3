package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/client"
	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/remote"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// jobsServer is an API server with a job queue that may run sh, and a
// direct connection "db" to a real PostgreSQL.
func jobsServer(t *testing.T) *apitest.Server {
	t.Helper()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	srv := apitest.Start(t, apitest.Options{Queue: true, AllowCommands: []string{"sh"}})
	if _, err := srv.App.CreateConnection(bg, connection.Spec{Name: "db", Host: pg.Host, Port: pg.Port,
		Database: "postgres", User: pg.SuperUser, Password: secret.New(pg.SuperPassword),
		SSLMode: connection.SSLDisable}); err != nil {
		t.Fatal(err)
	}
	return srv
}

// waitRunState polls a run through the API until want holds (30 s at most).
func waitRunState(t *testing.T, c *remote.Client, id string, want func(*jobs.Run) bool) *jobs.Run {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := c.GetRun(bg, id)
		if err != nil {
			t.Fatal(err)
		}
		if want(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s did not reach the wanted state: %+v", id, r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestJobsCRUDAndApply(t *testing.T) {
	t.Parallel()
	srv := jobsServer(t)
	c := srv.Client(t, srv.AdminToken)
	sqlJob := func(name, sql string) jobs.Job {
		return jobs.Job{Name: name, Connection: "db", Steps: []jobs.Step{{SQL: sql}}}
	}

	t.Run("CRUD", func(t *testing.T) {
		v, err := c.CreateJob(bg, jobs.Job{Name: "crud", Connection: "db", Schedule: "0 3 * * *",
			Timeout: connection.Duration(2 * time.Hour), Steps: []jobs.Step{{SQL: "select 1"}}})
		if err != nil {
			t.Fatal(err)
		}
		if v.Name != "crud" || v.Timeout.Duration() != 2*time.Hour || v.Profile != jobs.DefaultProfile ||
			v.NextRunAt == nil || v.CreatedAt.IsZero() || v.LastRun != nil {
			t.Fatalf("created %+v", v)
		}
		if _, err := c.CreateJob(bg, sqlJob("crud", "select 2")); !errors.Is(err, app.ErrExists) {
			t.Fatalf("second create: %v", err)
		}
		got, err := c.GetJob(bg, "crud")
		if err != nil || got.Steps[0].SQL != "select 1" || got.Schedule != "0 3 * * *" {
			t.Fatalf("get: %+v, %v", got, err)
		}
		v, created, err := c.PutJob(bg, sqlJob("crud", "select 2"))
		if err != nil || created || v.Steps[0].SQL != "select 2" || v.Schedule != "" || v.Timeout.Duration() != jobs.DefaultTimeout {
			t.Fatalf("put (replace): %+v, created %v, %v", v, created, err)
		}
		if _, created, err := c.PutJob(bg, sqlJob("put-new", "select 3")); err != nil || !created {
			t.Fatalf("put (create): created %v, %v", created, err)
		}
		list, err := c.ListJobs(bg)
		if err != nil || len(list) < 2 {
			t.Fatalf("list: %v, %v", list, err)
		}
		// The URL names the job: a body naming another is refused.
		r := do(t, http.MethodPut, srv.URL+"/api/v1/jobs/crud", srv.AdminToken, "application/json",
			`{"name": "other", "connection": "db", "steps": [{"sql": "select 1"}]}`)
		if eb := r.errorBody(t); r.status != 400 || eb.Fields.Map()["name"] == "" {
			t.Fatalf("rename: %d %s", r.status, r.body)
		}
		r = do(t, http.MethodPost, srv.URL+"/api/v1/jobs", srv.AdminToken, "application/json",
			`{"name": "ro", "connection": "db", "steps": [{"sql": "select 1"}], "last_run": null}`)
		if eb := r.errorBody(t); r.status != 400 || eb.Code != api.CodeInvalidJSON || !strings.Contains(eb.Fields.Map()["last_run"], "read-only") {
			t.Fatalf("read-only field: %d %s", r.status, r.body)
		}
		r = do(t, http.MethodPost, srv.URL+"/api/v1/jobs", srv.AdminToken, "application/json",
			`{"name": "bad-timeout", "connection": "db", "timeout": "soon", "steps": [{"sql": "select 1"}]}`)
		if eb := r.errorBody(t); r.status != 400 || eb.Fields.Map()["timeout"] == "" {
			t.Fatalf("bad timeout: %d %s", r.status, r.body)
		}
		// Every problem at once, per field.
		_, err = c.CreateJob(bg, jobs.Job{Name: "Bad Name", Connection: "nowhere", Schedule: "every day",
			Steps: []jobs.Step{{SQL: "select 1", Command: []string{"true"}}}})
		wantFields(t, err, "name", "connection", "schedule", "steps[0]")
		_, err = c.CreateJob(bg, jobs.Job{Name: "noconn", Connection: "nowhere", Steps: []jobs.Step{{SQL: "select 1"}}})
		if ve := wantFields(t, err, "connection"); !strings.Contains(ve.Fields()["connection"], `no connection named "nowhere"`) {
			t.Fatalf("connection problem: %v", ve)
		}
		if err := c.DeleteJob(bg, "crud"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.GetJob(bg, "crud"); !errors.Is(err, app.ErrNotFound) {
			t.Fatalf("get deleted: %v", err)
		}
		if err := c.DeleteJob(bg, "crud"); !errors.Is(err, app.ErrNotFound) {
			t.Fatalf("delete twice: %v", err)
		}
	})

	t.Run("ApplyYAML", func(t *testing.T) {
		file := `jobs:
  - name: y-one
    connection: db
    schedule: "@hourly"
    steps:
      - sql: select 1
  - name: y-two
    connection: db
    timeout: 5m
    steps:
      - command: [sh, -c, "echo hi"]
`
		res, err := c.ApplyJobsFile(bg, []byte(file))
		if err != nil || fmt.Sprint(res) != "[{y-one created} {y-two created}]" {
			t.Fatalf("apply: %v, %v", res, err)
		}
		res, err = c.ApplyJobsFile(bg, []byte(file))
		if err != nil || fmt.Sprint(res) != "[{y-one unchanged} {y-two unchanged}]" {
			t.Fatalf("apply again: %v, %v", res, err)
		}
		res, err = c.ApplyJobsFile(bg, []byte(strings.Replace(file, "5m", "10m", 1)))
		if err != nil || fmt.Sprint(res) != "[{y-one unchanged} {y-two updated}]" {
			t.Fatalf("apply changed: %v, %v", res, err)
		}
		if j, err := c.GetJob(bg, "y-two"); err != nil || j.Timeout.Duration() != 10*time.Minute {
			t.Fatalf("applied job: %+v, %v", j, err)
		}

		// An invalid file changes nothing, and names every field.
		bad := `jobs:
  - name: y-three
    connection: db
    steps:
      - sql: select 3
  - name: y-bad
    connection: nowhere
    steps:
      - command: [""]
`
		_, err = c.ApplyJobsFile(bg, []byte(bad))
		wantFields(t, err, "jobs[1](y-bad).steps[0].command")
		_, err = c.ApplyJobsFile(bg, []byte(strings.Replace(bad, `[""]`, "[sh]", 1)))
		wantFields(t, err, "jobs[1](y-bad).connection")
		if _, err := c.GetJob(bg, "y-three"); !errors.Is(err, app.ErrNotFound) {
			t.Fatalf("an invalid file created a job: %v", err)
		}
		_, err = c.ApplyJobsFile(bg, []byte("jobs:\n  - name: [unclosed\n"))
		if ce := wantAPIError(t, err, 400, api.CodeInvalidYAML); !strings.Contains(ce.Message, "yaml") {
			t.Fatalf("syntax error message: %s", ce.Message)
		}
		_, err = c.ApplyJobsFile(bg, []byte("jobs:\n  - name: x\n    connection: db\n    stepz: []\n"))
		if ce := wantAPIError(t, err, 400, api.CodeInvalidYAML); !strings.Contains(ce.Message, "stepz") {
			t.Fatalf("unknown key message: %s", ce.Message)
		}
		r := do(t, http.MethodPost, srv.URL+"/api/v1/jobs/apply", srv.AdminToken, "text/plain", file)
		if eb := r.errorBody(t); r.status != 415 || !strings.Contains(eb.Message, "application/yaml") {
			t.Fatalf("text/plain: %d %s", r.status, r.body)
		}
	})

	t.Run("ApplyJSON", func(t *testing.T) {
		res, err := c.ApplyJobs(bg, []jobs.Job{sqlJob("j-one", "select 1"), sqlJob("j-two", "select 2")})
		if err != nil || fmt.Sprint(res) != "[{j-one created} {j-two created}]" {
			t.Fatalf("apply: %v, %v", res, err)
		}
		_, err = c.ApplyJobs(bg, []jobs.Job{sqlJob("j-three", "select 3"), sqlJob("j-three", "select 4"),
			{Name: "j-four", Connection: "db"}})
		wantFields(t, err, "jobs[1](j-three).name")
		_, err = c.ApplyJobs(bg, []jobs.Job{sqlJob("j-three", "select 3"), {Name: "j-four", Connection: "db"}})
		wantFields(t, err, "jobs[1](j-four).steps")
		if _, err := c.GetJob(bg, "j-three"); !errors.Is(err, app.ErrNotFound) {
			t.Fatalf("an invalid request created a job: %v", err)
		}
		r := do(t, http.MethodPost, srv.URL+"/api/v1/jobs/apply", srv.AdminToken, "application/json", `{"jobs": []}`)
		if eb := r.errorBody(t); r.status != 400 || eb.Fields.Map()["jobs"] == "" {
			t.Fatalf("no jobs: %d %s", r.status, r.body)
		}
		r = do(t, http.MethodPost, srv.URL+"/api/v1/jobs/apply", srv.AdminToken, "application/json",
			`{"jobs": [{"name": "j-five", "connection": "db", "steps": [{"sql": "select 1", "shell": true}]}]}`)
		if eb := r.errorBody(t); r.status != 400 || eb.Code != api.CodeInvalidJSON || eb.Fields.Map()["jobs[0](j-five).steps[0].shell"] == "" {
			t.Fatalf("unknown field: %d %s", r.status, r.body)
		}
	})
}

func TestRunsThroughTheAPI(t *testing.T) {
	t.Parallel()
	srv := jobsServer(t)
	admin := srv.Client(t, srv.AdminToken)
	editor := srv.Client(t, srv.Token(t, "ci-bot", auth.Editor).Token)
	viewer := srv.Client(t, srv.Token(t, "dashboard", auth.Viewer).Token)
	if _, err := admin.ApplyJobs(bg, []jobs.Job{
		{Name: "lines", Connection: "db", Steps: []jobs.Step{
			{SQL: "select 1"},
			{Command: []string{"sh", "-c", `i=1; while [ $i -le 25 ]; do echo "line $i"; i=$((i+1)); done`}},
		}},
		{Name: "live", Connection: "db", Steps: []jobs.Step{
			{Command: []string{"sh", "-c", "echo first; sleep 1.5; echo second"}},
		}},
		{Name: "slow", Connection: "db", Steps: []jobs.Step{
			{Command: []string{"sh", "-c", "echo started; sleep 60"}},
		}},
	}); err != nil {
		t.Fatal(err)
	}

	t.Run("QueuedWorkedAndLogPaged", func(t *testing.T) {
		run, err := editor.RunJob(bg, "lines", jobs.Manual)
		if err != nil {
			t.Fatal(err)
		}
		if run.Status != jobs.Queued || run.Trigger != jobs.API || run.JobName != "lines" || len(run.Steps) != 2 {
			t.Fatalf("queued run %+v", run)
		}
		var got []jobs.LogLine
		end, err := editor.FollowRun(bg, run.ID, func(l jobs.LogLine) { got = append(got, l) })
		if err != nil {
			t.Fatal(err)
		}
		if end.Status != jobs.Succeeded || end.Worker != srv.Queue.Worker() || end.Steps[1].ExitCode == nil {
			t.Fatalf("ended run %+v", end)
		}
		var texts []string
		for i, l := range got {
			if i > 0 && l.Seq != got[i-1].Seq+1 {
				t.Fatalf("log lines out of order or missing: %d after %d", l.Seq, got[i-1].Seq)
			}
			texts = append(texts, l.Text)
		}
		all := strings.Join(texts, "\n")
		for _, want := range []string{"line 1\n", "line 25"} {
			if !strings.Contains(all, want) {
				t.Fatalf("followed log lacks %q:\n%s", want, all)
			}
		}

		// Pages of 10 give the same lines.
		var paged []jobs.LogLine
		var after int64
		for {
			r := do(t, http.MethodGet, fmt.Sprintf("%s/api/v1/runs/%s/log?after=%d&limit=10", srv.URL, run.ID, after), srv.AdminToken, "", "")
			var page api.RunLog
			decode(t, r, &page)
			paged = append(paged, page.Lines...)
			if len(page.Lines) > 0 && page.NextAfter != page.Lines[len(page.Lines)-1].Seq {
				t.Fatalf("next_after %d, last seq %d", page.NextAfter, page.Lines[len(page.Lines)-1].Seq)
			}
			if len(page.Lines) == 0 && page.NextAfter != after {
				t.Fatalf("an empty page moved next_after from %d to %d", after, page.NextAfter)
			}
			after = page.NextAfter
			if len(page.Lines) < 10 {
				break
			}
		}
		if len(paged) != len(got) || paged[len(paged)-1].Seq != got[len(got)-1].Seq {
			t.Fatalf("paged %d lines, followed %d", len(paged), len(got))
		}
		lines, err := viewer.RunLog(bg, run.ID, 5, 3)
		if err != nil || len(lines) != 3 || lines[0].Seq != 6 {
			t.Fatalf("client RunLog: %v, %v", lines, err)
		}
		for _, q := range []string{"after=-1", "limit=0", "limit=100000", "after=x"} {
			r := do(t, http.MethodGet, srv.URL+"/api/v1/runs/"+run.ID+"/log?"+q, srv.AdminToken, "", "")
			if r.status != 400 {
				t.Errorf("log?%s: %d %s", q, r.status, r.body)
			}
		}

		runs, err := viewer.ListRuns(bg, store.RunFilter{Job: "lines", Statuses: []jobs.Status{jobs.Succeeded}})
		if err != nil || len(runs) != 1 || runs[0].ID != run.ID {
			t.Fatalf("list runs: %v, %v", runs, err)
		}
		if runs, err := viewer.ListRuns(bg, store.RunFilter{Job: "lines", Statuses: []jobs.Status{jobs.Failed, jobs.Queued}}); err != nil || len(runs) != 0 {
			t.Fatalf("list failed runs: %v, %v", runs, err)
		}
		r := do(t, http.MethodGet, srv.URL+"/api/v1/runs?status=done", srv.AdminToken, "", "")
		if eb := r.errorBody(t); r.status != 400 || !strings.Contains(eb.Fields.Map()["status"], "queued, running") {
			t.Fatalf("bad status: %d %s", r.status, r.body)
		}
		if _, err := viewer.GetRun(bg, "nosuchrun"); !errors.Is(err, app.ErrNotFound) {
			t.Fatalf("missing run: %v", err)
		}
		if _, err := viewer.RunJob(bg, "nosuchjob", jobs.API); !errors.Is(err, client.ErrForbidden) {
			t.Fatalf("viewer runs a job: %v", err)
		}
		if _, err := editor.RunJob(bg, "nosuchjob", jobs.API); !errors.Is(err, app.ErrNotFound) {
			t.Fatalf("missing job: %v", err)
		}
	})

	t.Run("EventStreamIsLive", func(t *testing.T) {
		run, err := admin.RunJob(bg, "live", jobs.API)
		if err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		seen := map[string]time.Time{}
		end, err := viewer.FollowRun(bg, run.ID, func(l jobs.LogLine) {
			mu.Lock()
			seen[l.Text] = time.Now()
			mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		if end.Status != jobs.Succeeded || end.EndedAt == nil {
			t.Fatalf("ended run %+v", end)
		}
		first, ok1 := seen["first"]
		_, ok2 := seen["second"]
		if !ok1 || !ok2 {
			t.Fatalf("lines seen: %v", seen)
		}
		// "first" arrived while the step still slept, not at the end.
		if lead := end.EndedAt.Sub(first); lead < 700*time.Millisecond {
			t.Fatalf("the first line came %v before the run ended: the stream is not live", lead)
		}

		// The raw stream of the ended run: run, log lines with ids, end.
		r := do(t, http.MethodGet, srv.URL+"/api/v1/runs/"+run.ID+"/events", srv.AdminToken, "", "")
		if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/event-stream") {
			t.Fatalf("events: %d %s", r.status, r.header.Get("Content-Type"))
		}
		iRun, iLog, iEnd := strings.Index(r.body, "event: run\n"), strings.Index(r.body, "event: log\nid: "), strings.Index(r.body, "event: end\n")
		if iRun < 0 || iLog < iRun || iEnd < iLog || !strings.Contains(r.body, `"text":"second"`) {
			t.Fatalf("event stream:\n%s", r.body)
		}
		// Resuming after the last line sends only the end.
		r = do(t, http.MethodGet, srv.URL+"/api/v1/runs/"+run.ID+"/events", srv.AdminToken, "", "",
			func(req *http.Request) { req.Header.Set("Last-Event-ID", "1000") })
		if strings.Contains(r.body, "event: log") || !strings.Contains(r.body, "event: end") {
			t.Fatalf("resumed stream:\n%s", r.body)
		}
		r = do(t, http.MethodGet, srv.URL+"/api/v1/runs/nosuchrun/events", srv.AdminToken, "", "")
		if eb := r.errorBody(t); r.status != 404 || eb.Code != api.CodeNotFound {
			t.Fatalf("events of a missing run: %d %s", r.status, r.body)
		}
		if _, err := viewer.FollowRun(bg, "nosuchrun", nil); !errors.Is(err, app.ErrNotFound) {
			t.Fatalf("follow a missing run: %v", err)
		}
	})

	t.Run("CancelByPrincipal", func(t *testing.T) {
		run, err := editor.RunJob(bg, "slow", jobs.API)
		if err != nil {
			t.Fatal(err)
		}
		// Follow from the start while it is cancelled.
		type result struct {
			run   *jobs.Run
			lines []string
			err   error
		}
		followed := make(chan result, 1)
		go func() {
			var res result
			res.run, res.err = viewer.FollowRun(bg, run.ID, func(l jobs.LogLine) { res.lines = append(res.lines, l.Text) })
			followed <- res
		}()
		waitRunState(t, viewer, run.ID, func(r *jobs.Run) bool {
			lines, _ := viewer.RunLog(bg, run.ID, 0, 0)
			for _, l := range lines {
				if l.Text == "started" {
					return true
				}
			}
			return false
		})
		if _, err := viewer.CancelRun(bg, run.ID, "dashboard"); !errors.Is(err, client.ErrForbidden) {
			t.Fatalf("viewer cancels: %v", err)
		}
		cancelled, err := editor.CancelRun(bg, run.ID, "ignored")
		if err != nil {
			t.Fatal(err)
		}
		if !cancelled.CancelRequested || cancelled.Reason != "cancelled by ci-bot" {
			t.Fatalf("cancel answer %+v", cancelled)
		}
		start := time.Now()
		var res result
		select {
		case res = <-followed:
		case <-time.After(20 * time.Second):
			t.Fatal("the event stream did not end after the cancel")
		}
		if res.err != nil {
			t.Fatal(res.err)
		}
		if res.run.Status != jobs.Cancelled || res.run.Reason != "cancelled by ci-bot" {
			t.Fatalf("cancelled run %+v", res.run)
		}
		t.Logf("run cancelled %v after the request; followed lines %q", time.Since(start), res.lines)
		_, err = editor.CancelRun(bg, run.ID, "")
		wantAPIError(t, err, 422, api.CodeInvalid)
	})

	t.Run("ViewerReadsButDoesNotChange", func(t *testing.T) {
		if _, err := viewer.ListJobs(bg); err != nil {
			t.Fatal(err)
		}
		if _, err := viewer.GetJob(bg, "lines"); err != nil {
			t.Fatal(err)
		}
		if runs, err := viewer.ListRuns(bg, store.RunFilter{}); err != nil || len(runs) == 0 {
			t.Fatalf("viewer lists runs: %v, %v", runs, err)
		}
		checks := map[string]error{}
		_, checks["create"] = viewer.CreateJob(bg, jobs.Job{Name: "v", Connection: "db", Steps: []jobs.Step{{SQL: "select 1"}}})
		_, checks["apply"] = viewer.ApplyJobs(bg, []jobs.Job{{Name: "v", Connection: "db", Steps: []jobs.Step{{SQL: "select 1"}}}})
		checks["delete"] = viewer.DeleteJob(bg, "lines")
		_, checks["run"] = viewer.RunJob(bg, "lines", jobs.API)
		for what, err := range checks {
			ce := wantAPIError(t, err, 403, api.CodeForbidden)
			if !strings.Contains(ce.Message, "viewer") || !strings.Contains(ce.Message, "editor") {
				t.Errorf("%s: forbidden message %q", what, ce.Message)
			}
		}
	})
}

// TestRunWithoutQueue: a server without a job queue says so (503), it
// does not fail with an internal error.
func TestRunWithoutQueue(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	c := srv.Client(t, srv.AdminToken)
	if _, err := srv.App.CreateConnection(bg, connection.Spec{Name: "db", Host: "127.0.0.1", Port: 1,
		Database: "d", User: "u", SSLMode: connection.SSLDisable}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateJob(bg, jobs.Job{Name: "j", Connection: "db", Steps: []jobs.Step{{SQL: "select 1"}}}); err != nil {
		t.Fatal(err)
	}
	_, err := c.RunJob(bg, "j", jobs.API)
	if ce := wantAPIError(t, err, 503, api.CodeUnavailable); !strings.Contains(ce.Message, "no job queue") {
		t.Fatalf("message %q", ce.Message)
	}
}

// TestFollowRunStopsWithContext: a follower that gives up returns at once,
// and the server's stream ends with it.
func TestFollowRunStopsWithContext(t *testing.T) {
	t.Parallel()
	srv := jobsServer(t)
	c := srv.Client(t, srv.AdminToken)
	if _, err := c.CreateJob(bg, jobs.Job{Name: "sleepy", Connection: "db", Steps: []jobs.Step{{SQL: "select pg_sleep(30)"}}}); err != nil {
		t.Fatal(err)
	}
	run, err := c.RunJob(bg, "sleepy", jobs.API)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(bg, time.Second)
	defer cancel()
	start := time.Now()
	if _, err := c.FollowRun(ctx, run.ID, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("follow: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("follow returned %v after start, want about 1s", d)
	}
	// The server's handler returned (its access log line is written then).
	for deadline := time.Now().Add(3 * time.Second); !strings.Contains(srv.Logs(), `"route":"GET /api/v1/runs/{id}/events"`); {
		if time.Now().After(deadline) {
			t.Fatal("the event stream handler still runs after its client went away")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := c.CancelRun(bg, run.ID, ""); err != nil {
		t.Fatal(err)
	}
	waitRunState(t, c, run.ID, func(r *jobs.Run) bool { return r.Status.Terminal() })
}

// decode checks a 200 JSON response and decodes it into v.
func decode(t *testing.T, r response, v any) {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if err := json.Unmarshal([]byte(r.body), v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
}
