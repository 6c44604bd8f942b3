package api_test

import (
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestScheduleInputs: a cron schedule is saved only when it fires. One
// that names no real date (February 30) used to be saved, never ran, and
// showed next_run_at 0001-01-01; "@every 0s" or a negative interval ran
// every second. Through the JSON API and a YAML jobs file alike.
func TestScheduleInputs(t *testing.T) {
	t.Parallel()
	srv := jobsServer(t)
	c := srv.Client(t, srv.AdminToken)
	for _, tc := range []struct {
		schedule string
		want     string // "" when accepted
	}{
		{"0 3 * * *", ""},
		{"0 0 29 2 *", ""}, // every leap year
		{"@every 1h30m", ""},
		{"CRON_TZ=UTC @every 10m", ""},
		{"0 0 30 2 *", "never fires"},
		{"0 0 31 4,6 *", "never fires"},
		{"@every 0s", "at least 1s"},
		{"@every -5m", "at least 1s"},
		{"TZ=UTC @every 500ms", "at least 1s"},
	} {
		t.Run(tc.schedule, func(t *testing.T) {
			name := "s" + strings.NewReplacer(" ", "-", "*", "x", "@", "a", ",", "c", "=", "e", "/", "").Replace(strings.ToLower(tc.schedule))
			name = strings.Trim(strings.ReplaceAll(name, ".", ""), "-")
			job := jobs.Job{Name: name, Connection: "db", Schedule: tc.schedule, Steps: []jobs.Step{{SQL: "select 1"}}}
			v, err := c.CreateJob(bg, job)
			if tc.want == "" {
				if err != nil || v.NextRunAt == nil || v.NextRunAt.IsZero() {
					t.Fatalf("create: %+v, %v", v, err)
				}
				return
			}
			if ve := wantFields(t, err, "schedule"); !strings.Contains(ve.Fields()["schedule"], tc.want) {
				t.Fatalf("schedule problem: %v", ve)
			}
			file := "jobs:\n  - name: " + name + "\n    connection: db\n    schedule: \"" + tc.schedule + "\"\n    steps:\n      - sql: select 1\n"
			_, err = c.ApplyJobsFile(bg, []byte(file))
			wantFields(t, err, "jobs[0]("+name+").schedule")
			if _, err := c.GetJob(bg, name); err == nil {
				t.Fatal("the refused job was saved")
			}
		})
	}
}

// TestJobsFileWithSeveralDocuments: a jobs file with a second YAML
// document ("---") is refused, naming the line; the jobs after the first
// document used to be dropped without a word while the first were saved.
func TestJobsFileWithSeveralDocuments(t *testing.T) {
	t.Parallel()
	srv := jobsServer(t)
	c := srv.Client(t, srv.AdminToken)
	for _, file := range []string{
		"jobs:\n  - {name: d-one, connection: db, steps: [{sql: select 1}]}\n---\njobs:\n  - {name: d-two, connection: db, steps: [{sql: select 2}]}\n",
		"jobs:\n  - {name: d-one, connection: db, steps: [{sql: select 1}]}\n...\nnot: [a jobs file\n",
	} {
		_, err := c.ApplyJobsFile(bg, []byte(file))
		if ce := wantAPIError(t, err, http.StatusBadRequest, api.CodeInvalidYAML); !strings.Contains(ce.Message, "line 3") ||
			!strings.Contains(ce.Message, "one YAML document") {
			t.Errorf("message: %s", ce.Message)
		}
		if _, err := c.GetJob(bg, "d-one"); err == nil {
			t.Fatal("a refused file saved a job")
		}
	}
	// Document markers around the one document, or an empty document
	// after it, are one document.
	res, err := c.ApplyJobsFile(bg, []byte("---\njobs:\n  - {name: d-one, connection: db, steps: [{sql: select 1}]}\n...\n---\n"))
	if err != nil || len(res) != 1 {
		t.Fatalf("one document: %v, %v", res, err)
	}
}

// TestCABundleWithByteOrderMark: a CA file saved with a UTF-8 byte order
// mark (as Windows editors write it) is read whole. Its first certificate
// used to be skipped: a bundle was saved without it and the server it
// signed failed verification; a single certificate was refused as "no PEM
// certificate found".
func TestCABundleWithByteOrderMark(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{TLS: true})
	db := pg.NewDatabase(t)
	other := testenv.NewTLSCert(t)
	srv := apitest.Start(t, apitest.Options{})
	c := srv.Client(t, srv.AdminToken)
	for name, bundle := range map[string]string{
		"bom-one":    "\ufeff" + string(pg.CAPEM),
		"bom-bundle": "\ufeff" + string(pg.CAPEM) + string(other.CAPEM),
		"bom-crlf":   "\ufeff" + strings.ReplaceAll(string(pg.CAPEM)+string(other.CAPEM), "\n", "\r\n"),
	} {
		if _, err := c.CreateConnection(bg, connection.Spec{Name: name, Host: pg.Host, Port: pg.Port, Database: db.Name,
			User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLVerifyFull, SSLRootCert: bundle}); err != nil {
			t.Errorf("%s: create: %v", name, err)
			continue
		}
		rep, err := c.TestConnection(bg, name, nil)
		if err != nil || !rep.OK {
			t.Errorf("%s: test: %+v, %v", name, rep, err)
		}
	}
	// What is not a certificate is still refused, without echoing it.
	_, err := c.CreateConnection(bg, connection.Spec{Name: "bom-key", Host: pg.Host, Database: db.Name, User: db.User,
		SSLMode: connection.SSLVerifyFull, SSLRootCert: "\ufeff-----BEGIN PRIVATE KEY-----\nTUlJQ2Vn\n-----END PRIVATE KEY-----\n"})
	var ve *app.ValidationError
	if ve = wantFields(t, err, "ssl_root_cert"); strings.Contains(ve.Error(), "TUlJQ2Vn") {
		t.Fatalf("the key was echoed: %v", ve)
	}
}

