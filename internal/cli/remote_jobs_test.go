package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/auth"
)

// TestRemoteJobs runs the job and run commands against a real API server
// with a job queue: the same commands as locally, through the API, with
// `--follow` on the server's event stream.
func TestRemoteJobs(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	srv := apitest.Start(t, apitest.Options{Queue: true, AllowCommands: []string{"sh"}})
	h := newHarness(t)
	h.env["PGRELAY_SERVER"] = srv.URL
	h.env["PGRELAY_TOKEN"] = srv.AdminToken
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(createArgs("wh", pg, "--sslmode", "disable")...)

	file := filepath.Join(t.TempDir(), "jobs.yaml")
	if err := os.WriteFile(file, []byte(`jobs:
  - name: hello
    connection: wh
    steps:
      - sql: select 1
      - command: [sh, -c, "echo hello from the server; echo warn >&2"]
  - name: broken
    connection: wh
    steps:
      - command: [sh, -c, "echo oops; exit 3"]
  - name: forbidden
    connection: wh
    steps:
      - command: [rm, -rf, /nothing]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	contains(t, "apply", h.ok("job", "apply", "-f", file).stdout, "job hello created", "job broken created")
	contains(t, "apply again", h.ok("job", "apply", "-f", file).stdout, "job hello unchanged")
	contains(t, "list", h.ok("job", "list").stdout, "hello", "broken", "wh")
	contains(t, "show", h.ok("job", "show", "hello").stdout, "echo hello from the server")

	r := h.ok("job", "run", "hello", "--follow")
	contains(t, "run --follow", r.stdout, "hello from the server", "! warn", "succeeded")
	r = h.fail(1, "job", "run", "broken", "--wait")
	contains(t, "run --wait", r.stderr, "exited with code 3")
	r = h.fail(1, "job", "run", "forbidden", "--follow")
	contains(t, "not allowed", r.stdout+r.stderr, `program "rm" is not allowed`, "--allow-command rm")
	// The server's own flags decide, not the client's.
	r = h.fail(2, "job", "run", "forbidden", "--allow-command", "rm")
	contains(t, "client flags", r.stderr, "apply to local runs")

	var runs []struct {
		ID, Job, Status, Trigger string
	}
	if err := json.Unmarshal([]byte(h.ok("run", "list", "--job", "hello", "-o", "json").stdout), &runs); err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 || runs[0].Status != "succeeded" || runs[0].Trigger != "api" {
		t.Fatalf("runs %+v", runs)
	}
	contains(t, "logs", h.ok("run", "logs", runs[0].ID).stdout, "hello from the server")
	contains(t, "logs --follow", h.ok("run", "logs", runs[0].ID, "--follow").stdout, "hello from the server")
	contains(t, "show", h.ok("run", "show", runs[0].ID).stdout, "succeeded", "Worker:")
	contains(t, "cancel ended", h.fail(2, "run", "cancel", runs[0].ID).stderr, "already ended")
	h.fail(3, "run", "show", "nosuchrun")

	// A viewer reads runs but neither runs nor cancels them.
	h.env["PGRELAY_TOKEN"] = srv.Token(t, "viewer-cli", auth.Viewer).Token
	contains(t, "viewer logs", h.ok("run", "logs", runs[0].ID, "--follow").stdout, "hello from the server")
	r = h.fail(4, "job", "run", "hello")
	if !strings.Contains(r.stderr, "editor") {
		t.Fatalf("viewer run: %s", r)
	}
}
