package cli_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/api/apitest"
)

// TestExitCodesLocalAndRemote: the same command line exits with the same
// code, locally and against a server, by the rule of cli.exitCode: 2 for
// a command line pgrelay cannot take (an unknown command, a missing or
// out-of-range flag) with a message naming it and what is accepted, 3 for
// a record that does not exist. `pgrelay connection lsit` printed the
// group's help and exited 0, `pgrelay conection list` exited 1,
// `token create` without --role exited 1, `run list --limit 0` listed 100
// runs locally and 50 against a server, `exec` of a missing connection
// exited 1, `bastion-setup --hop` named its problem "hop" (against a
// server: a field of the API), and `completion bogus` printed the help of
// completion and exited 0.
func TestExitCodesLocalAndRemote(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	local := newHarness(t)
	remote := newHarness(t)
	remote.env["PGRELAY_SERVER"] = srv.URL
	remote.env["PGRELAY_TOKEN"] = srv.AdminToken
	for _, h := range []*harness{local, remote} {
		h.ok("connection", "create", "tun", "--host", "127.0.0.1", "--database", "d", "--user", "u",
			"--ssh-host", "127.0.0.1", "--ssh-user", "u")
	}

	for _, tc := range []struct {
		args   []string
		code   int
		stderr []string
	}{
		{[]string{"conection", "list"}, 2, []string{`unknown command "conection" for "pgrelay"`, "did you mean connection?"}},
		{[]string{"conection", "list", "-o", "json"}, 2, []string{`unknown command "conection" for "pgrelay"`}},
		{[]string{"nosuch"}, 2, []string{`unknown command "nosuch" for "pgrelay"`, "see pgrelay --help"}},
		{[]string{"connection", "lsit"}, 2, []string{`unknown command "lsit" for "pgrelay connection"`, "did you mean list?"}},
		{[]string{"connection", "lsit", "-o", "json"}, 2, []string{`unknown command "lsit" for "pgrelay connection"`}},
		{[]string{"job", "runn", "nightly"}, 2, []string{`unknown command "runn" for "pgrelay job"`, "did you mean run?"}},
		{[]string{"run", "cancle", "x"}, 2, []string{`unknown command "cancle" for "pgrelay run"`}},
		{[]string{"token", "nosuch"}, 2, []string{`unknown command "nosuch" for "pgrelay token"`}},
		{[]string{"audit", "nosuch"}, 2, []string{`unknown command "nosuch" for "pgrelay audit"`}},
		{[]string{"ssh-ca", "nosuch"}, 2, []string{`unknown command "nosuch" for "pgrelay ssh-ca"`}},
		// Cobra's completion command printed its help and exited 0.
		{[]string{"completion", "bogus"}, 2, []string{`unsupported shell "bogus" for pgrelay completion: accepted are bash, fish, powershell and zsh`}},
		{[]string{"completion", "bash", "extra"}, 2, []string{"pgrelay completion bash takes no arguments, but got 1 argument: extra"}},
		{[]string{"token", "create"}, 2, []string{"--role is required: accepted are admin, editor and viewer"}},
		{[]string{"run", "list", "--limit", "0"}, 2, []string{"--limit 0: accepted is 1 to 1000"}},
		{[]string{"run", "list", "--limit", "5000"}, 2, []string{"--limit 5000: accepted is 1 to 1000"}},
		{[]string{"connection", "show", "nosuch"}, 3, []string{"nosuch", "not found"}},
		// --hop named as a flag, checked before the connection is read.
		{[]string{"connection", "bastion-setup", "nosuch", "--hop", "0"}, 2, []string{"--hop 0: accepted is a hop's place in the chain, from 1"}},
		{[]string{"connection", "bastion-setup", "tun", "--hop", "5"}, 2, []string{"--hop: 5 is out of range: connection tun has 1 hop(s)"}},
	} {
		for _, h := range []struct {
			name string
			h    *harness
		}{{"local", local}, {"remote", remote}} {
			r := h.h.run(tc.args...)
			if r.code != tc.code {
				t.Errorf("%s: pgrelay %s: want exit %d, got %s", h.name, strings.Join(tc.args, " "), tc.code, r)
				continue
			}
			contains(t, h.name+" pgrelay "+strings.Join(tc.args, " "), r.stderr, tc.stderr...)
			if r.stdout != "" {
				t.Errorf("%s: pgrelay %s printed to stdout:\n%s", h.name, strings.Join(tc.args, " "), r.stdout)
			}
		}
	}
	// A group alone still prints its help.
	for _, h := range []*harness{local, remote} {
		contains(t, "connection help", h.ok("connection").stdout, "Available Commands:", "create")
	}
	// exec runs locally only: a missing connection is not found there.
	contains(t, "exec", local.fail(3, "exec", "nosuch", "--", "true").stderr, "connection nosuch: not found")
}