// TestSchemaNamesReachCommandSteps: a schema name that PostgreSQL accepts
// is the search_path of a job's command steps too (PGOPTIONS), white
// space and all. A tab or a line break in it used to end the option
// there, and psql failed to log in ("invalid value for parameter
// search_path").
func TestSchemaNamesReachCommandSteps(t *testing.T) {
	t.Parallel()
	srv := jobsServer(t)
	c := srv.Client(t, srv.AdminToken)
	for i, schema := range []string{"plain", "with space", "tab\there", "line\nbreak", `back\slash "quoted" 'x'`, "carriage\rreturn", "ünïcode"} {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			if err := c.Query(bg, "db", "create schema "+pgx.Identifier{schema}.Sanitize(), discard{}); err != nil {
				t.Fatal(err)
			}
			name := "schema-" + strconv.Itoa(i)
			if _, err := c.CreateJob(bg, jobs.Job{Name: name, Connection: "db", TargetSchema: schema, Steps: []jobs.Step{
				{Command: []string{"sh", "-c", `psql -Atc "select encode(convert_to(current_schema(), 'UTF8'), 'hex')"`}},
			}}); err != nil {
				t.Fatal(err)
			}
			r, err := c.RunJob(bg, name, jobs.API)
			if err != nil {
				t.Fatal(err)
			}
			r = waitRunState(t, c, r.ID, func(r *jobs.Run) bool { return r.Status.Terminal() })
			lines, err := c.RunLog(bg, r.ID, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, l := range lines {
				out = append(out, string(l.Stream)+": "+l.Text)
			}
			log := strings.Join(out, "\n")
			if r.Status != jobs.Succeeded || !strings.Contains(log, "stdout: "+hex.EncodeToString([]byte(schema))) {
				t.Fatalf("schema %q: run %s %s:\n%s", schema, r.Status, r.Reason, log)
			}
		})
	}
}

type discard struct{}

func (discard) Begin([]app.Column) error { return nil }
func (discard) Row([][]byte) error       { return nil }
func (discard) End(string) error         { return nil }

