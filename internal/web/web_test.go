package web_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/requestid"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// client is a browser-like HTTP client: it keeps cookies and does not
// follow redirects, so tests see each step.
type client struct {
	t    *testing.T
	base string
	hc   *http.Client
}

func (s *stack) client(t *testing.T) *client {
	jar, _ := cookiejar.New(nil)
	return &client{t: t, base: s.URL, hc: &http.Client{Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type response struct {
	Status   int
	Location string
	Body     string
	Header   http.Header
}

func (c *client) do(req *http.Request) response {
	c.t.Helper()
	res, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return response{Status: res.StatusCode, Location: res.Header.Get("Location"), Body: string(b), Header: res.Header}
}

func (c *client) get(path string) response {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, c.base+path, nil)
	return c.do(req)
}

// post sends a form; headers are set after the form's content type.
func (c *client) post(path string, form url.Values, headers ...string) response {
	c.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, c.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return c.do(req)
}

var csrfRE = regexp.MustCompile(`name="` + auth.CSRFField + `" value="([^"]+)"`)

// csrf returns the CSRF token of the forms on page path.
func (c *client) csrf(path string) string {
	c.t.Helper()
	r := c.get(path)
	m := csrfRE.FindStringSubmatch(r.Body)
	if m == nil {
		c.t.Fatalf("no CSRF field on %s (status %d)", path, r.Status)
	}
	return m[1]
}

// login signs in with token and returns the response to the POST.
func (c *client) login(token, next string) response {
	c.t.Helper()
	page := "/login"
	if next != "" {
		page += "?next=" + url.QueryEscape(next)
	}
	f := url.Values{auth.CSRFField: {c.csrf(page)}, "token": {token}}
	if next != "" {
		f.Set("next", next)
	}
	return c.post("/login", f)
}

func (c *client) mustLogin(token string) {
	c.t.Helper()
	if r := c.login(token, ""); r.Status != http.StatusSeeOther || r.Location != "/" {
		c.t.Fatalf("login: status %d location %q\n%s", r.Status, r.Location, r.Body)
	}
}

func contains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not contain %q", what, sub)
		}
	}
}

func excludes(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			t.Errorf("%s contains %q", what, sub)
		}
	}
}

func validForm(name string) url.Values {
	return url.Values{"name": {name}, "flavor": {"postgres"}, "host": {"db.internal"}, "port": {"5432"},
		"database": {"analytics"}, "user": {"dbt"}, "password": {"s3cret-pw"}, "sslmode": {"prefer"}, "threads": {"4"}}
}

