package cli_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/api/apitest"
)

// escJobs is a job whose command prints what would act on a terminal:
// OSC 52 (write the clipboard), CSI sequences that clear the screen and
// rewrite the line above, a carriage return that overwrites a line, a C1
// CSI (U+009B) and a byte that is not UTF-8; its last stderr line, which
// becomes the run's reason, carries an ESC and a C1 control too.
const escJobs = `jobs:
  - name: esc
    connection: wh
    steps:
      - name: noisy
        command: [sh, -c, "printf '\\033]52;c;cHduZWQ=\\007\\033[2J\\033[1A\\033[2Kstep 1 succeeded\\n'; printf 'failed\\rsucceeded\\n'; printf '\\302\\233 31m c1\\n'; printf 'bad \\377 byte\\n'; printf '\\033[2Kboom \\302\\2332K\\n' >&2; exit 3"]
`

// The escaped forms of what escJobs prints.
var escShown = []string{`\x1b]52;c;cHduZWQ=\x07\x1b[2J\x1b[1A\x1b[2Kstep 1 succeeded`, `failed\rsucceeded`, `\u009b 31m c1`}

// noControls fails t when s holds a character a terminal acts on: a C0
// control other than \n and \t, DEL, a C1 control, or a byte that is not
// UTF-8.
func noControls(t *testing.T, what, s string) {
	t.Helper()
	for i, c := range []byte(s) {
		if (c < 0x20 && c != '\n' && c != '\t') || c == 0x7f {
			t.Errorf("%s prints the control character %#x raw (at byte %d):\n%q", what, c, i, s)
			return
		}
	}
	if !utf8.ValidString(s) {
		t.Errorf("%s prints bytes that are not UTF-8 raw:\n%q", what, s)
		return
	}
	for _, r := range s {
		if r >= 0x80 && r <= 0x9f {
			t.Errorf("%s prints the C1 control %U raw:\n%q", what, r, s)
			return
		}
	}
}

