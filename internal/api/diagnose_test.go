package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/client"
	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/grants"
	"github.com/pgrelay/pgrelay/internal/remote"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// The client offers the test and audit use cases with the signatures of
// package app, so the CLI runs them the same way in both modes.
var (
	_ interface {
		TestConnection(ctx context.Context, name string, progress func(diagnose.Step)) (*diagnose.Report, error)
		TestDraft(ctx context.Context, spec connection.Spec, basedOn string, progress func(diagnose.Step)) (*diagnose.Report, error)
		Grants(ctx context.Context, name string, req grants.Request) (*grants.Result, error)
	} = (*remote.Client)(nil)
	_ interface {
		TestConnection(ctx context.Context, name string, progress func(diagnose.Step)) (*diagnose.Report, error)
		TestDraft(ctx context.Context, spec connection.Spec, basedOn string, progress func(diagnose.Step)) (*diagnose.Report, error)
		Grants(ctx context.Context, name string, req grants.Request) (*grants.Result, error)
	} = (*app.Service)(nil)
)

// stepIDs lists the ids of steps.
func stepIDs(steps []diagnose.Step) []diagnose.StepID {
	ids := make([]diagnose.StepID, len(steps))
	for i, s := range steps {
		ids[i] = s.ID
	}
	return ids
}

// sseEvent is one server-sent event and when it arrived.
type sseEvent struct {
	name, data string
	at         time.Duration
}

// readSSE reads a whole event stream.
func readSSE(t *testing.T, resp *http.Response, start time.Time) []sseEvent {
	t.Helper()
	var out []sseEvent
	var cur sseEvent
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.name != "" {
				cur.at = time.Since(start)
				out = append(out, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, "event: "):
			cur.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			cur.data = strings.TrimPrefix(line, "data: ")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read event stream: %v", err)
	}
	return out
}

// postStream posts to a test route asking for the event stream.
func postStream(t *testing.T, url, token, body string) (*http.Response, time.Time) {
	t.Helper()
	req, err := http.NewRequestWithContext(bg, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "text/event-stream")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = resp.Body.Close() })
	return resp, start
}

