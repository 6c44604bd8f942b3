package web_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// screenshotsEnv makes the browser tests save screenshots of the main pages
// under docs/screenshots (for the README).
const screenshotsEnv = "PGRELAY_SCREENSHOTS"

// chromiumPath returns Debian's chromium, or fails the test with the way
// to install it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("browser tests are slow: skipped with -short (make test runs them)")
	}
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	t.Fatal("chromium is not installed (looked for /usr/bin/chromium): the browser tests need it; run `make test-deps` to install it")
	return ""
}

// startBrowser starts one headless Chromium for the whole test and returns
// its context; each tab gets its own browser context (cookie jar) from
// newTab.
func startBrowser(t *testing.T, path string) (context.Context, error) {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(allocCtx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		return nil, err
	}
	return ctx, nil
}

// tab is one browser tab with its own cookies.
type tab struct {
	t   *testing.T
	ctx context.Context
	url string
}

func newTab(t *testing.T, browser context.Context, base string) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatalf("open tab: %v", err)
	}
	return &tab{t: t, ctx: ctx, url: base}
}

// do runs browser steps with a deadline.
func (b *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

func run[T any](b *tab, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// open navigates to a path of the server.
func (b *tab) open(path string) {
	b.t.Helper()
	b.do("open "+path, chromedp.Navigate(b.url+path))
}

// submit clicks sel and waits for the page it leads to.
func (b *tab) submit(sel string) {
	b.t.Helper()
	run(b, "click "+sel, chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(chromedp.CSS(sel))))
}

func (b *tab) text(sel string) string {
	b.t.Helper()
	return run(b, "text of "+sel, chromedp.Text(chromedp.CSS(sel)))
}

func (b *tab) value(sel string) string {
	b.t.Helper()
	return run(b, "value of "+sel, chromedp.Value(chromedp.CSS(sel)))
}

func (b *tab) eval(js string) string {
	b.t.Helper()
	return run(b, js, chromedp.Evaluate[string](js))
}

func (b *tab) has(sel string) bool {
	b.t.Helper()
	return run(b, "look for "+sel, chromedp.Evaluate[bool]("document.querySelector("+strconv.Quote(sel)+") !== null"))
}

func (b *tab) location() string {
	b.t.Helper()
	return strings.TrimPrefix(run(b, "location", chromedp.Location()), b.url)
}

// fill types into the inputs, by CSS selector.
func (b *tab) fill(values ...string) {
	b.t.Helper()
	for i := 0; i+1 < len(values); i += 2 {
		b.eval(`(() => { const el = document.querySelector(` + strconv.Quote(values[i]) + `); el.value = ""; return el.value })()`)
		b.do("fill "+values[i], chromedp.SendKeys(chromedp.CSS(values[i]), values[i+1]))
	}
}

// selectOption picks a value in a select as a user would (with a change
// event).
func (b *tab) selectOption(sel, value string) {
	b.t.Helper()
	js := "(() => { const el = document.querySelector(" + strconv.Quote(sel) + "); el.value = " + strconv.Quote(value) +
		"; el.dispatchEvent(new Event('change', {bubbles: true})); return el.value })()"
	if got := b.eval(js); got != value {
		b.t.Fatalf("select %s = %q: got %q", sel, value, got)
	}
}

// login signs in through the form, from the page the browser was sent to.
func (b *tab) login(token string) {
	b.t.Helper()
	b.fill("#token", token)
	b.submit("form[action='/login'] button[type=submit]")
}

// screenshot saves a full-page PNG under docs/screenshots when
// PGRELAY_SCREENSHOTS=1.
func (b *tab) screenshot(name string) {
	b.t.Helper()
	if os.Getenv(screenshotsEnv) != "1" {
		return
	}
	png := run(b, "screenshot "+name, chromedp.FullScreenshot(100))
	dir := filepath.Join("..", "..", "docs", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("saved docs/screenshots/%s.png", name)
}

// screenshotNarrow saves a screenshot at a phone's width (390 px), when
// PGRELAY_SCREENSHOTS=1.
func (b *tab) screenshotNarrow(name string) {
	b.t.Helper()
	if os.Getenv(screenshotsEnv) != "1" {
		return
	}
	b.do("narrow viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2)))
	b.screenshot(name)
	b.do("wide viewport", chromedp.EmulateViewport(1280, 800))
}

func TestBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	// The server works runs as `pgrelay serve --allow-command sh
	// --allow-command sleep` would.
	s := newStackWith(t, stackOptions{Queue: true, Allow: []string{"sh", "sleep"}})
	ctx := context.Background()

	// Start the browser while the bastion and PostgreSQL start.
	type started struct {
		ctx context.Context
		err error
	}
	browserc := make(chan started, 1)
	go func() {
		c, err := startBrowser(t, chromium)
		browserc <- started{c, err}
	}()
	// A bastion of the test's own (its host key is rotated), and a
	// cluster of its own: the pages show its fixed role and database
	// names (dbt, reporting, analytics).
	bastion := testenv.StartBastion(t, testenv.BastionOptions{})
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	st := <-browserc
	if st.err != nil {
		t.Fatalf("start chromium %s: %v", chromium, st.err)
	}
	browser := st.ctx

	admin := newTab(t, browser, s.URL)

	must(t, t.Run("Login", func(t *testing.T) {
		admin.t = t
		admin.open("/connections")
		if loc := admin.location(); loc != "/login?next=%2Fconnections" {
			t.Fatalf("signed out: location %q", loc)
		}
		admin.screenshot("login")
		admin.login("pgr_not-a-token")
		if got := admin.text("#token-error"); !strings.Contains(got, "not valid") {
			t.Fatalf("bad token error = %q", got)
		}
		if admin.value("#token") != "" {
			t.Fatal("the token field kept the wrong token")
		}
		admin.login(s.Tokens[auth.Admin].Token)
		if loc := admin.location(); loc != "/connections" {
			t.Fatalf("after login: location %q", loc)
		}
		if who := admin.text(".user-who"); !strings.Contains(who, "alice-admin") || !strings.Contains(who, "admin") {
			t.Fatalf("header shows %q", who)
		}
		if got := admin.text(".empty h2"); got != "No connections yet" {
			t.Fatalf("empty state = %q", got)
		}
	}))

	must(t, t.Run("CreateWithTunnel", func(t *testing.T) {
		admin.t = t
		admin.submit("#new-connection")
		if loc := admin.location(); loc != "/new" {
			t.Fatalf("new connection: location %q", loc)
		}
		// The flavor sets the SSL mode and the example database until the
		// user picks an SSL mode.
		admin.selectOption("#f-flavor", "lakebase")
		if got := admin.value("#f-sslmode"); got != "verify-full" {
			t.Fatalf("sslmode after Lakebase = %q, want verify-full", got)
		}
		if got := admin.eval(`document.querySelector("#f-database").placeholder`); got != "databricks_postgres" {
			t.Fatalf("database placeholder for Lakebase = %q", got)
		}
		admin.selectOption("#f-sslmode", "verify-ca")
		admin.selectOption("#f-flavor", "alloydb")
		if got := admin.value("#f-sslmode"); got != "verify-ca" {
			t.Fatalf("flavor change overwrote the chosen sslmode: %q", got)
		}
		if !run(admin, "CA field visible", chromedp.Evaluate[bool](`document.querySelector(".ca-field").offsetParent !== null`)) {
			t.Fatal("CA certificate field hidden for verify-ca")
		}
		admin.selectOption("#f-sslmode", "require")

		// The tunnel fields appear when the switch is toggled by keyboard.
		if run(admin, "tunnel hidden", chromedp.Evaluate[bool](`document.querySelector("#f-ssh_tunnel-host").offsetParent !== null`)) {
			t.Fatal("tunnel fields visible before the switch is on")
		}
		admin.do("toggle tunnel", chromedp.Focus(chromedp.CSS("#f-ssh_tunnel-enabled")), chromedp.KeyEvent(" "))
		admin.do("tunnel fields", chromedp.WaitVisible(chromedp.CSS("#f-ssh_tunnel-host")))
		admin.fill(
			"#f-name", "warehouse",
			"#f-host", "10.20.0.5",
			"#f-database", "analytics",
			"#f-user", "dbt",
			"#f-password", "correct horse battery",
			"#f-schema", "dbt_prod",
			"#f-ssh_tunnel-host", "bastion.example.com",
			"#f-ssh_tunnel-user", "pgrelay",
		)
		admin.submit("#save")
		if loc := admin.location(); loc != "/connections/warehouse?created=1" {
			t.Fatalf("after save: location %q\n%s", loc, admin.text("main"))
		}
		want, err := s.App.PublicKey(ctx, "warehouse", false)
		if err != nil {
			t.Fatal(err)
		}
		if got := admin.value("#public-key"); got != want || !strings.HasPrefix(got, "ssh-ed25519 ") {
			t.Fatalf("public key box = %q, want %q", got, want)
		}
		if got := admin.value("#restricted-key"); !strings.HasPrefix(got, `restrict,port-forwarding,permitopen="10.20.0.5:5432" ssh-ed25519 `) {
			t.Fatalf("restricted line = %q", got)
		}
		if got := admin.text("#setup-steps"); !strings.Contains(got, "sudo useradd -m -g pgrelay pgrelay") {
			t.Fatalf("setup steps = %q", got)
		}
		if got := admin.text("#sshd-settings"); !strings.Contains(got, "ClientAliveInterval 30") || !strings.Contains(got, "ClientAliveCountMax 10") {
			t.Fatalf("sshd settings = %q", got)
		}
		btn := `[data-copy="public-key"]`
		admin.do("copy button", chromedp.WaitVisible(chromedp.CSS(btn)))
		admin.screenshot("connection-public-key")
		admin.do("copy", chromedp.Click(chromedp.CSS(btn)))
		got := run(admin, "copy feedback", chromedp.Poll[string](
			`(() => { const t = document.querySelector('[data-copy="public-key"]').textContent; return t === "Copy" ? false : t })()`,
			chromedp.WithPollingTimeout(5*time.Second)))
		if got != "Copied" && got != "Press Ctrl+C" {
			t.Fatalf("copy button says %q", got)
		}
		if got := admin.text(".props"); !strings.Contains(got, "set") || strings.Contains(got, "correct horse") {
			t.Fatalf("settings show %q", got)
		}
	}))

	must(t, t.Run("FieldErrors", func(t *testing.T) {
		admin.t = t
		admin.open("/new")
		admin.do("toggle tunnel", chromedp.Click(chromedp.CSS("#f-ssh_tunnel-enabled")))
		admin.fill(
			"#f-name", "broken",
			"#f-port", "70000",
			"#f-database", "analytics",
			"#f-user", "dbt",
			"#f-password", "never-echoed",
			"#f-ssh_tunnel-host", "db:22",
			"#f-ssh_tunnel-user", "pgrelay",
		)
		admin.submit("#save")
		for sel, want := range map[string]string{
			"#f-host-error":                    "required",
			"#f-port-error":                    "70000 is out of range",
			"#f-ssh_tunnel-host-error":         "includes a port",
			"#error-summary":                   "3 problems",
			"#error-summary a[href='#f-port']": "Port",
		} {
			if got := admin.text(sel); !strings.Contains(got, want) {
				t.Errorf("%s = %q, want it to contain %q", sel, got, want)
			}
		}
		for sel, want := range map[string]string{
			"#f-name": "broken", "#f-port": "70000", "#f-ssh_tunnel-host": "db:22", "#f-ssh_tunnel-user": "pgrelay",
			"#f-host": "", "#f-password": "",
		} {
			if got := admin.value(sel); got != want {
				t.Errorf("%s kept %q, want %q", sel, got, want)
			}
		}
		if got := admin.eval(`document.querySelector("#f-port").getAttribute("aria-describedby")`); !strings.Contains(got, "f-port-error") {
			t.Errorf("port aria-describedby = %q", got)
		}
		if got := admin.eval(`document.activeElement.id`); got != "error-summary" {
			t.Errorf("focus on %q, want the error summary", got)
		}
		if !run(admin, "tunnel still on", chromedp.Evaluate[bool](`document.querySelector("#f-ssh_tunnel-enabled").checked`)) {
			t.Error("the tunnel switch was reset")
		}
		admin.screenshot("form-errors")
	}))

	// A connection through the real bastion: pin its host key, rotate the
	// bastion's host key, connect again so that the new key is pending.
	spec := connection.Spec{Name: "analytics-eu", Flavor: connection.AlloyDB, Host: "10.20.0.9", Database: "analytics",
		User: "dbt", Password: secret.New("pw"),
		Tunnel: &connection.Tunnel{Host: bastion.Host, Port: bastion.Port, User: bastion.User}}
	oldFP, newFP := pinThenChangeHostKey(t, s, bastion, spec)
	if _, err := s.App.CreateConnection(ctx, connection.Spec{Name: "lakehouse", Flavor: connection.Lakebase,
		Host: "instance-1234.database.cloud.databricks.com", Database: "databricks_postgres", User: "dbt@example.com"}); err != nil {
		t.Fatal(err)
	}

	t.Run("ViewerHasNoControls", func(t *testing.T) {
		viewer := newTab(t, browser, s.URL)
		viewer.open("/connections/analytics-eu")
		viewer.login(s.Tokens[auth.Viewer].Token)
		if loc := viewer.location(); loc != "/connections/analytics-eu" {
			t.Fatalf("after login: location %q", loc)
		}
		for _, sel := range []string{"#edit", "#delete", "#rotate", "#approve-host-key"} {
			if viewer.has(sel) {
				t.Errorf("viewer sees %s", sel)
			}
		}
		if !viewer.has("#host-key-change") {
			t.Error("viewer does not see the pending host key change")
		}
		viewer.open("/connections")
		if viewer.has("#new-connection") {
			t.Error("viewer sees New connection")
		}
		if who := viewer.text(".user-who"); !strings.Contains(who, "viewer") {
			t.Errorf("header shows %q", who)
		}
	})

	t.Run("EditorAsksAnAdmin", func(t *testing.T) {
		// Replacing a pinned host key is an admin's: an editor sees the
		// change, and who may approve it, but no button.
		editor := newTab(t, browser, s.URL)
		editor.open("/connections/analytics-eu")
		editor.login(s.Tokens[auth.Editor].Token)
		if !editor.has("#host-key-change") || editor.has("#approve-host-key") {
			t.Fatalf("editor: alert shown %v, approve button shown %v", editor.has("#host-key-change"), editor.has("#approve-host-key"))
		}
		if got := editor.text("#approve-needs-admin"); !strings.Contains(got, "Ask an admin") {
			t.Fatalf("editor is told %q", got)
		}
		if !editor.has("#edit") {
			t.Error("editor does not see Edit")
		}
	})

	must(t, t.Run("HostKeyChange", func(t *testing.T) {
		admin.t = t
		admin.open("/connections")
		if got := admin.text(".row-alert"); !strings.Contains(got, "analytics-eu") || !strings.Contains(got, "CHANGED — approval needed") {
			t.Fatalf("list row = %q", got)
		}
		admin.screenshot("connections")
		admin.screenshotNarrow("connections-narrow")
		admin.submit(".row-alert .conn-name")
		if got := admin.text("#pinned-fp"); got != oldFP {
			t.Fatalf("pinned fingerprint = %q, want %q", got, oldFP)
		}
		if got := admin.text("#presented-fp"); got != newFP {
			t.Fatalf("presented fingerprint = %q, want %q", got, newFP)
		}
		if got := admin.text("#host-key-change"); !strings.Contains(strings.ToLower(got), "seen") {
			t.Fatalf("host key alert = %q", got)
		}
		admin.screenshot("host-key-change")
		admin.submit("#approve-host-key")
		if loc := admin.location(); loc != "/connections/analytics-eu?trusted=1" {
			t.Fatalf("after approval: location %q", loc)
		}
		if admin.has("#host-key-change") {
			t.Fatal("the host key alert is still shown")
		}
		if got := admin.text("#host-key-fp"); got != newFP {
			t.Fatalf("pinned fingerprint after approval = %q, want %q", got, newFP)
		}
		sess, err := s.App.Open(ctx, "analytics-eu")
		if err != nil {
			t.Fatalf("connection after approval: %v", err)
		}
		_ = sess.Close()
	}))

	t.Run("RotateAndDelete", func(t *testing.T) {
		admin.t = t
		admin.open("/connections/warehouse")
		old := admin.value("#public-key")
		admin.submit("#rotate")
		admin.submit("#confirm-rotate")
		if loc := admin.location(); loc != "/connections/warehouse?rotated=1" {
			t.Fatalf("after rotation: location %q", loc)
		}
		if got := admin.value("#old-key"); got != old {
			t.Fatalf("old key box = %q, want %q", got, old)
		}
		if got := admin.value("#public-key"); got == old || !strings.HasPrefix(got, "ssh-ed25519 ") {
			t.Fatalf("new key = %q", got)
		}
		admin.submit("#delete")
		admin.fill("#confirm", "warehous")
		admin.submit("#confirm-delete")
		if got := admin.text("#confirm-error"); !strings.Contains(got, "not the connection's name") {
			t.Fatalf("wrong name error = %q", got)
		}
		admin.fill("#confirm", "warehouse")
		admin.submit("#confirm-delete")
		if loc := admin.location(); loc != "/connections?deleted=warehouse" {
			t.Fatalf("after delete: location %q", loc)
		}
		if _, err := s.App.GetConnection(ctx, "warehouse"); !errors.Is(err, app.ErrNotFound) {
			t.Fatalf("after delete: %v", err)
		}
	})

	testJobsInBrowser(t, s, browser, pg)
	testConnectionTestsInBrowser(t, s, browser, pg)
	testKeySetupInBrowser(t, s, browser, bastion, pg)
	testDurationsInBrowser(t, s, browser)
	testAccessibilityInBrowser(t, s, browser, bastion)
}

// must stops the test when a step that later steps build on failed.
func must(t *testing.T, ok bool) {
	t.Helper()
	if !ok {
		t.FailNow()
	}
}