func TestLoginLogout(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	c := s.client(t)

	r := c.get("/")
	if r.Status != http.StatusSeeOther || r.Location != "/login" {
		t.Fatalf("GET / signed out: %d %q", r.Status, r.Location)
	}
	r = c.get("/connections/wh?tab=1")
	if r.Status != http.StatusSeeOther || r.Location != "/login?next=%2Fconnections%2Fwh%3Ftab%3D1" {
		t.Fatalf("GET /connections/wh signed out: %d %q", r.Status, r.Location)
	}
	r = c.get("/login")
	contains(t, "login page", r.Body, `type="password"`, "API token")
	if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") ||
		!strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "form-action 'self'") ||
		strings.Contains(csp, "unsafe-inline") {
		t.Errorf("CSP = %q", csp)
	}

	// A wrong token is refused on the page, and never echoed back.
	bad := auth.TokenPrefix + strings.Repeat("x", 43)
	r = c.login(bad, "")
	if r.Status != http.StatusUnauthorized {
		t.Fatalf("bad token: status %d", r.Status)
	}
	contains(t, "bad token page", r.Body, "This token is not valid")
	excludes(t, "bad token page", r.Body, bad)

	// The sign-in form without its nonce cookie is refused.
	other := s.client(t)
	r = other.post("/login", url.Values{auth.CSRFField: {"x"}, "token": {s.Tokens[auth.Admin].Token}})
	if r.Status != http.StatusForbidden {
		t.Fatalf("login without nonce: status %d", r.Status)
	}

	r = c.login(s.Tokens[auth.Editor].Token, "/connections?x=1")
	if r.Status != http.StatusSeeOther || r.Location != "/connections?x=1" {
		t.Fatalf("login: %d %q\n%s", r.Status, r.Location, r.Body)
	}
	var cookie *http.Cookie
	for _, ck := range c.hc.Jar.Cookies(mustURL(t, s.URL)) {
		if ck.Name == auth.SessionCookie {
			cookie = ck
		}
	}
	if cookie == nil {
		t.Fatal("no session cookie after login")
	}
	if strings.Contains(cookie.Value, s.Tokens[auth.Editor].Token) {
		t.Fatal("the session cookie holds the token")
	}
	// The raw Set-Cookie header carries the flags.
	c2 := s.client(t)
	r = c2.login(s.Tokens[auth.Editor].Token, "")
	sc := strings.Join(r.Header.Values("Set-Cookie"), "\n")
	contains(t, "Set-Cookie", sc, auth.SessionCookie+"=", "HttpOnly", "SameSite=Strict", "Path=/")

	r = c.get("/connections")
	if r.Status != http.StatusOK {
		t.Fatalf("list: %d", r.Status)
	}
	contains(t, "list", r.Body, "alice-editor", ">editor<", "Sign out")
	// The sign-in page sends a signed-in user on.
	if r := c.get("/login?next=%2Fnew"); r.Status != http.StatusSeeOther || r.Location != "/new" {
		t.Fatalf("login page when signed in: %d %q", r.Status, r.Location)
	}

	// Signing out needs the CSRF token.
	r = c.post("/logout", url.Values{})
	if r.Status != http.StatusForbidden {
		t.Fatalf("logout without CSRF: %d", r.Status)
	}
	r = c.post("/logout", url.Values{auth.CSRFField: {c.csrf("/connections")}})
	if r.Status != http.StatusSeeOther || !strings.HasPrefix(r.Location, "/login") {
		t.Fatalf("logout: %d %q", r.Status, r.Location)
	}
	if r := c.get("/connections"); r.Status != http.StatusSeeOther {
		t.Fatalf("after logout: %d", r.Status)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestRedirectSafety(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	for next, want := range map[string]string{
		"//evil.example":             "/",
		"//evil.example/connections": "/",
		`/\evil.example`:             "/",
		"https://evil.example/":      "/",
		"javascript:alert(1)":        "/",
		"/%2F%2Fevil.example":        "/%2F%2Fevil.example",
		"connections":                "/",
		"/login":                     "/",
		"/connections/wh":            "/connections/wh",
		"/new":                       "/new",
	} {
		c := s.client(t)
		r := c.login(s.Tokens[auth.Viewer].Token, next)
		if r.Status != http.StatusSeeOther || r.Location != want {
			t.Errorf("next=%q: %d %q, want %q", next, r.Status, r.Location, want)
		}
	}
	// The sign-in page does not carry an unsafe next into its form.
	r := s.client(t).get("/login?next=" + url.QueryEscape("//evil.example"))
	excludes(t, "login page", r.Body, "evil.example")
}

func TestCSRF(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Admin].Token)
	token := c.csrf("/new")

	f := validForm("wh")
	if r := c.post("/connections", f); r.Status != http.StatusForbidden {
		t.Fatalf("no CSRF token: %d", r.Status)
	}
	f.Set(auth.CSRFField, "forged")
	if r := c.post("/connections", f); r.Status != http.StatusForbidden {
		t.Fatalf("wrong CSRF token: %d", r.Status)
	}
	// Another session's token does not fit this one.
	c2 := s.client(t)
	c2.mustLogin(s.Tokens[auth.Editor].Token)
	f.Set(auth.CSRFField, c2.csrf("/new"))
	if r := c.post("/connections", f); r.Status != http.StatusForbidden {
		t.Fatalf("other session's CSRF token: %d", r.Status)
	}
	f.Set(auth.CSRFField, token)
	r := c.post("/connections", f, "Origin", "https://evil.example")
	if r.Status != http.StatusForbidden {
		t.Fatalf("cross-origin: %d", r.Status)
	}
	contains(t, "403 page", r.Body, "another site")
	if r := c.post("/connections", f, "Sec-Fetch-Site", "cross-site"); r.Status != http.StatusForbidden {
		t.Fatalf("Sec-Fetch-Site cross-site: %d", r.Status)
	}
	if _, err := s.App.GetConnection(context.Background(), "wh"); err == nil {
		t.Fatal("a refused request created the connection")
	}
	r = c.post("/connections", f, "Origin", s.URL, "Sec-Fetch-Site", "same-origin")
	if r.Status != http.StatusSeeOther || r.Location != "/connections/wh?created=1" {
		t.Fatalf("same-origin create: %d %q\n%s", r.Status, r.Location, r.Body)
	}
}

