package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/sshkey"
)

// TestKnownHostAndNetworkDenied: ssh_tunnel.known_host is accepted (and
// pinned, never echoed) or refused as a field error; an address the
// network policy denies is 422 network_denied.
func TestKnownHostAndNetworkDenied(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	c := srv.Client(t, srv.AdminToken)
	pair, err := sshkey.Generate(sshkey.Ed25519, "")
	if err != nil {
		t.Fatal(err)
	}
	key := sshkey.AuthorizedKey(pair.Public, "")
	fp := sshkey.Fingerprint(pair.Public)
	body := func(name, knownHost string) string {
		b, _ := json.Marshal(map[string]any{"name": name, "host": "db.internal", "database": "analytics", "user": "dbt",
			"ssh_tunnel": map[string]any{"host": "bastion.example.com", "user": "pgrelay", "known_host": knownHost}})
		return string(b)
	}

	r := do(t, "POST", srv.URL+"/api/v1/connections", srv.AdminToken, "application/json", body("raw", "bastion.example.com "+key))
	if r.status != http.StatusCreated || strings.Contains(r.body, "known_host") || !strings.Contains(r.body, `"host_key_fingerprint":"`+fp+`"`) {
		t.Fatalf("create with known_host: %d %s", r.status, r.body)
	}
	r = do(t, "POST", srv.URL+"/api/v1/connections", srv.AdminToken, "application/json", body("bad", "ssh-dss AAAA"))
	if eb := r.errorBody(t); r.status != http.StatusBadRequest || eb.Code != api.CodeValidationFailed ||
		!strings.Contains(eb.Fields.Map()["ssh_tunnel.known_host"], "accepted is the bastion's public host key") {
		t.Fatalf("bad known_host: %d %s", r.status, r.body)
	}

	// Through the Go client, and on update.
	spec := connection.Spec{Name: "viaclient", Host: "db.internal", Database: "analytics", User: "dbt",
		Tunnel: &connection.Tunnel{Host: "bastion.example.com", User: "pgrelay", KnownHost: key}}
	v, err := c.CreateConnection(bg, spec)
	if err != nil || v.SSHTunnel.HostKeyFingerprint != fp {
		t.Fatalf("client create: %+v, %v", v, err)
	}
	other, _ := sshkey.Generate(sshkey.Ed25519, "")
	spec.Tunnel.KnownHost = sshkey.AuthorizedKey(other.Public, "")
	if v, err = c.UpdateConnection(bg, "viaclient", spec, nil); err != nil || v.SSHTunnel.HostKeyFingerprint != sshkey.Fingerprint(other.Public) {
		t.Fatalf("client update: %+v, %v", v, err)
	}

	// The default policy refuses the metadata address before dialing.
	meta := connection.Spec{Name: "meta", Host: "169.254.169.254", Port: 80, Database: "analytics", User: "dbt"}
	if _, err := c.CreateConnection(bg, meta); err != nil {
		t.Fatal(err)
	}
	r = do(t, "POST", srv.URL+"/api/v1/connections/meta/query", srv.AdminToken, "application/json", `{"sql":"select 1"}`)
	if eb := r.errorBody(t); r.status != http.StatusUnprocessableEntity || eb.Code != api.CodeNetworkDenied ||
		!strings.Contains(eb.Message, "169.254.0.0/16") || !strings.Contains(eb.Message, "--allow-network") {
		t.Fatalf("query of the metadata address: %d %s", r.status, r.body)
	}
}
