package web_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// testKeySetupInBrowser follows a new tunnelled connection through the
// real bastion: a test that fails at the SSH login (the key is not
// installed yet) pins the host key, and the page says so as the test does,
// but keeps the key installation guide open; once the bastion accepted
// the key, the guide starts collapsed.
func testKeySetupInBrowser(t *testing.T, s *stack, browser context.Context, bastion *testenv.Bastion, pg *testenv.Postgres) {
	ctx := context.Background()
	spec := connection.Spec{Name: "keysetup", Host: pg.Host, Port: pg.Port, Database: "postgres", User: "nobody",
		Password: secret.New("pw"), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: bastion.Host, Port: bastion.Port, User: bastion.User}}
	if _, err := s.App.CreateConnection(ctx, spec); err != nil {
		t.Fatal(err)
	}
	b := newTab(t, browser, s.URL)
	b.open("/connections/keysetup")
	b.login(s.Tokens[auth.Editor].Token)
	guideOpen := `document.querySelector("#bastion-setup .setup-details") === null`
	hostKey := `document.querySelector('[data-host-key="keysetup"]').textContent.replace(/\s+/g, " ").trim()`

	must(t, t.Run("FailedLoginKeepsGuideOpen", func(t *testing.T) {
		b.t = t
		if b.eval(`String(`+guideOpen+`)`) != "true" {
			t.Fatal("the guide is collapsed before any login")
		}
		b.click("#test-connection")
		b.waitFor("the test to fail", `document.querySelector("#test-panel.test-failed") !== null`, 15*time.Second)
		if got := b.eval(stepState("#test-panel", "ssh_auth")); got != "failed" {
			t.Fatalf("ssh_auth = %q, want failed", got)
		}
		restricted, err := s.App.PublicKey(ctx, "keysetup", true)
		if err != nil {
			t.Fatal(err)
		}
		if hint := b.text(`#test-panel [data-step="ssh_auth"] .tstep-hint`); !strings.Contains(hint, restricted) {
			t.Errorf("ssh_auth hint lacks the restricted line %q:\n%s", restricted, hint)
		}
		// The handshake pinned the host key: the page says so, as the test does.
		fp := sshkey.Fingerprint(bastion.HostKey)
		if facts := b.text("#test-panel .test-facts"); !strings.Contains(facts, fp+" pinned now") {
			t.Errorf("test facts = %q", facts)
		}
		if got := b.eval(hostKey); got != "Pinned "+fp {
			t.Errorf("host key on the page after the test = %q, want %q", got, "Pinned "+fp)
		}
		b.open("/connections/keysetup")
		if got := b.eval(hostKey); got != "Pinned "+fp {
			t.Errorf("host key on the reloaded page = %q", got)
		}
		if b.eval(`String(`+guideOpen+`)`) != "true" {
			t.Fatalf("the guide is collapsed although no login with the key succeeded:\n%s", b.text("#bastion-setup"))
		}
		if got := b.text("#setup-title"); got != "Install the public key on the bastion" {
			t.Errorf("guide title = %q", got)
		}
	}))

	t.Run("AcceptedKeyCollapsesGuide", func(t *testing.T) {
		b.t = t
		restricted, err := s.App.PublicKey(ctx, "keysetup", true)
		if err != nil {
			t.Fatal(err)
		}
		bastion.Authorize(t, restricted)
		b.click("#test-connection")
		b.waitFor("the test to end", `document.querySelector("#test-panel.test-passed, #test-panel.test-failed") !== null`, 15*time.Second)
		if got := b.eval(stepState("#test-panel", "ssh_auth")); got != "ok" {
			t.Fatalf("ssh_auth = %q after authorizing the key", got)
		}
		b.open("/connections/keysetup")
		if b.eval(`String(`+guideOpen+`)`) != "false" {
			t.Fatal("the guide is still open after the bastion accepted the key")
		}
		want := fmt.Sprintf("The bastion %s@%s:%d accepted this key", bastion.User, bastion.Host, bastion.Port)
		if got := b.text("#bastion-setup > p"); !strings.HasPrefix(got, want) {
			t.Errorf("collapsed guide says %q, want it to start with %q", got, want)
		}
	})
}
