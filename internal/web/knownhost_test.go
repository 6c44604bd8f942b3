package web_test

import (
	"context"
	"html"
	"net/http"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/sshkey"
)

// TestFormBastionHostKey: the tunnel section has a bastion host key
// field; a key typed there is pinned on save, a bad one is a field error
// next to it, and the edit form leaves it empty and shows the pin it keeps.
func TestFormBastionHostKey(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Editor].Token)
	pair, err := sshkey.Generate(sshkey.Ed25519, "")
	if err != nil {
		t.Fatal(err)
	}
	key := sshkey.AuthorizedKey(pair.Public, "root@bastion")
	fp := sshkey.Fingerprint(pair.Public)

	contains(t, "new form", c.get("/new").Body, `name="ssh_tunnel.known_host"`, "Bastion host key")

	f := validForm("wh")
	f.Set(auth.CSRFField, c.csrf("/new"))
	f.Set("ssh_tunnel.enabled", "1")
	f.Set("ssh_tunnel.host", "bastion.example.com")
	f.Set("ssh_tunnel.user", "pgrelay")
	f.Set("ssh_tunnel.known_host", fp)
	r := c.post("/connections", f)
	if r.Status != http.StatusUnprocessableEntity {
		t.Fatalf("fingerprint as host key: status %d", r.Status)
	}
	contains(t, "form", r.Body, `id="f-ssh_tunnel-known_host-error"`, "is a fingerprint", `href="#f-ssh_tunnel-known_host"`,
		html.EscapeString("accepted is the bastion's public host key"))

	f.Set("ssh_tunnel.known_host", "bastion.example.com "+key+"\n")
	if r := c.post("/connections", f); r.Status != http.StatusSeeOther {
		t.Fatalf("create: %d\n%s", r.Status, r.Body)
	}
	v, err := s.App.GetConnection(context.Background(), "wh")
	if err != nil || v.SSHTunnel == nil || v.SSHTunnel.HostKeyFingerprint != fp {
		t.Fatalf("not pinned: %+v, %v", v, err)
	}
	edit := c.get("/connections/wh/edit").Body
	// html/template writes "+" as "&#43;".
	contains(t, "edit form", edit, "keep the pinned key "+strings.ReplaceAll(fp, "+", "&#43;"))
	excludes(t, "edit form", edit, html.EscapeString(key))
}
