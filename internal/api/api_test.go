package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/client"
	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/remote"
	"github.com/pgrelay/pgrelay/internal/requestid"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

var bg = context.Background()

// response is a raw HTTP response.
type response struct {
	status int
	header http.Header
	body   string
}

// errorBody decodes an error response.
func (r response) errorBody(t *testing.T) api.ErrorBody {
	t.Helper()
	var er api.ErrorResponse
	if err := json.Unmarshal([]byte(r.body), &er); err != nil || er.Error.Code == "" {
		t.Fatalf("not an error response (%d): %q", r.status, r.body)
	}
	if er.Error.RequestID == "" || er.Error.RequestID != r.header.Get(requestid.Header) {
		t.Errorf("request_id %q, header %q", er.Error.RequestID, r.header.Get(requestid.Header))
	}
	return er.Error
}

// do sends a raw request; token "" sends none, contentType "" none.
func do(t *testing.T, method, url, token, contentType, body string, mod ...func(*http.Request)) response {
	t.Helper()
	req, err := http.NewRequestWithContext(bg, method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for _, m := range mod {
		m(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// wantAPIError checks that err is a *client.Error with status and code.
func wantAPIError(t *testing.T, err error, status int, code string) *client.Error {
	t.Helper()
	var ce *client.Error
	if !errors.As(err, &ce) {
		t.Fatalf("want API error %d %s, got %T: %v", status, code, err, err)
	}
	if ce.Status != status || ce.Code != code {
		t.Fatalf("want API error %d %s, got %d %s: %s", status, code, ce.Status, ce.Code, ce.Message)
	}
	return ce
}

func wantFields(t *testing.T, err error, fields ...string) *app.ValidationError {
	t.Helper()
	var ve *app.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("want validation error on %v, got %T: %v", fields, err, err)
	}
	got := ve.Fields()
	for _, f := range fields {
		if got[f] == "" {
			t.Errorf("no problem for field %q in %v", f, got)
		}
	}
	return ve
}

// recSink records query results as text lines.
type recSink struct{ lines []string }

func (s *recSink) Begin(cols []app.Column) error {
	parts := make([]string, len(cols))
	for i, c := range cols {
		parts[i] = fmt.Sprintf("%s:%d", c.Name, c.TypeOID)
	}
	s.lines = append(s.lines, "begin "+strings.Join(parts, ","))
	return nil
}

func (s *recSink) Row(values [][]byte) error {
	parts := make([]string, len(values))
	for i, v := range values {
		if v == nil {
			parts[i] = "NULL"
		} else {
			parts[i] = strconv.Quote(string(v))
		}
	}
	s.lines = append(s.lines, "row "+strings.Join(parts, ","))
	return nil
}

func (s *recSink) End(tag string) error {
	s.lines = append(s.lines, "end "+tag)
	return nil
}

func directSpec(name string, pg *testenv.Postgres, user, password string) connection.Spec {
	return connection.Spec{Name: name, Host: pg.Host, Port: pg.Port, Database: "analytics", User: user,
		Password: secret.New(password), SSLMode: connection.SSLDisable}
}

func queryOK(t *testing.T, c *remote.Client, name, sql string) *recSink {
	t.Helper()
	var s recSink
	if err := c.Query(bg, name, sql, &s); err != nil {
		t.Fatalf("query %s %q: %v", name, sql, err)
	}
	return &s
}

// TestAPI runs the tests that need a real PostgreSQL (and OpenSSH).
func TestAPI(t *testing.T) {
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg.CreateRole(t, "dbt", "dbt-pw")
	pg.CreateDatabase(t, "analytics", "dbt")

	t.Run("ConnectionsCRUD", func(t *testing.T) {
		t.Parallel()
		srv := apitest.Start(t, apitest.Options{})
		c := srv.Client(t, srv.AdminToken)
		v, err := c.CreateConnection(bg, directSpec("wh", pg, "dbt", "dbt-pw"))
		if err != nil {
			t.Fatal(err)
		}
		if v.Name != "wh" || v.Port != pg.Port || !v.HasPassword || v.Threads != connection.DefaultThreads ||
			v.Flavor != connection.Postgres || v.SSHTunnel != nil || v.CreatedAt.IsZero() {
			t.Fatalf("created view = %+v", v)
		}
		_, err = c.CreateConnection(bg, directSpec("wh", pg, "dbt", "dbt-pw"))
		if !errors.Is(err, app.ErrExists) {
			t.Fatalf("duplicate create: %v", err)
		}
		wantAPIError(t, err, http.StatusConflict, api.CodeAlreadyExists)
		got, err := c.GetConnection(bg, "wh")
		if err != nil || got.Host != pg.Host || got.Database != "analytics" {
			t.Fatalf("get = %+v, %v", got, err)
		}
		if _, err := c.CreateConnection(bg, directSpec("second", pg, "dbt", "dbt-pw")); err != nil {
			t.Fatal(err)
		}
		list, err := c.ListConnections(bg)
		if err != nil || len(list) != 2 || list[0].Name != "second" || list[1].Name != "wh" {
			t.Fatalf("list = %v, %v", list, err)
		}
		queryOK(t, c, "wh", "select 1")

		spec := got.Spec()
		spec.Schema = "marts"
		spec.Threads = 8
		up, err := c.UpdateConnection(bg, "wh", spec, nil)
		if err != nil || up.Schema != "marts" || up.Threads != 8 || !up.HasPassword {
			t.Fatalf("update = %+v, %v", up, err)
		}
		queryOK(t, c, "wh", "select 1") // the password was kept

		spec.Name = "renamed"
		_, err = c.UpdateConnection(bg, "wh", spec, nil)
		wantFields(t, err, "name")
		_, err = c.UpdateConnection(bg, "missing", directSpec("missing", pg, "dbt", ""), nil)
		if !errors.Is(err, app.ErrNotFound) {
			t.Fatalf("update missing: %v", err)
		}

		if err := c.DeleteConnection(bg, "wh"); err != nil {
			t.Fatal(err)
		}
		_, err = c.GetConnection(bg, "wh")
		if !errors.Is(err, app.ErrNotFound) {
			t.Fatalf("get deleted: %v", err)
		}
		wantAPIError(t, err, http.StatusNotFound, api.CodeNotFound)
		if err := c.DeleteConnection(bg, "wh"); !errors.Is(err, app.ErrNotFound) {
			t.Fatalf("delete twice: %v", err)
		}
		// A connection without tunnel has no public key: 422.
		_, err = c.PublicKey(bg, "second", false)
		if !errors.Is(err, app.ErrInvalid) {
			t.Fatalf("public key without tunnel: %v", err)
		}
		wantAPIError(t, err, http.StatusUnprocessableEntity, api.CodeInvalid)
	})

	t.Run("PasswordWriteOnly", func(t *testing.T) {
		t.Parallel()
		srv := apitest.Start(t, apitest.Options{})
		c := srv.Client(t, srv.AdminToken)
		pg.CreateRole(t, "pwuser", "first-pw-canary")
		pg.Exec(t, "GRANT CONNECT ON DATABASE analytics TO pwuser")
		if _, err := c.CreateConnection(bg, directSpec("pw", pg, "pwuser", "first-pw-canary")); err != nil {
			t.Fatal(err)
		}
		queryOK(t, c, "pw", "select current_user")

		pg.Exec(t, "ALTER ROLE pwuser PASSWORD 'second-pw-canary'")
		var qe *app.QueryError
		if err := c.Query(bg, "pw", "select 1", &recSink{}); !errors.As(err, &qe) || qe.Err.Code != "28P01" {
			t.Fatalf("query with the old password: %v", err)
		}
		// An update without password keeps the stored (now wrong) one.
		v, err := c.GetConnection(bg, "pw")
		if err != nil {
			t.Fatal(err)
		}
		spec := v.Spec()
		spec.Threads = 2
		if _, err := c.UpdateConnection(bg, "pw", spec, nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Query(bg, "pw", "select 1", &recSink{}); !errors.As(err, &qe) || qe.Err.Code != "28P01" {
			t.Fatalf("password not kept by an update without password: %v", err)
		}
		// An update with a password sets it.
		pw := secret.New("second-pw-canary")
		if _, err := c.UpdateConnection(bg, "pw", spec, &pw); err != nil {
			t.Fatal(err)
		}
		queryOK(t, c, "pw", "select 1")
		// The view never carries the password, not even its field.
		r := do(t, "GET", srv.URL+"/api/v1/connections/pw", srv.AdminToken, "", "")
		if r.status != 200 || strings.Contains(r.body, "canary") || strings.Contains(r.body, `"password"`) {
			t.Fatalf("view: %d %s", r.status, r.body)
		}
		// "" removes the password.
		empty := secret.New("")
		v, err = c.UpdateConnection(bg, "pw", spec, &empty)
		if err != nil || v.HasPassword {
			t.Fatalf("remove password: %+v, %v", v, err)
		}
		if strings.Contains(srv.Logs(), "canary") {
			t.Fatal("a password is in the server log")
		}
	})

	t.Run("Query", func(t *testing.T) {
		t.Parallel()
		srv := apitest.Start(t, apitest.Options{})
		c := srv.Client(t, srv.AdminToken)
		if _, err := c.CreateConnection(bg, directSpec("q", pg, "dbt", "dbt-pw")); err != nil {
			t.Fatal(err)
		}
		s := queryOK(t, c, "q", "select 1 as n, null::text as t, ''::text as e, 'x' as s; "+
			"create temp table tt (a int); select * from tt")
		want := []string{
			"begin n:23,t:25,e:25,s:25", `row "1",NULL,"","x"`, "end SELECT 1",
			"end CREATE TABLE",
			"begin a:23", "end SELECT 0",
		}
		if !slices.Equal(s.lines, want) {
			t.Fatalf("results:\n%s\nwant:\n%s", strings.Join(s.lines, "\n"), strings.Join(want, "\n"))
		}
		// The wire format: rows of strings and nulls.
		r := do(t, "POST", srv.URL+"/api/v1/connections/q/query", srv.AdminToken, "application/json",
			`{"sql": "select 1 as n, null as z"}`)
		var qr map[string]any
		if err := json.Unmarshal([]byte(r.body), &qr); err != nil || r.status != 200 {
			t.Fatalf("query response %d %s", r.status, r.body)
		}
		wantJSON := `{"results":[{"columns":[{"name":"n","type_oid":23},{"name":"z","type_oid":25}],"rows":[["1",null]],"command_tag":"SELECT 1"}],"truncated":false}`
		if strings.TrimSpace(r.body) != wantJSON {
			t.Fatalf("query JSON:\n%s\nwant:\n%s", r.body, wantJSON)
		}

		// A SQL error comes back as an *app.QueryError with the SQLSTATE.
		err := c.Query(bg, "q", "select * from no_such_table", &recSink{})
		var qe *app.QueryError
		if !errors.As(err, &qe) || qe.Err.Code != "42P01" || qe.Connection != "q" {
			t.Fatalf("sql error: %T %v", err, err)
		}
		for _, sub := range []string{`relation "no_such_table" does not exist`, "SQLSTATE 42P01", "at character 15"} {
			if !strings.Contains(err.Error(), sub) {
				t.Errorf("sql error %q lacks %q", err, sub)
			}
		}
		r = do(t, "POST", srv.URL+"/api/v1/connections/q/query", srv.AdminToken, "application/json",
			`{"sql": "select * from no_such_table"}`)
		eb := r.errorBody(t)
		if r.status != http.StatusBadGateway || eb.Code != api.CodeDatabaseError || eb.DatabaseError == nil ||
			eb.DatabaseError.SQLState != "42P01" || !strings.Contains(eb.Message, "42P01") {
			t.Fatalf("sql error response %d %s", r.status, r.body)
		}
		// No SQL: a validation error on the field.
		err = c.Query(bg, "q", "  ", &recSink{})
		wantFields(t, err, "sql")
		if err := c.Query(bg, "missing", "select 1", &recSink{}); !errors.Is(err, app.ErrNotFound) {
			t.Fatalf("query missing connection: %v", err)
		}
		// A connection refused by the database is a 502 naming it.
		if _, err := c.CreateConnection(bg, connection.Spec{Name: "down", Host: "127.0.0.1",
			Port: testenv.FreePort(t), Database: "d", User: "u", SSLMode: connection.SSLDisable}); err != nil {
			t.Fatal(err)
		}
		err = c.Query(bg, "down", "select 1", &recSink{})
		wantAPIError(t, err, http.StatusBadGateway, api.CodeDatabaseError)
	})

	t.Run("QueryTruncated", func(t *testing.T) {
		t.Parallel()
		srv := apitest.Start(t, apitest.Options{MaxRows: 5})
		c := srv.Client(t, srv.AdminToken)
		if _, err := c.CreateConnection(bg, directSpec("big", pg, "dbt", "dbt-pw")); err != nil {
			t.Fatal(err)
		}
		s := queryOK(t, c, "big", "select g from generate_series(1, 5) g")
		if len(s.lines) != 7 {
			t.Fatalf("5 rows at a limit of 5: %q", s.lines)
		}
		s = &recSink{}
		err := c.Query(bg, "big", "select g from generate_series(1, 200000) g", s)
		if !errors.Is(err, client.ErrTruncated) {
			t.Fatalf("truncated query: %v", err)
		}
		want := []string{"begin g:23", `row "1"`, `row "2"`, `row "3"`, `row "4"`, `row "5"`, "end "}
		if !slices.Equal(s.lines, want) {
			t.Fatalf("truncated results %q", s.lines)
		}
		r := do(t, "POST", srv.URL+"/api/v1/connections/big/query", srv.AdminToken, "application/json",
			`{"sql": "select g from generate_series(1, 200000) g"}`)
		var qr api.QueryResponse
		if err := json.Unmarshal([]byte(r.body), &qr); err != nil || !qr.Truncated || len(qr.Results) != 1 ||
			!qr.Results[0].Truncated || len(qr.Results[0].Rows) != 5 {
			t.Fatalf("truncated response %d %s", r.status, r.body)
		}
	})

	t.Run("TunnelAndHostKeyFlow", func(t *testing.T) {
		t.Parallel()
		b := testenv.StartBastion(t, testenv.BastionOptions{})
		srv := apitest.Start(t, apitest.Options{})
		c := srv.Client(t, srv.AdminToken)
		spec := directSpec("tun", pg, "dbt", "dbt-pw")
		spec.Tunnel = &connection.Tunnel{Host: b.Host, Port: b.Port, User: b.User}
		v, err := c.CreateConnection(bg, spec)
		if err != nil {
			t.Fatal(err)
		}
		tv := v.SSHTunnel
		if tv == nil || !strings.HasPrefix(tv.PublicKey, "ssh-ed25519 ") || tv.HostKeyFingerprint != "" ||
			tv.KeyType != "ed25519" || tv.KeepaliveCountMax != connection.DefaultKeepaliveCountMax {
			t.Fatalf("tunnel view = %+v", tv)
		}
		pub, err := c.PublicKey(bg, "tun", false)
		if err != nil || pub != tv.PublicKey {
			t.Fatalf("public key %q, %v; view has %q", pub, err, tv.PublicKey)
		}
		restricted, err := c.PublicKey(bg, "tun", true)
		wantLine := fmt.Sprintf(`restrict,port-forwarding,permitopen="%s:%d" %s`, pg.Host, pg.Port, pub)
		if err != nil || restricted != wantLine {
			t.Fatalf("restricted line %q, %v; want %q", restricted, err, wantLine)
		}
		script, err := c.BastionSetup(bg, "tun")
		if err != nil || !strings.HasPrefix(script, "#!/bin/sh") || !strings.Contains(script, restricted) {
			t.Fatalf("bastion setup script: %v\n%s", err, script)
		}
		r := do(t, "GET", srv.URL+"/api/v1/connections/tun/bastion-setup", srv.AdminToken, "", "")
		if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/x-shellscript") || r.body != script {
			t.Fatalf("bastion setup: %d %s", r.status, r.header.Get("Content-Type"))
		}

		// The key is not installed yet: 502 with the line to install.
		err = c.Query(bg, "tun", "select 1", &recSink{})
		ce := wantAPIError(t, err, http.StatusBadGateway, api.CodeKeyNotAuthorized)
		if !strings.Contains(ce.Message, pub) || !strings.Contains(ce.Message, "authorized_keys") {
			t.Fatalf("key not authorized message: %s", ce.Message)
		}
		b.Authorize(t, restricted)
		queryOK(t, c, "tun", "select 1")
		oldFP := sshkey.Fingerprint(b.HostKey)
		if v, _ := c.GetConnection(bg, "tun"); v.SSHTunnel.HostKeyFingerprint != oldFP {
			t.Fatalf("host key not pinned on first use: %+v", v.SSHTunnel)
		}

		// The bastion's host key changes: refused, with both fingerprints.
		b.RotateHostKey(t)
		newFP := sshkey.Fingerprint(b.HostKey)
		err = c.Query(bg, "tun", "select 1", &recSink{})
		ce = wantAPIError(t, err, http.StatusBadGateway, api.CodeHostKeyChanged)
		if !strings.Contains(ce.Message, oldFP) || !strings.Contains(ce.Message, newFP) {
			t.Fatalf("host key changed message lacks a fingerprint: %s", ce.Message)
		}
		v, err = c.GetConnection(bg, "tun")
		if err != nil || v.SSHTunnel.PendingHostKeyFingerprint != newFP || v.SSHTunnel.HostKeyFingerprint != oldFP {
			t.Fatalf("pending host key: %+v, %v", v.SSHTunnel, err)
		}
		_, err = c.TrustHostKey(bg, "tun", oldFP)
		if !errors.Is(err, app.ErrInvalid) {
			t.Fatalf("trusting a fingerprint that was not presented: %v", err)
		}
		_, err = c.TrustHostKey(bg, "tun", "not-a-fingerprint")
		wantFields(t, err, "fingerprint")
		// An editor may not replace the pin: the stored password would go
		// to whatever presents the new key. Nor by giving the key.
		editor := srv.Client(t, srv.Token(t, "pins-editor", auth.Editor).Token)
		_, err = editor.TrustHostKey(bg, "tun", newFP)
		if ce := wantAPIError(t, err, http.StatusForbidden, api.CodeForbidden); !strings.Contains(ce.Message, "needs the admin role") {
			t.Fatalf("editor approving a changed host key: %s", ce.Message)
		}
		given := spec.Clone()
		given.Password = secret.Value{}
		given.Tunnel.KnownHost = sshkey.AuthorizedKey(b.HostKey, "")
		_, err = editor.UpdateConnection(bg, "tun", given, nil)
		wantAPIError(t, err, http.StatusForbidden, api.CodeForbidden)
		if v, _ := c.GetConnection(bg, "tun"); v.SSHTunnel.HostKeyFingerprint != oldFP || v.SSHTunnel.PendingHostKeyFingerprint != newFP {
			t.Fatalf("after an editor's refused approval: %+v", v.SSHTunnel)
		}
		v, err = c.TrustHostKey(bg, "tun", newFP)
		if err != nil || v.SSHTunnel.HostKeyFingerprint != newFP || v.SSHTunnel.PendingHostKeyFingerprint != "" {
			t.Fatalf("trust: %+v, %v", v, err)
		}
		queryOK(t, c, "tun", "select 1")

		// Key rotation: the new key must be installed before it works.
		rot, err := c.RotateKey(bg, "tun")
		if err != nil || rot.Old != pub || rot.New == pub || !strings.HasPrefix(rot.New, "ssh-ed25519 ") {
			t.Fatalf("rotate: %+v, %v", rot, err)
		}
		err = c.Query(bg, "tun", "select 1", &recSink{})
		wantAPIError(t, err, http.StatusBadGateway, api.CodeKeyNotAuthorized)
		b.Authorize(t, rot.New)
		queryOK(t, c, "tun", "select 1")
		if v, _ := c.GetConnection(bg, "tun"); v.SSHTunnel.PreviousPublicKey == "" {
			t.Fatalf("previous key not shown after rotation: %+v", v.SSHTunnel)
		}
	})
}

func TestValidationErrorsNameFields(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	c := srv.Client(t, srv.AdminToken)
	_, err := c.CreateConnection(bg, connection.Spec{Name: "Bad Name", Host: "db:5432", Port: 70000,
		Tunnel: &connection.Tunnel{Host: "[::1]", KeepaliveInterval: connection.Duration(1)}})
	ve := wantFields(t, err, "name", "host", "port", "database", "user", "ssh_tunnel.host", "ssh_tunnel.user",
		"ssh_tunnel.keepalive_interval")
	// The server keeps the order of the problems.
	if ve.Problems[0].Field != "name" || ve.Problems[1].Field != "host" {
		t.Errorf("problem order: %v", ve.Problems)
	}
	_, err = c.CreateToken(bg, "bad name", "superuser")
	wantFields(t, err, "name", "role")

	r := do(t, "GET", srv.URL+"/api/v1/connections/x/public-key?restricted=maybe", srv.AdminToken, "", "")
	if eb := r.errorBody(t); r.status != 400 || eb.Code != api.CodeValidationFailed || eb.Fields.Map()["restricted"] == "" {
		t.Fatalf("restricted=maybe: %d %s", r.status, r.body)
	}
	if list, _ := c.ListConnections(bg); len(list) != 0 {
		t.Fatalf("invalid connections were saved: %v", list)
	}
}

func TestRequestErrors(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	conns := srv.URL + "/api/v1/connections"
	valid := `"name": "x", "host": "db.internal", "database": "d", "user": "u"`
	for _, tc := range []struct {
		name, contentType, body string
		status                  int
		code, field, problem    string
	}{
		{"unknown field", "application/json", `{` + valid + `, "nope": 1}`, 400, api.CodeInvalidJSON, "nope", "unknown field"},
		{"read-only field", "application/json", `{` + valid + `, "has_password": true}`, 400, api.CodeInvalidJSON, "has_password", "read-only"},
		{"wrong type", "application/json", `{` + valid + `, "port": "5432"}`, 400, api.CodeInvalidJSON, "port", "expected an integer"},
		{"nested wrong type", "application/json", `{` + valid + `, "ssh_tunnel": {"host": "b", "user": "u", "port": true}}`, 400, api.CodeInvalidJSON, "ssh_tunnel.port", "expected an integer"},
		{"bad duration", "application/json", `{` + valid + `, "ssh_tunnel": {"host": "b", "user": "u", "keepalive_interval": "soon"}}`, 400, api.CodeInvalidJSON, "ssh_tunnel.keepalive_interval", `"soon"`},
		{"password not a string", "application/json", `{` + valid + `, "password": 987654321}`, 400, api.CodeInvalidJSON, "password", "expected a string"},
		{"not an object", "application/json", `[1, 2]`, 400, api.CodeInvalidJSON, "", "expected an object"},
		{"syntax", "application/json", `{"name": `, 400, api.CodeInvalidJSON, "", "ends in the middle"},
		{"bad syntax", "application/json", `{"name" "x"}`, 400, api.CodeInvalidJSON, "", "syntax error"},
		{"empty body", "application/json", ``, 400, api.CodeInvalidJSON, "", "empty"},
		{"trailing data", "application/json", `{` + valid + `} {}`, 400, api.CodeInvalidJSON, "", "after the JSON object"},
		{"text content type", "text/plain", `{` + valid + `}`, 415, api.CodeUnsupportedMediaType, "", "application/json"},
		{"form content type", "application/x-www-form-urlencoded", `name=x`, 415, api.CodeUnsupportedMediaType, "", "application/json"},
		{"no content type", "", `{` + valid + `}`, 415, api.CodeUnsupportedMediaType, "", "application/json"},
		{"too large", "application/json", `{` + valid + `, "schema": "` + strings.Repeat("x", api.MaxBodyBytes) + `"}`, 413, api.CodeTooLarge, "", "larger than"},
		{"too large after the object", "application/json", `{` + valid + `}` + strings.Repeat(" ", api.MaxBodyBytes), 413, api.CodeTooLarge, "", "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, "POST", conns, srv.AdminToken, tc.contentType, tc.body)
			eb := r.errorBody(t)
			if r.status != tc.status || eb.Code != tc.code {
				t.Fatalf("got %d %s, want %d %s: %s", r.status, eb.Code, tc.status, tc.code, r.body)
			}
			msg := eb.Message
			if tc.field != "" {
				msg = eb.Fields.Map()[tc.field]
				if msg == "" {
					t.Fatalf("no problem for field %q: %s", tc.field, r.body)
				}
			}
			if !strings.Contains(msg, tc.problem) {
				t.Fatalf("problem %q lacks %q", msg, tc.problem)
			}
			if strings.Contains(r.body, "987654321") {
				t.Fatalf("the password value was echoed: %s", r.body)
			}
		})
	}
	// JSON 404 and 405 for routes that do not exist.
	r := do(t, "GET", srv.URL+"/api/v1/nope", srv.AdminToken, "", "")
	if eb := r.errorBody(t); r.status != 404 || eb.Code != api.CodeNotFound {
		t.Fatalf("unknown route: %d %s", r.status, r.body)
	}
	r = do(t, "PATCH", conns, srv.AdminToken, "application/json", "{}")
	if eb := r.errorBody(t); r.status != 405 || eb.Code != api.CodeMethodNotAllowed || r.header.Get("Allow") != "GET, HEAD, POST" {
		t.Fatalf("wrong method: %d %s %q", r.status, r.body, r.header.Get("Allow"))
	}
	if list, err := srv.Client(t, srv.AdminToken).ListConnections(bg); err != nil || len(list) != 0 {
		t.Fatalf("bad requests saved something: %v %v", list, err)
	}
}

func TestTokens(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	admin := srv.Client(t, srv.AdminToken)
	nt, err := admin.CreateToken(bg, "ci", "Editor")
	if err != nil || !auth.LooksLikeToken(nt.Token) || nt.Role != auth.Editor || nt.ID == "" {
		t.Fatalf("create token: %+v, %v", nt, err)
	}
	if _, err := admin.CreateToken(bg, "ci", auth.Viewer); !errors.Is(err, app.ErrExists) {
		t.Fatalf("duplicate token name: %v", err)
	}
	r := do(t, "GET", srv.URL+"/api/v1/tokens", srv.AdminToken, "", "")
	if r.status != 200 || strings.Contains(r.body, nt.Token) || strings.Contains(r.body, srv.AdminToken) {
		t.Fatalf("token list shows a token: %d %s", r.status, r.body)
	}
	ts, err := admin.ListTokens(bg)
	if err != nil || len(ts) != 2 || ts[1].Name != "ci" {
		t.Fatalf("list tokens: %+v, %v", ts, err)
	}
	editor := srv.Client(t, nt.Token)
	who, err := editor.WhoAmI(bg)
	if err != nil || who.TokenID != nt.ID || who.Name != "ci" || who.Role != auth.Editor ||
		!slices.Equal(who.Actions, []auth.Action{auth.Read, auth.Write, auth.Use}) {
		t.Fatalf("whoami: %+v, %v", who, err)
	}
	_, err = editor.ListTokens(bg)
	if !errors.Is(err, client.ErrForbidden) {
		t.Fatalf("editor lists tokens: %v", err)
	}
	if ce := wantAPIError(t, err, 403, api.CodeForbidden); !strings.Contains(ce.Message, "admin role") || !strings.Contains(ce.Message, `"ci"`) {
		t.Fatalf("forbidden message: %s", ce.Message)
	}
	tv, err := admin.RevokeToken(bg, nt.ID)
	if err != nil || tv.RevokedAt == nil {
		t.Fatalf("revoke: %+v, %v", tv, err)
	}
	_, err = editor.ListConnections(bg)
	if !errors.Is(err, app.ErrUnauthenticated) {
		t.Fatalf("revoked token: %v", err)
	}
	wantAPIError(t, err, 401, api.CodeUnauthenticated)
	if _, err := admin.RevokeToken(bg, "no-such-token"); !errors.Is(err, app.ErrNotFound) {
		t.Fatalf("revoke unknown: %v", err)
	}
	if strings.Contains(srv.Logs(), nt.Token) || strings.Contains(srv.Logs(), srv.AdminToken) {
		t.Fatal("a token is in the server log")
	}
	if !strings.Contains(srv.Logs(), `"token_id":"`+nt.ID+`"`) {
		t.Fatal("the principal's token_id is not logged")
	}
}

// TestInternalErrorIsGeneric checks that an unknown error is a 500 whose
// detail is only in the log, under the request ID.
func TestInternalErrorIsGeneric(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	if err := srv.Store.Close(); err != nil {
		t.Fatal(err)
	}
	r := do(t, "GET", srv.URL+"/api/v1/connections", srv.AdminToken, "", "")
	eb := r.errorBody(t)
	if r.status != 500 || eb.Code != api.CodeInternal || !strings.Contains(eb.Message, eb.RequestID) ||
		strings.Contains(strings.ToLower(r.body), "closed") || strings.Contains(r.body, "sql") {
		t.Fatalf("internal error response: %d %s", r.status, r.body)
	}
	var logged bool
	for _, line := range strings.Split(srv.Logs(), "\n") {
		if strings.Contains(line, `"msg":"api request failed"`) && strings.Contains(line, `"request_id":"`+eb.RequestID+`"`) &&
			strings.Contains(line, "closed") {
			logged = true
		}
	}
	if !logged {
		t.Fatalf("the detail is not logged with request_id %s:\n%s", eb.RequestID, srv.Logs())
	}
	// The client keeps the server's message and the request ID.
	_, err := srv.Client(t, srv.AdminToken).ListConnections(bg)
	ce := wantAPIError(t, err, 500, api.CodeInternal)
	if ce.RequestID == "" || !strings.Contains(ce.Error(), ce.RequestID) {
		t.Fatalf("client error: %+v", ce)
	}
}

// TestSecretUnderAnotherMasterKey: a stored secret the server cannot open
// (most often: `pgrelay master-key rotate` ran while the server was up)
// answers 503 with what to do, not a bare internal error.
func TestSecretUnderAnotherMasterKey(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	c := srv.Client(t, srv.AdminToken)
	if _, err := c.CreateConnection(bg, connection.Spec{Name: "wh", Host: "127.0.0.1", Port: 1, Database: "d", User: "u",
		Password: secret.New("pw"), SSLMode: connection.SSLDisable}); err != nil {
		t.Fatal(err)
	}
	rec, err := srv.Store.GetConnection(bg, "wh")
	if err != nil {
		t.Fatal(err)
	}
	other, err := secret.NewKeyring(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	if rec.SealedPassword, err = other.Seal([]byte("pw"), []byte("another key's")); err != nil {
		t.Fatal(err)
	}
	if err := srv.Store.UpdateConnection(bg, rec); err != nil {
		t.Fatal(err)
	}
	err = c.Query(bg, "wh", "select 1", &recSink{})
	ce := wantAPIError(t, err, 503, api.CodeUnavailable)
	if !strings.Contains(ce.Message, "master-key rotate") || !strings.Contains(ce.Message, "restart the server") {
		t.Fatalf("message: %q", ce.Message)
	}
}

// TestSaveAfterMasterKeyRotation: a server left running with the old key
// after `pgrelay master-key rotate` refuses to save a connection (it would
// seal its password with a key the store no longer uses) and says why: 503
// with the message to restart it with the new key, not a bare internal
// error whose reason only the server log has.
func TestSaveAfterMasterKeyRotation(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	c := srv.Client(t, srv.AdminToken)
	spec := func(name string) connection.Spec {
		return connection.Spec{Name: name, Host: "127.0.0.1", Port: 1, Database: "d", User: "u",
			Password: secret.New("pw-" + name), SSLMode: connection.SSLDisable}
	}
	if _, err := c.CreateConnection(bg, spec("before")); err != nil {
		t.Fatal(err)
	}
	next, err := secret.NewKeyring(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := app.RotateMasterKey(bg, srv.Store, srv.Keyring, next, app.RotateOptions{}); err != nil {
		t.Fatal(err)
	}
	for what, save := range map[string]func() error{
		"create": func() error { _, err := c.CreateConnection(bg, spec("after")); return err },
		"update": func() error {
			up := spec("before")
			up.Threads = 8
			up.Password = secret.Value{}
			_, err := c.UpdateConnection(bg, "before", up, nil)
			return err
		},
	} {
		ce := wantAPIError(t, save(), 503, api.CodeUnavailable)
		if !strings.Contains(ce.Message, "master key changed since this process started") || !strings.Contains(ce.Message, "restart it with the new key") {
			t.Errorf("%s after the rotation: message %q", what, ce.Message)
		}
	}
	if _, err := srv.Store.GetConnection(bg, "after"); err == nil {
		t.Fatal("the server with the old key saved a connection after the rotation")
	}
}
