package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/apiwire"
	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/auth"
)

// TestSSHCAPrincipalsAPI: POST /ssh-ca takes an optional list of
// principals; GET shows it; PUT /ssh-ca/principals changes it, an admin's
// only (an editor gets 403). With a list, a certificate connection or a
// draft naming another user on any hop is 400 on that hop's user field,
// named as the request gave it. Each change is audited.
func TestSSHCAPrincipalsAPI(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	admin := srv.AdminToken
	editor := srv.Token(t, "ed", auth.Editor)
	url := srv.URL + api.Prefix

	for _, body := range []string{`{"principals": ["dbtcloud"]}`, ""} {
		if r := do(t, http.MethodPost, url+"/ssh-ca", editor.Token, "application/json", body); r.status != http.StatusForbidden {
			t.Fatalf("editor creating the CA with %q: %d %s", body, r.status, r.body)
		}
	}
	r := do(t, http.MethodPost, url+"/ssh-ca", admin, "application/json", `{"principals": ["dbtcloud", "bad user"]}`)
	if eb := r.errorBody(t); r.status != http.StatusBadRequest || !strings.Contains(eb.Fields.Map()["principals[1]"], "white space") {
		t.Fatalf("a bad principal: %d %s", r.status, r.body)
	}
	r = do(t, http.MethodPost, url+"/ssh-ca", admin, "application/json", `{"principals": ["dbtcloud", "etl"]}`)
	var ca apiwire.SSHCAView
	if err := json.Unmarshal([]byte(r.body), &ca); r.status != http.StatusCreated || err != nil || ca.AnyPrincipal ||
		strings.Join(ca.Principals, ",") != "dbtcloud,etl" {
		t.Fatalf("create the CA with principals: %d %s", r.status, r.body)
	}
	r = do(t, http.MethodGet, url+"/ssh-ca", srv.Token(t, "v", auth.Viewer).Token, "", "")
	if r.status != http.StatusOK || !strings.Contains(r.body, `"principals":["dbtcloud","etl"]`) || !strings.Contains(r.body, `"any_principal":false`) {
		t.Fatalf("viewer reading the CA: %d %s", r.status, r.body)
	}

	// Hop users outside the list, wherever the request names them.
	conn := `"name": "c", "host": "db.internal", "database": "d", "user": "u", `
	for _, tc := range []struct{ path, body, field string }{
		{"/connections", `{` + conn + `"ssh_tunnel": {"host": "b1", "user": "root", "auth": "certificate"}}`, "ssh_tunnel.user"},
		{"/connections", `{` + conn + `"ssh_tunnel": {"auth": "certificate"}, "ssh_hops": [{"host": "b1", "user": "root"}]}`, "ssh_hops.0.user"},
		{"/connections", `{` + conn + `"ssh_tunnel": {"auth": "certificate"}, "ssh_hops": [{"host": "b1", "user": "etl"}, {"host": "b2", "user": "root"}]}`, "ssh_hops.1.user"},
		{"/connections/test", `{` + conn + `"ssh_tunnel": {"host": "b1", "user": "root", "auth": "certificate"}}`, "ssh_tunnel.user"},
	} {
		r := do(t, http.MethodPost, url+tc.path, editor.Token, "application/json", tc.body)
		eb := r.errorBody(t)
		if p := eb.Fields.Map()[tc.field]; r.status != http.StatusBadRequest || eb.Code != api.CodeValidationFailed ||
			!strings.Contains(p, `"root"`) || !strings.Contains(p, "dbtcloud, etl") || !strings.Contains(p, "pgrelay ssh-ca principals dbtcloud etl root") {
			t.Errorf("POST %s %s: %d %s; want 400 on %s naming root, the principals and the fix", tc.path, tc.body, r.status, r.body, tc.field)
		}
	}
	r = do(t, http.MethodPost, url+"/connections", editor.Token, "application/json",
		`{`+conn+`"ssh_tunnel": {"host": "b1", "user": "etl", "auth": "certificate"}}`)
	if r.status != http.StatusCreated {
		t.Fatalf("an allowed user: %d %s", r.status, r.body)
	}

	// Only an admin changes the list.
	for _, body := range []string{`{"principals": ["root"]}`, `{"any": true}`} {
		r := do(t, http.MethodPut, url+"/ssh-ca/principals", editor.Token, "application/json", body)
		if eb := r.errorBody(t); r.status != http.StatusForbidden || eb.Code != api.CodeForbidden {
			t.Fatalf("editor setting %s: %d %s", body, r.status, r.body)
		}
	}
	c := srv.Client(t, admin)
	got, err := c.SetSSHCAPrincipals(bg, app.SSHCAPrincipals{Principals: []string{"root"}})
	if err != nil || got.AnyPrincipal || strings.Join(got.Principals, ",") != "root" {
		t.Fatalf("admin setting principals: %+v %v", got, err)
	}
	// The saved connection's user is no longer allowed: changing it is
	// refused until its user is.
	r = do(t, http.MethodPut, url+"/connections/c", editor.Token, "application/json",
		`{"host": "db.internal", "database": "d", "user": "u", "ssh_tunnel": {"host": "b1", "user": "etl", "auth": "certificate"}}`)
	if eb := r.errorBody(t); r.status != http.StatusBadRequest || !strings.Contains(eb.Fields.Map()["ssh_tunnel.user"], "pgrelay ssh-ca principals root etl") {
		t.Fatalf("update of a connection whose user the list left out: %d %s", r.status, r.body)
	}
	if got, err = c.SetSSHCAPrincipals(bg, app.SSHCAPrincipals{Any: true}); err != nil || !got.AnyPrincipal || len(got.Principals) != 0 {
		t.Fatalf("admin allowing any principal: %+v %v", got, err)
	}
	r = do(t, http.MethodGet, url+"/ssh-ca", admin, "", "")
	if r.status != http.StatusOK || !strings.Contains(r.body, `"principals":[]`) || !strings.Contains(r.body, `"any_principal":true`) {
		t.Fatalf("the CA after any: %d %s", r.status, r.body)
	}

	// Audited: who changed the list, to what; the editor's refusals too.
	recs, err := srv.App.ListAudit(bg, audit.Filter{Action: "ssh_ca"})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for i := len(recs) - 1; i >= 0; i-- {
		lines = append(lines, recs[i].Action+" "+recs[i].Actor.Name+" "+string(recs[i].Outcome)+" "+recs[i].Detail)
	}
	joined := strings.Join(lines, "\n")
	for _, want := range []string{"ssh_ca.init admin ok principals: dbtcloud, etl", "ssh_ca.set_principals admin ok principals: root",
		"ssh_ca.set_principals admin ok any principal"} {
		if !strings.Contains(joined, want) {
			t.Errorf("audit records do not have %q:\n%s", want, joined)
		}
	}
}
