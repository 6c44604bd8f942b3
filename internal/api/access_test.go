package api_test

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestAccessControlWalk calls every route of Routes() with no
// credentials, a garbage token, a revoked token, a forged session, a
// session without CSRF token (for unsafe methods), and with each role by
// token and by session. A route added to the API is walked automatically;
// one whose path parameter or body the walk cannot fill fails the test
// until a sample is added here.
func TestAccessControlWalk(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{DialTimeout: 2 * time.Second, Queue: true, StreamPoll: 20 * time.Millisecond})
	canary := "canary-pw-" + randomString(12)
	// Nothing listens on these ports: queries fail fast (502).
	dbPort, sshPort := testenv.FreePort(t), testenv.FreePort(t)
	var seq atomic.Int64
	newConnection := func() string {
		name := fmt.Sprintf("walk-%d", seq.Add(1))
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
		name := fmt.Sprintf("walk-job-%d", seq.Add(1))
		if _, _, err := srv.App.PutJob(bg, jobs.Job{Name: name, Connection: shared, Steps: []jobs.Step{{SQL: "select 1"}}}); err != nil {
			t.Fatal(err)
		}
		return name
	}
	sharedJob := newJob()
	// An ended run: cancelling it is refused (422), its event stream ends
	// at once.
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
	tokens := map[auth.Role]string{}
	tokenIDs := map[auth.Role]string{}
	for _, role := range auth.Roles() {
		nt := srv.Token(t, "walk-"+string(role), role)
		tokens[role], tokenIDs[role] = nt.Token, nt.ID
	}
	revoked := srv.Token(t, "walk-revoked", auth.Admin)
	if _, err := srv.App.RevokeToken(bg, revoked.ID); err != nil {
		t.Fatal(err)
	}
	adminCookie, _ := srv.Session(t, tokenIDs[auth.Admin])

	// fill returns the URL of a route with its path parameters filled in:
	// destructive routes get a record of their own.
	fill := func(rt api.Route) string {
		p := rt.Pattern
		jobRoute := strings.HasPrefix(p, api.Prefix+"/jobs/")
		if strings.Contains(p, "{name}") {
			name := shared
			switch {
			case jobRoute && rt.Method == http.MethodDelete:
				name = newJob()
			case jobRoute:
				name = sharedJob
			case rt.Method == http.MethodDelete:
				name = newConnection()
			}
			p = strings.ReplaceAll(p, "{name}", name)
		}
		if strings.Contains(p, "{id}") {
			id := endedRun
			if !strings.HasPrefix(p, api.Prefix+"/runs/") {
				id = srv.Token(t, fmt.Sprintf("victim-%d", seq.Add(1)), auth.Viewer).ID
			}
			p = strings.ReplaceAll(p, "{id}", id)
		}
		if strings.Contains(p, "{") {
			t.Fatalf("route %s %s: the walk cannot fill its path parameters; add them to fill", rt.Method, rt.Pattern)
		}
		return srv.URL + p
	}
	tunnelJSON := fmt.Sprintf(`"ssh_tunnel": {"host": "127.0.0.1", "port": %d, "user": "tunnel"}`, sshPort)
	samples := map[string]func() string{
		"POST /api/v1/connections": func() string {
			return fmt.Sprintf(`{"name": "new-%d", "host": "127.0.0.1", "port": %d, "database": "d", "user": "u", "password": %q, %s}`,
				seq.Add(1), dbPort, canary, tunnelJSON)
		},
		"PUT /api/v1/connections/{name}": func() string {
			return fmt.Sprintf(`{"host": "127.0.0.1", "port": %d, "database": "d", "user": "u", "sslmode": "disable", %s}`, dbPort, tunnelJSON)
		},
		"POST /api/v1/connections/{name}/rotate-key":          func() string { return "" },
		"POST /api/v1/connections/{name}/key-rotation":        func() string { return `{"old_key_lifetime": "48h"}` },
		"POST /api/v1/connections/{name}/key-rotation/finish": func() string { return "" },
		"POST /api/v1/ssh-ca":                                 func() string { return "" },
		"PUT /api/v1/ssh-ca/principals":                       func() string { return `{"principals": ["tunnel"]}` },
		"POST /api/v1/connections/{name}/trust-host-key":      func() string { return `{"fingerprint": "SHA256:AAAA"}` },
		"POST /api/v1/connections/{name}/query":               func() string { return `{"sql": "select 1"}` },
		"POST /api/v1/connections/{name}/test":                func() string { return "" },
		"POST /api/v1/connections/{name}/grants":              func() string { return `{"target_schema": "analytics", "source_schemas": ["raw"]}` },
		"POST /api/v1/connections/test": func() string {
			return fmt.Sprintf(`{"host": "127.0.0.1", "port": %d, "database": "d", "user": "u", "password": %q, "based_on": %q, %s}`,
				dbPort, canary, shared, tunnelJSON)
		},
		"POST /api/v1/jobs": func() string {
			return fmt.Sprintf(`{"name": "walk-new-%d", "connection": %q, "steps": [{"sql": "select 1"}]}`, seq.Add(1), shared)
		},
		"PUT /api/v1/jobs/{name}": func() string {
			return fmt.Sprintf(`{"connection": %q, "timeout": "5m", "steps": [{"sql": "select 2"}]}`, shared)
		},
		"POST /api/v1/jobs/apply": func() string {
			return fmt.Sprintf(`{"jobs": [{"name": "walk-applied", "connection": %q, "steps": [{"sql": "select 3"}]}]}`, shared)
		},
		"POST /api/v1/jobs/{name}/runs": func() string { return "" },
		"POST /api/v1/runs/{id}/cancel": func() string { return "" },
		"POST /api/v1/tokens": func() string {
			return fmt.Sprintf(`{"name": "made-%d", "role": "viewer"}`, seq.Add(1))
		},
	}
	body := func(rt api.Route) string {
		if rt.Method == http.MethodGet || rt.Method == http.MethodDelete {
			return ""
		}
		s, ok := samples[rt.Method+" "+rt.Pattern]
		if !ok {
			t.Fatalf("route %s %s: the walk has no sample request body; add one to samples", rt.Method, rt.Pattern)
		}
		return s()
	}

	var bodies []string
	call := func(rt api.Route, mod func(*http.Request)) response {
		t.Helper()
		var mods []func(*http.Request)
		if mod != nil {
			mods = append(mods, mod)
		}
		r := do(t, rt.Method, fill(rt), "", "application/json", body(rt), mods...)
		bodies = append(bodies, r.body)
		return r
	}
	bearer := func(tok string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("Authorization", "Bearer "+tok) }
	}
	cookie := func(value, csrf string) func(*http.Request) {
		return func(r *http.Request) {
			r.AddCookie(&http.Cookie{Name: auth.SessionCookie, Value: value})
			if csrf != "" {
				r.Header.Set(auth.CSRFHeader, csrf)
			}
		}
	}
	wantStatus := func(rt api.Route, who string, r response, status int, code string) {
		t.Helper()
		if r.status != status {
			t.Errorf("%s %s as %s: status %d, want %d: %s", rt.Method, rt.Pattern, who, r.status, status, r.body)
			return
		}
		if code != "" {
			if eb := r.errorBody(t); eb.Code != code {
				t.Errorf("%s %s as %s: code %s, want %s", rt.Method, rt.Pattern, who, eb.Code, code)
			}
		}
	}

	routes := srv.API.Routes()
	if len(routes) < 15 {
		t.Fatalf("only %d routes", len(routes))
	}
	for _, rt := range routes {
		unsafe := rt.Method != http.MethodGet && rt.Method != http.MethodHead
		if rt.Public {
			if rt.Action != "" {
				t.Errorf("public route %s %s declares action %q", rt.Method, rt.Pattern, rt.Action)
			}
			wantStatus(rt, "nobody", call(rt, nil), http.StatusOK, "")
			wantStatus(rt, "a garbage token", call(rt, bearer("garbage")), http.StatusOK, "")
			continue
		}
		if rt.Action == "" {
			t.Errorf("route %s %s declares no action", rt.Method, rt.Pattern)
			continue
		}
		wantStatus(rt, "nobody", call(rt, nil), http.StatusUnauthorized, api.CodeUnauthenticated)
		wantStatus(rt, "a garbage token", call(rt, bearer("garbage")), http.StatusUnauthorized, api.CodeUnauthenticated)
		wantStatus(rt, "an unknown token", call(rt, bearer(auth.TokenPrefix+randomString(32)[:43])), http.StatusUnauthorized, api.CodeUnauthenticated)
		wantStatus(rt, "a revoked token", call(rt, bearer(revoked.Token)), http.StatusUnauthorized, api.CodeUnauthenticated)
		wantStatus(rt, "basic auth", call(rt, func(r *http.Request) { r.SetBasicAuth("admin", tokens[auth.Admin]) }),
			http.StatusUnauthorized, api.CodeUnauthenticated)
		wantStatus(rt, "a forged session", call(rt, cookie(tokenIDs[auth.Admin]+".9999999999.forged", "x")),
			http.StatusUnauthorized, api.CodeUnauthenticated)
		revokedCookie, revokedCSRF := srv.Session(t, revoked.ID)
		wantStatus(rt, "a revoked token's session", call(rt, cookie(revokedCookie, revokedCSRF)),
			http.StatusUnauthorized, api.CodeUnauthenticated)
		if unsafe {
			wantStatus(rt, "admin session without CSRF", call(rt, cookie(adminCookie, "")), http.StatusForbidden, api.CodeCSRF)
			wantStatus(rt, "admin session with a wrong CSRF", call(rt, cookie(adminCookie, "wrong")), http.StatusForbidden, api.CodeCSRF)
			otherCookie, _ := srv.Session(t, tokenIDs[auth.Editor])
			_, otherCSRF := srv.Session(t, tokenIDs[auth.Viewer])
			wantStatus(rt, "a session with another session's CSRF", call(rt, cookie(otherCookie, otherCSRF)),
				http.StatusForbidden, api.CodeCSRF)
		}
		for _, role := range auth.Roles() {
			sessCookie, csrf := srv.Session(t, tokenIDs[role])
			for _, via := range []struct {
				how string
				mod func(*http.Request)
			}{
				{"token", bearer(tokens[role])},
				{"session", cookie(sessCookie, csrf)},
			} {
				who := string(role) + " by " + via.how
				r := call(rt, via.mod)
				if role.Can(rt.Action) {
					if r.status == http.StatusUnauthorized || r.status == http.StatusForbidden || r.status >= 500 && r.status != http.StatusBadGateway {
						t.Errorf("%s %s as %s (allowed): status %d: %s", rt.Method, rt.Pattern, who, r.status, r.body)
					}
					continue
				}
				wantStatus(rt, who, r, http.StatusForbidden, api.CodeForbidden)
				if eb := r.errorBody(t); !strings.Contains(eb.Message, "admin") || !strings.Contains(eb.Message, string(role)) {
					t.Errorf("%s %s as %s: forbidden message does not name the roles: %s", rt.Method, rt.Pattern, who, eb.Message)
				}
			}
		}
	}

	// No secret in any response or in the log.
	for _, b := range bodies {
		if strings.Contains(b, canary) {
			t.Fatalf("the password canary is in a response: %s", b)
		}
		for role, tok := range tokens {
			if strings.Contains(b, tok) {
				t.Fatalf("the %s token is in a response: %s", role, b)
			}
		}
	}
	logs := srv.Logs()
	if strings.Contains(logs, canary) {
		t.Fatal("the password canary is in the server log")
	}
	for role, tok := range tokens {
		if strings.Contains(logs, tok) {
			t.Fatalf("the %s token is in the server log", role)
		}
	}
	if strings.Contains(logs, adminCookie) {
		t.Fatal("a session cookie is in the server log")
	}
}

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
