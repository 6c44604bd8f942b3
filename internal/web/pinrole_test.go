package web_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"testing"

	"github.com/pgrelay/pgrelay/internal/app"
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
	if _, err := s.App.CreateConnection(ctx, spec); err != nil {
		t.Fatal(err)
	}
	line, err := s.App.PublicKey(ctx, "wh", false)
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, line)
	sess, err := s.App.Open(ctx, "wh") // pins the key on first use
	if err != nil {
		t.Fatal(err)
	}
	_ = sess.Close()
	oldFP := sshkey.Fingerprint(b.HostKey)
	b.RotateHostKey(t)
	newFP := sshkey.Fingerprint(b.HostKey)
	var changed *app.HostKeyChangedError
	if _, err := s.App.Open(ctx, "wh"); !errors.As(err, &changed) {
		t.Fatalf("after the host key changed: %v", err)
	}
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
