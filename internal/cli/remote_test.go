package cli_test

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestRemoteMode runs the CLI against a real API server on loopback
// (PGRELAY_SERVER, PGRELAY_TOKEN): the same commands, through the API.
func TestRemoteMode(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	srv := apitest.Start(t, apitest.Options{})
	h := newHarness(t)
	h.env["PGRELAY_SERVER"] = srv.URL
	h.env["PGRELAY_TOKEN"] = srv.AdminToken
	h.env["DB_PASSWORD"] = pg.Password

	r := h.ok(createArgs("wh", pg, "--sslmode", "disable")...)
	contains(t, "create", r.stdout, `Connection "wh" saved`, "PostgreSQL")
	r = h.ok("connection", "list")
	contains(t, "list", r.stdout, "NAME", "wh", pg.DB)
	r = h.ok("connection", "show", "wh")
	contains(t, "show", r.stdout, "Password:", "set (encrypted at rest)", "none (direct connection)")

	r = h.ok("query", "wh", "select current_user, null::text as n, 1 + 1 as two", "-o", "csv")
	recs, err := csv.NewReader(strings.NewReader(r.stdout)).ReadAll()
	if err != nil || len(recs) != 2 || strings.Join(recs[0], ",") != "current_user,n,two" ||
		strings.Join(recs[1], ",") != pg.User+",,2" {
		t.Fatalf("query csv: %q, %v", recs, err)
	}
	r = h.ok("query", "wh", "select 1 as n, null::text as t", "-o", "json")
	contains(t, "query json", r.stdout, `"n": 1`, `"t": null`)
	r = h.fail(1, "query", "wh", "select * from no_such_table")
	contains(t, "sql error", r.stderr, `relation "no_such_table" does not exist`, "42P01")

	// update keeps the password unless given.
	h.ok("connection", "update", "wh", "--schema", "marts", "--threads", "8")
	contains(t, "updated", h.ok("connection", "show", "wh").stdout, "marts", "Password:", "set (encrypted")
	h.ok("query", "wh", "select 1")
	h.env["DB_PASSWORD"] = "wrong"
	h.ok("connection", "update", "wh", "--password-env", "DB_PASSWORD")
	contains(t, "wrong password", h.fail(1, "query", "wh", "select 1").stderr, "28P01")
	h.env["DB_PASSWORD"] = pg.Password
	h.ok("connection", "update", "wh", "--password-env", "DB_PASSWORD")
	h.ok("query", "wh", "select 1")

	// Validation problems name the flags, as in local mode.
	r = h.fail(2, "connection", "create", "bad", "--host", "db:5432", "--port", "70000", "--database", "d", "--user", "u")
	contains(t, "validation", r.stderr, "--host:", "--port:")
	contains(t, "duplicate", h.fail(2, createArgs("wh", pg)...).stderr, "already exists")
	h.fail(3, "connection", "show", "missing")
	contains(t, "no tunnel", h.fail(2, "connection", "public-key", "wh").stderr, "no SSH tunnel")

	// A tunnelled connection: key, restricted line, setup script, rotation.
	r = h.ok(append(createArgs("tun", pg), "--ssh-host", "127.0.0.1", "--ssh-user", "tunnel")...)
	contains(t, "create with tunnel", r.stdout, "ssh-ed25519 ", "pgrelay:tun", "bastion-setup tun")
	pub := strings.TrimSpace(h.ok("connection", "public-key", "tun").stdout)
	restricted := strings.TrimSpace(h.ok("connection", "public-key", "tun", "--restricted").stdout)
	if !strings.HasPrefix(pub, "ssh-ed25519 ") || restricted != fmt.Sprintf(`restrict,port-forwarding,permitopen="%s:%d" %s`, pg.Host, pg.Port, pub) {
		t.Fatalf("public key %q, restricted %q", pub, restricted)
	}
	r = h.ok("connection", "bastion-setup", "tun")
	contains(t, "bastion setup", r.stdout, "#!/bin/sh", restricted)
	r = h.ok("connection", "rotate-key", "tun")
	contains(t, "rotate", r.stdout, pub)
	contains(t, "trust without pending key", h.fail(2, "connection", "trust-host-key", "tun", "--fingerprint", "SHA256:x").stderr,
		"Error: connection tun has no host key waiting")

	// Tokens, remotely.
	r = h.ok("token", "create", "--role", "viewer", "--name", "looker", "-o", "json")
	var nt struct {
		ID    string    `json:"id"`
		Role  auth.Role `json:"role"`
		Token string    `json:"token"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &nt); err != nil || nt.Role != auth.Viewer || !auth.LooksLikeToken(nt.Token) {
		t.Fatalf("token create: %v\n%s", err, r.stdout)
	}
	contains(t, "token list", h.ok("token", "list").stdout, "looker", "viewer", nt.ID)
	// The text names the server it was made on (it used to name 127.0.0.1:8080 always).
	contains(t, "token create text", h.ok("token", "create", "--role", "viewer", "--name", "bi").stdout,
		"export PGRELAY_SERVER="+srv.URL+" PGRELAY_TOKEN=<token>")

	// A viewer reads but cannot change or query: exit 4 with a clear message.
	v := newHarness(t)
	v.env["PGRELAY_SERVER"] = srv.URL
	v.env["PGRELAY_TOKEN"] = nt.Token
	v.env["DB_PASSWORD"] = "x"
	contains(t, "viewer list", v.ok("connection", "list").stdout, "wh", "tun")
	r = v.fail(4, createArgs("nope", pg)...)
	contains(t, "viewer create", r.stderr, "forbidden", "admin or editor", "viewer", "Ask an admin")
	contains(t, "viewer query", v.fail(4, "query", "wh", "select 1").stderr, "forbidden")
	contains(t, "viewer tokens", v.fail(4, "token", "list").stderr, "forbidden", "admin")

	// Revoked: the viewer's token stops working.
	h.ok("token", "revoke", "looker")
	r = v.fail(4, "connection", "list")
	contains(t, "revoked", r.stderr, "unauthenticated", "PGRELAY_TOKEN")

	// Delete.
	r = h.ok("connection", "delete", "tun", "--yes")
	contains(t, "delete", r.stdout, `Connection "tun" deleted`, "authorized_keys")
	h.fail(3, "connection", "show", "tun")

	// Flags instead of the environment; --server="" forces local mode.
	f := newHarness(t)
	r = f.ok("--server", srv.URL, "--token", srv.AdminToken, "connection", "list")
	contains(t, "flags", r.stdout, "wh")
	r = f.ok("--server=", "connection", "list")
	contains(t, "local", r.stdout, "No connections yet")

	// Commands that need the local data dir refuse remote mode.
	contains(t, "proxy", h.fail(2, "proxy", "wh").stderr, "private key", "PGRELAY_SERVER")
	contains(t, "serve", h.fail(2, "--server", srv.URL, "serve").stderr, "serve does not take --server")

	// Remote mode never touched the local data dir.
	if _, err := os.Stat(filepath.Join(h.dataDir, sqlite.FileName)); !os.IsNotExist(err) {
		t.Fatalf("remote mode created a local store: %v", err)
	}
	if strings.Contains(srv.Logs(), pg.Password) {
		t.Fatal("the password is in the server log")
	}
}

func TestRemoteModeUsageErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.env["PGRELAY_SERVER"] = "http://127.0.0.1:1"
	contains(t, "no token", h.fail(2, "connection", "list").stderr, "needs an API token", "PGRELAY_TOKEN")
	h.env["PGRELAY_TOKEN"] = "not-a-token-value"
	r := h.fail(2, "connection", "list")
	contains(t, "bad token", r.stderr, "does not look like a pgrelay token")
	if strings.Contains(r.stderr, "not-a-token-value") {
		t.Fatal("the token value was echoed")
	}
	h.env["PGRELAY_SERVER"] = "127.0.0.1:8080"
	contains(t, "no scheme", h.fail(2, "connection", "list").stderr, "http://")
	l := newHarness(t)
	contains(t, "token without server", l.fail(2, "--token", "x", "connection", "list").stderr, "--token is used only with --server")
	// A server that is down: exit 1, naming it.
	d := newHarness(t)
	d.env["PGRELAY_SERVER"] = fmt.Sprintf("http://127.0.0.1:%d", testenv.FreePort(t))
	d.env["PGRELAY_TOKEN"] = auth.TokenPrefix + strings.Repeat("A", 43)
	r = d.fail(1, "connection", "list")
	contains(t, "server down", r.stderr, "connection refused", "127.0.0.1")
	if strings.Contains(r.stderr, d.env["PGRELAY_TOKEN"]) {
		t.Fatal("the token is in an error")
	}
}

// TestRemoteQueryTruncated: a query result the server cuts off prints the
// rows up to the cut, then fails (exit 1) with a message that holds for
// both of the server's limits (10,000 rows, 32 MiB of values): it used to
// say "the server returns at most that many" rows also when the byte limit
// cut a result off after 32 rows.
func TestRemoteQueryTruncated(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	srv := apitest.Start(t, apitest.Options{})
	h := newHarness(t)
	h.env["PGRELAY_SERVER"] = srv.URL
	h.env["PGRELAY_TOKEN"] = srv.AdminToken
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(createArgs("wh", pg, "--sslmode", "disable")...)

	r := h.fail(1, "query", "wh", "select generate_series(1, 10001) as n", "-o", "csv")
	if !strings.HasSuffix(r.stdout, "\n9999\n10000\n") {
		t.Fatalf("rows before the cut: %s", r.stdout[max(0, len(r.stdout)-100):])
	}
	contains(t, "row limit", r.stderr, "truncated by the server after 10000 rows", "limit of rows or of bytes", "add a LIMIT")

	// 1 MiB values: the byte limit cuts the result off after 32 rows.
	r = h.fail(1, "query", "wh", "select n, repeat('x', 1 << 20) as v from generate_series(1, 40) as n", "-o", "csv")
	if n := strings.Count(r.stdout, "\n"); n != 33 {
		t.Fatalf("%d lines before the cut, want the header and 32 rows; stderr:\n%s", n, r.stderr)
	}
	contains(t, "byte limit", r.stderr, "truncated by the server after 32 rows", "limit of rows or of bytes")
	if strings.Contains(r.stderr, "at most that many") {
		t.Fatalf("the message blames the row limit: %s", r.stderr)
	}
}

// TestRemoteRefusesPlainHTTP: a server URL of plain http to a host that is
// not this machine is refused as a usage error naming where it came from
// and what is accepted, unless --insecure-http or PGRELAY_INSECURE_HTTP
// allows it; the CLI used to send its token over it. The command, `run
// list --limit 0`, stops at its own flag once past the setup, before any
// request: so nothing is ever dialled, and the error says which check
// stopped it. (192.0.2.1 is a documentation address, never reached.)
func TestRemoteRefusesPlainHTTP(t *testing.T) {
	t.Parallel()
	const token = auth.TokenPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	args := []string{"run", "list", "--limit", "0"}
	pastSetup := "--limit 0: accepted is 1 to 1000"
	for _, tc := range []struct {
		name   string
		env    map[string]string
		flags  []string
		code   int
		stderr []string
	}{
		{"env", map[string]string{"PGRELAY_SERVER": "http://192.0.2.1:8080"}, nil, 2, []string{
			"PGRELAY_SERVER http://192.0.2.1:8080 is plain http to a host that is not this machine",
			"the API token would cross the network unencrypted",
			"Accepted is https://, or http:// to 127.0.0.0/8, ::1 or localhost",
			"--insecure-http (or PGRELAY_INSECURE_HTTP=1)"}},
		{"flag", nil, []string{"--server", "http://pgrelay.example.com"}, 2, []string{
			"--server http://pgrelay.example.com is plain http"}},
		// The host is compared as a whole and never resolved.
		{"look-alike", nil, []string{"--server", "http://localhost.example.com:8080"}, 2, []string{"is plain http"}},
		{"mapped", nil, []string{"--server", "http://[::ffff:10.0.0.1]:8080"}, 2, []string{"is plain http"}},
		{"opt-out env", map[string]string{"PGRELAY_SERVER": "http://192.0.2.1:8080", "PGRELAY_INSECURE_HTTP": "1"}, nil, 2, []string{pastSetup}},
		{"opt-out flag", nil, []string{"--server", "http://192.0.2.1:8080", "--insecure-http"}, 2, []string{pastSetup}},
		{"flag wins over env", map[string]string{"PGRELAY_INSECURE_HTTP": "1"}, []string{"--server", "http://192.0.2.1", "--insecure-http=false"}, 2, []string{"is plain http"}},
		{"bad opt-out", map[string]string{"PGRELAY_SERVER": "http://192.0.2.1", "PGRELAY_INSECURE_HTTP": "yes"}, nil, 2, []string{
			`PGRELAY_INSECURE_HTTP="yes": accepted are 1 or true`}},
		{"opt-out without server", nil, []string{"--insecure-http"}, 2, []string{"--insecure-http is used only with --server"}},
		{"https", nil, []string{"--server", "https://192.0.2.1"}, 2, []string{pastSetup}},
		{"loopback", nil, []string{"--server", "http://127.0.0.2:8080"}, 2, []string{pastSetup}},
		{"localhost", nil, []string{"--server", "http://LOCALHOST:8080"}, 2, []string{pastSetup}},
		{"ipv6 loopback", nil, []string{"--server", "http://[::1]:8080"}, 2, []string{pastSetup}},
	} {
		h := newHarness(t)
		h.env["PGRELAY_TOKEN"] = token
		for k, v := range tc.env {
			h.env[k] = v
		}
		r := h.run(append(append([]string(nil), tc.flags...), args...)...)
		if r.code != tc.code {
			t.Errorf("%s: want exit %d, got %s", tc.name, tc.code, r)
			continue
		}
		contains(t, tc.name, r.stderr, tc.stderr...)
		if strings.Contains(r.stdout+r.stderr, token) {
			t.Errorf("%s: the token is in the output: %s", tc.name, r)
		}
	}
}
