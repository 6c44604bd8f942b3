package web_test

import (
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// tokenCommand writes a credential command that prints password (the
// token), for connections whose password source is a command.
func tokenCommand(t *testing.T, password string) string {
	t.Helper()
	program := filepath.Join(t.TempDir(), "db-token")
	if err := os.WriteFile(program, []byte("#!/bin/sh\necho '"+password+"'\n"), 0o700); err != nil {
		t.Fatal(err)
	}
	return program
}

// testStepsJS lists the steps of the test panel sel as "id:status".
func testStepsJS(sel string) string {
	return `[...document.querySelectorAll("` + sel + ` .tstep")].map(li => li.dataset.step + ":" + li.dataset.status).join(" ")`
}

// TestBrowserTokenConnectionTest: the Test connection button of the form
// tests the password source the form says (a credential command here), on
// the new and the edit form, as the form's plain post does; and every
// test panel shows the credential step first, by its name, as the test
// runs it.
func TestBrowserTokenConnectionTest(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath(t)
	browser, err := startBrowser(t, chromium)
	if err != nil {
		t.Fatalf("start chromium %s: %v", chromium, err)
	}
	// Token passwords need TLS.
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{TLS: true})
	d := pg.NewDatabase(t)
	program := tokenCommand(t, d.Password)
	s := newStackWith(t, stackOptions{CredentialCommands: []string{program}})

	const want = "credential:ok resolve:ok tcp:ok tls:ok postgres_auth:ok database:ok query:ok"
	b := newTab(t, browser, s.URL)
	b.open("/connections")
	b.login(s.Tokens[auth.Editor].Token)
	b.open("/new")
	b.selectOption("#f-auth-kind", "command")
	b.selectOption("#f-sslmode", "require")
	b.fill("#f-name", "tok", "#f-host", pg.Host, "#f-port", strconv.Itoa(pg.Port), "#f-database", d.Name,
		"#f-user", d.User, "#f-auth-program", program)
	testForm := func(what string) {
		t.Helper()
		b.click("#test-form")
		b.waitFor(what+": the test to end", `document.querySelector("#test-panel.test-passed, #test-panel.test-failed, #test-panel.test-error") !== null`,
			20*time.Second)
		if got := b.eval(testStepsJS("#test-panel")); got != want {
			t.Errorf("%s: steps %q, want %q\n%s", what, got, want, b.text("#test-panel"))
		}
		if got := b.text(`#test-panel [data-step="credential"] .tstep-name`); got != "Fetch the token" {
			t.Errorf("%s: the credential step is named %q", what, got)
		}
	}
	testForm("new form")
	b.submit("#save")
	if loc := b.location(); loc != "/connections/tok?created=1" {
		t.Fatalf("after save: location %q\n%s", loc, b.text("main"))
	}
	b.click("#test-connection")
	b.waitFor("the saved connection's test to pass", `document.querySelector("#test-panel.test-passed") !== null`, 20*time.Second)
	if got := b.eval(testStepsJS("#test-panel")); got != want {
		t.Errorf("saved connection: steps %q, want %q", got, want)
	}
	b.open("/connections/tok/edit")
	testForm("edit form")

	// Without the script, the page renders the same names.
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Editor].Token)
	r := c.post("/connections/tok/test", url.Values{auth.CSRFField: {c.csrf("/connections/tok")}})
	if !strings.Contains(r.Body, "All 7 steps passed") || !strings.Contains(r.Body, `<span class="tstep-name">Fetch the token</span>`) {
		t.Errorf("test without the script: %d\n%s", r.Status, r.Body)
	}
}

// TestBrowserFormTestFieldProblems: when the form's test cannot run
// because of a field, the panel names the field by its label and links to
// it, and the live region says which field — also for the bastion host
// of a chain of hops, which the API names as its first hop.
func TestBrowserFormTestFieldProblems(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath(t)
	browser, err := startBrowser(t, chromium)
	if err != nil {
		t.Fatalf("start chromium %s: %v", chromium, err)
	}
	s := newStackWith(t, stackOptions{})
	b := newTab(t, browser, s.URL)
	b.open("/connections")
	b.login(s.Tokens[auth.Editor].Token)
	b.open("/new")
	b.click("#f-ssh_tunnel-enabled")
	b.submit("#add-hop")
	// The bastion host is left empty.
	b.fill("#f-host", "db.internal", "#f-database", "analytics", "#f-user", "dbt", "#f-ssh_tunnel-user", "pgrelay",
		"#f-ssh_hops-1-host", "bastion-b.internal", "#f-ssh_hops-1-user", "pgrelay")
	b.click("#test-form")
	b.waitFor("the test to be refused", `document.querySelector("#test-panel.test-error .test-fields a") !== null`, 15*time.Second)
	links := b.eval(`[...document.querySelectorAll("#test-panel .test-fields a")].map(a => a.getAttribute("href") + " " + a.textContent).join("\n")`)
	if !strings.HasPrefix(links, "#f-ssh_tunnel-host Bastion host: required") || strings.Contains(links, "\n") {
		t.Errorf("field links = %q, want one to #f-ssh_tunnel-host named Bastion host", links)
	}
	if !b.has("#f-ssh_tunnel-host") {
		t.Fatal("no bastion host field")
	}
	if got := b.waitFor("the announcement", `document.querySelector("#live").textContent`, 5*time.Second); !strings.Contains(got, "Bastion host: required") {
		t.Errorf("announced %q, want it to name the field and the problem", got)
	}
}