// TestCommandOutputEscaped: what a job's command prints reaches a
// terminal with its control characters written out, by `job run`, `run
// logs` (with --follow too), `run show`, `run list` and the error line,
// locally and through a server; --raw prints the log as it was stored;
// JSON output carries no control character raw either.
func TestCommandOutputEscaped(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)

	t.Run("local", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		h.env["DB_PASSWORD"] = pg.Password
		h.ok(createArgs("wh", pg)...)
		h.applyJobs(escJobs)

		r := h.fail(1, "job", "run", "esc", "--allow-command", "sh")
		noControls(t, "job run (stdout)", r.stdout)
		noControls(t, "job run (stderr)", r.stderr)
		contains(t, "job run", r.stdout, escShown...)
		contains(t, "job run", r.stdout, `bad \xff byte`)
		contains(t, "job run error", r.stderr, `exited with code 3: \x1b[2Kboom \u009b2K`)

		id := onlyRun(t, h, "esc")
		logs := h.ok("run", "logs", id).stdout
		noControls(t, "run logs", logs)
		contains(t, "run logs", logs, escShown...)
		contains(t, "run logs", logs, `bad \xff byte`, `! \x1b[2Kboom \u009b2K`)

		raw := h.ok("run", "logs", id, "--raw").stdout
		contains(t, "run logs --raw", raw, "\x1b]52;c;cHduZWQ=\a\x1b[2J\x1b[1A\x1b[2Kstep 1 succeeded\n",
			"failed\rsucceeded\n", "\u009b 31m c1\n", "bad \xff byte\n", "! \x1b[2Kboom \u009b2K\n")

		r = h.fail(1, "job", "run", "esc", "--allow-command", "sh", "--raw")
		contains(t, "job run --raw", r.stdout, "\x1b]52;c;cHduZWQ=\a", "failed\rsucceeded\n")

		show := h.ok("run", "show", id)
		noControls(t, "run show", show.stdout)
		contains(t, "run show", show.stdout, `Reason: step 1 (noisy) failed: sh exited with code 3: \x1b[2Kboom \u009b2K`)
		list := h.ok("run", "list", "--job", "esc").stdout
		noControls(t, "run list", list)
		contains(t, "run list", list, `\x1b[2Kboom`)
		js := h.ok("run", "show", id, "-o", "json").stdout
		noControls(t, "run show -o json", js)
		contains(t, "run show -o json", js, `\u001b[2Kboom \u009b2K`)

		h.fail(2, "job", "run", "esc", "--allow-command", "sh", "--raw", "-o", "json")
	})

	t.Run("server", func(t *testing.T) {
		t.Parallel()
		srv := apitest.Start(t, apitest.Options{Queue: true, AllowCommands: []string{"sh"}})
		h := newHarness(t)
		h.env["PGRELAY_SERVER"] = srv.URL
		h.env["PGRELAY_TOKEN"] = srv.AdminToken
		h.env["DB_PASSWORD"] = pg.Password
		h.ok(createArgs("wh", pg, "--sslmode", "disable")...)
		h.applyJobs(escJobs)

		r := h.fail(1, "job", "run", "esc", "--follow")
		noControls(t, "job run --follow (stdout)", r.stdout)
		noControls(t, "job run --follow (stderr)", r.stderr)
		contains(t, "job run --follow", r.stdout, escShown...)
		contains(t, "job run --follow error", r.stderr, `exited with code 3: \x1b[2Kboom \u009b2K`)
		h.fail(2, "job", "run", "esc", "--raw")

		id := onlyRun(t, h, "esc")
		// The run failed: run logs --follow exits 1, as job run --wait.
		logs := func(args ...string) result {
			if slices.Contains(args, "--follow") {
				return h.fail(1, args...)
			}
			return h.ok(args...)
		}
		for _, args := range [][]string{{"run", "logs", id}, {"run", "logs", id, "--follow"}} {
			r := logs(args...)
			what := strings.TrimSpace("run logs " + strings.Join(args[3:], " "))
			noControls(t, what, r.stdout)
			noControls(t, what+" (stderr)", r.stderr)
			contains(t, what, r.stdout, escShown...)
		}
		for _, args := range [][]string{{"run", "logs", id, "--raw"}, {"run", "logs", id, "--follow", "--raw"}} {
			contains(t, strings.Join(args, " "), logs(args...).stdout,
				"\x1b]52;c;cHduZWQ=\a\x1b[2J\x1b[1A\x1b[2Kstep 1 succeeded\n", "failed\rsucceeded\n", "\u009b 31m c1\n")
		}
	})
}

// TestQueryTableEscapesControls: `query`'s table shows a value's control
// characters written out; CSV gives the value as it is, JSON escaped.
func TestQueryTableEscapesControls(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	h := newHarness(t)
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(createArgs("wh", pg)...)
	const sql = `select E'\x1b]52;c;eA==\x07\x1b[2Kok\rno' as v, chr(155) || '2J' as "c1` + "\x1b[31m" + `"`

	table := h.ok("query", "wh", sql).stdout
	noControls(t, "query table", table)
	contains(t, "query table", table, `\x1b]52;c;eA==\x07\x1b[2Kok\rno`, `\u009b2J`, `c1\x1b[31m`)

	csv := h.ok("query", "wh", sql, "-o", "csv").stdout
	contains(t, "query csv", csv, "\x1b]52;c;eA==\a\x1b[2Kok\rno", "\u009b2J")

	js := h.ok("query", "wh", sql, "-o", "json").stdout
	noControls(t, "query json", js)
	var rows [][]map[string]string
	dec := json.NewDecoder(strings.NewReader(js))
	for dec.More() {
		var set []map[string]string
		if err := dec.Decode(&set); err != nil {
			t.Fatalf("query -o json: %v\n%s", err, js)
		}
		rows = append(rows, set)
	}
	if len(rows) != 1 || len(rows[0]) != 1 || rows[0][0]["v"] != "\x1b]52;c;eA==\a\x1b[2Kok\rno" || rows[0][0]["c1\x1b[31m"] != "\u009b2J" {
		t.Fatalf("query -o json decodes to %q", rows)
	}
}

