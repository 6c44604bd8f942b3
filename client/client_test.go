package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/apiwire"
	"github.com/pgrelay/pgrelay/client"
	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

var bg = context.Background()

// A syntactically valid token that no server knows.
const fakeToken = auth.TokenPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

func TestNewValidates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ url, want string }{
		{"", "empty"},
		{"127.0.0.1:8080", "scheme"},
		{"localhost:8080", "scheme"},
		{"ftp://h", "scheme"},
		{"http://", "host is missing"},
		{"http://:8080", "host is missing"},
		{"http://h:8080/?x=1", "query"},
		{"http://h:8080/#f", "fragment"},
		{"http://admin:hunter2@h:8080", "user or password"},
	} {
		_, err := client.New(tc.url, fakeToken)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%q): %v, want an error about %q", tc.url, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), fakeToken)) {
			t.Errorf("New(%q) error reveals a secret: %v", tc.url, err)
		}
	}
	for _, tok := range []string{"", "  ", "Bearer " + fakeToken, "s3cr3t-not-a-token"} {
		_, err := client.New("http://127.0.0.1:8080", tok)
		if err == nil || !strings.Contains(err.Error(), "token") {
			t.Errorf("New with token %q: %v", tok, err)
		}
		if err != nil && strings.TrimSpace(tok) != "" && strings.Contains(err.Error(), strings.TrimSpace(tok)) {
			t.Errorf("error reveals the token: %v", err)
		}
	}
	for _, u := range []string{"http://127.0.0.1:8080", "https://pgrelay.example.com/", "http://[::1]:8080/pgrelay/"} {
		c, err := client.New(u, " "+fakeToken+"\n")
		if err != nil {
			t.Errorf("New(%q): %v", u, err)
			continue
		}
		if strings.HasSuffix(c.BaseURL(), "/") {
			t.Errorf("base URL %q keeps a trailing slash", c.BaseURL())
		}
	}
}

// TestNewRefusesPlainHTTP: New refuses an http URL whose host is not
// loopback (the token would cross the network in clear text) with
// ErrPlainHTTP, before sending anything, unless WithInsecureHTTP; a
// transport of the caller's does not lift it. New used to accept any
// http URL. (No address here is dialled: New sends nothing.)
func TestNewRefusesPlainHTTP(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"http://192.0.2.1:8080", "http://pgrelay.example.com", "http://localhost.example.com",
		"http://127.0.0.1.nip.io", "http://[::ffff:192.0.2.1]", "http://[2001:db8::1]:8080/pgrelay", "HTTP://192.0.2.1", "http://0.0.0.0:8080"} {
		_, err := client.New(u, fakeToken)
		if !errors.Is(err, client.ErrPlainHTTP) || !strings.Contains(err.Error(), "accepted is https://, or http:// to 127.0.0.0/8, ::1 or localhost") {
			t.Errorf("New(%q): %v, want ErrPlainHTTP", u, err)
		}
		if err != nil && strings.Contains(err.Error(), fakeToken) {
			t.Errorf("New(%q) error reveals the token: %v", u, err)
		}
		_, err = client.New(u, fakeToken, client.WithHTTPClient(&http.Client{}))
		if !errors.Is(err, client.ErrPlainHTTP) {
			t.Errorf("New(%q, WithHTTPClient): %v, want ErrPlainHTTP", u, err)
		}
		if _, err := client.New(u, fakeToken, client.WithInsecureHTTP()); err != nil {
			t.Errorf("New(%q, WithInsecureHTTP): %v", u, err)
		}
	}
	for _, u := range []string{"https://192.0.2.1", "http://127.0.0.1:8080", "http://127.8.9.10", "http://localhost:8080",
		"http://LocalHost.", "http://[::1]:8080", "http://[::ffff:127.0.0.1]:8080"} {
		if _, err := client.New(u, fakeToken); err != nil {
			t.Errorf("New(%q): %v", u, err)
		}
	}
}

func TestTokenNeverInErrors(t *testing.T) {
	t.Parallel()
	port := testenv.FreePort(t) // nothing listens
	c, err := client.New("http://127.0.0.1:"+strconv.Itoa(port), fakeToken)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ListConnections(bg)
	if err == nil || strings.Contains(err.Error(), fakeToken) || !strings.Contains(err.Error(), "connection refused") ||
		!strings.Contains(err.Error(), "GET /api/v1/connections") {
		t.Fatalf("error: %v", err)
	}
}

