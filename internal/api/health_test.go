package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestConnectionHealth: a connection with a health_check_interval is
// tested by the server on its own (recorded as scheduled, in its health
// and in the audit log by the health-check part of pgrelay); a manual test
// that fails and a query that succeeds show in its health, which the
// connection and the list return.
func TestConnectionHealth(t *testing.T) {
	t.Parallel()
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	pg.CreateRole(t, "dbt", "dbt-pw")
	pg.CreateDatabase(t, "analytics", "dbt")
	srv := apitest.Start(t, apitest.Options{Queue: true, HealthCheckPoll: 200 * time.Millisecond})
	admin := srv.AdminToken

	body := fmt.Sprintf(`{"name": "wh", "host": %q, "port": %d, "database": "analytics", "user": "dbt", "password": "dbt-pw",
		"sslmode": "disable", "health_check_interval": "1h"}`, pg.Host, pg.Port)
	if r := do(t, http.MethodPost, srv.URL+api.Prefix+"/connections", admin, "application/json", body); r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	bad := `{"name": "bad", "host": "127.0.0.1", "database": "d", "user": "u", "health_check_interval": "1s"}`
	if r := do(t, http.MethodPost, srv.URL+api.Prefix+"/connections", admin, "application/json", bad); r.status != http.StatusBadRequest ||
		!strings.Contains(r.body, `"health_check_interval"`) {
		t.Fatalf("an interval of 1s: %d %s", r.status, r.body)
	}
	get := func() *app.ConnectionView {
		t.Helper()
		r := do(t, http.MethodGet, srv.URL+api.Prefix+"/connections/wh", admin, "", "")
		var v app.ConnectionView
		if err := json.Unmarshal([]byte(r.body), &v); err != nil || v.Health == nil {
			t.Fatalf("get: %d %s %v", r.status, r.body, err)
		}
		return &v
	}
	// The scheduled test comes by itself (its interval has not passed
	// since none ran), and only once in the hour.
	var v *app.ConnectionView
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		v = get()
		if v.Health.LastTest != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no scheduled test within 30 s")
		}
	}
	if lt := v.Health.LastTest; !lt.OK || lt.Source != "scheduled" || v.Health.Status != app.HealthOK || v.HealthCheckInterval.String() != "1h0m0s" {
		t.Fatalf("health after the scheduled test: %+v %+v", v.Health, lt)
	}
	recs, err := srv.App.ListAudit(bg, audit.Filter{Action: "connection.health_check"})
	if err != nil || len(recs) != 1 || recs[0].Actor != audit.System("health-check") || recs[0].Outcome != audit.OK {
		t.Fatalf("audit of the scheduled test: %+v %v", recs, err)
	}
	time.Sleep(time.Second) // several polls (the scenario: time passes and no second test runs)
	if recs, _ := srv.App.ListAudit(bg, audit.Filter{Action: "connection.health_check"}); len(recs) != 1 {
		t.Fatalf("%d scheduled tests within the interval, want 1", len(recs))
	}

	// A query succeeds: the last successful use.
	if r := do(t, http.MethodPost, srv.URL+api.Prefix+"/connections/wh/query", admin, "application/json", `{"sql": "select 1"}`); r.status != http.StatusOK {
		t.Fatalf("query: %d %s", r.status, r.body)
	}
	v = get()
	if v.Health.LastSuccessfulUse == nil || len(v.Health.Recent) != 2 || v.Health.Recent[0].Kind != store.CheckUse {
		t.Fatalf("health after a query: %+v", v.Health)
	}
	// The database goes away: a manual test fails at the TCP step.
	pg.Stop(t)
	if r := do(t, http.MethodPost, srv.URL+api.Prefix+"/connections/wh/test", admin, "", ""); r.status != http.StatusOK {
		t.Fatalf("test: %d %s", r.status, r.body)
	}
	v = get()
	if lt := v.Health.LastTest; lt == nil || lt.OK || lt.Source != "manual" || lt.Step != "tcp" || v.Health.Status != app.HealthFailing {
		t.Fatalf("health after a failed test: %+v %+v", v.Health, lt)
	}
	// The list carries the health too.
	var list api.ConnectionList
	r := do(t, http.MethodGet, srv.URL+api.Prefix+"/connections", admin, "", "")
	if err := json.Unmarshal([]byte(r.body), &list); err != nil || len(list.Connections) != 1 || list.Connections[0].Health == nil ||
		list.Connections[0].Health.Status != app.HealthFailing || len(list.Connections[0].Health.Recent) != 3 {
		t.Fatalf("list: %s %v", r.body, err)
	}
}