// TestHelpAndCompletionNeedNoSetup: help and shell completion work whatever
// the server and policy settings of the shell; they used to fail (exit 2)
// with PGRELAY_SERVER set before PGRELAY_TOKEN, or a mistyped
// PGRELAY_HOST_KEY_POLICY, so that Tab completed nothing.
func TestHelpAndCompletionNeedNoSetup(t *testing.T) {
	t.Parallel()
	for _, env := range []map[string]string{
		{"PGRELAY_SERVER": "http://127.0.0.1:1"},
		{"PGRELAY_HOST_KEY_POLICY": "bogus"},
	} {
		h := newHarness(t)
		h.env = env
		contains(t, "help", h.ok("help", "connection").stdout, "Available Commands:")
		contains(t, "group help", h.ok("job").stdout, "Available Commands:")
		contains(t, "completion", h.ok("completion", "bash").stdout, "bash completion")
		contains(t, "complete", h.ok("__complete", "connection", "").stdout, "create", "list")
		contains(t, "complete flags", h.ok("__complete", "connection", "list", "--o").stdout, "--output")
	}
}

// TestQueryJSONValidOnFailure: a statement that fails after its first rows
// leaves valid JSON on stdout (the rows it sent), the error on stderr and
// exit code 1; one that fails before any row leaves stdout empty. Stdout
// used to end at "[" and the rows, without the "]".
func TestQueryJSONValidOnFailure(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	h := newHarness(t)
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(createArgs("wh", pg, "--sslmode", "disable")...)
	for _, sql := range []string{
		"select 1 / (3 - x) as n from generate_series(1, 5) x",
		"select 1 / 0 as n",
	} {
		r := h.fail(1, "query", "wh", sql, "-o", "json")
		contains(t, "stderr", r.stderr, "division by zero")
		if r.stdout == "" {
			continue // failed before its first row: no JSON at all
		}
		var rows []map[string]any
		if err := json.Unmarshal([]byte(r.stdout), &rows); err != nil || len(rows) != 2 {
			t.Errorf("%s: stdout is not JSON: %v\n%s", sql, err, r.stdout)
		}
	}
}

// TestJobApplyProblemsSameRemotely: a jobs file the server refuses is
// reported as locally, as a job's problems ("invalid job: ..."); against a
// server it read "invalid request: ...".
func TestJobApplyProblemsSameRemotely(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	local := newHarness(t)
	remote := newHarness(t)
	remote.env["PGRELAY_SERVER"] = srv.URL
	remote.env["PGRELAY_TOKEN"] = srv.AdminToken
	file := filepath.Join(t.TempDir(), "jobs.yaml")
	if err := os.WriteFile(file, []byte("jobs:\n  - name: x\n    connection: nosuch\n    steps:\n      - sql: select 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, r := local.fail(2, "job", "apply", "-f", file), remote.fail(2, "job", "apply", "-f", file)
	contains(t, "local", l.stderr, `invalid job: jobs[0](x).connection: no connection named "nosuch"`)
	if l.stderr != r.stderr {
		t.Errorf("local and remote differ:\nlocal:  %sremote: %s", l.stderr, r.stderr)
	}
}