// TestConnectionTestAndGrantsAPI tests connections and audits privileges
// through the API and the Go client, against a real PostgreSQL and a real
// OpenSSH bastion.
func TestConnectionTestAndGrantsAPI(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg.CreateRole(t, "dbt", "dbt-pw")
	pg.CreateDatabase(t, "analytics", "dbt")

	t.Run("SavedThroughBastion", func(t *testing.T) {
		t.Parallel()
		b := testenv.SharedBastion(t, testenv.BastionOptions{})
		srv := apitest.Start(t, apitest.Options{})
		c := srv.Client(t, srv.AdminToken)
		spec := directSpec("tun", pg, "dbt", "dbt-pw")
		spec.Tunnel = &connection.Tunnel{Host: b.Host, Port: b.Port, User: b.User}
		v, err := c.CreateConnection(bg, spec)
		if err != nil {
			t.Fatal(err)
		}
		// Not authorized yet: ssh_auth fails with the line to add.
		rep, err := c.TestConnection(bg, "tun", nil)
		if err != nil {
			t.Fatal(err)
		}
		if f := rep.Failed(); rep.OK || f == nil || f.ID != diagnose.StepSSHAuth || !strings.Contains(f.Hint, v.SSHTunnel.PublicKey) {
			t.Fatalf("unauthorized key: %+v", rep)
		}
		// The handshake pinned the host key, but the key has not logged in.
		if v, _ := c.GetConnection(bg, "tun"); v.SSHTunnel.HostKeyFingerprint == "" || v.SSHTunnel.KeyUsedAt != nil {
			t.Fatalf("after a test failing at ssh_auth: host key %q, key used at %v", v.SSHTunnel.HostKeyFingerprint, v.SSHTunnel.KeyUsedAt)
		}

		b.Authorize(t, v.SSHTunnel.PublicKey)
		var live []diagnose.Step
		rep, err = c.TestConnection(bg, "tun", func(s diagnose.Step) { live = append(live, s) })
		if err != nil {
			t.Fatal(err)
		}
		plan := diagnose.Plan(&spec)
		if !rep.OK || !slices.Equal(stepIDs(rep.Steps), plan) || !slices.Equal(stepIDs(live), plan) {
			t.Fatalf("test through the bastion: ok=%v steps %v, live %v", rep.OK, stepIDs(rep.Steps), stepIDs(live))
		}
		for i, s := range rep.Steps {
			if s.Status != live[i].Status || s.Detail != live[i].Detail || (s.ID != diagnose.StepTLS && s.Status != diagnose.StatusOK) {
				t.Errorf("step %s: report %+v, live %+v", s.ID, s, live[i])
			}
		}
		fp := sshkey.Fingerprint(b.HostKey)
		if rep.Server == nil || rep.Server.CurrentUser != "dbt" || rep.HostKey == nil || rep.HostKey.Fingerprint != fp {
			t.Fatalf("server %+v host key %+v", rep.Server, rep.HostKey)
		}
		// The first passing test pinned the host key and recorded the login.
		if v, _ := c.GetConnection(bg, "tun"); v.SSHTunnel.HostKeyFingerprint != fp || v.SSHTunnel.KeyUsedAt == nil {
			t.Fatalf("host key not pinned or login not recorded by the test: %+v", v.SSHTunnel)
		}

		// A draft based on the saved connection uses its key pair and its
		// password (the draft has none).
		draft := spec
		draft.Name, draft.Password = "", secret.Value{}
		rep, err = c.TestDraft(bg, draft, "tun", nil)
		if err != nil || !rep.OK || len(rep.Steps) != len(plan) || rep.HostKey.State != diagnose.HostKeyPinned {
			t.Fatalf("draft based on tun: %+v, %v", rep, err)
		}
		// Without a saved key pair, a tunnelled draft stops at ssh_auth
		// with the advice to save it first.
		rep, err = c.TestDraft(bg, spec, "", nil)
		if f := rep.Failed(); err != nil || f == nil || f.ID != diagnose.StepSSHAuth || !strings.Contains(f.Hint, "Save the connection") {
			t.Fatalf("tunnelled draft without key pair: %+v, %v", rep, err)
		}
		// A new key pair has not logged in yet.
		if _, err := c.RotateKey(bg, "tun"); err != nil {
			t.Fatal(err)
		}
		if v, _ := c.GetConnection(bg, "tun"); v.SSHTunnel.KeyUsedAt != nil {
			t.Fatalf("a rotated key counts as used: %v", v.SSHTunnel.KeyUsedAt)
		}
	})

	t.Run("WrongPassword", func(t *testing.T) {
		t.Parallel()
		srv := apitest.Start(t, apitest.Options{})
		c := srv.Client(t, srv.AdminToken)
		if _, err := c.CreateConnection(bg, directSpec("bad", pg, "dbt", "wrong-pw-canary")); err != nil {
			t.Fatal(err)
		}
		rep, err := c.TestConnection(bg, "bad", nil)
		if err != nil {
			t.Fatal(err)
		}
		f := rep.Failed()
		if rep.OK || f == nil || f.ID != diagnose.StepPostgresAuth || !strings.Contains(f.Error, "28P01") ||
			!strings.Contains(f.Hint, "rejected the password") {
			t.Fatalf("wrong password: %+v", rep)
		}
		if st := rep.Step(diagnose.StepQuery); st == nil || st.Status != diagnose.StatusSkipped {
			t.Fatalf("query after a failure: %+v", st)
		}
		// Without a stream: one JSON report, 200 although the test failed.
		r := do(t, "POST", srv.URL+"/api/v1/connections/bad/test", srv.AdminToken, "", "")
		var got struct {
			Connection string          `json:"connection"`
			OK         *bool           `json:"ok"`
			DurationMS *float64        `json:"duration_ms"`
			Steps      []diagnose.Step `json:"steps"`
		}
		if err := json.Unmarshal([]byte(r.body), &got); err != nil || r.status != 200 ||
			!strings.HasPrefix(r.header.Get("Content-Type"), "application/json") || got.Connection != "bad" ||
			got.OK == nil || *got.OK || got.DurationMS == nil || len(got.Steps) != 6 || got.Steps[3].Hint == "" {
			t.Fatalf("JSON report %d %s", r.status, r.body)
		}
		// ?stream=1 streams without the Accept header.
		r = do(t, "POST", srv.URL+"/api/v1/connections/bad/test?stream=1", srv.AdminToken, "", "")
		if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/event-stream") ||
			strings.Count(r.body, "event: step\n") != 6 || strings.Count(r.body, "event: report\n") != 1 {
			t.Fatalf("?stream=1: %d %s\n%s", r.status, r.header.Get("Content-Type"), r.body)
		}
		r = do(t, "POST", srv.URL+"/api/v1/connections/bad/test?stream=maybe", srv.AdminToken, "", "")
		if eb := r.errorBody(t); r.status != 400 || eb.Fields.Map()["stream"] == "" {
			t.Fatalf("?stream=maybe: %d %s", r.status, r.body)
		}
		// An unknown connection is an ordinary 404, stream or not.
		resp, _ := postStream(t, srv.URL+"/api/v1/connections/nope/test", srv.AdminToken, "")
		if resp.StatusCode != 404 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("streamed test of an unknown connection: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if _, err := c.TestConnection(bg, "nope", nil); !errors.Is(err, app.ErrNotFound) {
			t.Fatalf("client test of an unknown connection: %v", err)
		}
		if strings.Contains(srv.Logs(), "canary") || strings.Contains(r.body, "canary") {
			t.Fatal("the password is in the log or a response")
		}
	})

	t.Run("StreamIsLive", func(t *testing.T) {
		t.Parallel()
		// The login hangs behind a frozen proxy until the step's deadline:
		// the steps before it arrive while the test still runs.
		const stepTimeout = 1500 * time.Millisecond
		srv := apitest.Start(t, apitest.Options{DialTimeout: stepTimeout})
		proxy := testenv.StartFaultProxy(t, pg.Addr())
		proxy.Freeze()
		spec := directSpec("slow", pg, "dbt", "dbt-pw")
		spec.Port = proxy.Port()
		if _, err := srv.App.CreateConnection(bg, spec); err != nil {
			t.Fatal(err)
		}
		resp, start := postStream(t, srv.URL+"/api/v1/connections/slow/test", srv.AdminToken, "")
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" ||
			resp.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("stream response %d %v", resp.StatusCode, resp.Header)
		}
		events := readSSE(t, resp, start)
		var names []string
		var steps []diagnose.StepID
		for _, e := range events {
			names = append(names, e.name)
			if e.name == api.EventStep {
				var s diagnose.Step
				if err := json.Unmarshal([]byte(e.data), &s); err != nil {
					t.Fatal(err)
				}
				steps = append(steps, s.ID)
			}
		}
		if len(events) != 7 || names[6] != api.EventReport || !slices.Equal(steps, diagnose.Plan(&spec)) {
			t.Fatalf("events %v, steps %v", names, steps)
		}
		var rep api.TestReport
		if err := json.Unmarshal([]byte(events[6].data), &rep); err != nil || rep.Connection != "slow" || rep.OK ||
			rep.Failed().ID != diagnose.StepPostgresAuth {
			t.Fatalf("report %s: %v", events[6].data, err)
		}
		// tcp (the second event) came a step timeout before the report.
		if gap := events[6].at - events[1].at; gap < stepTimeout*2/3 {
			t.Fatalf("the tcp step arrived %v before the report: not live (events at %v, %v)", gap, events[1].at, events[6].at)
		}
	})

	t.Run("Draft", func(t *testing.T) {
		t.Parallel()
		srv := apitest.Start(t, apitest.Options{})
		c := srv.Client(t, srv.AdminToken)
		var live []diagnose.StepID
		rep, err := c.TestDraft(bg, directSpec("", pg, "dbt", "dbt-pw"), "", func(s diagnose.Step) { live = append(live, s.ID) })
		if err != nil || !rep.OK || len(live) != 6 || rep.Server.CurrentUser != "dbt" {
			t.Fatalf("draft: %+v, %v (live %v)", rep, err, live)
		}
		rep, err = c.TestDraft(bg, directSpec("form", pg, "dbt", "wrong"), "", nil)
		if f := rep.Failed(); err != nil || f == nil || f.ID != diagnose.StepPostgresAuth || f.Hint == "" {
			t.Fatalf("draft with a wrong password: %+v, %v", rep, err)
		}
		// Nothing was saved.
		if list, _ := c.ListConnections(bg); len(list) != 0 {
			t.Fatalf("a draft test saved %v", list)
		}
		// An edit form leaves the password empty to keep the saved one.
		if _, err := c.CreateConnection(bg, directSpec("saved", pg, "dbt", "dbt-pw")); err != nil {
			t.Fatal(err)
		}
		edit := directSpec("saved", pg, "dbt", "")
		edit.Schema = "marts"
		if rep, err = c.TestDraft(bg, edit, "saved", nil); err != nil || !rep.OK {
			t.Fatalf("draft based on a saved connection: %+v, %v", rep, err)
		}
		// A new password in the form wins over the saved one.
		edit.Password = secret.New("wrong")
		if rep, err = c.TestDraft(bg, edit, "saved", nil); err != nil || rep.OK {
			t.Fatalf("draft with a new wrong password: %+v, %v", rep, err)
		}

		// The raw shape: "draft": true and the name.
		r := do(t, "POST", srv.URL+"/api/v1/connections/test", srv.AdminToken, "application/json",
			`{"host": "`+pg.Host+`", "port": `+itoa(pg.Port)+`, "database": "analytics", "user": "dbt", "sslmode": "disable", "based_on": "saved"}`)
		var got api.TestReport
		if err := json.Unmarshal([]byte(r.body), &got); err != nil || r.status != 200 || !got.Draft ||
			got.Connection != "saved" || !got.OK {
			t.Fatalf("draft response %d %s", r.status, r.body)
		}
		// Request problems come back before any step runs.
		_, err = c.TestDraft(bg, connection.Spec{Host: "db:5432"}, "", nil)
		wantFields(t, err, "host", "database", "user")
		resp, _ := postStream(t, srv.URL+"/api/v1/connections/test", srv.AdminToken, `{"host": ""}`)
		if resp.StatusCode != 400 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Fatalf("invalid streamed draft: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if _, err := c.TestDraft(bg, edit, "nope", nil); !errors.Is(err, app.ErrNotFound) {
			t.Fatalf("draft based on an unknown connection: %v", err)
		}
		r = do(t, "POST", srv.URL+"/api/v1/connections/test", srv.AdminToken, "application/json",
			`{"host": "h", "port": "54x", "database": "d", "user": "u", "ssh_tunnel": {"host": "b", "user": "u", "port": "x"}}`)
		if eb := r.errorBody(t); r.status != 400 || eb.Fields.Map()["port"] == "" {
			t.Fatalf("draft with a port that is no number: %d %s", r.status, r.body)
		}
		r = do(t, "POST", srv.URL+"/api/v1/connections/test", srv.AdminToken, "application/json",
			`{"host": "h", "database": "d", "user": "u", "ssh_tunnel": {"host": "b", "user": "u", "port": "x"}}`)
		if eb := r.errorBody(t); r.status != 400 || eb.Fields.Map()["ssh_tunnel.port"] == "" {
			t.Fatalf("draft with a tunnel port that is no number: %d %s", r.status, r.body)
		}
		r = do(t, "POST", srv.URL+"/api/v1/connections/test", srv.AdminToken, "application/json",
			`{"host": "h", "database": "d", "user": "u", "has_password": true}`)
		if eb := r.errorBody(t); r.status != 400 || eb.Fields.Map()["has_password"] == "" {
			t.Fatalf("draft with a read-only field: %d %s", r.status, r.body)
		}
	})

	t.Run("GrantsRoundTrip", func(t *testing.T) {
		t.Parallel()
		srv := apitest.Start(t, apitest.Options{})
		c := srv.Client(t, srv.AdminToken)
		su, err := pgx.Connect(bg, pg.ConnString(pg.SuperUser, pg.SuperPassword, "analytics"))
		if err != nil {
			t.Fatal(err)
		}
		defer su.Close(bg)
		exec := func(sql string) {
			t.Helper()
			if _, err := su.PgConn().Exec(bg, sql).ReadAll(); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
		pg.CreateRole(t, "API Reader", "reader-pw")
		exec(`CREATE SCHEMA "api raw" AUTHORIZATION dbt; SET ROLE dbt; CREATE TABLE "api raw"."Orders" (id int);
			RESET ROLE`)
		if _, err := c.CreateConnection(bg, directSpec("reader", pg, "API Reader", "reader-pw")); err != nil {
			t.Fatal(err)
		}
		req := grants.Request{TargetSchema: "api marts", SourceSchemas: []string{"api raw"}}
		res, err := c.Grants(bg, "reader", req)
		if err != nil {
			t.Fatal(err)
		}
		if res.OK() || res.Role != "API Reader" || res.Database != "analytics" || len(res.Statements) == 0 {
			t.Fatalf("audit: %+v", res)
		}
		missing := map[string]bool{}
		for _, ch := range res.Checks {
			if ch.Status == grants.Missing {
				missing[ch.Privilege+" "+ch.Object()] = true
			}
		}
		for _, want := range []string{`USAGE schema "api raw"`, `SELECT table "api raw"."Orders"`} {
			if !missing[want] {
				t.Errorf("%s is not missing: %v", want, missing)
			}
		}
		// The raw shape: checks, statements, the script, a summary.
		r := do(t, "POST", srv.URL+"/api/v1/connections/reader/grants", srv.AdminToken, "application/json",
			`{"target_schema": "api marts", "source_schemas": ["api raw"]}`)
		var got api.GrantsResponse
		if err := json.Unmarshal([]byte(r.body), &got); err != nil || r.status != 200 || got.Connection != "reader" ||
			got.OK || got.Missing != res.Missing() || got.SQL != res.SQL() || len(got.Checks) != len(res.Checks) {
			t.Fatalf("grants response %d %s", r.status, r.body)
		}
		if !strings.Contains(got.SQL, `GRANT SELECT ON ALL TABLES IN SCHEMA "api raw" TO "API Reader";`) {
			t.Fatalf("sql:\n%s", got.SQL)
		}
		exec(res.SQL())
		res, err = c.Grants(bg, "reader", req)
		if err != nil || !res.OK() || len(res.Statements) != 0 {
			t.Fatalf("audit after running the SQL: %+v, %v", res, err)
		}

		// Request problems.
		_, err = c.Grants(bg, "reader", grants.Request{})
		if !errors.Is(err, app.ErrInvalid) {
			t.Fatalf("no target schema and none on the connection: %v", err)
		}
		_, err = c.Grants(bg, "reader", grants.Request{TargetSchema: "  "})
		wantFields(t, err, "target_schema")
		_, err = c.Grants(bg, "reader", grants.Request{TargetSchema: "x", Role: "no such role"})
		wantAPIError(t, err, http.StatusUnprocessableEntity, api.CodeInvalid)
		if _, err := c.Grants(bg, "nope", req); !errors.Is(err, app.ErrNotFound) {
			t.Fatalf("audit of an unknown connection: %v", err)
		}
	})

	// A run that creates schemas needs CREATE on the database even for a
	// target schema that exists: said in the request, or found in the
	// connection's jobs (README's example runs create schema if not exists).
	t.Run("GrantsKnowSchemaCreation", func(t *testing.T) {
		t.Parallel()
		srv := apitest.Start(t, apitest.Options{})
		c := srv.Client(t, srv.AdminToken)
		su, err := pgx.Connect(bg, pg.ConnString(pg.SuperUser, pg.SuperPassword, "analytics"))
		if err != nil {
			t.Fatal(err)
		}
		defer su.Close(bg)
		exec := func(sql string) {
			t.Helper()
			if _, err := su.PgConn().Exec(bg, sql).ReadAll(); err != nil {
				t.Fatalf("%s: %v", sql, err)
			}
		}
		pg.CreateRole(t, "job runner", "runner-pw")
		exec(`CREATE SCHEMA "job marts"; GRANT USAGE, CREATE ON SCHEMA "job marts" TO "job runner"`)
		if _, err := c.CreateConnection(bg, directSpec("runner", pg, "job runner", "runner-pw")); err != nil {
			t.Fatal(err)
		}
		createDB := func(res *grants.Result) grants.Check {
			t.Helper()
			for _, ch := range res.Checks {
				if ch.ObjectType == grants.ObjectDatabase && ch.Privilege == "CREATE" {
					return ch
				}
			}
			t.Fatalf("no check of CREATE on the database: %+v", res.Checks)
			return grants.Check{}
		}
		req := grants.Request{TargetSchema: "job marts"}
		res, err := c.Grants(bg, "runner", req)
		if err != nil || !res.OK() || createDB(res).Status != grants.NotNeeded {
			t.Fatalf("without schema creation: %+v, %v", res, err)
		}
		r := do(t, "POST", srv.URL+"/api/v1/connections/runner/grants", srv.AdminToken, "application/json",
			`{"target_schema": "job marts", "create_schemas": true}`)
		var got api.GrantsResponse
		if err := json.Unmarshal([]byte(r.body), &got); err != nil || r.status != 200 || got.OK ||
			!strings.Contains(got.SQL, `GRANT CREATE ON DATABASE "analytics" TO "job runner";`) {
			t.Fatalf("create_schemas in the request: %d %s", r.status, r.body)
		}
		jobsYAML := `jobs:
  - name: nightly
    connection: runner
    steps:
      - sql: create schema if not exists "job marts"
      - command: [dbt, build]
`
		if _, err := c.ApplyJobsFile(bg, []byte(jobsYAML)); err != nil {
			t.Fatal(err)
		}
		res, err = c.Grants(bg, "runner", req)
		if err != nil || res.OK() || !res.Request.CreateSchemas {
			t.Fatalf("with a job that creates schemas: %+v, %v", res, err)
		}
		if ch := createDB(res); ch.Status != grants.Missing || !strings.Contains(ch.Note, "job nightly runs CREATE SCHEMA in step 1") {
			t.Fatalf("CREATE on the database = %+v", ch)
		}
		exec(res.SQL())
		if res, err := c.Grants(bg, "runner", req); err != nil || !res.OK() {
			t.Fatalf("after the SQL: %+v, %v", res, err)
		}
	})

	t.Run("ViewerCannot", func(t *testing.T) {
		t.Parallel()
		srv := apitest.Start(t, apitest.Options{})
		if _, err := srv.App.CreateConnection(bg, directSpec("wh", pg, "dbt", "dbt-pw")); err != nil {
			t.Fatal(err)
		}
		viewer := srv.Client(t, srv.Token(t, "viewer", auth.Viewer).Token)
		_, err := viewer.TestConnection(bg, "wh", nil)
		wantAPIError(t, err, http.StatusForbidden, api.CodeForbidden)
		_, err = viewer.TestDraft(bg, directSpec("wh", pg, "dbt", "dbt-pw"), "", nil)
		wantAPIError(t, err, http.StatusForbidden, api.CodeForbidden)
		_, err = viewer.Grants(bg, "wh", grants.Request{TargetSchema: "analytics"})
		if !errors.Is(err, client.ErrForbidden) {
			t.Fatalf("viewer grants: %v", err)
		}
		editor := srv.Client(t, srv.Token(t, "editor", auth.Editor).Token)
		if rep, err := editor.TestConnection(bg, "wh", nil); err != nil || !rep.OK {
			t.Fatalf("editor test: %+v, %v", rep, err)
		}
	})

	// Security finding (high): an editor could make pgrelay send a saved
	// password to a server of the editor's choice, by a draft test based on
	// the saved connection, or by changing its host or port. The stored
	// password now goes only to the endpoint it was saved for.
	t.Run("StoredPasswordStaysWithItsEndpoint", func(t *testing.T) {
		t.Parallel()
		srv := apitest.Start(t, apitest.Options{})
		catcher := testenv.StartPasswordCatcher(t)
		const pw = "stored-pw-canary-7f3a"
		pg.CreateRole(t, "endpoint_owner", pw)
		saved := directSpec("wh", pg, "endpoint_owner", pw)
		// Clear text allowed on purpose: only the endpoint rule may stop it.
		saved.RequireAuth = "password,md5,scram-sha-256"
		if _, err := srv.App.CreateConnection(bg, saved); err != nil {
			t.Fatal(err)
		}
		editorToken := srv.Token(t, "editor", auth.Editor).Token
		editor := srv.Client(t, editorToken)
		moved := func(mod func(*connection.Spec)) connection.Spec {
			s := directSpec("wh", pg, "endpoint_owner", "")
			s.RequireAuth = saved.RequireAuth
			mod(&s)
			return s
		}
		toCatcher := func(s *connection.Spec) { s.Host, s.Port = catcher.Host, catcher.Port }
		wantPasswordAgain := func(what string, err error) {
			t.Helper()
			ve := wantFields(t, err, "password")
			if p := ve.Fields()["password"]; !strings.Contains(p, "enter the password again") {
				t.Errorf("%s: password problem %q", what, p)
			}
		}

		// A draft test based on the saved connection, aimed elsewhere.
		for what, mod := range map[string]func(*connection.Spec){
			"another host and port": toCatcher,
			"another user":          func(s *connection.Spec) { toCatcher(s); s.User = "postgres" },
			"a bastion": func(s *connection.Spec) {
				s.Tunnel = &connection.Tunnel{Host: catcher.Host, Port: catcher.Port, User: "x"}
			},
		} {
			_, err := editor.TestDraft(bg, moved(mod), "wh", nil)
			wantPasswordAgain("draft with "+what, err)
		}
		// The same through the raw API, streamed as the form's button does.
		r := do(t, "POST", srv.URL+"/api/v1/connections/test", editorToken, "application/json",
			`{"host": "`+catcher.Host+`", "port": `+itoa(catcher.Port)+`, "database": "analytics", "user": "endpoint_owner", "sslmode": "disable", "require_auth": "password", "based_on": "wh"}`,
			func(r *http.Request) { r.Header.Set("Accept", "text/event-stream") })
		if eb := r.errorBody(t); r.status != http.StatusBadRequest || !strings.Contains(eb.Fields.Map()["password"], "enter the password again") {
			t.Fatalf("streamed draft aimed elsewhere: %d %s", r.status, r.body)
		}
		if n := catcher.Connections(); n != 0 {
			t.Fatalf("the catcher was dialled %d times by refused drafts", n)
		}

		// Moving the saved connection without giving the password again.
		_, err := editor.UpdateConnection(bg, "wh", moved(toCatcher), nil)
		wantPasswordAgain("update to another port", err)
		if v, err := editor.GetConnection(bg, "wh"); err != nil || v.Port != pg.Port {
			t.Fatalf("after a refused update: %+v, %v", v, err)
		}
		if rep, err := editor.TestConnection(bg, "wh", nil); err != nil || !rep.OK {
			t.Fatalf("the saved connection still works: %+v, %v", rep, err)
		}
		queryOK(t, editor, "wh", "select 1")

		// A draft at the saved endpoint uses the stored password.
		if rep, err := editor.TestDraft(bg, moved(func(*connection.Spec) {}), "wh", nil); err != nil || !rep.OK {
			t.Fatalf("draft at the saved endpoint: %+v, %v", rep, err)
		}
		// With a new password given, the move is allowed: the catcher gets
		// that password, never the stored one.
		mine := secret.New("editor-typed-password")
		if _, err := editor.UpdateConnection(bg, "wh", moved(toCatcher), &mine); err != nil {
			t.Fatalf("update with the password given again: %v", err)
		}
		if rep, err := editor.TestConnection(bg, "wh", nil); err != nil || rep.OK {
			t.Fatalf("test against the catcher: %+v, %v", rep, err)
		}
		if got := catcher.Received(); !slices.Equal(got, []string{"editor-typed-password"}) {
			t.Fatalf("the catcher received %q", got)
		}
		if strings.Contains(srv.Logs(), pw) {
			t.Fatal("the stored password is in the server's log")
		}
	})

	// A clear-text password request over a hop whose certificate is not
	// verified is refused by default, before any password is sent; the
	// test names the setting. require_auth lets a user accept it.
	t.Run("ClearTextRefusedOverUnverifiedHop", func(t *testing.T) {
		t.Parallel()
		srv := apitest.Start(t, apitest.Options{})
		catcher := testenv.StartPasswordCatcher(t)
		c := srv.Client(t, srv.AdminToken)
		for _, mode := range []connection.SSLMode{connection.SSLDisable, connection.SSLPrefer} {
			spec := connection.Spec{Name: "ct-" + string(mode), Host: catcher.Host, Port: catcher.Port, Database: "analytics",
				User: "dbt", Password: secret.New("cleartext-canary"), SSLMode: mode}
			v, err := c.CreateConnection(bg, spec)
			if err != nil || v.EffectiveRequireAuth != "!password" {
				t.Fatalf("create %s: %+v, %v", spec.Name, v, err)
			}
			rep, err := c.TestConnection(bg, spec.Name, nil)
			f := rep.Failed()
			if err != nil || f == nil || f.ID != diagnose.StepPostgresAuth || !strings.Contains(f.Hint, "--require-auth") ||
				!strings.Contains(f.Error, "require_auth") {
				t.Fatalf("%s: test against a clear-text server: %+v, %v", mode, f, err)
			}
			if err := c.Query(bg, spec.Name, "select 1", &recSink{}); err == nil {
				t.Fatalf("%s: query against a clear-text server succeeded", mode)
			}
		}
		if got := catcher.Received(); len(got) != 0 || catcher.Connections() == 0 {
			t.Fatalf("the catcher received %q over %d connections", got, catcher.Connections())
		}
		// Accepted knowingly: the server gets it.
		spec := connection.Spec{Name: "ct-ok", Host: catcher.Host, Port: catcher.Port, Database: "analytics",
			User: "dbt", Password: secret.New("cleartext-accepted"), SSLMode: connection.SSLDisable, RequireAuth: "password"}
		if _, err := c.CreateConnection(bg, spec); err != nil {
			t.Fatal(err)
		}
		if rep, err := c.TestConnection(bg, "ct-ok", nil); err != nil || rep.OK {
			t.Fatalf("test with clear text accepted: %+v, %v", rep, err)
		}
		if got := catcher.Received(); !slices.Equal(got, []string{"cleartext-accepted"}) {
			t.Fatalf("the catcher received %q", got)
		}
		// A bad list is a field error naming what is accepted.
		spec.Name, spec.RequireAuth = "ct-bad", "scram"
		_, err := c.CreateConnection(bg, spec)
		if ve := wantFields(t, err, "require_auth"); !strings.Contains(ve.Fields()["require_auth"], "scram-sha-256") {
			t.Fatalf("bad require_auth: %v", err)
		}
	})
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