// TestGrantsEscapesControls: `grants` names tables as the database has
// them, control characters written out.
func TestGrantsEscapesControls(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	conn, err := pgx.Connect(context.Background(), pg.ConnString(pg.User, pg.Password, pg.DB))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	// The owner gives up SELECT on its own table, which the audit then
	// finds missing and names.
	if _, err := conn.Exec(context.Background(), `create schema raw; create table raw.ok (n int);
		create table raw."t`+"\x1b[2K\u009b"+`x" (n int); revoke select on raw."t`+"\x1b[2K\u009b"+`x" from current_user`); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t)
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(createArgs("wh", pg)...)
	args := []string{"grants", "wh", "--target-schema", "raw", "--source-schema", "raw"}
	r := h.fail(1, args...)
	noControls(t, "grants", r.stdout)
	contains(t, "grants", r.stdout, `SELECT on 1 of 2 tables and views in raw: "t\x1b[2K\u009bx"`)
}

// onlyRun returns the ID of job's newest run.
func onlyRun(t *testing.T, h *harness, job string) string {
	t.Helper()
	var runs []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(h.ok("run", "list", "--job", job, "-o", "json").stdout), &runs); err != nil || len(runs) == 0 {
		t.Fatalf("runs of %s: %+v %v", job, runs, err)
	}
	return runs[0].ID
}

// TestConnectionTestEscapesControls: `connection test` writes out the
// control characters of a failed step's error, which quotes the server,
// in its summary line as in the step's own lines (the summary printed
// them raw).
func TestConnectionTestEscapesControls(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	h := newHarness(t)
	h.env["DB_PASSWORD"] = pg.Password
	args := createArgs("wh", pg)
	for i, a := range args {
		if a == "--database" {
			// PostgreSQL quotes the name in its error: database "..." does not exist.
			args[i+1] = "no\x1b]0;title\x07db"
		}
	}
	h.ok(args...)
	r := h.fail(1, "connection", "test", "wh")
	noControls(t, "connection test", r.stdout)
	contains(t, "connection test", r.stdout, "Failed at ", `no\x1b]0;title\x07db`)
}

// TestConnectionShowEscapesControls: an editor may save a connection whose
// database, user, schema and role hold control characters (PostgreSQL takes
// them in quoted names); `connection create`, `show` and `list` write them
// out, so that whoever reads the connection (a viewer, an admin) does not
// have their terminal's title, screen or clipboard (OSC 52) set by it.
func TestConnectionShowEscapesControls(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.env["DB_PASSWORD"] = "secret"
	r := h.ok("connection", "create", "wh", "--host", "127.0.0.1", "--port", "5432",
		"--database", "db\x1b]52;c;cHduZWQ=\x07", "--user", "u\x1b[2J\u009b2J", "--password-env", "DB_PASSWORD",
		"--schema", "s\x1b]0;title\x07", "--role", "r\x1b[1A\rx")
	noControls(t, "connection create", r.stdout)
	contains(t, "connection create", r.stdout, `db\x1b]52;c;cHduZWQ=\x07`, `u\x1b[2J\u009b2J`)
	show := h.ok("connection", "show", "wh").stdout
	noControls(t, "connection show", show)
	contains(t, "connection show", show, `db\x1b]52;c;cHduZWQ=\x07`, `u\x1b[2J\u009b2J`, `s\x1b]0;title\x07`, `r\x1b[1A\rx`)
	list := h.ok("connection", "list").stdout
	noControls(t, "connection list", list)
	contains(t, "connection list", list, `db\x1b]52;c;cHduZWQ=\x07`, `u\x1b[2J\u009b2J`)
	// JSON gives the values as they are (escaped as JSON).
	js := h.ok("connection", "show", "wh", "-o", "json").stdout
	noControls(t, "connection show -o json", js)
	var v struct{ Database, User string }
	if err := json.Unmarshal([]byte(js), &v); err != nil || v.Database != "db\x1b]52;c;cHduZWQ=\x07" || v.User != "u\x1b[2J\u009b2J" {
		t.Fatalf("connection show -o json: %+v %v\n%s", v, err, js)
	}
}
