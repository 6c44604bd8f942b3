package cli_test

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/api/apitest"
)

// TestRemoteTokenNameNamesTheFlag: a token name the server refuses is
// named as the flag, as locally ("invalid token: --name: ..."); against a
// server it read "invalid request: name: ...", the API's field.
func TestRemoteTokenNameNamesTheFlag(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	for name, h := range map[string]*harness{"local": newHarnessOn(t, srv, false), "remote": newHarnessOn(t, srv, true)} {
		r := h.fail(2, "token", "create", "--role", "viewer", "--name", "bad name")
		contains(t, name+" token create --name 'bad name'", r.stderr, `invalid token: --name: "bad name" is not accepted`)
		if strings.Contains(r.stderr, "invalid request") || strings.Contains(r.stderr, " name:") {
			t.Errorf("%s: the problem is not named as the flag:\n%s", name, r)
		}
	}
}

// TestHealthcheckFlagValues: a --timeout of 0 or less and a --url that is
// not an http(s) URL are the command line's fault (exit 2, naming the
// flag); they failed every check with "context deadline exceeded" and
// Go's "unsupported protocol scheme" (exit 1), as an unhealthy server
// does. A password in --url is not quoted.
func TestHealthcheckFlagValues(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--timeout", "0s"}, "--timeout 0s: accepted is a duration above 0, e.g. 5s"},
		{[]string{"--timeout", "-1s"}, "--timeout -1s: accepted is a duration above 0"},
		{[]string{"--url", "foo"}, `--url "foo": accepted is an http:// or https:// URL, e.g. http://127.0.0.1:8080/healthz`},
		{[]string{"--url", "ftp://u:pw-s3cret@127.0.0.1/healthz"}, `--url "ftp://u:xxxxx@127.0.0.1/healthz": accepted is an http:// or https:// URL`},
	} {
		r := h.fail(2, append([]string{"healthcheck"}, c.args...)...)
		contains(t, strings.Join(c.args, " "), r.stderr, c.want)
		if strings.Contains(r.stderr, "pw-s3cret") {
			t.Errorf("%s: the password is quoted:\n%s", strings.Join(c.args, " "), r)
		}
	}
	// A server that does not answer is still a failure (exit 1).
	h.fail(1, "healthcheck", "--url", "http://127.0.0.1:1/healthz", "--timeout", "2s")
}

// TestDuplicateHopRefused: a chain that passes the same user@host:port
// twice is refused, naming the repeated hop, locally and against a server.
// It was saved; its hops could not be told apart (--ssh-hop-own-key on the
// second said "that is the first hop ... accepted is one of the hops
// after the first: <the same hop>"), and its two lines of one key in
// authorized_keys made sshd read only the first: the chain failed at
// forward.
func TestDuplicateHopRefused(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	for name, h := range map[string]*harness{"local": newHarnessOn(t, srv, false), "remote": newHarnessOn(t, srv, true)} {
		r := h.fail(2, "connection", "create", "dup", "--host", "127.0.0.1", "--database", "d", "--user", "u",
			"--ssh-hop", "j@127.0.0.1:2222", "--ssh-hop", "k@127.0.0.2", "--ssh-hop", "j@127.0.0.1:2222")
		contains(t, name+" create", r.stderr, "--ssh-hop (hop 3)", "j@127.0.0.1:2222 is hop 1 again")
		// A host name in another case is the same hop.
		r = h.fail(2, "connection", "create", "dup", "--host", "127.0.0.1", "--database", "d", "--user", "u",
			"--ssh-hop", "j@bastion.example.com", "--ssh-hop", "j@Bastion.Example.com:22")
		contains(t, name+" create, another case", r.stderr, "--ssh-hop (hop 2)", "is hop 1 again")
		contains(t, name+" nothing saved", h.ok("connection", "list").stdout, "No connections")
		// The same host as another user, or on another port, is another hop.
		h.ok("connection", "create", "two", "--host", "127.0.0.1", "--database", "d", "--user", "u",
			"--ssh-hop", "j@127.0.0.1", "--ssh-hop", "k@127.0.0.1", "--ssh-hop", "j@127.0.0.1:2222")
		before := h.ok("connection", "show", "two", "-o", "json").stdout
		r = h.fail(2, "connection", "update", "two", "--ssh-hop", "j@127.0.0.1", "--ssh-hop", "j@127.0.0.1")
		contains(t, name+" update", r.stderr, "--ssh-hop (hop 2)", "j@127.0.0.1:22 is hop 1 again")
		if after := h.ok("connection", "show", "two", "-o", "json").stdout; after != before {
			t.Errorf("%s: the refused update changed the connection:\n%s\n→\n%s", name, before, after)
		}
	}
}

// TestAuditExportCursorPastTheLog: an --after-seq past the log's last
// record is refused (exit 2, naming the flag and the last record), locally
// and against a server. It exported nothing and printed "exported up to
// record 999999; next: ... --after-seq 999999", a cursor that skips the
// records appended later up to it.
func TestAuditExportCursorPastTheLog(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	for name, h := range map[string]*harness{"local": newHarnessOn(t, srv, false), "remote": newHarnessOn(t, srv, true)} {
		h.ok("connection", "create", "wh", "--host", "127.0.0.1", "--database", "d", "--user", "u")
		r := h.ok("audit", "export")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		_, next, ok := strings.Cut(strings.TrimSpace(r.stderr), "--after-seq ")
		head, err := strconv.Atoi(next)
		if !ok || err != nil || len(lines) == 0 || head < 1 {
			t.Fatalf("%s: export: %s", name, r)
		}
		r = h.fail(2, "audit", "export", "--after-seq", "999999")
		contains(t, name+" export past the log", r.stderr,
			"--after-seq 999999: is past the last record of the audit log, "+strconv.Itoa(head))
		if r.stdout != "" || strings.Contains(r.stderr, "next:") {
			t.Errorf("%s: a cursor past the log gave a next one:\n%s", name, r)
		}
		// At the last record: nothing more yet, the same cursor.
		r = h.ok("audit", "export", "--after-seq", strconv.Itoa(head))
		if r.stdout != "" || !strings.Contains(r.stderr, "next: pgrelay audit export --after-seq "+strconv.Itoa(head)) {
			t.Errorf("%s: export at the last record: %s", name, r)
		}
	}
}

