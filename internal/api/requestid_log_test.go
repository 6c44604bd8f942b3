package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
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

// TestRunIDInTunnelLogs: the log lines of a run's own tunnel (one not
// kept warm for a later run) carry the run's ID, those written without a
// context too (closed, dropped), so that with several runs on one
// connection an operator can tell whose tunnel came up or dropped; they
// had none.
func TestRunIDInTunnelLogs(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	b := testenv.SharedBastion(t, testenv.BastionOptions{})
	srv := apitest.Start(t, apitest.Options{Queue: true})
	v, err := srv.App.CreateConnection(bg, connection.Spec{Name: "tun", Host: pg.Host, Port: pg.Port, Database: db.Name,
		User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: b.Host, Port: b.Port, User: b.User}})
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	if _, err := srv.App.ApplyJobs(bg, []jobs.Job{{Name: "j", Connection: "tun", Steps: []jobs.Step{{SQL: "select 1"}}}}); err != nil {
		t.Fatal(err)
	}
	run, err := srv.App.RunJob(bg, "j", jobs.API)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); !run.Status.Terminal(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("run still %s", run.Status)
		}
		if run, err = srv.App.GetRun(bg, run.ID); err != nil {
			t.Fatal(err)
		}
	}
	if run.Status != jobs.Succeeded {
		t.Fatalf("run %s: %s", run.Status, run.Reason)
	}
	// The tunnel's close may be logged just after the run's outcome.
	lines := func() (n int) {
		for _, line := range strings.Split(strings.TrimSpace(srv.Logs()), "\n") {
			var l struct {
				Msg   string `json:"msg"`
				RunID string `json:"run_id"`
			}
			if err := json.Unmarshal([]byte(line), &l); err != nil {
				t.Fatalf("log line %q: %v", line, err)
			}
			if l.Msg == "ssh tunnel up" || l.Msg == "ssh tunnel closed" {
				n++
				if l.RunID != run.ID {
					t.Fatalf("%q logged with run_id %q, want %q: %s", l.Msg, l.RunID, run.ID, line)
				}
			}
		}
		return n
	}
	for deadline := time.Now().Add(10 * time.Second); lines() != 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d \"ssh tunnel up\" and \"ssh tunnel closed\" lines logged, want one each:\n%s", lines(), srv.Logs())
		}
	}
}