// TestUnexpectedResponses covers what a real pgrelay server does not send
// but a proxy or another server in front of it may.
func TestUnexpectedResponses(t *testing.T) {
	t.Parallel()
	var gotAuth, gotUA string
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth, gotUA = r.Header.Get("Authorization"), r.Header.Get("User-Agent")
		switch r.URL.Path {
		case "/api/v1/connections":
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = w.Write([]byte("<html>bad gateway</html>"))
		case "/api/v1/whoami":
			http.Redirect(w, r, "https://elsewhere.example.com/api/v1/whoami", http.StatusMovedPermanently)
		case "/api/v1/tokens":
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write([]byte("<html>login</html>"))
		}
	}))
	defer fake.Close()
	c, err := client.New(fake.URL, fakeToken, client.WithUserAgent("pgrelay-test/1"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ListConnections(bg)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 502 || !strings.Contains(ce.Message, "bad gateway") || !strings.Contains(ce.Message, "502") {
		t.Fatalf("HTML 502: %v", err)
	}
	if gotAuth != "Bearer "+fakeToken || gotUA != "pgrelay-test/1" {
		t.Fatalf("headers: Authorization %q, User-Agent %q", gotAuth, gotUA)
	}
	_, err = c.WhoAmI(bg)
	if err == nil || !strings.Contains(err.Error(), "redirects to https://elsewhere.example.com") {
		t.Fatalf("redirect: %v", err)
	}
	_, err = c.ListTokens(bg)
	if err == nil || !strings.Contains(err.Error(), "instead of JSON") {
		t.Fatalf("HTML 200: %v", err)
	}
}

// TestErrorMapping checks that API errors come back as the client's typed
// errors, through a reverse proxy that serves the API under a path prefix.
func TestErrorMapping(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	target, _ := url.Parse(srv.URL)
	proxy := httptest.NewServer(http.StripPrefix("/pgrelay", httputil.NewSingleHostReverseProxy(target)))
	defer proxy.Close()
	admin, err := client.New(proxy.URL+"/pgrelay/", srv.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	spec := apiwire.ConnectionInput{Name: "wh", Host: "db.internal", Database: "d", User: "u"}
	if _, err := admin.CreateConnection(bg, spec); err != nil {
		t.Fatal(err)
	}
	viewer, err := client.New(srv.URL, srv.Token(t, "v", auth.Viewer).Token)
	if err != nil {
		t.Fatal(err)
	}
	_, errExists := admin.CreateConnection(bg, spec)
	_, errNotFound := admin.GetConnection(bg, "nope")
	_, errInvalid := admin.PublicKey(bg, "wh", false)
	_, errForbidden := viewer.CreateConnection(bg, apiwire.ConnectionInput{Name: "x"})
	errForbiddenQuery := viewer.Query(bg, "wh", "select 1", nil)
	unknown, err := client.New(srv.URL, fakeToken)
	if err != nil {
		t.Fatal(err)
	}
	_, errUnauth := unknown.ListConnections(bg)
	// The default network policy refuses the metadata address.
	if _, err := admin.CreateConnection(bg, apiwire.ConnectionInput{Name: "meta", Host: "169.254.169.254", Port: 80,
		Database: "d", User: "u"}); err != nil {
		t.Fatal(err)
	}
	errDenied := admin.Query(bg, "meta", "select 1", nil)
	errTooLarge := admin.Query(bg, "wh", "select '"+strings.Repeat("x", 4<<20)+"'", nil)
	for _, tc := range []struct {
		err    error
		kind   error
		status int
	}{
		{errExists, client.ErrExists, 409},
		{errNotFound, client.ErrNotFound, 404},
		{errInvalid, client.ErrInvalid, 422},
		{errForbidden, client.ErrForbidden, 403},
		{errForbiddenQuery, client.ErrForbidden, 403},
		{errUnauth, client.ErrUnauthenticated, 401},
		{errDenied, client.ErrNetworkDenied, 422},
		{errTooLarge, client.ErrTooLarge, 413},
	} {
		var ce *client.Error
		if !errors.Is(tc.err, tc.kind) || !errors.As(tc.err, &ce) || ce.Status != tc.status || ce.RequestID == "" {
			t.Errorf("want %v (%d), got %T %v", tc.kind, tc.status, tc.err, tc.err)
		}
	}
	if !strings.Contains(errForbidden.Error(), "admin or editor") {
		t.Errorf("forbidden message does not name the roles: %v", errForbidden)
	}
	_, err = admin.CreateConnection(bg, apiwire.ConnectionInput{Name: "bad", Host: "h:1", Database: "d", User: "u"})
	var ve *client.ValidationError
	if !errors.As(err, &ve) || ve.Fields.Map()["host"] == "" {
		t.Fatalf("validation error: %T %v", err, err)
	}
	// A field error of the request's JSON (not of validation) names it too.
	var ce *client.Error
	_, err = admin.UpdateConnection(bg, "wh", apiwire.ConnectionInput{Name: "wh", Host: "h", Database: "d", User: "u",
		SSHTunnel: &apiwire.TunnelInput{Host: "b", User: "u", KeepaliveInterval: apiwire.Duration(-1)}})
	if !errors.As(err, &ve) || ve.Fields.Map()["ssh_tunnel.keepalive_interval"] == "" {
		t.Fatalf("negative keepalive: %T %v", err, err)
	}
	if errors.As(err, &ce) {
		t.Fatalf("a validation error is also a *client.Error: %v", err)
	}
	if _, err := admin.WhoAmI(bg); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
}

// TestQueryErrorNamesRequest: a database error comes back as a
// *client.QueryError with the SQLSTATE, the HTTP status and the request ID
// that names it in the server's log.
func TestQueryErrorNamesRequest(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	srv := apitest.Start(t, apitest.Options{})
	admin, err := client.New(srv.URL, srv.AdminToken)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateConnection(bg, apiwire.ConnectionInput{Name: "db", Host: pg.Host, Port: pg.Port, Database: db.Name,
		User: db.User, Password: apiwire.NewSecret(db.Password), SSLMode: "disable"}); err != nil {
		t.Fatal(err)
	}
	err = admin.Query(bg, "db", "select * from no_such_table", nil)
	var qe *client.QueryError
	if !errors.As(err, &qe) || qe.Err.SQLState != "42P01" || qe.Status == 0 || qe.RequestID == "" {
		t.Fatalf("want a QueryError with SQLSTATE 42P01, status and request ID: %T %+v", err, err)
	}
}
