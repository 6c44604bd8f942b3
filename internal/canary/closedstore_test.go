package canary_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
	"github.com/pgrelay/pgrelay/internal/web"
)

// TestSecretsClosedStore provokes the generic 500 of every API route and
// web page by closing the store under a running server (in-process: a
// server process cannot be made to lose its store on demand), then
// searches the responses and the log, where the detail of a 500 goes, for
// the secrets.
func TestSecretsClosedStore(t *testing.T) {
	t.Parallel()
	ev, cn := &evidence{}, &canaries{}
	srv := apitest.Start(t, apitest.Options{DialTimeout: time.Second})
	logs := &e2etest.Buffer{}
	ui, err := web.New(web.Config{App: srv.App, Sessions: srv.Sessions,
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	ui.Register(mux)
	uiSrv := httptest.NewServer(mux)
	t.Cleanup(uiSrv.Close)

	ctx := context.Background()
	pw := newPassword("c")
	cn.addText("password", pw)
	admin := srv.Token(t, "closed-admin", auth.Admin)
	cn.addText("token closed-admin", admin.Token)
	cn.addText("token bootstrap admin", srv.AdminToken)
	port := testenv.FreePort(t)
	if _, err := srv.App.CreateConnection(ctx, connection.Spec{Name: "sealed", Host: "127.0.0.1", Port: port, Database: "d",
		User: "u", Password: secret.New(pw), Tunnel: &connection.Tunnel{Host: "127.0.0.1", Port: port, User: "u"}}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := srv.App.PutJob(ctx, jobs.Job{Name: "job", Connection: "sealed", Steps: []jobs.Step{{SQL: "select 1"}}}); err != nil {
		t.Fatal(err)
	}
	rec, err := srv.Store.GetConnection(ctx, "sealed")
	if err != nil {
		t.Fatal(err)
	}
	pem, err := srv.App.Keyring().Open(rec.SealedPrivateKey, []byte("pgrelay/connection/"+rec.ID+"/ssh_private_key"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(pem)), "\n")
	for _, l := range lines[2 : len(lines)-1] {
		cn.add("ssh private key", "pem line", []byte(l))
	}
	cookie, csrf := srv.Session(t, admin.ID)

	if err := srv.Store.Close(); err != nil {
		t.Fatal(err)
	}
	w := newWeb(t, ev, srv.URL)
	for _, rt := range apiRoutes(t) {
		p := strings.NewReplacer("{name}", "sealed", "{id}", admin.ID).Replace(rt.Pattern)
		if strings.HasPrefix(rt.Pattern, "/api/v1/jobs/") {
			p = strings.ReplaceAll(rt.Pattern, "{name}", "job")
		}
		body := ""
		if rt.Method == http.MethodPost || rt.Method == http.MethodPut {
			body = `{"password": "` + pw + `"}`
		}
		for _, via := range []req{
			{bearer: admin.Token, label: "admin, store closed"},
			{session: cookie, csrf: csrf, label: "admin session, store closed"},
		} {
			via.method, via.path, via.body = rt.Method, p, body
			r := w.do(via)
			if !rt.Public && r.status != http.StatusInternalServerError {
				t.Errorf("%s %s (%s): status %d, want 500: %.300s", rt.Method, rt.Pattern, via.label, r.status, r.body)
			}
		}
	}
	ev.add("API server log", []byte(srv.Logs()))
	if !strings.Contains(srv.Logs(), "api request failed") {
		t.Error("no 500 was logged with its detail")
	}

	uw := newWeb(t, ev, uiSrv.URL)
	for _, rt := range webRoutes(t) {
		if !rt.authed {
			continue
		}
		rq := req{method: rt.method, path: fillWeb(t, rt, "sealed", "job", "run"), session: cookie, label: "web, store closed"}
		if rt.method == http.MethodPost {
			rq.body = url.Values{"password": {pw}, "token": {admin.Token}, auth.CSRFField: {csrf}}.Encode()
			rq.contentType = "application/x-www-form-urlencoded"
		}
		if r := uw.do(rq); r.status != http.StatusInternalServerError {
			t.Errorf("web %s %s: status %d, want 500", rt.method, rt.pattern, r.status)
		}
	}
	ev.add("web UI log", logs.Bytes())
	ev.check(t, cn)
}
