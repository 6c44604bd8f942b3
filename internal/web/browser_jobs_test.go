package web_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// waitFor polls a JavaScript expression until it is truthy and returns its
// value as a string; it fails the test after timeout.
func (b *tab) waitFor(what, js string, timeout time.Duration) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, timeout+5*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Poll[any](js, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		b.t.Fatalf("wait for %s: %v\npage: %s", what, err, b.eval(`document.querySelector("main").innerText.slice(0, 3000)`))
	}
	switch v := v.(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return "true"
}

func (b *tab) click(sel string) {
	b.t.Helper()
	b.do("click "+sel, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

// exportScript is the command step of the job created in the browser: it
// writes lines over a few seconds, one of them to stderr.
const exportScript = `echo "exporting daily_sales in 6 batches"; for i in 1 2 3 4 5 6; do echo "batch $i/6: 2140 rows written to s3://acme-exports/daily_sales/part-$i.parquet"; sleep 0.3; done; echo "warning: 3 rows with a NULL region were written as 'unknown'" >&2; echo "export complete: 12840 rows"`

// testJobsInBrowser creates a job through the form, runs it and follows
// its run page live, looks at a failed run and cancels a running one. The
// runs go over a connection to the real PostgreSQL pg.
func testJobsInBrowser(t *testing.T, s *stack, browser context.Context, pg *testenv.Postgres) {
	ctx := context.Background()
	if _, err := s.App.CreateConnection(ctx, connection.Spec{Name: "warehouse-pg", Host: pg.Host, Port: pg.Port,
		Database: "postgres", User: pg.SuperUser, Password: secret.New(pg.SuperPassword), SSLMode: connection.SSLDisable}); err != nil {
		t.Fatal(err)
	}
	admin := newTab(t, browser, s.URL)
	admin.open("/jobs")
	admin.login(s.Tokens[auth.Admin].Token)
	if loc := admin.location(); loc != "/jobs" {
		t.Fatalf("after login: location %q", loc)
	}

	must(t, t.Run("CreateJob", func(t *testing.T) {
		admin.t = t
		if got := admin.text(".empty h2"); got != "No jobs yet" {
			t.Fatalf("empty state = %q", got)
		}
		admin.submit("#new-job")
		if loc := admin.location(); loc != "/jobs/new" {
			t.Fatalf("new job: location %q", loc)
		}
		admin.eval(`window.samePage = "form"`)
		admin.fill("#f-name", "nightly-sales", "#f-schedule", "0 3 * * *", "#f-timeout", "20m")
		admin.selectOption("#f-connection", "warehouse-pg")
		admin.fill("#f-steps-0-sql", "create table if not exists daily_sales as select current_date as day, 'emea' as region, 12840 as orders")
		// Steps are added, moved and removed in the page.
		admin.click("#add-command")
		admin.fill("#f-steps-1-command", "sh", "#f-steps-1-args", "-c\n"+exportScript)
		admin.click("#add-sql")
		admin.fill("#f-steps-2-sql", "analyze daily_sales")
		admin.click(`button[value="up-2"]`)
		for sel, want := range map[string]string{"#f-steps-1-sql": "analyze daily_sales", "#f-steps-2-command": "sh"} {
			if got := admin.value(sel); got != want {
				t.Fatalf("after moving step 3 up: %s = %q, want %q", sel, got, want)
			}
		}
		kinds := admin.eval(`[0, 1, 2].map(i => document.querySelector('[name="steps[' + i + '].kind"]:checked').value).join(",")`)
		if kinds != "sql,sql,command" {
			t.Fatalf("step kinds after the move = %q", kinds)
		}
		admin.click(`button[value="down-1"]`)
		admin.eval(`document.querySelectorAll(".moved").forEach(e => e.classList.remove("moved")); ""`)
		admin.screenshot("job-form")
		admin.click(`button[value="remove-2"]`)
		if n := admin.eval(`String(document.querySelectorAll("#step-list > li").length)`); n != "2" {
			t.Fatalf("%s steps after removing one", n)
		}
		if admin.eval(`window.samePage || ""`) != "form" {
			t.Fatal("the step buttons reloaded the page")
		}
		// To YAML and back: the server converts, nothing is saved.
		admin.submit("#mode-yaml")
		if y := admin.value("#f-yaml"); !strings.Contains(y, "name: nightly-sales") || !strings.Contains(y, "batch $i/6") ||
			!strings.Contains(y, "0 3 * * *") {
			t.Fatalf("YAML of the form:\n%s", y)
		}
		admin.submit("#mode-form")
		if got := admin.value("#f-steps-1-command"); got != "sh" {
			t.Fatalf("after YAML and back: step 2 program = %q", got)
		}
		if got := admin.value("#f-timeout"); got != "20m" {
			t.Fatalf("after YAML and back: timeout = %q", got)
		}
		admin.submit("#save")
		if loc := admin.location(); loc != "/jobs/nightly-sales?created=1" {
			t.Fatalf("after save: location %q\n%s", loc, admin.text("main"))
		}
		j, err := s.App.GetJob(ctx, "nightly-sales")
		if err != nil {
			t.Fatal(err)
		}
		if len(j.Steps) != 2 || !strings.HasPrefix(j.Steps[0].SQL, "create table") ||
			len(j.Steps[1].Command) != 3 || j.Steps[1].Command[0] != "sh" || j.Steps[1].Command[2] != exportScript {
			t.Fatalf("saved job %+v", j.Job)
		}
	}))

	var runID string
	must(t, t.Run("RunFollowsLive", func(t *testing.T) {
		admin.t = t
		admin.submit("#run-now")
		loc := admin.location()
		if !strings.HasPrefix(loc, "/runs/") {
			t.Fatalf("after Run now: location %q", loc)
		}
		runID = strings.TrimPrefix(loc, "/runs/")
		admin.eval(`window.samePage = "run"`)
		// Lines arrive while the run is running...
		first, _ := strconv.Atoi(admin.waitFor("a live log of a running run", `(() => {
			const n = document.querySelectorAll("#log .ll").length;
			return document.querySelector("#live-state").dataset.state === "live" &&
				document.querySelector("#run-status .status-running") && n > 0 && n;
		})()`, 15*time.Second))
		// ... and the page follows them until the run succeeds.
		admin.waitFor("the run to succeed", `document.querySelector("#run-status .status-succeeded") !== null &&
			document.querySelector("#live-state").dataset.state === "ended"`, 30*time.Second)
		if res := admin.eval(`performance.getEntriesByType("resource").map(e => e.name).join(" ")`); !strings.Contains(res, "/api/v1/runs/"+runID+"/events?after=") ||
			strings.Contains(res, "/log?") {
			t.Errorf("the page did not follow the event stream: it loaded %s", res)
		}
		if admin.eval(`window.samePage || ""`) != "run" {
			t.Fatal("the run page reloaded instead of following live")
		}
		log := admin.text("#log")
		for _, want := range []string{"opening connection warehouse-pg", "SELECT 1", "batch 6/6", "export complete: 12840 rows", "all steps succeeded"} {
			if !strings.Contains(log, want) {
				t.Errorf("log lacks %q:\n%s", want, log)
			}
		}
		last, _ := strconv.Atoi(admin.eval(`String(document.querySelectorAll("#log .ll").length)`))
		if last <= first {
			t.Errorf("no lines arrived live: %d at first, %d at the end", first, last)
		}
		if got := admin.text("#log .ll-stderr .ll-x"); !strings.Contains(got, "NULL region") {
			t.Errorf("stderr line = %q", got)
		}
		if got := admin.eval(`document.querySelector("#log .ll-stderr .ll-s").textContent`); got != "2" {
			t.Errorf("stderr line's step = %q, want 2", got)
		}
		// Lines that came live show their time as the server renders it:
		// a <time> in UTC, its full time (with the zone) as its title.
		if got := admin.eval(`(() => {
			const bad = [...document.querySelectorAll("#log .ll-t")].filter(e => {
				const d = new Date(e.dateTime);
				return e.tagName !== "TIME" || isNaN(d) || !/Z$/.test(e.dateTime) ||
					e.textContent !== d.toISOString().slice(11, 19) || !/^\d{1,2} [A-Z][a-z]{2} \d{4}, \d\d:\d\d:\d\d UTC$/.test(e.title);
			});
			return bad.map(e => e.outerHTML).join("\n");
		})()`); got != "" {
			t.Errorf("log times without their zone:\n%s", got)
		}
		if got := admin.text("#log-zone"); got != "Times in UTC" {
			t.Errorf("log zone label = %q", got)
		}
		if got := admin.text("#log-count"); got != strconv.Itoa(last)+" lines" {
			t.Errorf("line count = %q, want %d lines", got, last)
		}
		if n := admin.eval(`String(document.querySelectorAll("#run-steps .status-succeeded").length)`); n != "2" {
			t.Errorf("%s steps shown as succeeded", n)
		}
		if got := admin.text(`#run-steps tr[data-step="1"] [data-cell="exit"]`); got != "0" {
			t.Errorf("exit code of step 2 = %q", got)
		}
		if admin.eval(`String(document.querySelector("#run-banner").offsetParent === null && document.querySelector("#cancel-form").offsetParent === null && document.querySelector("#rerun-form").offsetParent !== null)`) != "true" {
			t.Error("after success: banner or cancel shown, or Run again hidden")
		}
		if d := admin.text(`[data-fact="duration"]`); !strings.HasSuffix(d, " s") {
			t.Errorf("duration = %q", d)
		}
		admin.screenshot("run-live")
		if r, err := s.App.GetRun(ctx, runID); err != nil || r.Status != jobs.Succeeded {
			t.Fatalf("run %+v, %v", r, err)
		}
	}))

	t.Run("FailedRunShowsReason", func(t *testing.T) {
		admin.t = t
		if _, _, err := s.App.PutJob(ctx, jobs.Job{Name: "hourly-rollup", Connection: "warehouse-pg", Schedule: "15 * * * *",
			Steps: []jobs.Step{
				{SQL: "insert into daily_sales values (current_date, 'apac', 9120)"},
				{SQL: "insert into daily_sales select current_date, region, count(*) from staging.orders group by region"},
				{Command: []string{"sh", "-c", "echo refreshed"}},
			}}); err != nil {
			t.Fatal(err)
		}
		r, err := s.App.RunJob(ctx, "hourly-rollup", jobs.API)
		if err != nil {
			t.Fatal(err)
		}
		admin.open("/runs/" + r.ID)
		admin.waitFor("the failure banner", `document.querySelector("#run-banner.run-banner-failed:not([hidden])") !== null &&
			document.querySelector("#live-state").dataset.state === "ended"`, 30*time.Second)
		if got := admin.text("#run-banner-title"); got != "Run failed at step 2" {
			t.Errorf("banner title = %q", got)
		}
		if got := admin.text("#run-reason"); !strings.Contains(got, `relation "staging.orders" does not exist`) || !strings.Contains(got, "step 2") {
			t.Errorf("reason = %q", got)
		}
		if !admin.has(`#run-steps tr[data-step="2"] .status-skipped`) || !admin.has(`#run-steps tr[data-step="1"] .status-failed`) {
			t.Error("steps: step 2 not failed or step 3 not skipped")
		}
		admin.screenshot("run-failed")
		admin.screenshotNarrow("run-failed-narrow")
	})

	t.Run("CancelFromPage", func(t *testing.T) {
		admin.t = t
		// Without the event stream (an old server, a proxy that refuses
		// it), the page polls the log and the run instead.
		block := func(patterns ...string) chromedp.Action[chromedp.Void] {
			return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				p := network.SetBlockedURLsParams{}
				for _, u := range patterns {
					p.URLPatterns = append(p.URLPatterns, &network.BlockPattern{URLPattern: u, Block: true})
				}
				_, err := cdp.Call(ctx, tg, network.SetBlockedURLs, p)
				return err
			})
		}
		admin.do("block the event stream", block("*://*:*/api/v1/runs/*/events*"))
		defer admin.do("unblock", block())
		// The first step prints lines until the test has seen them arrive
		// while scrolled up (a stop file), however slow the machine is.
		stopFile := filepath.Join(t.TempDir(), "stop")
		if _, _, err := s.App.PutJob(ctx, jobs.Job{Name: "backfill-2023", Connection: "warehouse-pg",
			Steps: []jobs.Step{
				{Command: []string{"sh", "-c", `i=0; while [ ! -e "$1" ] && [ $i -lt 3000 ]; do i=$((i+1)); echo "copying partition 2023-$i"; sleep 0.04; done`, "sh", stopFile}},
				{Command: []string{"sleep", "30"}},
			}}); err != nil {
			t.Fatal(err)
		}
		admin.open("/jobs/backfill-2023")
		admin.submit("#run-now")
		id := strings.TrimPrefix(admin.location(), "/runs/")
		// The log follows new lines until the user scrolls up; then they
		// pile up below and "Jump to latest" brings them back.
		admin.waitFor("a log taller than its panel, scrolled to the end", `(() => {
			const log = document.querySelector("#log");
			return document.querySelector("#live-state").dataset.state === "live" && log.scrollHeight > log.clientHeight + 100 &&
				log.scrollHeight - log.scrollTop - log.clientHeight < 30;
		})()`, 15*time.Second)
		if res := admin.eval(`performance.getEntriesByType("resource").map(e => e.name).join(" ")`); !strings.Contains(res, "/api/v1/runs/"+id+"/log?") {
			t.Errorf("the page did not poll the log without the event stream: it loaded %s", res)
		}
		admin.eval(`(() => { const log = document.querySelector("#log"); window.linesBefore = log.querySelectorAll(".ll").length; log.scrollTop = 0; return "" })()`)
		admin.waitFor("lines arriving while scrolled up", `(() => {
			const log = document.querySelector("#log");
			return log.querySelectorAll(".ll").length > window.linesBefore + 5 && !document.querySelector("#log-jump").hidden;
		})()`, 10*time.Second)
		if got := admin.eval(`String(document.querySelector("#log").scrollTop) + " " + document.querySelector("#log-follow").checked`); got != "0 false" {
			t.Errorf("scrolled-up log: scrollTop and follow = %q, want 0 false", got)
		}
		admin.click("#log-jump")
		admin.waitFor("the log back at its end", `(() => { const log = document.querySelector("#log");
			return log.scrollHeight - log.scrollTop - log.clientHeight < 30 && document.querySelector("#log-follow").checked })()`, 5*time.Second)
		if err := os.WriteFile(stopFile, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		admin.waitFor("the sleep step to be running", `document.querySelector('#run-steps tr[data-step="1"] .status-running') !== null`, 15*time.Second)
		start := time.Now()
		admin.submit("#cancel-run")
		admin.waitFor("the run to be cancelled", `document.querySelector("#run-status .status-cancelled") !== null &&
			document.querySelector("#run-banner.run-banner-cancelled:not([hidden])") !== null`, 15*time.Second)
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("cancel took %s", took)
		}
		if got := admin.text("#run-reason"); got != "cancelled by alice-admin" {
			t.Errorf("reason = %q", got)
		}
		if admin.eval(`String(document.querySelector("#cancel-form").offsetParent === null)`) != "true" {
			t.Error("cancel button still shown")
		}
		if r, err := s.App.GetRun(ctx, id); err != nil || r.Status != jobs.Cancelled {
			t.Fatalf("run %+v, %v", r, err)
		}
	})

	t.Run("Lists", func(t *testing.T) {
		admin.t = t
		admin.open("/jobs")
		if n := admin.eval(`String(document.querySelectorAll(".jobs-table tbody tr").length)`); n != "3" {
			t.Fatalf("%s jobs listed", n)
		}
		for sel, want := range map[string]string{
			`.jobs-table tbody tr:nth-child(1)`: "Cancelled",
			`.jobs-table tbody tr:nth-child(2)`: "Failed",
			`.jobs-table tbody tr:nth-child(3)`: "Succeeded",
		} {
			if got := admin.text(sel); !strings.Contains(got, want) {
				t.Errorf("%s = %q, want it to contain %q", sel, got, want)
			}
		}
		admin.screenshot("jobs")
		admin.open("/runs")
		// The filter applies when it changes.
		run(admin, "filter by status", chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Evaluate[bool](
			`(() => { const el = document.querySelector("#filter-status"); el.value = "failed"; el.dispatchEvent(new Event("change", {bubbles: true})); return true })()`)))
		if loc, n := admin.location(), admin.eval(`String(document.querySelectorAll(".runs-table tbody tr").length)`); loc != "/runs?job=&status=failed" || n != "1" {
			t.Errorf("after filtering: location %q, %s runs", loc, n)
		}
		admin.open("/runs")
		admin.screenshot("runs")
		admin.open("/jobs/nightly-sales")
		admin.screenshot("job")
	})
}
