package web_test

import (
	"context"
	"crypto/rand"
	"html"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// pgForm is the connection form for database on the test PostgreSQL.
func pgForm(pg *testenv.Postgres, database, user, password string) url.Values {
	return url.Values{"name": {"draft"}, "flavor": {"postgres"}, "host": {pg.Host}, "port": {strconv.Itoa(pg.Port)},
		"database": {database}, "user": {user}, "password": {password}, "sslmode": {"disable"}, "threads": {"4"}}
}

// TestConnectionTestWithoutScript tests connections through the pages'
// plain form posts (what the buttons do without the script), the API as
// the script calls it (session cookie and X-CSRF-Token header), and the
// Permissions page, against a real PostgreSQL.
func TestConnectionTestWithoutScript(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	// A reader role of the test's own (the cluster is shared), with a
	// name that needs quoting; dropped after the database that holds its
	// privileges (cleanups run last first).
	reader := "web reader " + strings.ToLower(rand.Text()[:10])
	t.Cleanup(func() { pg.Exec(t, "DROP ROLE IF EXISTS "+pgx.Identifier{reader}.Sanitize()) })
	d := pg.NewDatabase(t)
	pg.CreateRole(t, reader, "reader-pw")
	s := newStack(t)
	direct := func(name, user, pw string) {
		t.Helper()
		if _, err := s.App.CreateConnection(ctx, connection.Spec{Name: name, Host: pg.Host, Port: pg.Port, Database: d.Name,
			User: user, Password: secret.New(pw), SSLMode: connection.SSLDisable}); err != nil {
			t.Fatal(err)
		}
	}
	direct("wh", d.User, d.Password)
	direct("badpw", d.User, "wrong-pw")
	direct("reader", reader, "reader-pw")

	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Editor].Token)
	list := c.get("/connections").Body
	contains(t, "list", list, `action="/connections/wh/test#test-panel"`, `data-test="badpw"`, `id="test-panel-template"`,
		`<meta name="csrf-token"`)
	show := c.get("/connections/wh").Body
	contains(t, "show", show, `id="test-connection"`, `href="/connections/wh/grants"`, `id="test-panel"`)
	token := c.csrf("/connections/wh")

	r := c.post("/connections/wh/test", url.Values{auth.CSRFField: {token}})
	if r.Status != http.StatusOK {
		t.Fatalf("test wh: %d\n%s", r.Status, r.Body)
	}
	contains(t, "passing test", r.Body, "All 5 steps passed in ", "(1 not requested)", `data-step="query" data-status="ok"`,
		`data-step="tls" data-status="skipped"`, "user <code>"+d.User+"</code>", "test-passed")
	r = c.post("/connections/badpw/test", url.Values{auth.CSRFField: {token}})
	contains(t, "failing test", html.UnescapeString(r.Body), "Failed at PostgreSQL login: 2 of 6 steps passed",
		`data-step="postgres_auth" data-status="failed"`, "28P01", "How to fix", "rejected the password", "test-failed",
		`data-step="query" data-status="skipped"`)
	if r := c.post("/connections/nope/test", url.Values{auth.CSRFField: {token}}); r.Status != http.StatusNotFound {
		t.Errorf("test of an unknown connection: %d", r.Status)
	}

	// The form, unsaved: a new one, and the edit form keeping the password.
	f := pgForm(pg, d.Name, d.User, d.Password)
	f.Set(auth.CSRFField, token)
	f.Set("name", "Not A Valid Name Yet")
	r = c.post("/new/test", f)
	contains(t, "draft test", r.Body, "All 5 steps passed", "type it again before saving", `id="test-form"`)
	if !strings.Contains(r.Body, `value="`+pg.Host+`"`) || strings.Contains(r.Body, d.Password) {
		t.Error("the form did not keep the typed values, or echoed the password")
	}
	if cs, _ := s.App.ListConnections(ctx); len(cs) != 3 {
		t.Fatalf("a draft test saved a connection: %d", len(cs))
	}
	f.Set("password", "wrong")
	contains(t, "draft with a wrong password", c.post("/new/test", f).Body, "Failed at PostgreSQL login")
	f.Set("host", "")
	r = c.post("/new/test", f)
	if r.Status != http.StatusUnprocessableEntity {
		t.Fatalf("draft without host: %d", r.Status)
	}
	contains(t, "draft without host", r.Body, "f-host-error", "error-summary")
	edit := pgForm(pg, d.Name, d.User, "")
	edit.Set(auth.CSRFField, token)
	edit.Set("schema", "marts")
	contains(t, "edit form test", c.post("/connections/wh/edit/test", edit).Body, "All 5 steps passed")
	contains(t, "edit form test of a wrong stored password", c.post("/connections/badpw/edit/test", edit).Body,
		"Failed at PostgreSQL login")

	// What the script does: the API with the session cookie and the CSRF
	// token of the page in a header.
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/api/v1/connections/wh/test", nil)
	req.Header.Set("Accept", "text/event-stream")
	req.Header.Set(auth.CSRFHeader, token)
	r = c.do(req)
	if r.Status != http.StatusOK || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/event-stream") ||
		strings.Count(r.Body, "event: step\n") != 6 || !strings.Contains(r.Body, "event: report\n") {
		t.Fatalf("API test with the session: %d %s\n%s", r.Status, r.Header.Get("Content-Type"), r.Body)
	}
	req, _ = http.NewRequest(http.MethodPost, s.URL+"/api/v1/connections/wh/test", nil)
	if r := c.do(req); r.Status != http.StatusForbidden || !strings.Contains(r.Body, `"csrf"`) {
		t.Fatalf("API test with the session but no CSRF header: %d %s", r.Status, r.Body)
	}

	// Permissions.
	su, err := pgx.Connect(ctx, pg.ConnString(pg.SuperUser, pg.SuperPassword, d.Name))
	if err != nil {
		t.Fatal(err)
	}
	defer su.Close(ctx)
	owner := pgx.Identifier{d.User}.Sanitize()
	if _, err := su.Exec(ctx, `CREATE SCHEMA raw AUTHORIZATION `+owner+`; SET ROLE `+owner+`; CREATE TABLE raw."Orders" (id int);
		CREATE VIEW raw.recent AS SELECT * FROM raw."Orders"; RESET ROLE`); err != nil {
		t.Fatal(err)
	}
	page := c.get("/connections/reader/grants")
	if page.Status != http.StatusOK {
		t.Fatalf("permissions page: %d", page.Status)
	}
	contains(t, "permissions page", page.Body, `name="target_schema"`, `name="source_schemas"`, `id="check-permissions"`)
	audit := url.Values{auth.CSRFField: {token}, "target_schema": {"analytics"}, "source_schemas": {"raw,\n missing_schema\n"}}
	r = c.post("/connections/reader/grants", audit)
	body := html.UnescapeString(r.Body)
	contains(t, "audit", body, "privileges missing", "2 of 2 tables and views in schema raw", "<code>\"Orders\"</code>",
		"status-failed", "Not found", `GRANT USAGE ON SCHEMA "raw" TO "`+reader+`";`, `id="grants-sql"`, `data-copy="grants-sql"`)
	sqlStart := strings.Index(body, `<pre id="grants-sql"`)
	sqlText := body[strings.Index(body[sqlStart:], "<code>")+sqlStart+len("<code>") : strings.Index(body[sqlStart:], "</code>")+sqlStart]
	var kept []string // the schema that does not exist cannot be granted on
	for _, line := range strings.Split(sqlText, "\n") {
		if !strings.Contains(line, "missing_schema") {
			kept = append(kept, line)
		}
	}
	if _, err := su.Exec(ctx, strings.Join(kept, "\n")); err != nil {
		t.Fatalf("run the page's SQL: %v\n%s", err, sqlText)
	}
	audit.Set("source_schemas", "raw")
	contains(t, "audit after the SQL", c.post("/connections/reader/grants", audit).Body, "Nothing is missing", "Granted")

	r = c.post("/connections/reader/grants", url.Values{auth.CSRFField: {token}, "target_schema": {""}})
	if r.Status != http.StatusUnprocessableEntity || !strings.Contains(r.Body, "f-target_schema-error") {
		t.Fatalf("audit without a target schema: %d", r.Status)
	}
	r = c.post("/connections/reader/grants", url.Values{auth.CSRFField: {token}, "target_schema": {"x"}, "role": {"nobody here"}})
	if r.Status != http.StatusUnprocessableEntity || !strings.Contains(r.Body, "f-role-error") {
		t.Fatalf("audit of an unknown role: %d", r.Status)
	}
	if _, err := s.App.CreateConnection(ctx, connection.Spec{Name: "down", Host: "127.0.0.1", Port: testenv.FreePort(t),
		Database: "d", User: "u", SSLMode: connection.SSLDisable}); err != nil {
		t.Fatal(err)
	}
	r = c.post("/connections/down/grants", url.Values{auth.CSRFField: {token}, "target_schema": {"x"}})
	if r.Status != http.StatusBadGateway || !strings.Contains(r.Body, "could not connect") || !strings.Contains(r.Body, `data-test="down"`) {
		t.Fatalf("audit of a connection that is down: %d\n%s", r.Status, r.Body)
	}
}

