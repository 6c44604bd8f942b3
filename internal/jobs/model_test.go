package jobs_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/fielderr"
	"github.com/pgrelay/pgrelay/internal/jobs"
)

var testTime = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func TestValidateNamesEveryProblem(t *testing.T) {
	t.Parallel()
	j := jobs.Job{Name: "Bad Name", Schedule: "61 * * * *", Timeout: connection.Duration(time.Millisecond),
		Profile: "1x", Target: "ok", Retries: 11, StopGrace: connection.Duration(500 * time.Millisecond),
		Steps: []jobs.Step{{SQL: "a", Command: []string{"b"}}, {}, {Command: []string{""}}, {Command: []string{"dbt"}, Workdir: "rel/dir"},
			{SQL: "x", Workdir: "/abs"}, {SQL: "bad\x00"}}}
	err := j.Validate()
	var ve *fielderr.Error
	if !errors.As(err, &ve) {
		t.Fatalf("want a validation error, got %v", err)
	}
	want := []string{"name", "connection", "schedule", "timeout", "profile", "retries", "stop_grace", "steps[0]", "steps[1]",
		"steps[2].command", "steps[3].workdir", "steps[4].workdir", "steps[5]"}
	fields := ve.Fields()
	for _, f := range want {
		if fields[f] == "" {
			t.Errorf("no problem reported for %s; got %v", f, fields)
		}
	}
	if len(fields) != len(want) {
		t.Errorf("got %d fields, want %d: %v", len(fields), len(want), fields)
	}
	good := jobs.Job{Name: "nightly", Connection: "wh", Schedule: "0 3 * * *", Steps: []jobs.Step{{SQL: "select 1"}}}
	good.ApplyDefaults()
	if err := good.Validate(); err != nil {
		t.Fatalf("valid job rejected: %v", err)
	}
	if good.Timeout.Duration() != time.Hour || good.Profile != "pgrelay" || good.Target != "pgrelay" {
		t.Fatalf("defaults: %+v", good)
	}
}

func TestParseFileReportsJobAndField(t *testing.T) {
	t.Parallel()
	_, err := jobs.ParseFile(strings.NewReader("jobs:\n  - name: a\n    connection: wh\n    steps: [{sql: x}]\n  - name: a\n    connection: wh\n    steps: []\n"))
	var ve *fielderr.Error
	if !errors.As(err, &ve) {
		t.Fatalf("got %v", err)
	}
	f := ve.Fields()
	if f["jobs[1](a).name"] == "" || f["jobs[1](a).steps"] == "" {
		t.Fatalf("fields = %v", f)
	}
	// An unknown key is named with its line and the keys accepted there
	// (yaml.v3 said "field stepz not found in type jobs.Job").
	if _, err := jobs.ParseFile(strings.NewReader("jobs:\n  - name: a\n    connection: wh\n    stepz: []\n")); err == nil ||
		!strings.Contains(err.Error(), `line 4: unknown key "stepz" in a job: accepted are name, connection,`) {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := jobs.ParseFile(strings.NewReader("jobs:\n  - name: a\n    connection: wh\n    steps: [{sql: x, comand: [y]}]\n")); err == nil ||
		!strings.Contains(err.Error(), `line 4: unknown key "comand" in a step: accepted are `) || !strings.Contains(err.Error(), "command") {
		t.Fatalf("unknown step key: %v", err)
	}
	// A bad duration names its line and key.
	if _, err := jobs.ParseFile(strings.NewReader("jobs:\n  - name: a\n    connection: wh\n    timeout: 2 hours\n    steps: [{sql: x}]\n")); err == nil ||
		!strings.Contains(err.Error(), `line 4: timeout: duration "2 hours": accepted is a number with a unit`) {
		t.Fatalf("bad duration: %v", err)
	}
	if _, err := jobs.ParseFile(strings.NewReader("")); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Fatalf("empty file: %v", err)
	}
	// A command given as a string says that it is a list, with an
	// example (yaml.v3 said "cannot unmarshal !!str `psql -c...` into
	// []string").
	if _, err := jobs.ParseFile(strings.NewReader("jobs:\n  - name: a\n    connection: wh\n    steps:\n      - command: psql -c \"select 1\"\n")); err == nil ||
		err.Error() != "jobs file: line 5: command must be a list of the program and its arguments, e.g. "+
			"`command: [psql, -c, \"select 1\"]` (a string is not split into arguments: no shell runs it)" {
		t.Fatalf("command as a string: %v", err)
	}
	// A key indented like its item's "-" names its own line (yaml.v3
	// named line 1, where the list began, counted from 0).
	if _, err := jobs.ParseFile(strings.NewReader("jobs:\n  - name: a\n  connection: wh\n    steps:\n      - sql: select 1\n")); err == nil ||
		err.Error() != `jobs file: line 3: "connection: wh" is indented like the "-" at line 2, not like the keys of that list item: `+
			`indent it by 4 spaces, like "name:" (or start a new item with "- ")` {
		t.Fatalf("mis-indented key: %v", err)
	}
}

