package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestExecProgramKilledBySignal: a program a signal killed (the OOM
// killer's SIGKILL, say) has no exit code; exec exits as a shell reports
// it, 128 + the signal's number, not with a plain failure.
func TestExecProgramKilledBySignal(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	h := newHarness(t)
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(createArgs("db", pg)...)
	for _, tc := range []struct {
		sig  string
		want int
	}{{"KILL", 137}, {"TERM", 143}, {"SEGV", 139}} {
		r := h.run("exec", "db", "--", "sh", "-c", "kill -"+tc.sig+" $$")
		if r.code != tc.want {
			t.Errorf("program killed by SIG%s: exec exit code = %d, want %d: %s", tc.sig, r.code, tc.want, r)
		}
		contains(t, "SIG"+tc.sig, r.stderr, "sh was killed by a signal")
	}
}

func TestExecAndLocalJobs(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	b := testenv.SharedBastion(t, testenv.BastionOptions{})
	h := newHarness(t)
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(append(createArgs("wh", pg, "--schema", "marts"), tunnelArgs(b)...)...)
	b.Authorize(t, strings.TrimSpace(h.ok("connection", "public-key", "wh").stdout))

	// exec: psql through the tunnel with the run's environment.
	r := h.ok("exec", "wh", "--", "psql", "-X", "-At", "-c", "select current_user || '@' || inet_server_port()")
	contains(t, "exec psql", r.stdout, pg.User+"@")
	r = h.ok("exec", "wh", "--", "sh", "-c", `grep -c "schema: \"marts\"" "$DBT_PROFILES_DIR/profiles.yml"; echo "$PGHOST $PGUSER $PGDATABASE"`)
	contains(t, "exec env", r.stdout, "1\n", "127.0.0.1 "+pg.User+" "+pg.DB)
	r = h.run("exec", "wh", "--", "sh", "-c", "exit 7")
	if r.code != 7 {
		t.Fatalf("exec exit code = %d, want 7: %s", r.code, r)
	}
	h.fail(2, "exec", "wh")

	// Jobs defined in YAML, applied idempotently, run locally.
	file := filepath.Join(t.TempDir(), "jobs.yaml")
	yaml := `jobs:
  - name: nightly
    connection: wh
    timeout: 10m
    steps:
      - sql: create schema if not exists marts; create table if not exists marts.t (n int)
      - command: [psql, -X, -At, -c, "insert into t values (42) returning n"]
  - name: broken
    connection: wh
    steps:
      - command: [sh, -c, "echo oops >&2; exit 3"]
`
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	r = h.ok("job", "apply", "-f", file)
	contains(t, "apply", r.stdout, "job nightly created", "job broken created")
	r = h.ok("job", "apply", "-f", file)
	contains(t, "apply again", r.stdout, "job nightly unchanged")
	contains(t, "job list", h.ok("job", "list").stdout, "nightly", "wh")
	contains(t, "job show", h.ok("job", "show", "nightly").stdout, "insert into t values (42)")

	r = h.ok("job", "run", "nightly", "--allow-command", "psql")
	contains(t, "local run", r.stdout, "CREATE TABLE", "42", "succeeded")
	r = h.fail(1, "job", "run", "broken", "--allow-command", "sh")
	contains(t, "failed run", r.stdout+r.stderr, "oops", "exited with code 3")

	var runs []struct {
		ID     string `json:"id"`
		Job    string `json:"job"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal([]byte(h.ok("run", "list", "-o", "json").stdout), &runs); err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 || runs[0].Job != "broken" || runs[0].Status != "failed" || runs[1].Status != "succeeded" {
		t.Fatalf("runs = %+v", runs)
	}
	contains(t, "run logs", h.ok("run", "logs", runs[1].ID).stdout, "insert", "42")
	contains(t, "run show", h.ok("run", "show", runs[0].ID).stdout, "exited with code 3", "failed")

	// Invalid YAML changes nothing and names the field.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	_ = os.WriteFile(bad, []byte("jobs:\n  - name: nightly\n    connection: nope\n    steps: []\n"), 0o600)
	r = h.fail(2, "job", "apply", "-f", bad)
	contains(t, "bad yaml", r.stderr, "steps")
	contains(t, "still there", h.ok("job", "show", "nightly").stdout, "insert into t values (42)")
	h.fail(2, "job", "delete", "nightly")
	h.ok("job", "delete", "nightly", "--yes")
	h.fail(3, "job", "show", "nightly")

	testLocalRunLogLimit(t, h)
}