// TestConnectionTestViewer checks that viewers get no test or permissions
// controls, and that the routes refuse them.
func TestConnectionTestViewer(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	if _, err := s.App.CreateConnection(context.Background(), connection.Spec{Name: "wh", Host: "db.internal",
		Database: "analytics", User: "dbt"}); err != nil {
		t.Fatal(err)
	}
	c := s.client(t)
	c.mustLogin(s.Tokens[auth.Viewer].Token)
	for _, p := range []string{"/connections", "/connections/wh"} {
		excludes(t, "viewer "+p, c.get(p).Body, "data-test=", "/grants", "test-panel", "Test connection")
	}
	token := c.csrf("/connections")
	if r := c.get("/connections/wh/grants"); r.Status != http.StatusForbidden || !strings.Contains(r.Body, "viewer role") {
		t.Errorf("viewer GET grants: %d", r.Status)
	}
	for _, p := range []string{"/connections/wh/test", "/connections/wh/grants", "/new/test", "/connections/wh/edit/test"} {
		f := validForm("wh")
		f.Set(auth.CSRFField, token)
		f.Set("target_schema", "analytics")
		if r := c.post(p, f); r.Status != http.StatusForbidden {
			t.Errorf("viewer POST %s: %d", p, r.Status)
		}
	}
	// Each refusal is in the audit log, by route pattern, as the viewer.
	recs, err := s.store.AuditAfter(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var refused []string
	for _, rec := range recs {
		if rec.Action == "access.refused" {
			if rec.Actor.Name != s.Tokens[auth.Viewer].Name || rec.Error != "forbidden" || strings.Contains(rec.Target, "/wh/") {
				t.Errorf("refusal record %+v", rec)
			}
			refused = append(refused, rec.Target)
		}
	}
	if len(refused) != 5 || !slices.Contains(refused, "POST /connections/{name}/grants") {
		t.Errorf("refusals recorded: %q, want the GET and the 4 POSTs", refused)
	}
}