func TestViewerCannotWrite(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	// A password no page could contain by chance: "pw" turned up in a
	// random public key or token about once in 25 runs.
	const password = "viewer-must-not-see-Zq7"
	spec := connection.Spec{Name: "wh", Host: "db.internal", Database: "analytics", User: "dbt",
		Password: secret.New(password), Tunnel: &connection.Tunnel{Host: "bastion.internal", User: "pgrelay"}}
	if _, err := s.App.CreateConnection(ctx, spec); err != nil {
		t.Fatal(err)
	}
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Viewer].Token)
	list := c.get("/connections").Body
	contains(t, "viewer list", list, "wh", "alice-viewer", ">viewer<")
	excludes(t, "viewer list", list, `href="/new"`)
	show := c.get("/connections/wh").Body
	contains(t, "viewer show", show, "ssh-ed25519 ", "Password</dt><dd>set")
	excludes(t, "viewer show", show, "/edit", "/delete", "/rotate-key", "trust-host-key", password)
	token := c.csrf("/connections")
	for _, p := range []string{"/new", "/connections/wh/edit", "/connections/wh/delete", "/connections/wh/rotate-key"} {
		if r := c.get(p); r.Status != http.StatusForbidden {
			t.Errorf("viewer GET %s: %d", p, r.Status)
		}
	}
	for _, p := range []string{"/connections", "/connections/wh/edit", "/connections/wh/delete",
		"/connections/wh/rotate-key", "/connections/wh/trust-host-key"} {
		f := validForm("wh2")
		f.Set(auth.CSRFField, token)
		f.Set("confirm", "wh")
		f.Set("fingerprint", "SHA256:x")
		r := c.post(p, f)
		if r.Status != http.StatusForbidden {
			t.Errorf("viewer POST %s: %d", p, r.Status)
		}
		contains(t, "viewer 403 page", r.Body, "viewer role")
	}
	if cs, _ := s.App.ListConnections(ctx); len(cs) != 1 {
		t.Fatalf("viewer changed connections: %d", len(cs))
	}
	if v, _ := s.App.GetConnection(ctx, "wh"); v.SSHTunnel.PreviousPublicKey != "" {
		t.Fatal("viewer rotated the key")
	}
}

func TestRevokedTokenEndsSession(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Editor].Token)
	if r := c.get("/connections"); r.Status != http.StatusOK {
		t.Fatalf("list: %d", r.Status)
	}
	token := c.csrf("/connections")
	if _, err := s.App.RevokeToken(context.Background(), s.Tokens[auth.Editor].ID); err != nil {
		t.Fatal(err)
	}
	r := c.get("/connections")
	if r.Status != http.StatusSeeOther || r.Location != "/login?next=%2Fconnections&reason=revoked" {
		t.Fatalf("after revoke: %d %q", r.Status, r.Location)
	}
	f := validForm("wh")
	f.Set(auth.CSRFField, token)
	if r := c.post("/connections", f); r.Status != http.StatusSeeOther || !strings.HasPrefix(r.Location, "/login") {
		t.Fatalf("POST after revoke: %d %q", r.Status, r.Location)
	}
	contains(t, "login page", c.get("/login?reason=revoked").Body, "revoked")
	// The revoked token cannot sign in again.
	if r := c.login(s.Tokens[auth.Editor].Token, ""); r.Status != http.StatusUnauthorized {
		t.Fatalf("login with revoked token: %d", r.Status)
	}
}

func TestFormErrors(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Editor].Token)
	f := validForm("wh")
	f.Set(auth.CSRFField, c.csrf("/new"))
	f.Set("port", "70000")
	f.Set("host", "")
	f.Set("threads", "many")
	f.Set("ssh_tunnel.enabled", "1")
	f.Set("ssh_tunnel.host", "db:22")
	f.Set("ssh_tunnel.user", "pgrelay")
	f.Set("password", "typed-secret-pw")
	r := c.post("/connections", f)
	if r.Status != http.StatusUnprocessableEntity {
		t.Fatalf("status %d\n%s", r.Status, r.Body)
	}
	contains(t, "form", r.Body,
		`id="f-port-error"`, "70000 is out of range",
		`id="f-host-error"`, "required",
		`id="f-threads-error"`, "is not a whole number",
		`id="f-ssh_tunnel-host-error"`, "includes a port",
		`href="#f-ssh_tunnel-host"`, `value="db:22"`, `value="70000"`, `value="pgrelay"`, `value="many"`)
	excludes(t, "form", r.Body, "typed-secret-pw")
	if _, err := s.App.GetConnection(context.Background(), "wh"); err == nil {
		t.Fatal("an invalid form created the connection")
	}

	// A 0 typed where 1 is the least accepted is refused next to its
	// input: it took the default (port 5432, 4 threads, SSH port 22, 10
	// missed keepalives) without a word.
	f = validForm("wh")
	f.Set(auth.CSRFField, c.csrf("/new"))
	f.Set("port", "0")
	f.Set("threads", "0")
	f.Set("ssh_tunnel.enabled", "1")
	f.Set("ssh_tunnel.host", "bastion.example.com")
	f.Set("ssh_tunnel.user", "pgrelay")
	f.Set("ssh_tunnel.port", "0")
	f.Set("ssh_tunnel.keepalive_count_max", "0")
	r = c.post("/connections", f)
	if r.Status != http.StatusUnprocessableEntity {
		t.Fatalf("zeros: status %d", r.Status)
	}
	contains(t, "zeros", r.Body,
		`id="f-port-error"`, "0 is out of range: accepted is 1 to 65535",
		`id="f-threads-error"`, "0 is out of range: accepted is 1 to 256",
		`id="f-ssh_tunnel-port-error"`, `id="f-ssh_tunnel-keepalive_count_max-error"`)
	if _, err := s.App.GetConnection(context.Background(), "wh"); err == nil {
		t.Fatal("a form with a port of 0 created the connection")
	}

	// A taken name is a field error too.
	f = validForm("wh")
	f.Set(auth.CSRFField, c.csrf("/new"))
	if r := c.post("/connections", f); r.Status != http.StatusSeeOther {
		t.Fatalf("create: %d", r.Status)
	}
	r = c.post("/connections", f)
	contains(t, "duplicate", r.Body, `id="f-name-error"`, "already exists")
}

