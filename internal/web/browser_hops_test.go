package web_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestBrowserHops builds a chain of three SSH hops in the connection form
// with its buttons in a real Chromium (add, move up, remove, add), saves
// it, checks the connection page, and runs axe-core on the form with hops
// and on the page during a key rotation.
func TestBrowserHops(t *testing.T) {
	chromium := chromiumPath(t)
	s := newStack(t)
	browser, err := startBrowser(t, chromium)
	if err != nil {
		t.Fatalf("start chromium %s: %v", chromium, err)
	}
	b := newTab(t, browser, s.URL)
	b.open("/new")
	b.login(s.Tokens[auth.Editor].Token)
	b.fill("#f-name", "chain", "#f-host", "db.internal", "#f-database", "analytics", "#f-user", "dbt")
	b.eval(`(() => { const el = document.querySelector("#f-ssh_tunnel-enabled"); if (!el.checked) el.click(); return String(el.checked) })()`)
	b.fill("#f-ssh_tunnel-host", "bastion-a.internal", "#f-ssh_tunnel-user", "jump")

	b.submit("#add-hop")
	if !b.has("#f-ssh_hops-1-host") || b.value("#f-ssh_tunnel-host") != "bastion-a.internal" || b.value("#f-name") != "chain" {
		t.Fatal("Add a hop did not come back with a second hop and the form as typed")
	}
	b.fill("#f-ssh_hops-1-host", "bastion-b.internal", "#f-ssh_hops-1-user", "u2")
	b.submit("#add-hop")
	b.fill("#f-ssh_hops-2-host", "bastion-c.internal", "#f-ssh_hops-2-user", "u3")
	b.submit(`#hop-2 button[value="up:2"]`)
	if got := b.value("#f-ssh_hops-1-host") + " " + b.value("#f-ssh_hops-2-host"); got != "bastion-c.internal bastion-b.internal" {
		t.Fatalf("after moving hop 3 up: %q", got)
	}
	b.submit(`#hop-1 button[value="remove:1"]`)
	if b.has("#f-ssh_hops-2-host") || b.value("#f-ssh_hops-1-host") != "bastion-b.internal" {
		t.Fatal("Remove did not take out the second hop")
	}
	b.submit("#add-hop")
	b.fill("#f-ssh_hops-2-host", "bastion-c.internal", "#f-ssh_hops-2-user", "u3")
	if src := axeSourceOrEmpty(t); src != "" {
		b.axe(src, "form with hops")
	}
	b.submit("#save")
	if loc := b.location(); loc != "/connections/chain?created=1" {
		t.Fatalf("after save: %q\n%s", loc, b.text("main"))
	}
	v, err := s.App.GetConnection(context.Background(), "chain")
	if err != nil || len(v.SSHHops) != 3 || v.SSHHops[1].Host != "bastion-b.internal" || v.SSHHops[2].Host != "bastion-c.internal" {
		t.Fatalf("saved: %+v %v", v, err)
	}
	if got := b.text("#hop-list"); got == "" {
		t.Fatal("the page lists no hops")
	}
	if _, err := s.App.RotateKeyStart(context.Background(), "chain", 0); err != nil {
		t.Fatal(err)
	}
	b.open("/connections/chain")
	if got := b.text("#rotation-title"); got != "Key rotation: new key not installed yet" {
		t.Fatalf("rotation title = %q", got)
	}
	if src := axeSourceOrEmpty(t); src != "" {
		b.axe(src, "connection page during a key rotation")
	}

	// The connection test of a chain of two real sshd's, streamed into the
	// page: every hop's SSH steps have rows of their own, named by hop.
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	d := pg.NewDatabase(t)
	b1 := testenv.SharedBastion(t, testenv.BastionOptions{})
	b2 := testenv.StartBastion(t, testenv.BastionOptions{}) // a second sshd: the hops differ
	ctx := context.Background()
	if _, err := s.App.CreateConnection(ctx, connection.Spec{Name: "two", Host: pg.Host, Port: pg.Port, Database: d.Name,
		User: d.User, Password: secret.New(d.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: b1.Host, Port: b1.Port, User: b1.User,
			Next: []connection.Hop{{Host: b2.Host, Port: b2.Port, User: b2.User}}}}); err != nil {
		t.Fatal(err)
	}
	lines, err := s.App.HopKeys(ctx, "two")
	if err != nil {
		t.Fatal(err)
	}
	b1.Authorize(t, lines[0].Line)
	b2.Authorize(t, lines[1].Line)
	b.open("/connections/two")
	b.click("#test-connection")
	b.waitFor("the test to pass", `document.querySelector("#test-panel.test-passed") !== null`, 20*time.Second)
	rows := b.eval(`Array.from(document.querySelectorAll("#test-panel .tstep")).map(li => li.dataset.status + " " + li.querySelector(".tstep-name").textContent).join("\n")`)
	for _, want := range []string{"ok Hop 1 of 2 (" + b1.Addr() + "): SSH login", "ok Hop 2 of 2 (" + b2.Addr() + "): SSH handshake",
		"ok Hop 2 of 2 (" + b2.Addr() + "): SSH login", "ok Run SELECT 1"} {
		if !strings.Contains(rows, want) {
			t.Errorf("test panel lacks %q:\n%s", want, rows)
		}
	}
	if n := strings.Count(rows, "\n") + 1; n != 12 {
		t.Errorf("test panel has %d steps, want 12 (resolve, 3 per hop, forward and 4 more):\n%s", n, rows)
	}
}

// axeSourceOrEmpty is axeSource without skipping the test: "" when
// axe-core is not installed (and not required).
func axeSourceOrEmpty(t *testing.T) (src string) {
	t.Helper()
	ok := t.Run("axe", func(t *testing.T) { src = axeSource(t) })
	if !ok {
		t.FailNow()
	}
	return src
}
