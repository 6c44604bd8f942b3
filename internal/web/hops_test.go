package web_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
)

// TestHopsForm adds, reorders and removes SSH hops on the connection form
// with its buttons (no script: each posts the form, which comes back
// changed and unsaved), saves a chain of three, and shows it: the hops,
// one authorized_keys line per hop, a key rotation under way ("new key
// not installed yet") with its lines, and its cancellation.
func TestHopsForm(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Editor].Token)
	ctx := context.Background()
	f := validForm("chain")
	f.Set(auth.CSRFField, c.csrf("/new"))
	f.Set("ssh_tunnel.enabled", "1")
	f.Set("ssh_tunnel.host", "bastion-a.internal")
	f.Set("ssh_tunnel.user", "jump")
	f.Set("ssh_tunnel.port", "22")

	press := func(action string) string {
		t.Helper()
		f.Set("hop_action", action)
		r := c.post("/connections", f)
		if r.Status != http.StatusOK {
			t.Fatalf("%s: status %d\n%s", action, r.Status, r.Body)
		}
		if _, err := s.App.GetConnection(ctx, "chain"); err == nil {
			t.Fatalf("%s saved the connection", action)
		}
		f.Del("hop_action")
		return r.Body
	}
	body := press("add")
	contains(t, "after add", body, `name="ssh_hops.1.host"`, "Hop 2 host", `id="hops-changed"`)
	excludes(t, "after add", body, "s3cret-pw")
	f.Set("ssh_hops.1.host", "bastion-b.internal")
	f.Set("ssh_hops.1.user", "u2")
	f.Set("ssh_hops.1.port", "2222")
	body = press("add")
	contains(t, "after the second add", body, `name="ssh_hops.2.host"`)
	f.Set("ssh_hops.2.host", "bastion-c.internal")
	f.Set("ssh_hops.2.user", "u3")
	f.Set("ssh_hops.2.port", "22")
	// Move the third hop up: b and c swap.
	body = press("up:2")
	contains(t, "after up", body, `name="ssh_hops.1.host" type="text" value="bastion-c.internal"`,
		`name="ssh_hops.2.host" type="text" value="bastion-b.internal"`)
	f.Set("ssh_hops.1.host", "bastion-c.internal")
	f.Set("ssh_hops.1.user", "u3")
	f.Set("ssh_hops.1.port", "22")
	f.Set("ssh_hops.2.host", "bastion-b.internal")
	f.Set("ssh_hops.2.user", "u2")
	f.Set("ssh_hops.2.port", "2222")
	// Remove the second hop (c), then add it back at the end.
	body = press("remove:1")
	contains(t, "after remove", body, `name="ssh_hops.1.host" type="text" value="bastion-b.internal"`)
	excludes(t, "after remove", body, `name="ssh_hops.2.host"`)
	f.Set("ssh_hops.1.host", "bastion-b.internal")
	f.Set("ssh_hops.1.user", "u2")
	f.Set("ssh_hops.1.port", "2222")
	f.Del("ssh_hops.2.host")
	f.Del("ssh_hops.2.user")
	f.Del("ssh_hops.2.port")
	press("add")
	f.Set("ssh_hops.2.host", "bastion-c.internal")
	f.Set("ssh_hops.2.user", "u3")
	f.Set("ssh_hops.2.port", "22")

	// A bad hop is a field error next to it.
	f.Set("ssh_hops.2.port", "x")
	r := c.post("/connections", f)
	contains(t, "bad hop port", r.Body, `id="f-ssh_hops-2-port-error"`, `href="#f-ssh_hops-2-port"`, "Hop 3 port")
	f.Set("ssh_hops.2.port", "22")
	if r = c.post("/connections", f); r.Status != http.StatusSeeOther {
		t.Fatalf("save: %d\n%s", r.Status, r.Body)
	}
	v, err := s.App.GetConnection(ctx, "chain")
	if err != nil {
		t.Fatal(err)
	}
	if len(v.SSHHops) != 3 || v.SSHHops[1].Host != "bastion-b.internal" || v.SSHHops[1].Port != 2222 || v.SSHHops[2].User != "u3" {
		t.Fatalf("saved hops: %+v", v.SSHHops)
	}
	page := c.get("/connections/chain").Body
	contains(t, "page", page, `id="hop-list"`, "u2@bastion-b.internal:2222", `id="hop-key-2"`,
		`permitopen=&#34;bastion-c.internal:22&#34;`, "Install the public key on every hop")
	// The edit form has the hops.
	contains(t, "edit form", c.get("/connections/chain/edit").Body,
		`name="ssh_hops.2.host" type="text" value="bastion-c.internal"`)

	// A key rotation with two live keys from the page.
	csrf := c.csrf("/connections/chain/rotate-key")
	r = c.post("/connections/chain/rotate-key/start", map[string][]string{auth.CSRFField: {csrf}})
	if r.Status != http.StatusSeeOther {
		t.Fatalf("start rotation: %d %s", r.Status, r.Body)
	}
	page = c.get("/connections/chain").Body
	contains(t, "page during rotation", page, "new key not installed yet", `id="new-key-3"`, `id="old-key-3"`,
		"expiry-time=", `id="finish-rotation"`)
	r = c.post("/connections/chain/rotate-key/cancel", map[string][]string{auth.CSRFField: {c.csrf("/connections/chain")}})
	if r.Status != http.StatusSeeOther {
		t.Fatalf("cancel rotation: %d %s", r.Status, r.Body)
	}
	if page = c.get("/connections/chain").Body; strings.Contains(page, "new key not installed yet") {
		t.Fatal("the page still shows a cancelled rotation")
	}
}