// TestRotateKeyStepsWithoutTunnel: --status, --finish and --cancel of a
// connection without an SSH tunnel say that it has no key, as --start and
// a rotation without a flag do, locally and against a server; they said
// "no key rotation under way: start one with ... --start", which --start
// then refused.
func TestRotateKeyStepsWithoutTunnel(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	for name, h := range map[string]*harness{"local": newHarnessOn(t, srv, false), "remote": newHarnessOn(t, srv, true)} {
		h.ok("connection", "create", "direct", "--host", "127.0.0.1", "--database", "d", "--user", "u")
		for _, step := range []string{"--start", "--status", "--finish", "--cancel"} {
			r := h.fail(2, "connection", "rotate-key", "direct", step)
			contains(t, name+" rotate-key "+step, r.stderr, "connection direct has no SSH tunnel, so it has no public key",
				"pgrelay connection update direct --ssh-host HOST --ssh-user USER")
			if strings.Contains(r.stderr, "--start`") {
				t.Errorf("%s: rotate-key %s points to --start, which is refused too:\n%s", name, step, r)
			}
		}
	}
}

// TestNewKeyFileBadInput: master-key rotate --new-key-file in a missing
// directory, or a file that does not hold a key, is refused (exit 2,
// naming the flag) before anything changes; the first failed (exit 1)
// with "write master key: open FILE: no such file or directory", the
// second exited 1 too.
func TestNewKeyFileBadInput(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.env["PGRELAY_MASTER_KEY"] = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	h.env["PW"] = "pw-rotate-s3cret"
	h.ok("connection", "create", "wh", "--host", "127.0.0.1", "--database", "d", "--user", "u", "--password-env", "PW")
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing", "new.key")
	r := h.fail(2, "master-key", "rotate", "--new-key-file", missing)
	contains(t, "missing directory", r.stderr, "--new-key-file "+missing+": the directory "+filepath.Join(dir, "missing")+" does not exist")
	bad := filepath.Join(dir, "bad.key")
	if err := os.WriteFile(bad, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	contains(t, "not a key", h.fail(2, "master-key", "rotate", "--new-key-file", bad).stderr, "--new-key-file: ", "not valid base64")
	// Nothing changed: the old key still opens the store, and a rotation
	// to a new file in an existing directory works.
	h.ok("connection", "show", "wh")
	good := filepath.Join(dir, "new.key")
	h.ok("master-key", "rotate", "--new-key-file", good)
	if _, err := os.Stat(good); err != nil {
		t.Fatal(err)
	}
}

// TestRetentionFlagsSayWhatTheyKeep: serve's --audit-retention says what 0
// keeps in its own words (its errors said "0 (keep runs forever)", the
// words of --run-retention), and a negative number of days is "negative"
// as a negative duration is (it was "not a duration").
func TestRetentionFlagsSayWhatTheyKeep(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	serve := []string{"serve", "--listen", "127.0.0.1:0"}
	for _, c := range []struct {
		args      []string
		want, not string
	}{
		{[]string{"--audit-retention", "1s"}, `"1s" is too short: accepted is 0 (keep records forever) or a duration of at least 1h`, "runs"},
		{[]string{"--audit-retention", "-1d"}, `"-1d" is negative: accepted is 0 (keep records forever)`, "runs"},
		{[]string{"--run-retention", "-1d"}, `"-1d" is negative: accepted is 0 (keep runs forever)`, "records"},
		{[]string{"--run-retention", "5x"}, `"5x" is not a duration: accepted is 0 (keep runs forever)`, "records"},
	} {
		r := h.fail(2, append(serve, c.args...)...)
		contains(t, strings.Join(c.args, " "), r.stderr, c.want)
		if strings.Contains(r.stderr, c.not) {
			t.Errorf("%s: %q in\n%s", strings.Join(c.args, " "), c.not, r)
		}
	}
}

// TestQueryEmptySQL: an empty (or blank) SQL is refused before anything
// is opened, locally as against a server, naming the argument: locally it
// printed nothing and exited 0; against a server it read "invalid request:
// sql: required: ...".
func TestQueryEmptySQL(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	srv := apitest.Start(t, apitest.Options{})
	for name, h := range map[string]*harness{"local": newHarnessOn(t, srv, false), "remote": newHarnessOn(t, srv, true)} {
		h.env["DB_PASSWORD"] = pg.Password
		h.ok(createArgs("wh", pg, "--sslmode", "disable")...)
		for _, sql := range []string{"", "  \n\t"} {
			for _, o := range []string{"table", "json", "csv"} {
				r := h.fail(2, "query", "wh", sql, "-o", o)
				contains(t, name+" query -o "+o+" of "+strconv.Quote(sql), r.stderr,
					`SQL is empty: give one or more SQL statements, e.g. pgrelay query wh "select 1"`)
				if r.stdout != "" {
					t.Errorf("%s: query -o %s of %q printed to stdout:\n%s", name, o, sql, r)
				}
			}
		}
		contains(t, name+" query", h.ok("query", "wh", "select 1 as n", "-o", "csv").stdout, "n\n1\n")
	}
}
