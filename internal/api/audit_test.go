package api_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestAuditRouteWalk calls every route of Routes() as an editor (an admin
// for the routes only admins may use): each route that changes something
// or opens a connection (every method but GET) adds exactly one audit
// record, naming the token, the client address, the action and the
// target, with no secret and no SQL text; a GET adds none. A route added
// to the API is walked automatically and fails the test until its action
// is listed here.
func TestAuditRouteWalk(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{DialTimeout: 2 * time.Second, Queue: true})
	canary := "canary-pw-" + randomString(12)
	sqlCanary := "sql-literal-" + randomString(8)
	dbPort, sshPort := testenv.FreePort(t), testenv.FreePort(t)
	var seq atomic.Int64
	newConnection := func() string {
		name := fmt.Sprintf("audit-%d", seq.Add(1))
		_, err := srv.App.CreateConnection(bg, connection.Spec{Name: name, Host: "127.0.0.1", Port: dbPort,
			Database: "d", User: "u", Password: secret.New(canary), SSLMode: connection.SSLDisable,
			Tunnel: &connection.Tunnel{Host: "127.0.0.1", Port: sshPort, User: "tunnel"}})
		if err != nil {
			t.Fatal(err)
		}
		return name
	}
	shared := newConnection()
	newJob := func() string {
		name := fmt.Sprintf("audit-job-%d", seq.Add(1))
		if _, _, err := srv.App.PutJob(bg, jobs.Job{Name: name, Connection: shared, Steps: []jobs.Step{{SQL: "select 1"}}}); err != nil {
			t.Fatal(err)
		}
		return name
	}
	sharedJob := newJob()
	endedRun := func() string {
		jv, err := srv.App.GetJob(bg, sharedJob)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		r := jobs.NewRun(jv.Job, jobs.Manual, now)
		r.Status, r.Reason, r.StartedAt, r.EndedAt = jobs.Failed, "walk", &now, &now
		if err := srv.Store.CreateRun(bg, r); err != nil {
			t.Fatal(err)
		}
		return r.ID
	}()
	editor := srv.Token(t, "audit-editor", auth.Editor)
	admin := srv.Token(t, "audit-admin", auth.Admin)

	fill := func(rt api.Route) (string, string) {
		p := rt.Pattern
		target := ""
		if strings.Contains(p, "{name}") {
			name := shared
			switch jobRoute := strings.HasPrefix(p, api.Prefix+"/jobs/"); {
			case jobRoute && rt.Method == http.MethodDelete:
				name = newJob()
			case jobRoute:
				name = sharedJob
			case rt.Method == http.MethodDelete:
				name = newConnection()
			}
			p, target = strings.ReplaceAll(p, "{name}", name), name
		}
		if strings.Contains(p, "{id}") {
			id := endedRun
			if !strings.HasPrefix(p, api.Prefix+"/runs/") {
				id = srv.Token(t, fmt.Sprintf("victim-%d", seq.Add(1)), auth.Viewer).ID
			}
			p, target = strings.ReplaceAll(p, "{id}", id), id
		}
		if strings.Contains(p, "{") {
			t.Fatalf("route %s %s: the walk cannot fill its path parameters; add them to fill", rt.Method, rt.Pattern)
		}
		return srv.URL + p, target
	}
	tunnelJSON := fmt.Sprintf(`"ssh_tunnel": {"host": "127.0.0.1", "port": %d, "user": "tunnel"}`, sshPort)
	// The body of each route that takes one, and the action its record has.
	type sample struct {
		body   func() string
		action string
	}
	samples := map[string]sample{
		"POST /api/v1/connections": {func() string {
			return fmt.Sprintf(`{"name": "new-%d", "host": "127.0.0.1", "port": %d, "database": "d", "user": "u", "password": %q, %s}`,
				seq.Add(1), dbPort, canary, tunnelJSON)
		}, "connection.create"},
		"PUT /api/v1/connections/{name}": {func() string {
			return fmt.Sprintf(`{"host": "127.0.0.1", "port": %d, "database": "d", "user": "u", "sslmode": "disable", "password": %q, %s}`,
				dbPort, canary, tunnelJSON)
		}, "connection.update"},
		"DELETE /api/v1/connections/{name}":                   {nil, "connection.delete"},
		"POST /api/v1/connections/{name}/rotate-key":          {func() string { return "" }, "connection.rotate_key"},
		"POST /api/v1/connections/{name}/key-rotation":        {func() string { return "" }, "connection.rotate_key_start"},
		"POST /api/v1/connections/{name}/key-rotation/finish": {func() string { return "" }, "connection.rotate_key_finish"},
		"DELETE /api/v1/connections/{name}/key-rotation":      {nil, "connection.rotate_key_cancel"},
		"POST /api/v1/ssh-ca":                                 {func() string { return "" }, "ssh_ca.init"},
		"PUT /api/v1/ssh-ca/principals":                       {func() string { return `{"principals": ["tunnel"]}` }, "ssh_ca.set_principals"},
		"POST /api/v1/connections/{name}/trust-host-key":      {func() string { return `{"fingerprint": "SHA256:AAAA"}` }, "connection.trust_host_key"},
		"POST /api/v1/connections/{name}/query": {func() string {
			return fmt.Sprintf(`{"sql": "select '%s'"}`, sqlCanary)
		}, "connection.query"},
		"POST /api/v1/connections/{name}/test": {func() string { return "" }, "connection.test"},
		"POST /api/v1/connections/{name}/grants": {func() string {
			return `{"target_schema": "analytics", "source_schemas": ["raw"]}`
		}, "connection.grants"},
		"POST /api/v1/connections/test": {func() string {
			return fmt.Sprintf(`{"host": "127.0.0.1", "port": %d, "database": "d", "user": "u", "password": %q, "based_on": %q, %s}`,
				dbPort, canary, shared, tunnelJSON)
		}, "connection.test_draft"},
		"POST /api/v1/jobs": {func() string {
			return fmt.Sprintf(`{"name": "audit-new-%d", "connection": %q, "steps": [{"sql": "select '%s'"}]}`, seq.Add(1), shared, sqlCanary)
		}, "job.create"},
		"PUT /api/v1/jobs/{name}": {func() string {
			return fmt.Sprintf(`{"connection": %q, "timeout": "5m", "steps": [{"sql": "select 2"}]}`, shared)
		}, "job.update"},
		"DELETE /api/v1/jobs/{name}": {nil, "job.delete"},
		"POST /api/v1/jobs/apply": {func() string {
			return fmt.Sprintf(`{"jobs": [{"name": "audit-applied-%d", "connection": %q, "steps": [{"sql": "select 3"}]}]}`, seq.Add(1), shared)
		}, "job.create"},
		"POST /api/v1/jobs/{name}/runs": {func() string { return "" }, "run.start"},
		"POST /api/v1/runs/{id}/cancel": {func() string { return "" }, "run.cancel"},
		"POST /api/v1/tokens": {func() string {
			return fmt.Sprintf(`{"name": "made-%d", "role": "viewer"}`, seq.Add(1))
		}, "token.create"},
		"DELETE /api/v1/tokens/{id}": {nil, "token.revoke"},
	}

	head := func() int64 {
		c, err := srv.Store.AuditChain(bg)
		if err != nil {
			t.Fatal(err)
		}
		return c.HeadSeq
	}
	routes := srv.API.Routes()
	walked := 0
	for _, rt := range routes {
		if rt.Public {
			continue
		}
		key := rt.Method + " " + rt.Pattern
		if rt.Method == http.MethodGet && strings.HasSuffix(rt.Pattern, "/events") {
			continue // a stream: covered by the GETs that read the same run
		}
		tok := editor
		if !auth.Editor.Can(rt.Action) {
			tok = admin
		}
		u, target := fill(rt)
		s, known := samples[key]
		if rt.Method != http.MethodGet && !known {
			t.Fatalf("route %s changes something or opens a connection: add its body and action to samples", key)
		}
		body := ""
		if s.body != nil {
			body = s.body()
		}
		before := head()
		r := do(t, rt.Method, u, tok.Token, "application/json", body)
		if r.status == http.StatusUnauthorized || r.status == http.StatusForbidden || r.status >= 500 && r.status != http.StatusBadGateway {
			t.Errorf("%s: status %d: %s", key, r.status, r.body)
			continue
		}
		if strings.Contains(r.body, sqlCanary) && rt.Method != http.MethodGet && !strings.Contains(key, "/jobs") {
			t.Errorf("%s: the response repeats the SQL", key)
		}
		after := head()
		if rt.Method == http.MethodGet {
			if after != before {
				t.Errorf("%s (a read) added %d audit records", key, after-before)
			}
			continue
		}
		walked++
		if after-before != 1 {
			t.Errorf("%s added %d audit records, want exactly 1 (status %d)", key, after-before, r.status)
			continue
		}
		recs, err := srv.Store.AuditAfter(bg, before, 10)
		if err != nil || len(recs) != 1 {
			t.Fatalf("%s: records %v %v", key, recs, err)
		}
		rec := recs[0]
		if rec.Action != s.action {
			t.Errorf("%s: action %s, want %s", key, rec.Action, s.action)
		}
		if rec.Actor != (audit.Actor{Kind: audit.ActorToken, ID: tok.ID, Name: tok.Name}) {
			t.Errorf("%s: actor %+v, want token %s", key, rec.Actor, tok.Name)
		}
		if !strings.HasPrefix(rec.Client, "127.0.0.1:") {
			t.Errorf("%s: client %q", key, rec.Client)
		}
		if target != "" && rec.Target != target && !(strings.HasSuffix(rec.Action, ".start") && rec.Target == sharedJob) {
			t.Errorf("%s: target %q, want %q", key, rec.Target, target)
		}
		// A test answers 200 with a report; nothing listens on the bastion's
		// port, so the report failed and so did the use.
		wantOK := r.status < 300 && !strings.HasPrefix(rec.Action, "connection.test")
		if (rec.Outcome == audit.OK) != wantOK {
			t.Errorf("%s: outcome %s (%s) for status %d", key, rec.Outcome, rec.Error, r.status)
		}
		if strings.HasPrefix(rec.Action, "connection.") && rec.Action != "connection.create" && rec.Action != "connection.delete" &&
			rec.Action != "connection.update" && rec.Action != "connection.trust_host_key" {
			// A use: the key and the bastion it went through.
			if rec.Use == nil || len(rec.Use.Hops) != 1 || rec.Use.Hops[0] != fmt.Sprintf("tunnel@127.0.0.1:%d", sshPort) {
				t.Errorf("%s: use %+v, want the hop", key, rec.Use)
			} else if rec.Use.KeyFingerprint == "" && rec.Action != "connection.test_draft" {
				t.Errorf("%s: use without the key fingerprint", key)
			}
		}
		if rec.Action == "connection.query" && (rec.Use == nil || len(rec.Use.SQLDigests) != 1 || len(rec.Use.SQLDigests[0]) != 32) {
			t.Errorf("query record without its digest: %+v", rec.Use)
		}
	}
	if walked < 15 {
		t.Fatalf("only %d routes walked", walked)
	}

	// Nothing secret in the log, and verification passes.
	resp := do(t, http.MethodGet, srv.URL+api.Prefix+"/audit/export", admin.Token, "", "")
	if resp.status != http.StatusOK || !strings.HasPrefix(resp.header.Get("Content-Type"), "application/x-ndjson") {
		t.Fatalf("export: %d %v", resp.status, resp.header)
	}
	lines := 0
	sc := bufio.NewScanner(strings.NewReader(resp.body))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec audit.Record
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil || rec.Seq != int64(lines+1) || rec.Hash == "" {
			t.Fatalf("export line %d: %v %s", lines+1, err, sc.Text())
		}
		lines++
	}
	if int64(lines) != head() {
		t.Fatalf("export has %d lines, the log %d records", lines, head())
	}
	for _, leak := range []string{canary, sqlCanary, editor.Token, admin.Token} {
		if strings.Contains(resp.body, leak) {
			t.Fatalf("the audit log holds a secret or SQL text: %q", leak)
		}
	}
	var v audit.Verification
	resp = do(t, http.MethodGet, srv.URL+api.Prefix+"/audit/verify", admin.Token, "", "")
	if err := json.Unmarshal([]byte(resp.body), &v); err != nil || !v.OK || v.Records != head() {
		t.Fatalf("verify: %s %v", resp.body, err)
	}
	// The list filters by target, newest first.
	var list api.AuditList
	resp = do(t, http.MethodGet, srv.URL+api.Prefix+"/audit?target=connection:"+shared+"&limit=2", admin.Token, "", "")
	if err := json.Unmarshal([]byte(resp.body), &list); err != nil || len(list.Records) != 2 || list.Records[0].Seq < list.Records[1].Seq ||
		list.Records[0].Target != shared || list.NextBefore != list.Records[1].Seq {
		t.Fatalf("list by target: %s %v", resp.body, err)
	}
	resp = do(t, http.MethodGet, srv.URL+api.Prefix+"/audit?since=yesterday", admin.Token, "", "")
	if resp.status != http.StatusBadRequest || !strings.Contains(resp.body, "since") {
		t.Fatalf("bad since: %d %s", resp.status, resp.body)
	}
	// Editors cannot read it.
	if r := do(t, http.MethodGet, srv.URL+api.Prefix+"/audit", editor.Token, "", ""); r.status != http.StatusForbidden {
		t.Fatalf("editor reading the audit log: %d", r.status)
	}
}

