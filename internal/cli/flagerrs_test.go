package cli_test

import (
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/sshkey"
)

// TestFlagValueErrors: a flag value the parser rejects, or an explicit 0
// where 0 is not accepted, gets an error that names the flag and what it
// accepts (it used to show strconv's words, or -1 for an explicit 0, or
// save --port 0 as 5432).
func TestFlagValueErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	create := func(extra ...string) []string {
		return append([]string{"connection", "create", "x", "--host", "127.0.0.1", "--database", "d", "--user", "u"}, extra...)
	}
	tunnel := []string{"--ssh-host", "127.0.0.1", "--ssh-user", "u"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{create("--port", "5432x"), `--port "5432x": accepted is a port number, 1 to 65535`},
		{create("--port", "0"), "--port 0: accepted is 1 to 65535"},
		{create("--threads", "0"), "--threads 0: accepted is 1 to 256"},
		{create("--threads", "many"), `--threads "many": accepted is a whole number`},
		{create(append(tunnel, "--ssh-port", "0")...), "--ssh-port 0: accepted is 1 to 65535"},
		{create(append(tunnel, "--ssh-keepalive-interval", "0s")...), "--ssh-keepalive-interval 0s: accepted is 100ms to 1h0m0s"},
		{create(append(tunnel, "--ssh-keepalive-interval", "2x")...), `--ssh-keepalive-interval "2x": accepted is a duration with a unit`},
		{create(append(tunnel, "--ssh-keepalive-count-max", "0")...), "--ssh-keepalive-count-max 0: accepted is 1 to 1000"},
		{create(append(tunnel, "--ssh-known-host", "garbage")...), `--ssh-known-host: "garbage" is neither a public key nor a known_hosts line; accepted is`},
		{[]string{"exec", "x", "psql", "-c", "select 1"}, "the program's arguments go after --, e.g. pgrelay exec NAME -- psql"},
		{[]string{"proxy", "x", "--listen", "127.0.0.1:abc"}, `--listen "127.0.0.1:abc": accepted is host:port`},
	} {
		contains(t, tc.want, h.fail(2, tc.args...).stderr, tc.want)
	}
	// Nothing was saved by the refused creates.
	contains(t, "list", h.ok("connection", "list").stdout, "No connections")
	// A connection saved without a password says so (most often forgotten).
	contains(t, "no password", h.ok(create()...).stderr, "Note: no password was given", "pgrelay connection update x --password-env VAR")
	// So does one moved from a token source back to the stored password
	// that it never had; another update does not repeat it.
	h.ok("connection", "create", "tok", "--host", "127.0.0.1", "--database", "d", "--user", "u", "--sslmode", "require",
		"--auth", "command", "--auth-program", "/bin/echo")
	contains(t, "back to the stored password", h.ok("connection", "update", "tok", "--auth", "password").stderr,
		"Note: the connection now uses the stored password, and none was given", "pgrelay connection update tok --password-env VAR")
	if r := h.ok("connection", "update", "tok", "--port", "5433"); strings.Contains(r.stderr, "Note:") {
		t.Errorf("an update that leaves the password source alone notes it:\n%s", r)
	}
	h.env["PW"] = "pw"
	if r := h.ok("connection", "create", "y", "--host", "127.0.0.1", "--database", "d", "--user", "u", "--password-env", "PW"); strings.Contains(r.stderr, "Note:") {
		t.Fatalf("a note with a password given: %s", r.stderr)
	}
}

// TestHostAuthorityFlag: --ssh-host-authority takes a known_hosts line
// with its marker as the help shows it; it used to read
// "@cert-authority ..." as the name of a file.
func TestHostAuthorityFlag(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ca, err := sshkey.Generate(sshkey.Ed25519, "ca")
	if err != nil {
		t.Fatal(err)
	}
	line := "@cert-authority *.corp.example.com " + strings.TrimSpace(sshkey.AuthorizedKey(ca.Public, ""))
	h.ok("connection", "create", "ca", "--host", "127.0.0.1", "--database", "d", "--user", "u",
		"--ssh-host", "bastion.corp.example.com", "--ssh-user", "u", "--ssh-host-authority", line)
	contains(t, "show", h.ok("connection", "show", "ca", "-o", "json").stdout, "@cert-authority *.corp.example.com ssh-ed25519 ")
	// A marker without its pattern and key, or a misspelt one, is a line
	// gone wrong, not a file name: the error says what is accepted (it
	// used to be "open revoked: no such file or directory").
	for _, v := range []string{"@revoked", "@cert-authority", "@cert-authorty *.corp.example.com " + strings.TrimSpace(sshkey.AuthorizedKey(ca.Public, ""))} {
		contains(t, v, h.fail(2, "connection", "update", "ca", "--ssh-host-authority", v).stderr,
			"--ssh-host-authority: ", "accepted is", `"@cert-authority PATTERN KEY"`, `"@revoked PATTERN KEY"`, "@FILE")
	}
}

// TestNumberFlagsAreDecimal: number flags read base 10 only, as the API
// and the web form do. They used to read a leading 0 as octal and 0x as
// hex, so that --port 05432 saved port 2842.
func TestNumberFlagsAreDecimal(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.ok("connection", "create", "dec", "--host", "127.0.0.1", "--database", "d", "--user", "u",
		"--port", "05432", "--threads", "010", "--ssh-host", "127.0.0.1", "--ssh-user", "u",
		"--ssh-port", "022", "--ssh-keepalive-count-max", "011")
	contains(t, "show", h.ok("connection", "show", "dec", "-o", "json").stdout,
		`"port": 5432`, `"threads": 10`, `"port": 22`, `"keepalive_count_max": 11`)
	for _, v := range []string{"0x10", "0o17", "5_432"} {
		want := `--port "` + v + `": accepted is a port number, 1 to 65535`
		contains(t, v, h.fail(2, "connection", "update", "dec", "--port", v).stderr, want)
	}
	contains(t, "--limit", h.fail(2, "run", "list", "--limit", "0x10").stderr, `--limit "0x10": accepted is a whole number`)
}
