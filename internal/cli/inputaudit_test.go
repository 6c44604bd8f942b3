package cli_test

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestBadInputNamesTheFlag: bad values found by an audit of the commands
// a new user meets first are refused with exit code 2, a message that
// names the flag as typed and what it accepts, no secret, and nothing
// saved changed. Before: --ssh-hop-known-host 1=... was named
// --ssh-known-host (and @FILE of any hop too), a hop number past the
// chain said only "has 2 hop(s)"; --ssh-proxy-command quoted
// encoding/json's Go types; serve took --listen 127.0.0.1:99999,
// --metrics-addr nonsense and a missing --tls-cert file as failures
// (exit 1, the last after saying it was serving); --public-url echoed the
// password of its user information; rotate-key named "old key lifetime"
// (against a server: old_key_lifetime) and read --old-key-lifetime 0 as
// the default; exec --workdir /missing said "fork/exec /usr/bin/true: no
// such file or directory" (exit 1); backup --out in a missing directory
// failed (exit 1) naming a temporary file; --store quoted a password
// given in its query string (?password=...) as it was.
func TestBadInputNamesTheFlag(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.env["PW"] = "pw-s3cret-neighbour"
	h.ok("connection", "create", "direct", "--host", "127.0.0.1", "--database", "d", "--user", "u", "--password-env", "PW")
	h.ok("connection", "create", "two", "--host", "127.0.0.1", "--database", "d", "--user", "u", "--password-env", "PW",
		"--ssh-hop", "j@127.0.0.1", "--ssh-hop", "j@127.0.0.2:2222")
	before := map[string]string{}
	for _, n := range []string{"direct", "two"} {
		before[n] = h.ok("connection", "show", n, "-o", "json").stdout
	}
	missing := filepath.Join(t.TempDir(), "missing")
	serve := []string{"serve", "--listen", "127.0.0.1:0"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"connection", "update", "two", "--ssh-hop-known-host", "1=garbage"},
			`--ssh-hop-known-host 1=...: "garbage" is neither a public key nor a known_hosts line; accepted is`},
		{[]string{"connection", "update", "two", "--ssh-hop-known-host", "2=@" + missing},
			"--ssh-hop-known-host 2=...: open " + missing},
		{[]string{"connection", "update", "two", "--ssh-hop-known-host", "3=ssh-ed25519 AAAA"},
			"--ssh-hop-known-host 3=...: the connection has 2 hop(s): accepted is N from 1 to 2"},
		{[]string{"connection", "update", "direct", "--ssh-hop-known-host", "1=ssh-ed25519 AAAA"},
			"--ssh-hop-known-host 1=...: the connection has no SSH hop: add them with --ssh-hop"},
		{[]string{"connection", "create", "new", "--host", "h", "--database", "d", "--user", "u",
			"--ssh-host", "127.0.0.1", "--ssh-user", "j", "--ssh-hop-known-host", "1=garbage"},
			`--ssh-hop-known-host 1=...: "garbage" is neither`},
		{[]string{"connection", "update", "two", "--ssh-proxy-command", `["socat", 1]`},
			`--ssh-proxy-command: not a JSON array of strings (a number where a string belongs): accepted is a JSON array such as ["socat"`},
		{append(serve, "--listen", "127.0.0.1:99999"), `--listen "127.0.0.1:99999": accepted is host:port`},
		{append(serve, "--metrics-addr", "nonsense"), `--metrics-addr "nonsense": accepted is host:port, e.g. 127.0.0.1:9187`},
		{append(serve, "--tls-cert", missing, "--tls-key", missing), "--tls-cert " + missing + " --tls-key " + missing + ": open " + missing},
		{append(serve, "--public-url", "https://admin:pw-s3cret-neighbour@pgrelay.example.com"),
			`--public-url "https://admin:xxxxx@pgrelay.example.com": user information is not accepted`},
		{append(serve, "--public-url", "https://admin:pw-s3cret-neighbour@[pgrelay"), `--public-url "https://xxxxx@[pgrelay": not a URL`},
		{[]string{"connection", "rotate-key", "two", "--start", "--old-key-lifetime", "-1h"},
			"--old-key-lifetime -1h0m0s: accepted is 1h to 8784h (366 days), e.g. 48h"},
		{[]string{"connection", "rotate-key", "two", "--start", "--old-key-lifetime", "0s"}, "--old-key-lifetime 0s: accepted is 1h to"},
		{[]string{"exec", "direct", "--workdir", missing, "--", "true"}, "--workdir " + missing + ": not a directory here: accepted is an existing directory"},
		// A store URL that cannot be parsed was taken for a missing master
		// key (exit 2 all the same, but naming neither --store nor the URL).
		{[]string{"--store", "postgres://u:pw-s3cret-neighbour@[db/x", "connection", "list"},
			"--store (or PGRELAY_STORE) postgres://xxxxx@[db/x: not a valid PostgreSQL URL; accepted is postgres://USER"},
		{[]string{"--store", "postgres://u:pw-s3cret-neighbour@db:99999999/x", "connection", "list"},
			"--store (or PGRELAY_STORE) postgres://u:xxxxx@db:99999999/x: not a valid PostgreSQL URL"},
		// A password in the query string was quoted as it was.
		{[]string{"--store", "postgres://u@db/x?password=pw-s3cret-neighbour&sslmode=bogus", "connection", "list"},
			"--store (or PGRELAY_STORE) postgres://u@db/x?password=xxxxx&sslmode=bogus: not a valid PostgreSQL URL"},
		{[]string{"--store", "postgresql://u@[db/x?sslpassword=pw-s3cret-neighbour&password=pw-s3cret-neighbour", "connection", "list"},
			"--store (or PGRELAY_STORE) postgresql://xxxxx@[db/x?sslpassword=xxxxx&password=xxxxx: not a valid PostgreSQL URL"},
		{[]string{"backup", "--out", filepath.Join(missing, "b.db")},
			"--out " + filepath.Join(missing, "b.db") + ": the directory " + missing + " does not exist"},
	} {
		r := h.run(c.args...)
		what := strings.Join(c.args, " ")
		if r.code != 2 {
			t.Errorf("%s: exit %d, want 2\n%s", what, r.code, r)
		}
		contains(t, what, r.stderr, c.want)
		if strings.Contains(r.stdout+r.stderr, "pw-s3cret-neighbour") {
			t.Errorf("%s: the output holds the password:\n%s", what, r)
		}
	}
	for n, b := range before {
		if after := h.ok("connection", "show", n, "-o", "json").stdout; after != b {
			t.Errorf("connection %s changed by refused commands:\n%s\n→\n%s", n, b, after)
		}
	}
	// --status without a rotation ever: its state (none yet) and the
	// current key, exit 0, like the other listings.
	contains(t, "no rotation started", h.ok("connection", "rotate-key", "two", "--status").stdout, `No key rotation of "two" yet.`,
		"The current key (SHA256:", strings.TrimSpace(h.ok("connection", "public-key", "two").stdout),
		"pgrelay connection rotate-key two --start")
	// A direct connection has no key: still refused.
	contains(t, "no key", h.fail(2, "connection", "rotate-key", "direct", "--status").stderr, "direct")
}
