package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/requestid"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestRequestIDInTestAndTunnelLogs: the log lines a connection test
// writes while its request is served (each step, the bastion's host key
// trusted on first use, the tunnel up) carry the request's ID, so that an
// operator finds them by the ID the API answered with.
func TestRequestIDInTestAndTunnelLogs(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	b := testenv.SharedBastion(t, testenv.BastionOptions{})
	srv := apitest.Start(t, apitest.Options{})
	v, err := srv.App.CreateConnection(bg, connection.Spec{Name: "tun", Host: pg.Host, Port: pg.Port, Database: db.Name,
		User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: b.Host, Port: b.Port, User: b.User}})
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	const id = "req-test-0123456789"
	r := do(t, http.MethodPost, srv.URL+"/api/v1/connections/tun/test", srv.AdminToken, "", "",
		func(req *http.Request) { req.Header.Set(requestid.Header, id) })
	if r.status != http.StatusOK || !strings.Contains(r.body, `"ok":true`) {
		t.Fatalf("test: %d %s", r.status, r.body)
	}
	want := map[string]int{"connection test step": 0, "ssh host key trusted on first use": 0, "ssh tunnel up": 0}
	for _, line := range strings.Split(strings.TrimSpace(srv.Logs()), "\n") {
		var l struct {
			Msg       string `json:"msg"`
			RequestID string `json:"request_id"`
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if _, ok := want[l.Msg]; !ok {
			continue
		}
		if l.RequestID != id {
			t.Errorf("%q logged with request_id %q, want %q", l.Msg, l.RequestID, id)
		}
		want[l.Msg]++
	}
	for msg, n := range want {
		if n == 0 {
			t.Errorf("no %q line logged", msg)
		}
	}
}
