package remote_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/client"
	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/remote"
)

var bg = context.Background()

// A syntactically valid token that no server knows.
const fakeToken = auth.TokenPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

// TestErrorMapping checks that API errors come back as package app's
// errors (the *client.Error still reachable), through a reverse proxy that
// serves the API under a path prefix.
func TestErrorMapping(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	target, _ := url.Parse(srv.URL)
	proxy := httptest.NewServer(http.StripPrefix("/pgrelay", httputil.NewSingleHostReverseProxy(target)))
	defer proxy.Close()
	admin, err := remote.Dial(proxy.URL+"/pgrelay/", srv.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	spec := connection.Spec{Name: "wh", Host: "db.internal", Database: "d", User: "u"}
	if _, err := admin.CreateConnection(bg, spec); err != nil {
		t.Fatal(err)
	}
	viewer := srv.Client(t, srv.Token(t, "v", auth.Viewer).Token)
	_, errExists := admin.CreateConnection(bg, spec)
	_, errNotFound := admin.GetConnection(bg, "nope")
	_, errInvalid := admin.PublicKey(bg, "wh", false)
	_, errForbidden := viewer.CreateConnection(bg, connection.Spec{Name: "x"})
	errForbiddenQuery := viewer.Query(bg, "wh", "select 1", nil)
	unknown, err := remote.Dial(srv.URL, fakeToken)
	if err != nil {
		t.Fatal(err)
	}
	_, errUnauth := unknown.ListConnections(bg)
	for _, tc := range []struct {
		err    error
		kind   error
		status int
	}{
		{errExists, app.ErrExists, 409},
		{errNotFound, app.ErrNotFound, 404},
		{errInvalid, app.ErrInvalid, 422},
		{errForbidden, client.ErrForbidden, 403},
		{errForbiddenQuery, client.ErrForbidden, 403},
		{errUnauth, app.ErrUnauthenticated, 401},
	} {
		var ce *client.Error
		if !errors.Is(tc.err, tc.kind) || !errors.As(tc.err, &ce) || ce.Status != tc.status || ce.RequestID == "" {
			t.Errorf("want %v (%d), got %T %v", tc.kind, tc.status, tc.err, tc.err)
		}
	}
	if !strings.Contains(errForbidden.Error(), "admin or editor") {
		t.Errorf("forbidden message does not name the roles: %v", errForbidden)
	}
	_, err = admin.CreateConnection(bg, connection.Spec{Name: "bad", Host: "h:1", Database: "d", User: "u"})
	var ve *app.ValidationError
	if !errors.As(err, &ve) || ve.Fields()["host"] == "" {
		t.Fatalf("validation error: %T %v", err, err)
	}
	// A field error of the request's JSON (not of validation) names it too.
	var ce *client.Error
	_, err = admin.UpdateConnection(bg, "wh", connection.Spec{Name: "wh", Host: "h", Database: "d", User: "u",
		Tunnel: &connection.Tunnel{Host: "b", User: "u", KeepaliveInterval: connection.Duration(-1)}}, nil)
	if !errors.As(err, &ve) || ve.Fields()["ssh_tunnel.keepalive_interval"] == "" {
		t.Fatalf("negative keepalive: %T %v", err, err)
	}
	if errors.As(err, &ce) {
		t.Fatalf("a validation error is also a *client.Error: %v", err)
	}
	if _, err := admin.WhoAmI(bg); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
}
