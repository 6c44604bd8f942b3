package web_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// overflowJS lists the elements that stick out of the page's width (that
// make it scroll sideways), unless a box that scrolls or clips holds them.
const overflowJS = `(() => {
	const w = document.documentElement.clientWidth, out = [];
	if (document.documentElement.scrollWidth <= w) return "";
	document.querySelectorAll("body *").forEach(e => {
		const r = e.getBoundingClientRect();
		if (r.width === 0 || r.right <= w + 0.5) return;
		for (let p = e.parentElement; p; p = p.parentElement) {
			const o = getComputedStyle(p).overflowX;
			if (o === "auto" || o === "scroll" || o === "hidden") return;
		}
		if (e.closest(".visually-hidden, .skip-link")) return;
		out.push(e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") + (e.className && typeof e.className === "string" ? "." + e.className.trim().split(/\s+/).join(".") : "") +
			" to " + Math.round(r.right) + " px");
	});
	return "the page is " + document.documentElement.scrollWidth + " px wide at " + w + " px: " + out.slice(0, 8).join(", ");
})()`

// TestBrowserNarrowAndKeyboard checks what a phone of 320 CSS px (or a
// 1280 px window at 400 % zoom) and a keyboard user meet: no page scrolls
// sideways, long values that a user typed or pgrelay shows (a fingerprint
// in a hint, an error quoting the input, a failed check) wrap; the run
// filters do not leave the page on an arrow key; and the Test connection
// button keeps the focus while it tests.
func TestBrowserNarrowAndKeyboard(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath(t)
	s := newStack(t)
	ctx := context.Background()
	browser, err := startBrowser(t, chromium)
	if err != nil {
		t.Fatalf("start chromium %s: %v", chromium, err)
	}

	// A tunnelled connection whose bastion host key was given (so its
	// fingerprint is in the edit form's hint) and whose bastion does not
	// answer (so its health lists a failed check).
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostKey, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.App.CreateConnection(ctx, connection.Spec{Name: "warehouse", Host: "10.20.0.5", Database: "analytics",
		User: "dbt", Password: secret.New("pw"), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: "127.0.0.1", Port: testenv.FreePort(t), User: "pgrelay",
			KnownHost: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(hostKey)))}}); err != nil {
		t.Fatal(err)
	}
	// A direct one whose password is wrong: its health lists "failed at
	// postgres_auth".
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	if _, err := s.App.CreateConnection(ctx, connection.Spec{Name: "finance", Host: pg.Host, Port: pg.Port, Database: db.Name,
		User: db.User, Password: secret.New("not-the-password"), SSLMode: connection.SSLDisable}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"warehouse", "finance"} {
		if _, err := s.App.TestConnection(ctx, name, nil); err != nil {
			t.Fatal(err)
		}
	}

	b := newTab(t, browser, s.URL)
	b.open("/login")
	b.login(s.Tokens[auth.Admin].Token)

	t.Run("NoSidewaysScrollAt320px", func(t *testing.T) {
		b.t = t
		b.do("320 px viewport", chromedp.EmulateViewport(320, 640))
		defer b.do("desktop viewport", chromedp.EmulateViewport(1280, 800))
		check := func(what string) {
			t.Helper()
			if got := b.eval(overflowJS); got != "" {
				t.Errorf("%s: %s", what, got)
			}
		}
		for _, p := range []string{"/connections", "/connections/warehouse", "/connections/finance", "/connections/warehouse/edit", "/connections/new",
			"/jobs", "/jobs/new", "/runs", "/audit"} {
			b.open(p)
			check(p)
		}
		// Errors quote what was typed, which may have no place to break.
		b.open("/connections/new")
		b.fill("#f-name", "Warehouse_Production_Analytics_EU_West_1_Primary",
			"#f-host", "db-primary.analytics.eu-west-1.internal.example.com:5432")
		b.submit("#save")
		if !b.has("#f-name-error") {
			t.Fatal("no error for the connection name")
		}
		check("new connection form with errors")
		b.open("/jobs/new")
		b.fill("#f-name", "Nightly_Warehouse_Refresh_For_Analytics_EU_West")
		b.submit("#save")
		if !b.has("#f-name-error") {
			t.Fatal("no error for the job name")
		}
		check("new job form with errors")
	})

	t.Run("RunFilterByKeyboard", func(t *testing.T) {
		b.t = t
		b.open("/runs")
		// An arrow key on a closed select changes its value: the page must
		// not go elsewhere under the keyboard user (WCAG 3.2.2), who could
		// then reach only the next option, and lose the focus.
		b.do("arrow down on the status filter", chromedp.Focus(chromedp.CSS("#filter-status")), chromedp.KeyEvent(kb.ArrowDown))
		time.Sleep(500 * time.Millisecond)
		if loc := b.location(); loc != "/runs" {
			t.Fatalf("an arrow key on the status filter went to %q", loc)
		}
		b.do("arrow down again", chromedp.KeyEvent(kb.ArrowDown))
		if got := b.eval(`document.activeElement.id + " " + document.activeElement.value`); got != "filter-status running" {
			t.Fatalf("after two arrow keys: focus and value %q", got)
		}
		// Enter applies it.
		run(b, "press Enter", chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.KeyEvent("\r")))
		if loc := b.location(); loc != "/runs?job=&status=running" {
			t.Fatalf("after Enter: location %q", loc)
		}
		// A choice with the mouse (a change without keys) still applies at once.
		run(b, "choose a status with the mouse", chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Evaluate[bool](
			`(() => { const el = document.querySelector("#filter-status"); el.value = "failed"; el.dispatchEvent(new Event("change", {bubbles: true})); return true })()`)))
		if loc := b.location(); loc != "/runs?job=&status=failed" {
			t.Fatalf("after a mouse choice: location %q", loc)
		}
	})

	t.Run("DeleteConfirmErrorTakesFocus", func(t *testing.T) {
		b.t = t
		// A wrong name on a delete page comes back with its error: the
		// focus must be on the field, which the error describes, as on
		// the sign-in page, not at the top of a page that says nothing.
		if _, err := s.App.CreateJob(ctx, jobs.Job{Name: "nightly", Connection: "warehouse",
			Steps: []jobs.Step{{SQL: "select 1"}}}); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{"/connections/warehouse/delete", "/jobs/nightly/delete"} {
			b.open(p)
			b.fill("#confirm", "nope")
			b.submit("#confirm-delete")
			if got := b.eval(`document.activeElement.id + " " + document.activeElement.getAttribute("aria-describedby") + " " + document.activeElement.value`); got != "confirm confirm-error nope" {
				t.Errorf("%s after a wrong name: focus, its description and value %q", p, got)
			}
		}
	})

	t.Run("TestButtonKeepsFocus", func(t *testing.T) {
		b.t = t
		b.open("/connections/warehouse")
		b.do("press Enter on Test connection", chromedp.Focus(chromedp.CSS("#test-connection")), chromedp.KeyEvent("\r"))
		if got := b.eval(`document.activeElement.id`); got != "test-connection" {
			t.Errorf("while the test runs the focus is on %q, not the button", got)
		}
		b.waitFor("the test to end", `document.querySelector("#test-panel.test-failed") !== null && `+
			`document.querySelector("#test-connection").getAttribute("aria-busy") === null`, 15*time.Second)
		if got := b.eval(`document.activeElement.id`); got != "test-connection" {
			t.Fatalf("after the test the focus is on %q, not the button", got)
		}
	})
}
