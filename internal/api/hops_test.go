package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestSSHHopsAPI saves a connection with ssh_hops over HTTP, reads them
// back with their host keys, queries through them with the Go client, and
// uses the key rotation and SSH CA routes. ssh_tunnel keeps working as a
// list of one; an ssh_tunnel that contradicts ssh_hops is refused.
func TestSSHHopsAPI(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg.CreateRole(t, "dbt", "dbt-pw")
	pg.CreateDatabase(t, "analytics", "dbt")
	b1 := testenv.StartBastion(t, testenv.BastionOptions{})
	b2 := testenv.StartBastion(t, testenv.BastionOptions{})
	srv := apitest.Start(t, apitest.Options{})
	tok := srv.AdminToken
	hop := func(b *testenv.Bastion) string {
		return fmt.Sprintf(`{"host": %q, "port": %d, "user": %q}`, b.Host, b.Port, b.User)
	}
	body := fmt.Sprintf(`{"name": "hops", "host": %q, "port": %d, "database": "analytics", "user": "dbt", "password": "dbt-pw",
		"sslmode": "disable", "ssh_tunnel": {"keepalive_interval": "5s"}, "ssh_hops": [%s, %s]}`, pg.Host, pg.Port, hop(b1), hop(b2))
	r := do(t, http.MethodPost, srv.URL+api.Prefix+"/connections", tok, "application/json", body)
	if r.status != http.StatusCreated {
		t.Fatalf("create with ssh_hops: %d %s", r.status, r.body)
	}
	var v app.ConnectionView
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.SSHHops) != 2 || v.SSHTunnel.Host != b1.Host || v.SSHTunnel.Port != b1.Port || v.SSHTunnel.KeepaliveInterval.String() != "5s" {
		t.Fatalf("view: %+v hops %+v", v.SSHTunnel, v.SSHHops)
	}
	r = do(t, http.MethodGet, srv.URL+api.Prefix+"/connections/hops/public-key?restricted=true", tok, "", "")
	var pk api.PublicKeyResponse
	if err := json.Unmarshal([]byte(r.body), &pk); err != nil || len(pk.Hops) != 2 {
		t.Fatalf("public key of two hops: %d %s", r.status, r.body)
	}
	if !strings.Contains(pk.Hops[0].Line, `permitopen="`+b2.Addr()+`"`) || pk.PublicKey != pk.Hops[0].Line+"\n"+pk.Hops[1].Line {
		t.Fatalf("hop lines: %+v", pk)
	}
	b1.Authorize(t, pk.Hops[0].Line)
	b2.Authorize(t, pk.Hops[1].Line)
	c := srv.Client(t, tok)
	if s := queryOK(t, c, "hops", "select 1"); len(s.lines) != 3 {
		t.Fatalf("query through two hops over the API: %q", s.lines)
	}
	got, err := c.GetConnection(bg, "hops")
	if err != nil || got.SSHHops[1].HostKeyFingerprint == "" {
		t.Fatalf("hop 2's host key not pinned: %+v %v", got, err)
	}
	// An update through the Go client keeps the hops (it sends ssh_hops).
	spec := got.Spec()
	spec.Schema = "public"
	if got, err = c.UpdateConnection(bg, "hops", spec, nil); err != nil || len(got.SSHHops) != 2 {
		t.Fatalf("update through the client: %+v %v", got, err)
	}

	// ssh_tunnel contradicting ssh_hops.
	bad := strings.Replace(body, `"ssh_tunnel": {"keepalive_interval": "5s"}`, `"ssh_tunnel": {"host": "other", "user": "u"}`, 1)
	bad = strings.Replace(bad, `"name": "hops"`, `"name": "bad"`, 1)
	r = do(t, http.MethodPost, srv.URL+api.Prefix+"/connections", tok, "application/json", bad)
	if eb := r.errorBody(t); r.status != http.StatusBadRequest || len(eb.Fields) == 0 || eb.Fields[0].Field != "ssh_tunnel.host" {
		t.Fatalf("contradicting ssh_tunnel: %d %s", r.status, r.body)
	}
	// A problem of hop 1 given in ssh_hops is named after ssh_hops.
	bad = strings.Replace(body, hop(b1), `{"host": "bad host", "user": "u"}`, 1)
	bad = strings.Replace(bad, `"name": "hops"`, `"name": "bad"`, 1)
	r = do(t, http.MethodPost, srv.URL+api.Prefix+"/connections", tok, "application/json", bad)
	if eb := r.errorBody(t); r.status != http.StatusBadRequest || eb.Fields[0].Field != "ssh_hops.0.host" {
		t.Fatalf("bad first hop: %d %s", r.status, r.body)
	}

	// Key rotation over the API.
	r = do(t, http.MethodPost, srv.URL+api.Prefix+"/connections/hops/key-rotation", tok, "application/json", `{"old_key_lifetime": "2h"}`)
	var rot app.KeyRotation
	if err := json.Unmarshal([]byte(r.body), &rot); r.status != http.StatusCreated || err != nil || len(rot.Hops) != 2 ||
		!strings.HasPrefix(rot.Hops[1].Old, "expiry-time=") {
		t.Fatalf("start rotation: %d %s", r.status, r.body)
	}
	if got, _ = c.GetConnection(bg, "hops"); got.SSHTunnel.Rotation == nil || !got.SSHTunnel.Rotation.Pending {
		t.Fatalf("rotation not pending: %+v", got.SSHTunnel.Rotation)
	}
	if _, err := c.RotateKeyFinish(bg, "hops"); err == nil || !strings.Contains(err.Error(), app.NewKeyNotInstalled) {
		t.Fatalf("finish before install: %v", err)
	}
	if _, err := c.RotateKeyCancel(bg, "hops"); err != nil {
		t.Fatal(err)
	}

	// The SSH CA: admins create it, everyone may read it.
	editor := srv.Token(t, "ed", auth.Editor)
	r = do(t, http.MethodPost, srv.URL+api.Prefix+"/ssh-ca", editor.Token, "application/json", "")
	if r.status != http.StatusForbidden {
		t.Fatalf("editor creating the SSH CA: %d %s", r.status, r.body)
	}
	if _, err := c.SSHCA(bg); err == nil {
		t.Fatal("SSH CA before init")
	}
	ca, err := c.InitSSHCA(bg)
	if err != nil || !strings.HasPrefix(ca.PublicKey, "ssh-ed25519 ") {
		t.Fatalf("init SSH CA: %+v %v", ca, err)
	}
	if strings.Contains(r.body, "PRIVATE") || strings.Contains(srv.Logs(), "PRIVATE KEY") {
		t.Fatal("a private key left the server")
	}
	r = do(t, http.MethodGet, srv.URL+api.Prefix+"/ssh-ca", srv.Token(t, "v", auth.Viewer).Token, "", "")
	if r.status != http.StatusOK || !strings.Contains(r.body, ca.Fingerprint) {
		t.Fatalf("viewer reading the SSH CA: %d %s", r.status, r.body)
	}
}

