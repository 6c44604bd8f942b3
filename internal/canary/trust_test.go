package canary_test

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestTrustServerPaths pins a bastion's host key, then puts another key at
// the same address (a man in the middle) and checks that every path
// through a running server refuses it and names both fingerprints: API
// queries, API connection tests and audits (when the API serves them),
// remote CLI queries, runs worked by the server (whose command step never
// starts), and the web UI, which shows the key waiting for approval. It
// then revokes a token in use: every API route refuses it, by bearer and by
// session, and every web page ends its session.
func TestTrustServerPaths(t *testing.T) {
	t.Parallel()
	start := time.Now()
	ev := &evidence{}
	pw := newPassword("t")
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	b := testenv.StartBastion(t, testenv.BastionOptions{}) // its host key is rotated
	trust := pg.NewDatabase(t)
	trust.SetPassword(t, pw)
	dataDir := t.TempDir()
	common := e2etest.ProcessEnv("PGRELAY_DATA_DIR="+dataDir, "TMPDIR="+t.TempDir())
	c := &pgrelayCLI{t: t, ev: ev, mode: "local", env: common}

	type token struct{ value, id string }
	tokens := map[string]token{}
	for _, tk := range []struct{ name, role string }{{"admin", "admin"}, {"victim", "admin"}, {"viewer", "viewer"}} {
		var nt struct {
			Token string `json:"token"`
			ID    string `json:"id"`
		}
		out := c.ok("token", "create", "--role", tk.role, "--name", tk.name, "-o", "json").stdout
		if err := json.Unmarshal([]byte(out), &nt); err != nil || !auth.LooksLikeToken(nt.Token) {
			t.Fatalf("token create: %q, %v", out, err)
		}
		tokens[tk.name] = token{nt.Token, nt.ID}
	}
	c.okWith(withPW(pw), "connection", "create", "mitm", "--host", pg.Host, "--port", strconv.Itoa(pg.Port),
		"--database", trust.Name, "--user", trust.User, "--password-env", "DB_PASSWORD",
		"--ssh-host", b.Host, "--ssh-port", strconv.Itoa(b.Port), "--ssh-user", b.User)
	b.Authorize(t, strings.TrimSpace(c.ok("connection", "public-key", "mitm", "--restricted").stdout))
	c.ok("query", "mitm", "select 1") // pins the real key
	pinned := sshkey.Fingerprint(b.HostKey)
	marker := filepath.Join(t.TempDir(), "command-ran")
	jobsFile := filepath.Join(t.TempDir(), "jobs.yaml")
	if err := os.WriteFile(jobsFile, []byte(fmt.Sprintf(`jobs:
  - name: mitmjob
    connection: mitm
    steps:
      - command: ["touch", %q]
`, marker)), 0o600); err != nil {
		t.Fatal(err)
	}
	c.ok("job", "apply", "-f", jobsFile)

	s := e2etest.StartServer(t, binary, "trust", e2etest.Options{Env: common,
		Args: []string{"--allow-command", "touch", "--lost-after", "5s", "--reap-interval", "1s"}})
	w := newWeb(t, ev, s.URL)
	admin := newClient(t, ev, s.URL, tokens["admin"].value, "admin client")
	adminReq := func(method, path, body, label string) response {
		t.Helper()
		return w.do(req{method: method, path: path, body: body, bearer: tokens["admin"].value, label: label})
	}
	// Through the real bastion, the server's paths work.
	if r := adminReq(http.MethodPost, api.Prefix+"/connections/mitm/query", `{"sql": "select 1"}`, "query"); r.status != http.StatusOK {
		t.Fatalf("query through the real bastion: %d %s", r.status, r.body)
	}
	adminSess, _ := w.signIn(tokens["admin"].value, "admin")
	victimSess, victimCSRF := w.signIn(tokens["victim"].value, "victim")

	b.RotateHostKey(t) // the impostor: same address, another key
	impostor := sshkey.Fingerprint(b.HostKey)
	if impostor == pinned {
		t.Fatal("RotateHostKey kept the key")
	}
	namesBoth := func(what, text string) {
		t.Helper()
		for _, fp := range []string{pinned, impostor} {
			if !strings.Contains(text, fp) {
				t.Errorf("%s does not name fingerprint %s:\n%.3000s", what, fp, text)
			}
		}
	}

	t.Run("APIQuery", func(t *testing.T) {
		r := adminReq(http.MethodPost, api.Prefix+"/connections/mitm/query", `{"sql": "select 1"}`, "query through the impostor")
		var eb api.ErrorResponse
		if err := json.Unmarshal([]byte(r.body), &eb); err != nil || r.status != http.StatusBadGateway || eb.Error.Code != api.CodeHostKeyChanged {
			t.Fatalf("query through the impostor: status %d: %s", r.status, r.body)
		}
		namesBoth("the API's refusal", eb.Error.Message)
	})

	t.Run("APIConnectionTest", func(t *testing.T) {
		if !hasRoute(t, http.MethodPost, api.Prefix+"/connections/{name}/test") {
			t.Skip("the API serves no connection test yet")
		}
		for _, path := range []string{"/connections/mitm/test", "/connections/mitm/test?stream=1"} {
			r := adminReq(http.MethodPost, api.Prefix+path, "", "connection test through the impostor")
			if r.status == http.StatusOK && !strings.Contains(path, "stream") {
				var rep api.TestReport
				if err := json.Unmarshal([]byte(r.body), &rep); err != nil {
					t.Fatalf("test report: %v: %s", err, r.body)
				}
				if f := rep.Failed(); rep.OK || f == nil {
					t.Fatalf("the connection test passed through the impostor: %s", r.body)
				}
			}
			if strings.Contains(r.body, `"ok":true`) {
				t.Fatalf("POST %s passed through the impostor: %s", path, r.body)
			}
			namesBoth("POST "+path, r.body)
		}
		if hasRoute(t, http.MethodPost, api.Prefix+"/connections/test") {
			// A draft of an edit form uses the saved connection's pins.
			body := fmt.Sprintf(`{"host": %q, "port": %d, "database": %q, "user": %q, "based_on": "mitm",
				"ssh_tunnel": {"host": %q, "port": %d, "user": %q}}`, pg.Host, pg.Port, trust.Name, trust.User, b.Host, b.Port, b.User)
			r := adminReq(http.MethodPost, api.Prefix+"/connections/test", body, "draft test through the impostor")
			if strings.Contains(r.body, `"ok":true`) {
				t.Fatalf("a draft based on mitm passed through the impostor: %s", r.body)
			}
			namesBoth("the draft test", r.body)
		}
	})

	t.Run("APIGrants", func(t *testing.T) {
		if !hasRoute(t, http.MethodPost, api.Prefix+"/connections/{name}/grants") {
			t.Skip("the API serves no privilege audit yet")
		}
		r := adminReq(http.MethodPost, api.Prefix+"/connections/mitm/grants", `{"target_schema": "public"}`, "audit through the impostor")
		if r.status != http.StatusBadGateway {
			t.Fatalf("audit through the impostor: status %d: %s", r.status, r.body)
		}
		namesBoth("the audit's refusal", r.body)
	})

	t.Run("RemoteCLI", func(t *testing.T) {
		rc := &pgrelayCLI{t: t, ev: ev, mode: "remote", env: append(append([]string(nil), common...),
			"PGRELAY_SERVER="+s.URL, "PGRELAY_TOKEN="+tokens["admin"].value)}
		r := rc.fail(1, "query", "mitm", "select 1")
		namesBoth("the remote CLI's refusal", r.stderr)
		r = rc.run(cmdOpts{}, "connection", "test", "mitm")
		if r.code == 0 {
			t.Fatalf("remote connection test passed through the impostor: %s", r)
		}
		if r.code == 1 {
			namesBoth("the remote connection test", r.stdout+r.stderr)
		}
	})

	t.Run("JobRun", func(t *testing.T) {
		ctx := context.Background()
		run, err := admin.RunJob(ctx, "mitmjob", jobs.API)
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the run ends", 30*time.Second, func() bool {
			if run, err = admin.GetRun(ctx, run.ID); err != nil {
				t.Fatal(err)
			}
			return run.Status.Terminal()
		})
		if run.Status != jobs.Failed {
			t.Fatalf("run through the impostor: %s (%s)", run.Status, run.Reason)
		}
		namesBoth("the run's reason", run.Reason)
		for _, st := range run.Steps {
			if st.Status != jobs.Skipped {
				t.Errorf("step %d of the refused run: %s", st.Index+1, st.Status)
			}
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatal("the command step ran through the impostor")
		}
	})

	t.Run("WebShowsPendingKey", func(t *testing.T) {
		v, err := admin.GetConnection(context.Background(), "mitm")
		if err != nil {
			t.Fatal(err)
		}
		if tv := v.SSHTunnel; tv.HostKeyFingerprint != pinned || tv.PendingHostKeyFingerprint != impostor {
			t.Fatalf("connection after the refusals: pinned %q pending %q; want %q and %q",
				tv.HostKeyFingerprint, tv.PendingHostKeyFingerprint, pinned, impostor)
		}
		r := w.do(req{method: http.MethodGet, path: "/connections/mitm", session: adminSess, label: "connection page"})
		if r.status != http.StatusOK {
			t.Fatalf("connection page: %d", r.status)
		}
		namesBoth("the connection page", unescaper.Replace(html.UnescapeString(r.body)))
		if !strings.Contains(r.body, "trust-host-key") {
			t.Errorf("the connection page offers no way to approve the pending key")
		}
		// The refusal stands until the key is approved; approving it
		// lets the same query through.
		if r := adminReq(http.MethodPost, api.Prefix+"/connections/mitm/query", `{"sql": "select 1"}`, "query again"); r.status != http.StatusBadGateway {
			t.Fatalf("query before approval: %d", r.status)
		}
		if r := adminReq(http.MethodPost, api.Prefix+"/connections/mitm/trust-host-key", fmt.Sprintf(`{"fingerprint": %q}`, impostor), "approve"); r.status != http.StatusOK {
			t.Fatalf("approve the new key: %d %s", r.status, r.body)
		}
		if r := adminReq(http.MethodPost, api.Prefix+"/connections/mitm/query", `{"sql": "select 1"}`, "query after approval"); r.status != http.StatusOK {
			t.Fatalf("query after approval: %d %s", r.status, r.body)
		}
	})

	t.Run("RevokedTokenFailsEverywhere", func(t *testing.T) {
		victim := tokens["victim"]
		if r := w.do(req{method: http.MethodGet, path: api.Prefix + "/whoami", bearer: victim.value, label: "victim before"}); r.status != http.StatusOK {
			t.Fatalf("victim before revocation: %d", r.status)
		}
		if r := adminReq(http.MethodDelete, api.Prefix+"/tokens/"+victim.id, "", "revoke the victim"); r.status != http.StatusOK {
			t.Fatalf("revoke: %d %s", r.status, r.body)
		}
		for _, rt := range apiRoutes(t) {
			if rt.Public {
				continue
			}
			p := strings.NewReplacer("{name}", "mitm", "{id}", victim.id).Replace(rt.Pattern)
			if strings.HasPrefix(rt.Pattern, api.Prefix+"/jobs/") {
				p = strings.ReplaceAll(rt.Pattern, "{name}", "mitmjob")
			}
			body := ""
			if rt.Method == http.MethodPost || rt.Method == http.MethodPut {
				body = "{}"
			}
			for _, via := range []req{
				{bearer: victim.value, label: "revoked token"},
				{session: victimSess, csrf: victimCSRF, label: "revoked token's session"},
			} {
				via.method, via.path, via.body = rt.Method, p, body
				r := w.do(via)
				if r.status != http.StatusUnauthorized {
					t.Errorf("%s %s with the %s: status %d, want 401: %.300s", rt.Method, rt.Pattern, via.label, r.status, r.body)
				}
			}
		}
		for _, rt := range webRoutes(t) {
			if !rt.authed {
				continue
			}
			p := fillWeb(t, rt, "mitm", "mitmjob", "no-such-run")
			rq := req{method: rt.method, path: p, session: victimSess, label: "revoked session"}
			if rt.method == http.MethodPost {
				rq.body, rq.contentType = auth.CSRFField+"="+victimCSRF, "application/x-www-form-urlencoded"
			}
			r := w.do(rq)
			cleared := cookieOf(r, auth.SessionCookie)
			if r.status != http.StatusSeeOther || !strings.HasPrefix(r.location(), "/login") || !strings.Contains(r.location(), "reason=revoked") ||
				cleared == nil || cleared.MaxAge >= 0 {
				t.Errorf("web %s %s with a revoked session: status %d, Location %q, session cookie %v; want a redirect to sign in again that clears the cookie",
					rt.method, rt.pattern, r.status, r.location(), cleared)
			}
		}
		rc := &pgrelayCLI{t: t, ev: ev, mode: "remote, revoked", env: append(append([]string(nil), common...),
			"PGRELAY_SERVER="+s.URL, "PGRELAY_TOKEN="+victim.value)}
		r := rc.fail(4, "connection", "list")
		if !strings.Contains(r.stderr, "revoked") {
			t.Errorf("the CLI does not say the token may be revoked: %s", r.stderr)
		}
		// Others are unaffected.
		if r := w.do(req{method: http.MethodGet, path: "/connections", session: adminSess, label: "admin after"}); r.status != http.StatusOK {
			t.Errorf("the admin's session after another token was revoked: %d", r.status)
		}
	})
	stop(t, s)
	t.Logf("trust checks done in %v", time.Since(start).Round(time.Millisecond))
}