// TestHopOwnKeyForm: the checkbox of a hop row gives it its own key pair;
// it moves with the hop; the page lists each hop's line, hop 2's with its
// own key; unchecking it on the edit form drops the key pair.
func TestHopOwnKeyForm(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Editor].Token)
	ctx := context.Background()
	f := validForm("ownkey")
	f.Set(auth.CSRFField, c.csrf("/new"))
	f.Set("ssh_tunnel.enabled", "1")
	f.Set("ssh_tunnel.host", "bastion-a.internal")
	f.Set("ssh_tunnel.user", "jump")
	f.Set("ssh_tunnel.port", "22")
	f.Set("hop_action", "add")
	body := c.post("/connections", f).Body
	contains(t, "after add", body, `name="ssh_hops.1.own_key"`, "Hop 2 has its own key pair")
	excludes(t, "after add", body, `name="ssh_hops.1.own_key" value="on" checked`)
	f.Del("hop_action")
	f.Set("ssh_hops.1.host", "bastion-b.internal")
	f.Set("ssh_hops.1.user", "u2")
	f.Set("ssh_hops.1.port", "22")
	f.Set("ssh_hops.1.own_key", "on")
	// Adding a third hop keeps hop 2's box checked and leaves hop 3's not.
	f.Set("hop_action", "add")
	body = c.post("/connections", f).Body
	contains(t, "after the second add", body, `id="f-ssh_hops-1-own_key" name="ssh_hops.1.own_key" value="on" checked`)
	excludes(t, "after the second add", body, `id="f-ssh_hops-2-own_key" name="ssh_hops.2.own_key" value="on" checked`)
	f.Del("hop_action")
	if r := c.post("/connections", f); r.Status != http.StatusSeeOther {
		t.Fatalf("save: %d\n%s", r.Status, r.Body)
	}
	v, err := s.App.GetConnection(ctx, "ownkey")
	if err != nil {
		t.Fatal(err)
	}
	if len(v.SSHHops) != 2 || !v.SSHHops[1].OwnKey || v.SSHHops[1].OwnKeyFingerprint == "" {
		t.Fatalf("saved hops: %+v", v.SSHHops)
	}
	lines, err := s.App.HopKeys(ctx, "ownkey")
	if err != nil {
		t.Fatal(err)
	}
	page := c.get("/connections/ownkey").Body
	esc := strings.NewReplacer(`"`, "&#34;", "+", "&#43;").Replace
	contains(t, "page", page, `id="hop-own-key-2"`, esc(v.SSHHops[1].OwnKeyFingerprint), esc(v.SSHTunnel.PublicKeyFingerprint),
		esc(lines[1].Line), "own key")
	excludes(t, "page", page, `id="hop-own-key-1"`, "PRIVATE KEY")
	edit := c.get("/connections/ownkey/edit").Body
	contains(t, "edit form", edit, `name="ssh_hops.1.own_key" value="on" checked`)

	// A rotation from the page shows hop 2's new own line and its current
	// one with expiry-time, as for hop 1.
	if r := c.post("/connections/ownkey/rotate-key/start", map[string][]string{auth.CSRFField: {c.csrf("/connections/ownkey/rotate-key")}}); r.Status != http.StatusSeeOther {
		t.Fatalf("start rotation: %d %s", r.Status, r.Body)
	}
	rot, err := s.App.RotateKeyStatus(ctx, "ownkey")
	if err != nil {
		t.Fatal(err)
	}
	page = c.get("/connections/ownkey").Body
	contains(t, "page during rotation", page, `id="new-key-2"`, `id="old-key-2"`, esc(rot.Hops[1].Line), esc(rot.Hops[1].Old),
		"rotates with the connection", fmt.Sprintf("date -d @%d +%%Y%%m%%d%%H%%M%%S", rot.OldKeyExpiresAt.Unix()))
	if rot.Hops[1].Line == lines[1].Line {
		t.Fatal("the rotation did not give hop 2 a new own key")
	}
	if r := c.post("/connections/ownkey/rotate-key/cancel", map[string][]string{auth.CSRFField: {c.csrf("/connections/ownkey")}}); r.Status != http.StatusSeeOther {
		t.Fatalf("cancel rotation: %d %s", r.Status, r.Body)
	}

	// Unchecked on the edit form: the hop's key pair goes.
	e := validForm("ownkey")
	e.Set(auth.CSRFField, c.csrf("/connections/ownkey/edit"))
	e.Set("ssh_tunnel.enabled", "1")
	e.Set("ssh_tunnel.host", "bastion-a.internal")
	e.Set("ssh_tunnel.user", "jump")
	e.Set("ssh_tunnel.port", "22")
	e.Set("ssh_hops.1.host", "bastion-b.internal")
	e.Set("ssh_hops.1.user", "u2")
	e.Set("ssh_hops.1.port", "22")
	if r := c.post("/connections/ownkey/edit", e); r.Status != http.StatusSeeOther {
		t.Fatalf("update: %d\n%s", r.Status, r.Body)
	}
	if v, _ = s.App.GetConnection(ctx, "ownkey"); v.SSHHops[1].OwnKey || v.SSHHops[1].OwnKeyFingerprint != "" {
		t.Fatalf("hop 2 after unchecking its box: %+v", v.SSHHops[1])
	}
}

// TestCertificateSetupShowsPrincipals: the setup of a connection with
// certificate logins shows the bastion users pgrelay's SSH CA may sign
// for, and warns when it may sign for any.
func TestCertificateSetupShowsPrincipals(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Editor].Token)
	ctx := context.Background()
	if _, err := s.App.InitSSHCA(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.App.CreateConnection(ctx, connection.Spec{Name: "cert", Host: "db.internal", Database: "analytics", User: "dbt",
		Tunnel: &connection.Tunnel{Host: "bastion.internal", User: "jump", Auth: connection.SSHAuthCertificate}}); err != nil {
		t.Fatal(err)
	}
	page := c.get("/connections/cert").Body
	contains(t, "page of a CA without principals", page, `id="ca-principals"`, "editors included", "pgrelay ssh-ca principals USER")
	if _, err := s.App.SetSSHCAPrincipals(ctx, app.SSHCAPrincipals{Principals: []string{"jump", "etl"}}); err != nil {
		t.Fatal(err)
	}
	page = c.get("/connections/cert").Body
	contains(t, "page of a CA with principals", page, `id="ca-principals"`, "<code>jump</code>, <code>etl</code>")
	excludes(t, "page of a CA with principals", page, "editors included")
}
