package web_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
)

// TestNewConnectionPage: /connections/new is the new-connection form (like
// /new), for editors only; a connection named "new" keeps a page at
// /connections/new/; the RSA choice names the size pgrelay generates.
func TestNewConnectionPage(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Editor].Token)
	r := c.get("/connections/new")
	if r.Status != http.StatusOK {
		t.Fatalf("GET /connections/new: %d\n%s", r.Status, r.Body)
	}
	contains(t, "new connection page", r.Body, `id="conn-form"`, `action="/connections"`, "<title>New connection")
	contains(t, "key type choice", r.Body, ">RSA 3072 with SHA-2<")
	if sshkey.RSABits != 3072 {
		t.Fatalf("RSA keys are %d bits: update the expected label", sshkey.RSABits)
	}
	excludes(t, "key type choice", r.Body, "RSA 4096")

	if _, err := s.App.CreateConnection(context.Background(), connection.Spec{Name: "new", Host: "db.internal",
		Database: "analytics", User: "dbt", Password: secret.New("pw")}); err != nil {
		t.Fatal(err)
	}
	r = c.get("/connections/new/")
	if r.Status != http.StatusOK {
		t.Fatalf("GET /connections/new/: %d", r.Status)
	}
	contains(t, "page of the connection named new", r.Body, "db.internal:5432/analytics")

	viewer := s.client(t)
	viewer.mustLogin(s.Tokens[auth.Viewer].Token)
	if r := viewer.get("/connections/new"); r.Status != http.StatusForbidden {
		t.Fatalf("viewer GET /connections/new: %d", r.Status)
	}
}