// TestJSONKeysOnceAndExact: a body with a key twice in one object, or a
// key that matches a field only by case, is refused naming the field and
// its exact name; encoding/json took the last one
// ({"name":"a","NAME":"b"} created connection "b").
func TestJSONKeysOnceAndExact(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	conn := `"host": "h", "database": "d", "user": "u"`
	for _, tc := range []struct{ path, body, field string }{
		{"/connections", `{"name": "a", "NAME": "b", ` + conn + `}`, "name"},
		{"/connections", `{"Name": "a", ` + conn + `}`, "name"},
		{"/connections", `{"name": "a", "name": "b", ` + conn + `}`, "name"},
		{"/connections", `{"name": "a", ` + conn + `, "ssh_tunnel": {"host": "b", "user": "u", "Port": 2222}}`, "ssh_tunnel.port"},
		{"/connections", `{"name": "a", ` + conn + `, "ssh_hops": [{"host": "b", "user": "u"}, {"host": "c", "user": "u", "user": "v"}]}`, "ssh_hops.1.user"},
		{"/jobs", `{"name": "j", "connection": "a", "steps": [{"SQL": "select 1"}]}`, "steps[0].sql"},
		{"/jobs/apply", `{"jobs": [{"name": "j", "connection": "a", "steps": [{"sql": "s"}], "Retries": 1}]}`, "jobs[0](j).retries"},
	} {
		r := do(t, "POST", srv.URL+"/api/v1"+tc.path, srv.AdminToken, "application/json", tc.body)
		eb := r.errorBody(t)
		last := tc.field[strings.LastIndex(tc.field, ".")+1:]
		if p := eb.Fields.Map()[tc.field]; r.status != http.StatusBadRequest || eb.Code != api.CodeInvalidJSON || len(eb.Fields) != 1 ||
			!strings.Contains(p, `"`+last+`"`) {
			t.Errorf("POST %s %s: %d %s; want %s naming %q", tc.path, tc.body, r.status, r.body, api.CodeInvalidJSON, tc.field)
		}
	}
	c := srv.Client(t, srv.AdminToken)
	if list, err := c.ListConnections(bg); err != nil || len(list) != 0 {
		t.Fatalf("refused bodies saved connections: %v %v", list, err)
	}
	if list, err := c.ListJobs(bg); err != nil || len(list) != 0 {
		t.Fatalf("refused bodies saved jobs: %v %v", list, err)
	}
}

// TestTypeErrorsNameIndices: a value of the wrong type in an array
// element is named by its path with the element's index, as validation
// errors name it (steps[1].command, ssh_hops.1.port, jobs[1](b).timeout),
// saying what is accepted; encoding/json left the index out
// (steps.command).
func TestTypeErrorsNameIndices(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	conn := `"name": "a", "host": "h", "database": "d", "user": "u"`
	for _, tc := range []struct{ path, body, field, problem string }{
		{"/jobs", `{"name": "j", "connection": "a", "steps": [{"sql": "select 1"}, {"command": 5}]}`,
			"steps[1].command", "expected a list of strings, got number"},
		{"/jobs", `{"name": "j", "connection": "a", "steps": [{"sql": "select 1"}, {"command": ["sh", 5]}]}`,
			"steps[1].command[1]", "expected a string, got number"},
		{"/connections", `{` + conn + `, "ssh_hops": [{"host": "b", "user": "u"}, {"host": "c", "user": "u", "port": "22"}]}`,
			"ssh_hops.1.port", "expected an integer, got string"},
		{"/connections/test", `{` + conn + `, "ssh_hops": [{"host": "b", "user": "u"}, {"host": "c", "user": "u", "own_key": 1}]}`,
			"ssh_hops.1.own_key", "expected true or false, got number"},
		{"/jobs/apply", `{"jobs": [{"name": "a", "connection": "a", "timeout": "30s", "steps": [{"sql": "s"}]}, ` +
			`{"name": "b", "connection": "a", "timeout": "soon", "steps": [{"sql": "s"}]}]}`,
			"jobs[1](b).timeout", `"soon"`},
	} {
		r := do(t, "POST", srv.URL+"/api/v1"+tc.path, srv.AdminToken, "application/json", tc.body)
		eb := r.errorBody(t)
		if p := eb.Fields.Map()[tc.field]; r.status != http.StatusBadRequest || eb.Code != api.CodeInvalidJSON || len(eb.Fields) != 1 ||
			!strings.Contains(p, tc.problem) || !strings.Contains(eb.Message, tc.field+": ") {
			t.Errorf("POST %s %s: %d %s; want %s naming %q: %q", tc.path, tc.body, r.status, r.body, api.CodeInvalidJSON, tc.field, tc.problem)
		}
	}
}