func TestEditKeepsPassword(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Admin].Token)
	f := validForm("wh")
	f.Set(auth.CSRFField, c.csrf("/new"))
	if r := c.post("/connections", f); r.Status != http.StatusSeeOther {
		t.Fatalf("create: %d", r.Status)
	}
	edit := c.get("/connections/wh/edit").Body
	contains(t, "edit form", edit, "A password is stored", `value="db.internal"`)
	excludes(t, "edit form", edit, "s3cret-pw")
	f.Del("password")
	f.Set("schema", "marts")
	f.Set(auth.CSRFField, c.csrf("/connections/wh/edit"))
	if r := c.post("/connections/wh/edit", f); r.Status != http.StatusSeeOther || r.Location != "/connections/wh?saved=1" {
		t.Fatalf("update: %d %q\n%s", r.Status, r.Location, r.Body)
	}
	v, err := s.App.GetConnection(ctx, "wh")
	if err != nil || v.Schema != "marts" || !v.HasPassword {
		t.Fatalf("after edit: %+v, %v", v, err)
	}
	// Another host without the password again: the stored password would
	// go to a server it was not saved for, so the form asks for it.
	f.Set("host", "db2.internal")
	r := c.post("/connections/wh/edit", f)
	if r.Status != http.StatusUnprocessableEntity {
		t.Fatalf("host change without password: %d", r.Status)
	}
	contains(t, "host change without password", r.Body, `id="f-password-error"`, "enter the password again: the endpoint or how it is verified changed")
	if v, _ := s.App.GetConnection(ctx, "wh"); v.Host != "db.internal" {
		t.Fatalf("a refused edit moved the connection to %s", v.Host)
	}
	f.Set("password", "s3cret-pw-2")
	if r := c.post("/connections/wh/edit", f); r.Status != http.StatusSeeOther {
		t.Fatalf("host change with password: %d\n%s", r.Status, r.Body)
	}
	if v, _ := s.App.GetConnection(ctx, "wh"); v.Host != "db2.internal" || !v.HasPassword {
		t.Fatalf("after host change with password: %+v", v)
	}
	f.Del("password")
	f.Set("clear_password", "1")
	if r := c.post("/connections/wh/edit", f); r.Status != http.StatusSeeOther {
		t.Fatalf("update: %d", r.Status)
	}
	if v, _ := s.App.GetConnection(ctx, "wh"); v.HasPassword {
		t.Fatal("clear_password kept the password")
	}

	// Delete asks for the name.
	f = url.Values{auth.CSRFField: {c.csrf("/connections/wh/delete")}, "confirm": {"nope"}}
	r = c.post("/connections/wh/delete", f)
	if r.Status != http.StatusUnprocessableEntity {
		t.Fatalf("delete with wrong name: %d", r.Status)
	}
	f.Set("confirm", "wh")
	r = c.post("/connections/wh/delete", f)
	if r.Status != http.StatusSeeOther || r.Location != "/connections?deleted=wh" {
		t.Fatalf("delete: %d %q", r.Status, r.Location)
	}
	if _, err := s.App.GetConnection(ctx, "wh"); err == nil {
		t.Fatal("still there after delete")
	}
}