func TestNewRunAndCleanText(t *testing.T) {
	t.Parallel()
	j := jobs.Job{Name: "n", Steps: []jobs.Step{{SQL: "select 1"}, {Command: []string{"dbt", "build"}}}}
	a := jobs.NewRun(j, jobs.Manual, testTime)
	b := jobs.NewRun(j, jobs.Manual, testTime.Add(time.Millisecond))
	if a.ID == b.ID || a.ID > b.ID || a.Status != jobs.Queued || len(a.Steps) != 2 || a.Steps[1].Label != "dbt build" {
		t.Fatalf("runs %+v %+v", a, b)
	}
	if got := jobs.CleanText("a\x00b\xffc"); got != "ab\uFFFDc" {
		t.Fatalf("CleanText = %q", got)
	}
}

// TestCommandLabelQuoted: a command step's label (run logs, reasons, pages)
// shows its arguments as a shell would take them back.
func TestCommandLabelQuoted(t *testing.T) {
	for _, c := range []struct {
		cmd  []string
		want string
	}{
		{[]string{"dbt", "build", "--target", "pgrelay"}, "dbt build --target pgrelay"},
		{[]string{"dbt", "run", "--select", "tag:a b"}, "dbt run --select 'tag:a b'"},
		{[]string{"psql", "-c", "select 'x'"}, `psql -c 'select '\''x'\'''`},
		{[]string{"sh", "-c", "echo $HOME", ""}, "sh -c 'echo $HOME' ''"},
		{[]string{"dbt", "run", "--vars={a: 1}"}, "dbt run '--vars={a: 1}'"},
	} {
		if got := (jobs.Step{Command: c.cmd}).Label(); got != c.want {
			t.Errorf("label of %q = %s, want %s", c.cmd, got, c.want)
		}
	}
}

func TestStopGrace(t *testing.T) {
	t.Parallel()
	j := jobs.Job{Name: "nightly", Connection: "wh", Steps: []jobs.Step{{SQL: "select 1"}}}
	j.ApplyDefaults()
	if got := j.StopGraceOr(7 * time.Second); got != 7*time.Second {
		t.Errorf("a job without stop_grace takes the server's: got %s", got)
	}
	for _, c := range []struct {
		grace time.Duration
		ok    bool
	}{{time.Second, true}, {30 * time.Second, true}, {jobs.MaxStopGrace, true}, {999 * time.Millisecond, false},
		{jobs.MaxStopGrace + time.Second, false}, {-time.Second, false}} {
		j.StopGrace = connection.Duration(c.grace)
		err := j.Validate()
		if (err == nil) != c.ok {
			t.Errorf("stop_grace %s: %v", c.grace, err)
			continue
		}
		var ve *fielderr.Error
		if !c.ok && (!errors.As(err, &ve) || !strings.Contains(ve.Fields()["stop_grace"], "accepted is 1s to 10m0s")) {
			t.Errorf("stop_grace %s: the error does not name the field and the range: %v", c.grace, err)
		}
		if c.ok && j.StopGraceOr(7*time.Second) != c.grace {
			t.Errorf("stop_grace %s not used over the server's", c.grace)
		}
	}
}

// TestParseFileRefusesFractionalRetries: `retries: 1.5` was saved as 1
// (yaml.v3 truncates a float given for an integer), where JSON refuses
// it; it is refused naming its line and field. A whole number written
// as a float (2.0) keeps its value and is accepted.
func TestParseFileRefusesFractionalRetries(t *testing.T) {
	t.Parallel()
	for _, v := range []string{"1.5", "0.1", "-.inf"} {
		_, err := jobs.ParseFile(strings.NewReader("jobs:\n  - name: a\n    connection: wh\n    retries: " + v + "\n    steps: [{sql: x}]\n"))
		if err == nil || !strings.Contains(err.Error(), "line 4: jobs[0].retries: "+v+" is not a whole number") {
			t.Errorf("retries: %s: %v", v, err)
		}
	}
	js, err := jobs.ParseFile(strings.NewReader("jobs:\n  - {name: a, connection: wh, retries: 2.0, steps: [{sql: x}]}\n"))
	if err != nil || js[0].Retries != 2 {
		t.Fatalf("retries: 2.0: %v %v", js, err)
	}
}

