package web_test

import (
	"context"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
)

// TestBrowserAuthFields: the form's password source select shows the
// fields of the chosen source and hides the others (the password field
// among them); a Lakebase connection saved from it stores its client
// secret, shows it as set and never sends it back, and an edit that keeps
// it leaves it stored.
func TestBrowserAuthFields(t *testing.T) {
	t.Parallel()
	chromium := chromiumPath(t)
	src := axeSource(t)
	browser, err := startBrowser(t, chromium)
	if err != nil {
		t.Fatalf("start chromium %s: %v", chromium, err)
	}
	s := newStackWith(t, stackOptions{})
	b := newTab(t, browser, s.URL)
	b.open("/connections")
	b.login(s.Tokens[auth.Admin].Token)
	b.open("/new")
	visible := func(sel string) bool {
		t.Helper()
		return run(b, "visible "+sel, chromedp.Evaluate[bool](`document.querySelector("`+sel+`").offsetParent !== null`))
	}
	check := func(kind string, shown, hidden []string) {
		t.Helper()
		b.selectOption("#f-auth-kind", kind)
		for _, sel := range shown {
			if !visible(sel) {
				t.Errorf("%s: %s hidden", kind, sel)
			}
		}
		for _, sel := range hidden {
			if visible(sel) {
				t.Errorf("%s: %s shown", kind, sel)
			}
		}
	}
	all := []string{"#f-password", "#f-auth-program", "#f-auth-workspace_url", "#f-auth-client_secret", "#f-auth-service_account_key", "#f-auth-lifetime"}
	only := func(shown ...string) []string {
		var out []string
		for _, s := range all {
			if !strings.Contains(strings.Join(shown, " "), s) {
				out = append(out, s)
			}
		}
		return out
	}
	check("password", []string{"#f-password"}, only("#f-password"))
	check("command", []string{"#f-auth-program", "#f-auth-lifetime"}, only("#f-auth-program", "#f-auth-lifetime"))
	check("alloydb-iam", []string{"#f-auth-service_account_key"}, only("#f-auth-service_account_key"))
	check("lakebase", []string{"#f-auth-workspace_url", "#f-auth-client_secret", "#f-auth-lifetime"},
		only("#f-auth-workspace_url", "#f-auth-client_secret", "#f-auth-lifetime"))

	b.axe(src, "new connection form, Lakebase source")
	const clientSecret = "dose-browser-secret-51c0"
	b.selectOption("#f-flavor", "lakebase")
	b.selectOption("#f-pooler", "transaction")
	b.fill("#f-name", "lb", "#f-host", "instance-1.database.cloud.databricks.com", "#f-database", "databricks_postgres",
		"#f-user", "sp", "#f-auth-workspace_url", "https://dbc-1.cloud.databricks.com", "#f-auth-client_id", "sp",
		"#f-auth-instance", "instance-1")
	// Without the secret: the form comes back with the problem next to it.
	b.submit("#save")
	if got := b.text("#f-auth-client_secret-error"); !strings.Contains(got, "required") {
		t.Fatalf("no client secret: error %q", got)
	}
	b.fill("#f-auth-client_secret", clientSecret)
	b.submit("#save")
	if loc := b.location(); loc != "/connections/lb?created=1" {
		t.Fatalf("after save: location %q\n%s", loc, b.text("main"))
	}
	if got := b.text("#auth-kind"); got != connection.AuthLakebase.Label() {
		t.Fatalf("show page: source %q", got)
	}
	if html := b.eval(`document.documentElement.outerHTML`); strings.Contains(html, clientSecret) {
		t.Fatal("the show page holds the client secret")
	}
	b.axe(src, "connection page of a Lakebase connection")
	b.open("/connections/lb/edit")
	if html := b.eval(`document.documentElement.outerHTML`); strings.Contains(html, clientSecret) ||
		!strings.Contains(html, "(stored)") {
		t.Fatal("the edit form holds the client secret, or does not say one is stored")
	}
	if !visible("#f-auth-client_secret") || visible("#f-password") || b.value("#f-pooler") != "transaction" {
		t.Fatal("the edit form does not show the saved source's fields")
	}
	b.fill("#f-schema", "marts")
	b.submit("#save")
	if loc := b.location(); loc != "/connections/lb?saved=1" {
		t.Fatalf("after edit: location %q\n%s", loc, b.text("main"))
	}
	v, err := s.App.GetConnection(context.Background(), "lb")
	if err != nil || v.Auth == nil || !v.Auth.HasClientSecret || v.Schema != "marts" || v.Pooler != connection.PoolerTransaction {
		t.Fatalf("saved: %+v %v", v, err)
	}
}
