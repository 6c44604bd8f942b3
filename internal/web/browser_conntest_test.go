package web_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// screenshotElement saves a PNG of one element (with its margins) under
// docs/screenshots when PGRELAY_SCREENSHOTS=1.
func (b *tab) screenshotElement(name, sel string) {
	b.t.Helper()
	if os.Getenv(screenshotsEnv) != "1" {
		return
	}
	png := run(b, "screenshot "+name, chromedp.ScreenshotScale(chromedp.CSS(sel), 2))
	if err := os.WriteFile(filepath.Join("..", "..", "docs", "screenshots", name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("saved docs/screenshots/%s.png", name)
}

// stepState is a step's status in the test panel, "" when it is not shown.
func stepState(panel, step string) string {
	return `((document.querySelector(` + "`" + panel + ` [data-step="` + step + `"]` + "`" + `) || {}).dataset || {}).status || ""`
}

// testConnectionTestsInBrowser clicks Test connection on the list, on a
// connection's page (by keyboard) and on the edit form, watches the steps
// arrive while the test runs, and checks a database's permissions, against
// the real PostgreSQL pg.
func testConnectionTestsInBrowser(t *testing.T, s *stack, browser context.Context, pg *testenv.Postgres) {
	ctx := context.Background()
	pg.CreateRole(t, "dbt", "dbt-pw")
	pg.CreateDatabase(t, "analytics", "dbt")
	pg.CreateRole(t, "reporting", "reporting-pw")
	create := func(spec connection.Spec) {
		t.Helper()
		spec.Host, spec.Port, spec.Database, spec.SSLMode = pg.Host, pg.Port, "analytics", connection.SSLDisable
		if _, err := s.App.CreateConnection(ctx, spec); err != nil {
			t.Fatal(err)
		}
	}
	create(connection.Spec{Name: "analytics-pg", User: "dbt", Password: secret.New("dbt-pw"), Schema: "analytics"})
	create(connection.Spec{Name: "finance", User: "dbt", Password: secret.New("an-old-password")})
	create(connection.Spec{Name: "reporting", User: "reporting", Password: secret.New("reporting-pw"), Schema: "reporting"})
	// Behind a frozen proxy the login hangs until the step's deadline: the
	// steps before it must show while the test still runs.
	proxy := testenv.StartFaultProxy(t, pg.Addr())
	proxy.Freeze()
	slow := connection.Spec{Name: "slow", Host: proxy.Host(), Port: proxy.Port(), Database: "analytics", User: "dbt",
		Password: secret.New("dbt-pw"), SSLMode: connection.SSLDisable}
	if _, err := s.App.CreateConnection(ctx, slow); err != nil {
		t.Fatal(err)
	}

	admin := newTab(t, browser, s.URL)
	admin.open("/connections")
	admin.login(s.Tokens[auth.Editor].Token)

	must(t, t.Run("TestFromList", func(t *testing.T) {
		admin.t = t
		admin.open("/connections")
		admin.click(`form[data-test="analytics-pg"] button`)
		admin.waitFor("the test to pass", `document.querySelector("#test-panel-analytics-pg.test-passed") !== null`, 15*time.Second)
		steps := admin.eval(`[...document.querySelectorAll("#test-panel-analytics-pg .tstep")].map(li => li.dataset.step + ":" + li.dataset.status).join(" ")`)
		if steps != "resolve:ok tcp:ok tls:skipped postgres_auth:ok database:ok query:ok" {
			t.Fatalf("steps = %q", steps)
		}
		if got := admin.text("#test-panel-analytics-pg .test-summary"); got != strings.TrimSpace(got) || !strings.HasPrefix(got, "All 5 steps passed in ") {
			t.Fatalf("summary = %q", got)
		}
		if got := admin.text("#test-panel-analytics-pg .test-facts"); !strings.Contains(got, "user dbt") || !strings.Contains(got, "PostgreSQL 15") {
			t.Fatalf("facts = %q", got)
		}
		// A failing one opens under its own row.
		admin.click(`form[data-test="finance"] button`)
		admin.waitFor("the test to fail", `document.querySelector("#test-panel-finance.test-failed") !== null`, 15*time.Second)
		if got := admin.text(`#test-panel-finance .tstep-failed`); !strings.Contains(got, "PostgreSQL login") ||
			!strings.Contains(got, "28P01") || !strings.Contains(strings.ToLower(got), "how to fix") {
			t.Fatalf("failed step = %q", got)
		}
		admin.screenshot("connection-test-list")
		// Close gives the focus back to the button.
		admin.click(`#test-panel-finance .test-close`)
		if admin.has("#test-panel-finance") {
			t.Fatal("the panel is still there after Close")
		}
		if got := admin.eval(`document.activeElement.closest("form") ? document.activeElement.closest("form").dataset.test : ""`); got != "finance" {
			t.Fatalf("focus after Close on %q", got)
		}
	}))

	t.Run("StepsArriveLive", func(t *testing.T) {
		admin.t = t
		admin.open("/connections/slow")
		admin.click("#test-connection")
		admin.waitFor("tcp passed while the login still runs",
			stepState("#test-panel", "tcp")+` === "ok" && `+stepState("#test-panel", "postgres_auth")+` === "running" && `+
				`document.querySelector("#test-panel .test-state").textContent === "Running…" && `+
				`document.querySelector("#test-connection").getAttribute("aria-disabled") === "true"`, 4*time.Second)
		// Read in the page, in one go: the panel is drawn again as the
		// last events arrive, and a node found first and read after is
		// gone by then.
		admin.waitFor("the login to time out with its hint and the test to end", stepState("#test-panel", "postgres_auth")+` === "failed" && `+
			`document.querySelector("#test-connection").getAttribute("aria-disabled") === null && `+
			`(document.querySelector("#test-panel .tstep-failed .tstep-hint") || {textContent: ""}).textContent.includes("did not finish the login")`,
			15*time.Second)
	})

	t.Run("TestByKeyboard", func(t *testing.T) {
		admin.t = t
		admin.open("/connections/analytics-pg")
		admin.do("press Enter on the button", chromedp.Focus(chromedp.CSS("#test-connection")), chromedp.KeyEvent("\r"))
		admin.waitFor("the test to pass", `document.querySelector("#test-panel.test-passed:not([hidden])") !== null`, 15*time.Second)
		if loc := admin.location(); loc != "/connections/analytics-pg" {
			t.Fatalf("the page navigated to %q", loc)
		}
	})

	must(t, t.Run("TestTheForm", func(t *testing.T) {
		admin.t = t
		admin.open("/connections/analytics-pg/edit")
		// The stored password works: the field is empty.
		admin.click("#test-form")
		admin.waitFor("the form's test to pass", `document.querySelector("#test-panel.test-passed") !== null`, 15*time.Second)
		// A wrong password typed in the form fails at postgres_auth.
		admin.fill("#f-password", "not-the-password")
		admin.click("#test-form")
		admin.waitFor("the form's test to fail", `document.querySelector("#test-panel.test-failed") !== null`, 15*time.Second)
		failed := admin.text("#test-panel .tstep-failed")
		for _, want := range []string{"PostgreSQL login", "postgres_auth", "28P01", "HOW TO FIX", `rejected the password for user "dbt"`} {
			if !strings.Contains(failed, want) {
				t.Errorf("failed step lacks %q: %q", want, failed)
			}
		}
		if got := admin.text("#test-panel .test-summary"); !strings.HasPrefix(got, "Failed at PostgreSQL login: 2 of 6 steps passed") {
			t.Errorf("summary = %q", got)
		}
		if got := admin.eval(`[...document.querySelectorAll("#test-panel .tstep-skipped")].map(li => li.dataset.step).join(" ")`); got != "tls database query" {
			t.Errorf("skipped steps = %q", got)
		}
		admin.screenshotElement("connection-test-failed", "#test-panel")
		// Nothing was saved: the stored password still works.
		if rep, err := s.App.TestConnection(ctx, "analytics-pg", nil); err != nil || !rep.OK {
			t.Fatalf("the form's test changed the connection: %+v, %v", rep, err)
		}
		// A field the API refuses is named, with a link to it.
		admin.fill("#f-port", "54x")
		admin.click("#test-form")
		admin.waitFor("the field problem", `document.querySelector("#test-panel.test-error .test-fields a[href='#f-port']") !== null`, 10*time.Second)
	}))

	t.Run("Permissions", func(t *testing.T) {
		admin.t = t
		su, err := pgx.Connect(ctx, pg.ConnString(pg.SuperUser, pg.SuperPassword, "analytics"))
		if err != nil {
			t.Fatal(err)
		}
		defer su.Close(ctx)
		if _, err := su.Exec(ctx, `CREATE SCHEMA raw AUTHORIZATION dbt; CREATE SCHEMA stripe AUTHORIZATION dbt; SET ROLE dbt;
			CREATE TABLE raw.orders (id int); CREATE TABLE raw.customers (id int); CREATE VIEW raw."Big Orders" AS SELECT * FROM raw.orders;
			CREATE TABLE stripe.charges (id int); RESET ROLE; GRANT USAGE ON SCHEMA stripe TO reporting;
			GRANT SELECT ON stripe.charges TO reporting`); err != nil {
			t.Fatal(err)
		}
		admin.open("/connections/reporting")
		admin.submit("#permissions")
		if loc := admin.location(); loc != "/connections/reporting/grants" {
			t.Fatalf("permissions link: %q", loc)
		}
		if got := admin.value("#f-target_schema"); got != "reporting" {
			t.Fatalf("target schema = %q, want the connection's", got)
		}
		admin.fill("#f-source_schemas", "raw\nstripe")
		admin.submit("#check-permissions")
		verdict := admin.text(".audit-verdict")
		if !strings.Contains(verdict, "privileges missing") {
			t.Fatalf("verdict = %q", verdict)
		}
		rows := admin.text(".grants-table")
		for _, want := range []string{"CREATE", "database analytics", "USAGE", "schema raw", "3 of 3 tables and views in schema raw",
			"the 1 table or view in schema stripe", "future tables of dbt in schema raw", "Missing", "Granted"} {
			if !strings.Contains(rows, want) {
				t.Errorf("checks lack %q:\n%s", want, rows)
			}
		}
		sql := admin.text("#grants-sql")
		for _, want := range []string{`GRANT USAGE ON SCHEMA "raw" TO "reporting";`, `GRANT SELECT ON ALL TABLES IN SCHEMA "raw" TO "reporting";`,
			`ALTER DEFAULT PRIVILEGES FOR ROLE "dbt" IN SCHEMA "raw" GRANT SELECT ON TABLES TO "reporting";`} {
			if !strings.Contains(sql, want) {
				t.Errorf("SQL lacks %q:\n%s", want, sql)
			}
		}
		admin.do("copy button", chromedp.WaitVisible(chromedp.CSS(`[data-copy="grants-sql"]`)))
		// Long comment lines of the SQL wrap inside its box.
		if got := admin.eval(`(() => { const el = document.querySelector("#grants-sql"); return el.scrollWidth + " " + el.clientWidth })()`); func() bool {
			var sw, cw int
			_, err := fmt.Sscan(got, &sw, &cw)
			return err != nil || sw > cw
		}() {
			t.Errorf("the SQL box scrolls sideways (scrollWidth clientWidth = %s)", got)
		}
		admin.screenshot("permissions")
		if _, err := su.Exec(ctx, sql); err != nil {
			t.Fatalf("run the page's SQL: %v\n%s", err, sql)
		}
		admin.submit("#check-permissions")
		if got := admin.text(".audit-verdict"); !strings.Contains(got, "Nothing is missing") {
			t.Fatalf("verdict after the SQL = %q", got)
		}
		if admin.has("#grants-sql") {
			t.Fatal("SQL shown with nothing missing")
		}

		// The target schema exists now: CREATE on the database is not
		// needed, unless the run creates schemas.
		if _, err := su.Exec(ctx, `REVOKE CREATE ON DATABASE analytics FROM reporting; CREATE SCHEMA reporting AUTHORIZATION reporting`); err != nil {
			t.Fatal(err)
		}
		admin.submit("#check-permissions")
		if got := admin.text(".audit-verdict"); !strings.Contains(got, "Nothing is missing") {
			t.Fatalf("verdict with the target schema there = %q", got)
		}
		if got := admin.text(".grant-not_needed"); !strings.Contains(got, "CREATE SCHEMA (even IF NOT EXISTS)") || strings.Contains(got, "needed only") {
			t.Errorf("CREATE on the database, not needed: %q", got)
		}
		admin.click("#f-create_schemas")
		admin.submit("#check-permissions")
		if got := admin.text(".audit-verdict"); !strings.Contains(got, "1 privilege missing") {
			t.Fatalf("verdict when the run creates schemas = %q", got)
		}
		if got := admin.text("#grants-sql"); !strings.Contains(got, `GRANT CREATE ON DATABASE "analytics" TO "reporting";`) {
			t.Fatalf("SQL when the run creates schemas:\n%s", got)
		}
	})
}
