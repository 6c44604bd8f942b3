package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/credential/credentialtest"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// TestConnectionAuthWriteOnly: the auth object's secrets are taken on
// create and update and never returned or logged; the view says whether
// one is stored; a key file may be sent as its JSON object.
func TestConnectionAuthWriteOnly(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	c := srv.Client(t, srv.AdminToken)
	ctx := context.Background()
	const clientSecret = "dose-api-secret-9a8b7c"
	spec := connection.Spec{Name: "lb", Flavor: connection.Lakebase, Host: "instance-1.database.cloud.databricks.com",
		Database: "databricks_postgres", User: "sp", Pooler: connection.PoolerTransaction,
		Auth: &connection.Auth{Kind: connection.AuthLakebase, WorkspaceURL: "https://dbc-1.cloud.databricks.com", ClientID: "sp",
			ClientSecret: secret.New(clientSecret), Instance: "instance-1"}}
	v, err := c.CreateConnection(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if v.Auth == nil || !v.Auth.HasClientSecret || v.Pooler != connection.PoolerTransaction || v.Auth.ClientSecret.Reveal() != "" {
		t.Fatalf("created: %+v %+v", v, v.Auth)
	}
	get := func(path string) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/api/v1/"+path, nil)
		req.Header.Set("Authorization", "Bearer "+srv.AdminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	body := get("connections/lb")
	if strings.Contains(body, clientSecret) || !strings.Contains(body, `"has_client_secret":true`) ||
		!strings.Contains(body, `"kind":"lakebase"`) || !strings.Contains(body, `"pooler":"transaction"`) {
		t.Fatalf("GET: %s", body)
	}
	// An update without the secret keeps it.
	edit := v.Spec()
	edit.Schema = "marts"
	if v, err = c.UpdateConnection(ctx, "lb", edit, nil); err != nil || !v.Auth.HasClientSecret {
		t.Fatalf("update without the secret: %+v %v", v, err)
	}
	// A key file as its JSON object.
	g := credentialtest.NewGoogle(t, nil)
	key := g.NewKey(t, "etl@proj.iam.gserviceaccount.com", true)
	in := `{"name":"ad","flavor":"alloydb","host":"10.0.0.5","database":"postgres","user":"etl@proj.iam","sslmode":"require",` +
		`"require_auth":"scram-sha-256","auth":{"kind":"alloydb-iam","service_account_key":` + key + `}}`
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/connections", strings.NewReader(in))
	req.Header.Set("Authorization", "Bearer "+srv.AdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || bytes.Contains(b, []byte("PRIVATE KEY")) ||
		!bytes.Contains(b, []byte(`"service_account":"etl@proj.iam.gserviceaccount.com"`)) {
		t.Fatalf("create with a key object: %d %s", resp.StatusCode, b)
	}
	// A field error names the auth field.
	bad := `{"name":"bad","host":"h","database":"d","user":"u","sslmode":"require","auth":{"kind":"lakebase","workspace_url":"http://x","client_id":"c","instance":"i"}}`
	req, _ = http.NewRequest(http.MethodPost, srv.URL+"/api/v1/connections", strings.NewReader(bad))
	req.Header.Set("Authorization", "Bearer "+srv.AdminToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var e struct {
		Error struct {
			Fields map[string]string `json:"fields"`
		} `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&e)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnprocessableEntity && resp.StatusCode != http.StatusBadRequest ||
		e.Error.Fields["auth.workspace_url"] == "" || e.Error.Fields["auth.client_secret"] == "" {
		t.Fatalf("invalid auth: %d %+v", resp.StatusCode, e)
	}
	if logs := srv.Logs(); strings.Contains(logs, clientSecret) || strings.Contains(logs, "PRIVATE KEY") {
		t.Fatal("a secret was logged")
	}
}
