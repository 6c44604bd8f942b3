package web_test

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"testing"

	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestEditorCannotReplaceHostKey: the approval of a changed bastion host
// key posted by an editor is refused (403, the pin kept), and so is a
// form that gives the new key; an admin's is taken.
func TestEditorCannotReplaceHostKey(t *testing.T) {
	t.Parallel()
	b := testenv.StartBastion(t, testenv.BastionOptions{}) // its host key is rotated
	s := newStack(t)
	ctx := context.Background()
	spec := connection.Spec{Name: "wh", Host: "10.20.0.9", Database: "analytics", User: "dbt", Password: secret.New("pw"),
		Tunnel: &connection.Tunnel{Host: b.Host, Port: b.Port, User: b.User}}
	oldFP, newFP := pinThenChangeHostKey(t, s, b, spec)
	pinned := func() string {
		v, err := s.App.GetConnection(ctx, "wh")
		if err != nil {
			t.Fatal(err)
		}
		return v.SSHTunnel.HostKeyFingerprint
	}

	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Editor].Token)
	show := c.get("/connections/wh").Body
	contains(t, "editor show", show, "approve-needs-admin", "Ask an admin")
	excludes(t, "editor show", show, `id="approve-host-key"`)
	f := url.Values{"fingerprint": {newFP}}
	f.Set(auth.CSRFField, c.csrf("/connections/wh"))
	r := c.post("/connections/wh/trust-host-key", f)
	if r.Status != http.StatusForbidden {
		t.Fatalf("editor approving the changed key: %d", r.Status)
	}
	contains(t, "editor refused", r.Body, "needs the admin role")
	if got := pinned(); got != oldFP {
		t.Fatalf("pinned after the editor's approval: %s, want %s", got, oldFP)
	}

	// Nor by giving the new key in the form.
	e := url.Values{"name": {"wh"}, "flavor": {"postgres"}, "host": {spec.Host}, "port": {"5432"},
		"database": {spec.Database}, "user": {spec.User}, "sslmode": {"prefer"}, "threads": {"4"},
		"ssh_tunnel.enabled": {"1"}, "ssh_tunnel.host": {b.Host}, "ssh_tunnel.port": {strconv.Itoa(b.Port)},
		"ssh_tunnel.user": {b.User}, "ssh_tunnel.known_host": {sshkey.AuthorizedKey(b.HostKey, "")}}
	e.Set(auth.CSRFField, c.csrf("/connections/wh/edit"))
	r = c.post("/connections/wh/edit", e)
	if r.Status != http.StatusForbidden {
		t.Fatalf("editor giving the new key in the form: %d\n%s", r.Status, r.Body)
	}
	contains(t, "editor form refused", r.Body, "needs the admin role")
	if got := pinned(); got != oldFP {
		t.Fatalf("pinned after the editor's form: %s, want %s", got, oldFP)
	}
	// Nor by testing the form with the new key: the test would send the
	// stored password through whatever presents it.
	e.Set(auth.CSRFField, c.csrf("/connections/wh/edit"))
	r = c.post("/connections/wh/edit/test", e)
	if r.Status != http.StatusForbidden {
		t.Fatalf("editor testing the form with the new key: %d\n%s", r.Status, r.Body)
	}
	contains(t, "editor form test refused", r.Body, "needs the admin role")

	a := s.client(t)
	a.mustLogin(s.Tokens[auth.Admin].Token)
	contains(t, "admin show", a.get("/connections/wh").Body, `id="approve-host-key"`)
	f.Set(auth.CSRFField, a.csrf("/connections/wh"))
	if r := a.post("/connections/wh/trust-host-key", f); r.Status != http.StatusSeeOther {
		t.Fatalf("admin approving the changed key: %d\n%s", r.Status, r.Body)
	}
	if got := pinned(); got != newFP {
		t.Fatalf("pinned after the admin's approval: %s, want %s", got, newFP)
	}
}
