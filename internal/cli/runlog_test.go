package cli_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/api/apitest"
)

// testLocalRunLogLimit: a local `job run --run-log-limit` keeps at most that
// much of the run's log, with one marker line, and the run still succeeds.
// h has a saved connection "wh".
func testLocalRunLogLimit(t *testing.T, h *harness) {
	file := filepath.Join(t.TempDir(), "flood.yaml")
	yaml := `jobs:
  - name: flood
    connection: wh
    steps:
      - command: [sh, -c, "head -c 1048576 /dev/zero | tr '\\0' x; echo"]
`
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	h.ok("job", "apply", "-f", file)
	r := h.fail(2, "job", "run", "flood", "--run-log-limit", "lots")
	contains(t, "bad --run-log-limit", r.stderr, `"--run-log-limit"`, "512KiB, 10MiB")
	r = h.ok("job", "run", "flood", "--run-log-limit", "64KiB", "--allow-command", "sh")
	contains(t, "flood run", r.stdout, "[pgrelay] log truncated at 64 KiB (--run-log-limit): ", "succeeded")
	var runs []struct {
		ID  string `json:"id"`
		Job string `json:"job"`
	}
	if err := json.Unmarshal([]byte(h.ok("run", "list", "--job", "flood", "-o", "json").stdout), &runs); err != nil || len(runs) != 1 {
		t.Fatalf("runs of flood: %+v %v", runs, err)
	}
	logs := h.ok("run", "logs", runs[0].ID).stdout
	if n := strings.Count(logs, "x"); n > 64<<10 || n < 60<<10 {
		t.Fatalf("the stored log keeps %d bytes of output, want up to the 64 KiB limit", n)
	}
	if strings.Count(logs, "[pgrelay] log truncated") != 1 {
		t.Fatalf("want one marker line in the stored log:\n%.2000s", logs)
	}
}

func TestRunLogFlagsValidated(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for _, c := range []struct{ args, want []string }{
		{[]string{"serve", "--run-log-limit", "10 megs"}, []string{`"--run-log-limit"`, "512KiB, 10MiB or 1GiB"}},
		{[]string{"serve", "--run-log-limit", "100"}, []string{`"--run-log-limit"`, "out of range", "from 1 KiB to 1 TiB"}},
		{[]string{"serve", "--run-retention", "ninety days"}, []string{`"--run-retention"`, "90d", "0 (keep runs forever)"}},
		{[]string{"serve", "--run-retention", "10m"}, []string{`"--run-retention"`, "too short", "at least 1h"}},
		{[]string{"job", "run", "x", "--run-log-limit", "-1"}, []string{`"--run-log-limit"`, "not a size"}},
		{[]string{"serve", "--ssh-warm", "1h"}, []string{"--ssh-warm 1h0m0s", "accepted is 0", "to 15m0s", "e.g. 60s"}},
		{[]string{"serve", "--ssh-warm", "a minute"}, []string{`--ssh-warm "a minute": accepted is a duration with a unit`}},
		{[]string{"serve", "--stop-grace", "0"}, []string{"--stop-grace 0s", "accepted is 1s to 10m0s"}},
		{[]string{"job", "run", "x", "--stop-grace", "20m"}, []string{"--stop-grace 20m0s", "accepted is 1s to 10m0s"}},
	} {
		r := h.fail(2, c.args...)
		contains(t, strings.Join(c.args, " "), r.stderr, c.want...)
	}
	help := h.ok("serve", "--help").stdout
	contains(t, "serve --help", help, "--run-log-limit size", "(default 10MiB)", "--run-retention duration", "(default 90d)", "0 keeps them forever",
		"--ssh-warm duration", "next run of the same connection", "--stop-grace duration", "(default 10s)")
}

// TestRunLogsFollowExitCode: `run logs --follow` exits as `job run --wait`
// does once the run ends (0 succeeded; 1 failed, timed out or cancelled,
// with the reason), locally and against a server (whose runs may still be
// queued or running when the follow starts); without --follow it exits 0 once the log is
// printed, whatever the run's outcome. `run logs --follow` exited 0 for
// every run.
func TestRunLogsFollowExitCode(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	srv := apitest.Start(t, apitest.Options{Queue: true, AllowCommands: []string{"sh", "sleep"}})
	local, remote := newHarness(t), newHarness(t)
	remote.env["PGRELAY_SERVER"] = srv.URL
	remote.env["PGRELAY_TOKEN"] = srv.AdminToken
	const yaml = `jobs:
  - name: fine
    connection: wh
    steps:
      - command: [sh, -c, "echo all good"]
  - name: broken
    connection: wh
    steps:
      - command: [sh, -c, "echo oops; exit 3"]
  - name: slow
    connection: wh
    timeout: 1s
    steps:
      - command: [sleep, "60"]
`
	for _, h := range []*harness{local, remote} {
		h.env["DB_PASSWORD"] = pg.Password
		h.ok(createArgs("wh", pg, "--sslmode", "disable")...)
		h.applyJobs(yaml)
	}
	runID := func(h *harness, job string) string {
		t.Helper()
		var runs []struct{ ID string }
		if err := json.Unmarshal([]byte(h.ok("run", "list", "--job", job, "-o", "json").stdout), &runs); err != nil || len(runs) != 1 {
			t.Fatalf("runs of %s: %+v %v", job, runs, err)
		}
		return runs[0].ID
	}
	// Local runs end before they are followed.
	local.ok("job", "run", "fine", "--allow-command", "sh")
	local.fail(1, "job", "run", "broken", "--allow-command", "sh")
	local.fail(1, "job", "run", "slow", "--allow-command", "sleep")
	// A server's runs are followed while queued or running.
	for _, job := range []string{"fine", "broken", "slow"} {
		remote.ok("job", "run", job)
	}
	for _, tc := range []struct {
		job    string
		code   int
		stdout string
		stderr string
	}{
		{"fine", 0, "all good", "succeeded."},
		{"broken", 1, "oops", "Error: run %s failed: step 1 (sh -c 'echo oops; exit 3') failed: sh exited with code 3"},
		{"slow", 1, "", "Error: run %s failed: timed out after 1s"},
	} {
		for _, h := range []struct {
			name string
			h    *harness
		}{{"local", local}, {"remote", remote}} {
			id := runID(h.h, tc.job)
			r := h.h.run("run", "logs", id, "--follow")
			if r.code != tc.code {
				t.Errorf("%s: run logs %s --follow: want exit %d, got %s", h.name, tc.job, tc.code, r)
				continue
			}
			want := tc.stderr
			if strings.Contains(want, "%s") {
				want = fmt.Sprintf(want, id)
			}
			contains(t, h.name+" "+tc.job+" --follow", r.stdout, tc.stdout)
			contains(t, h.name+" "+tc.job+" --follow", r.stderr, want)
			// Without --follow: the log, and exit 0.
			r = h.h.ok("run", "logs", id)
			contains(t, h.name+" "+tc.job, r.stdout, tc.stdout)
		}
	}
}