// TestDurationSecondsOutOfRange: a number of seconds no duration holds
// (1e300, 1e400) is refused showing the number; it wrapped to a
// negative duration, refused as "-2562047h47m16.854775808s".
func TestDurationSecondsOutOfRange(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	for _, n := range []string{"1e300", "-1e300", "1e400", "9223372037"} {
		body := `{"name": "a", "host": "h", "database": "d", "user": "u", "ssh_tunnel": {"host": "b", "user": "u", "keepalive_interval": ` + n + `}}`
		r := do(t, "POST", srv.URL+"/api/v1/connections", srv.AdminToken, "application/json", body)
		eb := r.errorBody(t)
		if p := eb.Fields.Map()["ssh_tunnel.keepalive_interval"]; r.status != http.StatusBadRequest || eb.Code != api.CodeInvalidJSON ||
			!strings.Contains(p, "number "+n) || !strings.Contains(p, "9223372036 seconds") || strings.Contains(r.body, "2562047h") {
			t.Errorf("keepalive_interval %s: %d %s", n, r.status, r.body)
		}
		body = `{"name": "j", "connection": "a", "timeout": ` + n + `, "steps": [{"sql": "select 1"}]}`
		r = do(t, "POST", srv.URL+"/api/v1/jobs", srv.AdminToken, "application/json", body)
		if eb := r.errorBody(t); r.status != http.StatusBadRequest || eb.Code != api.CodeInvalidJSON ||
			!strings.Contains(eb.Fields.Map()["timeout"], "number "+n) {
			t.Errorf("job timeout %s: %d %s", n, r.status, r.body)
		}
	}
}

// TestBodyNotUTF8: a body with a byte that is not UTF-8 is refused, saying
// where; encoding/json saved it as U+FFFD, which changed the statement
// without a word.
func TestBodyNotUTF8(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	if r := do(t, "POST", srv.URL+"/api/v1/connections", srv.AdminToken, "application/json",
		`{"name": "a", "host": "h", "database": "d", "user": "u"}`); r.status != http.StatusCreated {
		t.Fatalf("create connection: %d %s", r.status, r.body)
	}
	body := `{"name": "j", "connection": "a", "steps": [{"sql": "select '` + "\xff" + `'"}]}`
	r := do(t, "POST", srv.URL+"/api/v1/jobs", srv.AdminToken, "application/json", body)
	eb := r.errorBody(t)
	at := strings.IndexByte(body, 0xff) + 1
	if r.status != http.StatusBadRequest || eb.Code != api.CodeInvalidJSON || !strings.Contains(eb.Message, fmt.Sprintf("byte %d is not valid UTF-8", at)) {
		t.Fatalf("a body with \\xff: %d %s", r.status, r.body)
	}
	if list, err := srv.Client(t, srv.AdminToken).ListJobs(bg); err != nil || len(list) != 0 {
		t.Fatalf("the refused body saved a job: %v %v", list, err)
	}
}

// TestJobExplicitZeroDurations: "timeout": "0s" (or 0) is refused naming
// the field; it was saved as the default of an hour without a word. Left
// out, the timeout is still the default.
func TestJobExplicitZeroDurations(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	if r := do(t, "POST", srv.URL+"/api/v1/connections", srv.AdminToken, "application/json",
		`{"name": "a", "host": "h", "database": "d", "user": "u"}`); r.status != http.StatusCreated {
		t.Fatalf("create connection: %d %s", r.status, r.body)
	}
	for _, tc := range []struct{ path, body, field string }{
		{"/jobs", `{"name": "j", "connection": "a", "timeout": "0s", "steps": [{"sql": "select 1"}]}`, "timeout"},
		{"/jobs", `{"name": "j", "connection": "a", "timeout": 0, "steps": [{"sql": "select 1"}]}`, "timeout"},
		{"/jobs", `{"name": "j", "connection": "a", "stop_grace": "0s", "steps": [{"sql": "select 1"}]}`, "stop_grace"},
		{"/jobs/apply", `{"jobs": [{"name": "j", "connection": "a", "timeout": "0", "steps": [{"sql": "s"}]}]}`, "jobs[0](j).timeout"},
	} {
		r := do(t, "POST", srv.URL+"/api/v1"+tc.path, srv.AdminToken, "application/json", tc.body)
		eb := r.errorBody(t)
		if r.status != http.StatusBadRequest || eb.Code != api.CodeValidationFailed || !strings.Contains(eb.Fields.Map()[tc.field], "0 is not accepted") {
			t.Errorf("POST %s %s: %d %s; want a validation problem on %s", tc.path, tc.body, r.status, r.body, tc.field)
		}
	}
	r := do(t, "POST", srv.URL+"/api/v1/jobs", srv.AdminToken, "application/json",
		`{"name": "j", "connection": "a", "timeout": null, "steps": [{"sql": "select 1"}]}`)
	if r.status != http.StatusCreated || !strings.Contains(r.body, `"timeout":"1h0m0s"`) {
		t.Fatalf("a job without a timeout: %d %s", r.status, r.body)
	}
}
