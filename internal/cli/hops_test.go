package cli_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestCLIHops creates a connection through two chained sshd's with
// --ssh-hop, installs the lines of `public-key --restricted` (one per
// hop), queries and tests it (steps named by hop), rotates its key with
// two live keys (show says "new key not installed yet" until the new key
// logs in), and creates the SSH CA.
func TestCLIHops(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	b1 := testenv.StartBastion(t, testenv.BastionOptions{})
	b2 := testenv.StartBastion(t, testenv.BastionOptions{})
	h := newHarness(t)
	h.env["DB_PASSWORD"] = pg.Password
	hop := func(b *testenv.Bastion) string { return b.User + "@" + b.Addr() }

	// --ssh-hop with --ssh-host is refused: the first hop is one.
	r := h.fail(2, append(createArgs("two", pg), "--ssh-hop", hop(b1), "--ssh-host", b1.Host)...)
	contains(t, "--ssh-hop with --ssh-host", r.stderr, "--ssh-hop gives every hop")
	r = h.fail(2, append(createArgs("two", pg), "--ssh-hop", "bastion-without-user")...)
	contains(t, "hop without user", r.stderr, "--ssh-hop (hop 1)", "has no user")

	r = h.ok(append(createArgs("two", pg), "--ssh-hop", hop(b1), "--ssh-hop", hop(b2))...)
	contains(t, "create", r.stdout, "via SSH hops "+hop(b1)+" → "+hop(b2), "one line per hop")
	lines := strings.Split(strings.TrimSpace(h.ok("connection", "public-key", "two", "--restricted").stdout), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `permitopen="`+b2.Addr()+`"`) || !strings.Contains(lines[1], `permitopen="`+pg.Addr()+`"`) {
		t.Fatalf("public-key --restricted: %q", lines)
	}
	b1.Authorize(t, lines[0])
	b2.Authorize(t, lines[1])
	contains(t, "bastion-setup --hop 2", h.ok("connection", "bastion-setup", "two", "--hop", "2").stdout,
		"hop 2 of 2", `permitopen="`+pg.Addr()+`"`)
	h.fail(2, "connection", "bastion-setup", "two", "--hop", "3")

	r = h.ok("query", "two", "select current_user")
	contains(t, "query", r.stdout, pg.User)
	r = h.ok("connection", "test", "two")
	contains(t, "test", r.stdout, "hop 2 of 2 ("+b2.Addr()+"): ssh_auth", "hop 1 of 2 ("+b1.Addr()+"): ssh_handshake")
	r = h.ok("connection", "show", "two")
	contains(t, "show", r.stdout, "Hop 1 of 2:", "Hop 2 of 2:", "(pinned)")

	// Rotation with two live keys.
	r = h.ok("connection", "rotate-key", "two", "--start", "--old-key-lifetime", "24h")
	contains(t, "rotate-key --start", r.stdout, "new key not installed yet", "Hop 1", "Hop 2", `expiry-time="`)
	contains(t, "show during rotation", h.ok("connection", "show", "two").stdout, "new key not installed yet")
	h.ok("query", "two", "select 1") // the old key still logs in
	contains(t, "show after a login with the old key", h.ok("connection", "show", "two").stdout, "new key not installed yet")
	r = h.fail(1, "connection", "rotate-key", "two", "--finish")
	contains(t, "finish too early", r.stderr, "new key not installed yet")
	var newLines []string
	for _, l := range strings.Split(h.ok("connection", "rotate-key", "two", "--status").stdout, "\n") {
		if strings.HasPrefix(l, "restrict,") {
			newLines = append(newLines, l)
		}
	}
	if len(newLines) != 2 {
		t.Fatalf("rotate-key --status printed %d new restricted lines, want 2", len(newLines))
	}
	b1.Authorize(t, newLines[0])
	b2.Authorize(t, newLines[1])
	h.ok("query", "two", "select 1") // promotes the new key
	r = h.ok("connection", "show", "two")
	if strings.Contains(r.stdout, "new key not installed yet") || !strings.Contains(r.stdout, "new key promoted") {
		t.Fatalf("show after the new key logged in:\n%s", r.stdout)
	}
	// --status right after: the rotation finished, when, and the key in
	// use (exit 0), not "no key rotation under way" (exit 2).
	contains(t, "rotate-key --status after the promotion", h.ok("connection", "rotate-key", "two", "--status").stdout,
		`No key rotation of "two" under way: the last one finished `, "promoted by its first login to every hop",
		"The current key (SHA256:", strings.TrimSpace(h.ok("connection", "public-key", "two").stdout))
	contains(t, "rotate-key --status -o json after the promotion", h.ok("connection", "rotate-key", "two", "--status", "-o", "json").stdout,
		`"promoted_at"`, `"promoted_by": "login"`)
	h.fail(2, "connection", "rotate-key", "two", "--start", "--finish")

	// The SSH CA.
	h.fail(3, "ssh-ca", "show")
	r = h.ok("ssh-ca", "init")
	contains(t, "ssh-ca init", r.stdout, "TrustedUserCAKeys", "ssh-ed25519 ")
	// Without --principal the CA signs for any user: init and show say so.
	contains(t, "ssh-ca init without --principal", r.stdout, "Warning: Principals: any.", "editors included",
		"pgrelay ssh-ca principals USER")
	h.fail(2, "ssh-ca", "init")
	r = h.ok("ssh-ca", "show")
	contains(t, "ssh-ca show of a CA without principals", r.stderr, "Warning: Principals: any.", "editors included")
	pub := strings.TrimSpace(r.stdout)
	if !strings.HasPrefix(pub, "ssh-ed25519 ") || !strings.HasSuffix(pub, " pgrelay-ssh-ca") {
		t.Fatalf("ssh-ca show: %q", pub)
	}
	caFile := filepath.Join(t.TempDir(), "ca.pub")
	if err := os.WriteFile(caFile, []byte(pub+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	b3 := testenv.StartBastion(t, testenv.BastionOptions{ExtraConfig: []string{"TrustedUserCAKeys " + caFile}})
	r = h.ok(append(createArgs("cert", pg), "--ssh-host", b3.Host, "--ssh-port", strconv.Itoa(b3.Port), "--ssh-user", b3.User,
		"--ssh-auth", "certificate")...)
	contains(t, "create with certificates", r.stdout, "no authorized_keys entry is needed")
	contains(t, "query with a certificate", h.ok("query", "cert", "select 'ok'").stdout, "ok")
	contains(t, "bastion-setup with certificates", h.ok("connection", "bastion-setup", "cert").stdout, "TrustedUserCAKeys", pub)
}

// TestCLIHopOwnKey: --ssh-hop-own-key gives hop 2 of two chained sshd's a
// key pair of its own. public-key --restricted prints its line for hop 2;
// with only the connection's key on hop 2 the query is refused, naming
// hop 2 and printing its own line; with that line installed it goes
// through. A bad --ssh-hop-own-key is refused naming the flag.
func TestCLIHopOwnKey(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	b1 := testenv.StartBastion(t, testenv.BastionOptions{})
	b2 := testenv.StartBastion(t, testenv.BastionOptions{})
	h := newHarness(t)
	h.env["DB_PASSWORD"] = pg.Password
	hop := func(b *testenv.Bastion) string { return b.User + "@" + b.Addr() }
	chain := append(createArgs("own", pg), "--ssh-hop", hop(b1), "--ssh-hop", hop(b2))

	for _, bad := range []struct{ value, want string }{
		{hop(b1), "that is the first hop"},
		{b2.User + "@elsewhere.internal:22", "is not a hop of the connection"},
		{"no-user-here", "has no user"},
	} {
		r := h.fail(2, append(chain, "--ssh-hop-own-key", bad.value)...)
		contains(t, "--ssh-hop-own-key "+bad.value, r.stderr, "--ssh-hop-own-key", bad.want)
	}
	r := h.fail(2, append(createArgs("one", pg), "--ssh-hop", hop(b1), "--ssh-hop-own-key", hop(b2))...)
	contains(t, "--ssh-hop-own-key with one hop", r.stderr, "the connection has one hop")

	r = h.ok(append(chain, "--ssh-hop-own-key", hop(b2))...)
	contains(t, "create", r.stdout, "Hop 2 ("+hop(b2)+") logs in with a key pair of its own")
	connKey := strings.TrimSpace(h.ok("connection", "public-key", "own").stdout)
	lines := strings.Split(strings.TrimSpace(h.ok("connection", "public-key", "own", "--restricted").stdout), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[0], connKey) || strings.HasSuffix(lines[1], connKey) ||
		!strings.Contains(lines[1], `permitopen="`+pg.Addr()+`"`) {
		t.Fatalf("public-key --restricted with hop 2's own key: %q (connection's key %q)", lines, connKey)
	}
	b1.Authorize(t, lines[0])
	b2.Authorize(t, connKey) // the connection's key only
	r = h.fail(1, "query", "own", "select 1")
	contains(t, "query with hop 2's own key not installed", r.stderr, "hop 2 of 2 ("+b2.Addr()+")", "own public key", lines[1])
	b2.Authorize(t, lines[1])
	contains(t, "query", h.ok("query", "own", "select current_user").stdout, pg.User)
	r = h.ok("connection", "show", "own")
	contains(t, "show", r.stdout, "Hop 2 of 2:", "own key SHA256:")

	// A rotation gives hop 2's own key a new key too: --start prints its new
	// line and its current one with expiry-time; cancelled, it stays.
	r = h.ok("connection", "rotate-key", "own", "--start")
	contains(t, "rotate-key --start", r.stdout, "Hop 2 ("+hop(b2)+") (its own key): add the new line",
		`expiry-time="`, strings.TrimPrefix(lines[1], "restrict,"))
	h.ok("connection", "rotate-key", "own", "--cancel")
	// At once, it is replaced with the connection's key, and its line printed.
	r = h.ok("connection", "rotate-key", "own")
	contains(t, "rotate-key", r.stdout, "Hop 2 ("+hop(b2)+") logs in with its own key, replaced too")
	newLines := strings.Split(strings.TrimSpace(h.ok("connection", "public-key", "own", "--restricted").stdout), "\n")
	if len(newLines) != 2 || newLines[1] == lines[1] || !strings.Contains(r.stdout, newLines[1]) {
		t.Fatalf("hop 2's line after rotate-key: %q (before %q)\n%s", newLines, lines, r.stdout)
	}
	b1.Authorize(t, newLines[0])
	b2.Authorize(t, newLines[1])
	contains(t, "query after rotate-key", h.ok("query", "own", "select 1").stdout, "1")
	lines = newLines
	connKey = strings.TrimSpace(h.ok("connection", "public-key", "own").stdout)
	b2.Authorize(t, connKey) // the connection's new key, for when hop 2 loses its own

	// "" takes the own key away: hop 2 uses the connection's key again.
	h.ok("connection", "update", "own", "--ssh-hop-own-key", "")
	if strings.Contains(h.ok("connection", "show", "own").stdout, "own key") {
		t.Fatal("show still names an own key after --ssh-hop-own-key \"\"")
	}
	lines = strings.Split(strings.TrimSpace(h.ok("connection", "public-key", "own", "--restricted").stdout), "\n")
	if len(lines) != 2 || !strings.HasSuffix(lines[1], connKey) {
		t.Fatalf("public-key --restricted without own keys: %q", lines)
	}
	contains(t, "query with the connection's key on hop 2", h.ok("query", "own", "select 1").stdout, "1")
}