// TestParseFileSaysWhatAKeyTakes: a value of the wrong kind, or a file
// of the wrong shape, is named by its line and key with what is accepted;
// yaml.v3's own words named Go types ("cannot unmarshal !!str `many`
// into int", "!!seq into jobs.File") and a bad duration did not name its
// key.
func TestParseFileSaysWhatAKeyTakes(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ file, want string }{
		{"jobs:\n  - name: a\n    connection: wh\n    retries: many\n    steps: [{sql: x}]\n",
			`line 4: retries: "many" is not a whole number: accepted is a whole number such as 2`},
		{"jobs:\n  - name: a\n    connection: wh\n    timeout: 2 hours\n    steps: [{sql: x}]\n",
			`line 4: timeout: duration "2 hours": accepted is a number with a unit`},
		{"jobs:\n  - name: a\n    connection: wh\n    stop_grace: 5\n    steps: [{sql: x}]\n",
			`line 4: stop_grace: duration "5": accepted is a number with a unit`},
		{"- name: a\n  connection: wh\n",
			"line 1: the file is a list: accepted is a map with the key `jobs:` holding a list of jobs, e.g. `jobs: [{name: nightly"},
		{"jobs:\n  name: a\n",
			`line 2: jobs is a map of keys: accepted is a list of jobs, each starting with "- name:"`},
		{"jobs:\n  - nightly\n",
			`line 2: a job is "nightly": accepted is a map of its keys (name, connection,`},
		{"jobs:\n  - name: a\n    connection: wh\n    steps: select 1\n",
			`line 4: steps is "select 1": accepted is a list of steps`},
		{"jobs:\n  - name: a\n    connection: wh\n    steps:\n      - select 1\n",
			`line 5: a step is "select 1": accepted is a map with sql or command`},
		{"jobs:\n  - name: [a]\n    connection: wh\n    steps: [{sql: x}]\n",
			`line 2: name: a list is not accepted: accepted is text`},
	} {
		_, err := jobs.ParseFile(strings.NewReader(c.file))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q:\n got %v\nwant %s", c.file, err, c.want)
		}
		if err != nil && (strings.Contains(err.Error(), "jobs.") || strings.Contains(err.Error(), "unmarshal")) {
			t.Errorf("%q: the message names Go types: %v", c.file, err)
		}
	}
}

// TestParseFileRefusesExplicitZeroDurations: `timeout: 0` is refused
// naming the field and what is accepted (it took the default of an hour
// without a word: a run meant to go without a limit stopped after an
// hour); so is `stop_grace: 0s` (it took the server's). Left out, both
// still take their defaults.
func TestParseFileRefusesExplicitZeroDurations(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ line, field, want string }{
		{"timeout: 0", "jobs[0](a).timeout", "0 is not accepted: every run has a time limit, 1s to 168h0m0s"},
		{"timeout: 0s", "jobs[0](a).timeout", "leave timeout out for 1h0m0s"},
		{"stop_grace: 0ms", "jobs[0](a).stop_grace", "0 is not accepted: accepted is 1s to 10m0s"},
	} {
		_, err := jobs.ParseFile(strings.NewReader("jobs:\n  - name: a\n    connection: wh\n    " + tc.line + "\n    steps: [{sql: x}]\n"))
		var ve *fielderr.Error
		if !errors.As(err, &ve) || !strings.Contains(ve.Fields()[tc.field], tc.want) {
			t.Errorf("%s: %v, want a problem on %s saying %q", tc.line, err, tc.field, tc.want)
		}
	}
	js, err := jobs.ParseFile(strings.NewReader("jobs:\n  - {name: a, connection: wh, steps: [{sql: x}]}\n"))
	if err != nil || js[0].Timeout.Duration() != jobs.DefaultTimeout || js[0].StopGrace != 0 {
		t.Fatalf("left out: %+v %v", js, err)
	}
}