// TestSSHHopOwnKeyAPI: ssh_hops.1.own_key gives hop 2 a key pair of its
// own, shown in the view and in the public key's lines; the Go client's
// update keeps it; a rotation gives it a new key beside the old one's
// expiring line; own_key on the first hop is refused, naming the field.
func TestSSHHopOwnKeyAPI(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	tok := srv.AdminToken
	body := `{"name": "own", "host": "db.internal", "database": "analytics", "user": "dbt",
		"ssh_hops": [{"host": "b1.example.com", "user": "jump"}, {"host": "b2.internal", "port": 2222, "user": "dbt", "own_key": true}]}`
	r := do(t, http.MethodPost, srv.URL+api.Prefix+"/connections", tok, "application/json", body)
	if r.status != http.StatusCreated {
		t.Fatalf("create with own_key: %d %s", r.status, r.body)
	}
	var v app.ConnectionView
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatal(err)
	}
	if len(v.SSHHops) != 2 || v.SSHHops[0].OwnKey || !v.SSHHops[1].OwnKey || v.SSHHops[1].OwnKeyFingerprint == "" ||
		v.SSHHops[1].OwnKeyFingerprint == v.SSHTunnel.PublicKeyFingerprint || !strings.HasPrefix(v.SSHHops[1].OwnPublicKey, "ssh-ed25519 ") {
		t.Fatalf("hops of the view: %+v", v.SSHHops)
	}
	r = do(t, http.MethodGet, srv.URL+api.Prefix+"/connections/own/public-key?restricted=true", tok, "", "")
	var pk api.PublicKeyResponse
	if err := json.Unmarshal([]byte(r.body), &pk); err != nil || len(pk.Hops) != 2 {
		t.Fatalf("public key of two hops: %d %s", r.status, r.body)
	}
	if pk.Hops[0].OwnKey || !pk.Hops[1].OwnKey || pk.Hops[1].Fingerprint != v.SSHHops[1].OwnKeyFingerprint ||
		pk.Hops[0].Fingerprint != v.SSHTunnel.PublicKeyFingerprint || !strings.Contains(pk.Hops[1].Line, `permitopen="db.internal:5432"`) {
		t.Fatalf("hop lines: %+v", pk.Hops)
	}
	c := srv.Client(t, tok)
	got, err := c.GetConnection(bg, "own")
	if err != nil {
		t.Fatal(err)
	}
	spec := got.Spec()
	spec.Schema = "public"
	if got, err = c.UpdateConnection(bg, "own", spec, nil); err != nil || !got.SSHHops[1].OwnKey ||
		got.SSHHops[1].OwnKeyFingerprint != v.SSHHops[1].OwnKeyFingerprint {
		t.Fatalf("update through the client dropped hop 2's own key: %+v %v", got, err)
	}
	r = do(t, http.MethodPost, srv.URL+api.Prefix+"/connections/own/key-rotation", tok, "application/json", "")
	var rot app.KeyRotation
	if err := json.Unmarshal([]byte(r.body), &rot); r.status != http.StatusCreated || err != nil || len(rot.Hops) != 2 ||
		!rot.Hops[1].OwnKey || rot.Hops[1].Fingerprint == v.SSHHops[1].OwnKeyFingerprint || rot.Hops[1].Line == pk.Hops[1].Line ||
		!strings.Contains(rot.Hops[1].Old, strings.TrimPrefix(pk.Hops[1].Line, "restrict,")) || rot.Hops[0].Old == "" {
		t.Fatalf("rotation with hop 2's own key: %d %s", r.status, r.body)
	}

	bad := strings.Replace(body, `"user": "jump"}`, `"user": "jump", "own_key": true}`, 1)
	bad = strings.Replace(bad, `"name": "own"`, `"name": "bad"`, 1)
	r = do(t, http.MethodPost, srv.URL+api.Prefix+"/connections", tok, "application/json", bad)
	if eb := r.errorBody(t); r.status != http.StatusBadRequest || len(eb.Fields) != 1 || eb.Fields[0].Field != "ssh_hops.0.own_key" {
		t.Fatalf("own_key on the first hop: %d %s", r.status, r.body)
	}
	if strings.Contains(srv.Logs(), "PRIVATE KEY") {
		t.Fatal("a private key reached the logs")
	}
}