func TestErrorPages(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Admin].Token)
	r := c.get("/connections/nope")
	if r.Status != http.StatusNotFound {
		t.Fatalf("unknown connection: %d", r.Status)
	}
	contains(t, "404", r.Body, "Connection not found", "nope")
	if r := c.get("/no/such/page"); r.Status != http.StatusNotFound || !strings.Contains(r.Body, "Page not found") {
		t.Fatalf("unknown page: %d", r.Status)
	}
	// Unknown API paths are the API's (JSON), not the UI's 404 page.
	if r := c.get("/api/v1/no-such-route"); r.Status != http.StatusNotFound || strings.Contains(r.Body, "<html") {
		t.Fatalf("unknown API path: %d %q", r.Status, r.Body)
	}
	if r := c.get("/static/app.css"); r.Status != http.StatusOK || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/css") {
		t.Fatalf("app.css: %d %q", r.Status, r.Header.Get("Content-Type"))
	}

	// An unexpected failure shows the request ID, never the detail.
	s.closeStore(t)
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/connections", nil)
	req.Header.Set(requestid.Header, "test-request-42")
	r = c.do(req)
	if r.Status != http.StatusInternalServerError {
		t.Fatalf("closed store: %d", r.Status)
	}
	contains(t, "500 page", r.Body, "Something went wrong", "test-request-42")
	excludes(t, "500 page", r.Body, "sql", "closed")
}

// TestFormDurationSecondsOutOfRange: a duration typed as a number of
// seconds that no duration holds (NaN, Inf, 1e300) is refused showing
// what was typed and what is accepted, in the connection and the job
// form; it wrapped to a nonsense value ("-2562047h47m16.854775808s").
func TestFormDurationSecondsOutOfRange(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Editor].Token)
	for _, v := range []string{"NaN", "Inf", "-Inf", "1e300", "1e400"} {
		f := validForm("wh")
		f.Set(auth.CSRFField, c.csrf("/new"))
		f.Set("ssh_tunnel.enabled", "1")
		f.Set("ssh_tunnel.host", "bastion")
		f.Set("ssh_tunnel.user", "pgrelay")
		f.Set("ssh_tunnel.keepalive_interval", v)
		f.Set("health_check_interval", v)
		r := c.post("/connections", f)
		if r.Status != http.StatusUnprocessableEntity {
			t.Fatalf("%s: status %d", v, r.Status)
		}
		contains(t, "connection form "+v, r.Body, `id="f-ssh_tunnel-keepalive_interval-error"`, `id="f-health_check_interval-error"`,
			"&#34;"+v+"&#34; is not a duration", "a number of seconds up to 9223372036")
		excludes(t, "connection form "+v, r.Body, "2562047h")

		j := url.Values{auth.CSRFField: {c.csrf("/jobs/new")}, "mode": {"form"}, "name": {"nightly"}, "connection": {"wh"},
			"timeout": {v}, "stop_grace": {v}, "steps[0].kind": {"sql"}, "steps[0].sql": {"select 1"}}
		r = c.post("/jobs", j)
		if r.Status != http.StatusUnprocessableEntity {
			t.Fatalf("%s: job status %d", v, r.Status)
		}
		contains(t, "job form "+v, r.Body, `id="f-timeout-error"`, `id="f-stop_grace-error"`,
			"&#34;"+v+"&#34; is not a duration", "a number of seconds up to 9223372036")
		excludes(t, "job form "+v, r.Body, "2562047h")
	}
	if _, err := s.App.GetConnection(context.Background(), "wh"); err == nil {
		t.Fatal("a refused form created the connection")
	}
}

// TestSaveAfterMasterKeyRotation: a server left running with the old key
// after `pgrelay master-key rotate` refuses to save a connection; the form
// says why and what to do (restart it, 503), as the API does, not the
// generic "Something went wrong".
func TestSaveAfterMasterKeyRotation(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Editor].Token)
	next, err := secret.NewKeyring(bytes.Repeat([]byte{9}, secret.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.RotateMasterKey(context.Background(), s.store, s.keyring, next, app.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	f := validForm("after")
	f.Set(auth.CSRFField, c.csrf("/new"))
	r := c.post("/connections", f)
	if r.Status != http.StatusServiceUnavailable {
		t.Fatalf("save after the rotation: status %d\n%s", r.Status, r.Body)
	}
	contains(t, "the page", r.Body, "Restart needed", "master key changed since this process started", "restart it with the new key")
	excludes(t, "the page", r.Body, "Something went wrong", "s3cret-pw")
	if _, err := s.App.GetConnection(context.Background(), "after"); err == nil {
		t.Fatal("the server with the old key saved a connection after the rotation")
	}
}