// A request refused to an authenticated principal (its role, or a failed
// cross-site check) is recorded as access.refused with the route's
// pattern; an unauthenticated one names no actor and is not recorded.
func TestAuditRecordsRefusedRequests(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	viewer := srv.Token(t, "audit-viewer", auth.Viewer)
	editor := srv.Token(t, "audit-editor", auth.Editor)
	editorCookie, _ := srv.Session(t, editor.ID)
	head := func() int64 {
		c, err := srv.Store.AuditChain(bg)
		if err != nil {
			t.Fatal(err)
		}
		return c.HeadSeq
	}
	last := func(before int64) []audit.Record {
		recs, err := srv.Store.AuditAfter(bg, before, 10)
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}
	cases := []struct {
		name        string
		method, url string
		token       string
		mod         func(*http.Request)
		status      int
		actor       string
		class       string
		target      string
	}{
		{"role", http.MethodPost, srv.URL + api.Prefix + "/connections", viewer.Token, nil, http.StatusForbidden,
			viewer.Name, "forbidden", "POST " + api.Prefix + "/connections"},
		{"role on a read", http.MethodGet, srv.URL + api.Prefix + "/audit", editor.Token, nil, http.StatusForbidden,
			editor.Name, "forbidden", "GET " + api.Prefix + "/audit"},
		{"csrf", http.MethodDelete, srv.URL + api.Prefix + "/connections/secret-name", "", func(r *http.Request) {
			r.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: editorCookie})
		}, http.StatusForbidden, editor.Name, "csrf", "DELETE " + api.Prefix + "/connections/{name}"},
		{"unauthenticated", http.MethodPost, srv.URL + api.Prefix + "/connections", "garbage", nil, http.StatusUnauthorized,
			"", "", ""},
	}
	for _, c := range cases {
		before := head()
		var mods []func(*http.Request)
		if c.mod != nil {
			mods = append(mods, c.mod)
		}
		r := do(t, c.method, c.url, c.token, "application/json", "{}", mods...)
		if r.status != c.status {
			t.Fatalf("%s: status %d, want %d: %s", c.name, r.status, c.status, r.body)
		}
		recs := last(before)
		if c.actor == "" {
			if len(recs) != 0 {
				t.Errorf("%s: %d audit records, want none: %+v", c.name, len(recs), recs)
			}
			continue
		}
		if len(recs) != 1 {
			t.Fatalf("%s: %d audit records, want 1: %+v", c.name, len(recs), recs)
		}
		rec := recs[0]
		if rec.Action != "access.refused" || rec.Actor.Name != c.actor || rec.Actor.Kind != audit.ActorToken ||
			rec.Outcome != audit.Failed || rec.Error != c.class || rec.TargetKind != audit.TargetRoute || rec.Target != c.target {
			t.Errorf("%s: record %+v", c.name, rec)
		}
		if strings.Contains(rec.Target, "secret-name") {
			t.Errorf("%s: the record names the URL, not the route: %q", c.name, rec.Target)
		}
		if !strings.HasPrefix(rec.Client, "127.0.0.1:") {
			t.Errorf("%s: client %q", c.name, rec.Client)
		}
	}
}
