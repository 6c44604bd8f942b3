package cli_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestHostKeyAndNetworkFlags drives --ssh-known-host, --host-key-policy
// and --deny-network (and their environment variables) through the
// commands.
func TestHostKeyAndNetworkFlags(t *testing.T) {
	t.Parallel()
	var b *testenv.Bastion
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); b = testenv.SharedBastion(t, testenv.BastionOptions{}) }()
	pg := sharedDB(t)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	h := newHarness(t)
	h.env["DB_PASSWORD"] = pg.Password
	fp := sshkey.Fingerprint(b.HostKey)
	keyLine := sshkey.AuthorizedKey(b.HostKey, "root@bastion")
	authorize := func(name string) {
		b.Authorize(t, strings.TrimSpace(h.ok("connection", "public-key", name).stdout))
	}

	// A key given on create is pinned at once, and create says so (it
	// used to say the key would be pinned on the first connection).
	r := h.ok(append(createArgs("given", pg, tunnelArgs(b)...), "--ssh-known-host", keyLine)...)
	contains(t, "create with a pinned key", r.stdout, "host key "+fp+" is pinned: a different key is refused")
	if strings.Contains(r.stdout, "pinned on the first connection") {
		t.Errorf("create with --ssh-known-host says the key is pinned on the first connection:\n%s", r.stdout)
	}
	authorize("given")
	contains(t, "show", h.ok("connection", "show", "given").stdout, fp+" (pinned)")
	h.ok("query", "given", "select 1")

	// A known_hosts file (as ssh-keyscan writes it) on update.
	h.ok(createArgs("file", pg, tunnelArgs(b)...)...)
	authorize("file")
	kh := filepath.Join(t.TempDir(), "known_hosts")
	if err := os.WriteFile(kh, []byte(fmt.Sprintf("# %s SSH-2.0-OpenSSH\n[%s]:%d %s\n", b.Addr(), b.Host, b.Port, keyLine)), 0o600); err != nil {
		t.Fatal(err)
	}
	h.ok("connection", "update", "file", "--ssh-known-host", "@"+kh)
	contains(t, "show", h.ok("connection", "show", "file").stdout, fp+" (pinned)")
	// Two keys pinned: show names both (it used to name the first only).
	other, err := sshkey.Generate(sshkey.Ed25519, "next")
	if err != nil {
		t.Fatal(err)
	}
	otherLine := sshkey.AuthorizedKey(other.Public, "next")
	h.ok("connection", "update", "file", "--ssh-known-host", otherLine+"\n"+keyLine)
	contains(t, "show two pins", h.ok("connection", "show", "file").stdout,
		sshkey.Fingerprint(other.Public)+", "+fp+" (pinned; any of them is accepted)")
	h.ok("query", "file", "select 1")

	// Bad input names the flag and what is accepted.
	r = h.fail(2, append(createArgs("bad", pg, tunnelArgs(b)...), "--ssh-known-host", fp)...)
	contains(t, "bad key", r.stderr, "--ssh-known-host:", "is a fingerprint", "accepted is the bastion's public host key")
	r = h.fail(2, append(createArgs("bad", pg, tunnelArgs(b)...), "--ssh-known-host", "other.example.com "+keyLine)...)
	contains(t, "other host", r.stderr, "--ssh-known-host:", "not for this bastion")
	h.fail(2, "connection", "update", "given", "--no-ssh-tunnel", "--ssh-known-host", keyLine)

	// --host-key-policy approve: the first key waits for approval.
	h.ok(createArgs("fresh", pg, tunnelArgs(b)...)...)
	authorize("fresh")
	r = h.fail(1, "--host-key-policy", "approve", "query", "fresh", "select 1")
	contains(t, "approve", r.stderr, "not approved yet", "pgrelay connection trust-host-key fresh --fingerprint "+fp)
	contains(t, "show", h.ok("connection", "show", "fresh").stdout, "PENDING:", fp)
	// A first key waiting is new, not a change (which would suggest an interception).
	if list := h.ok("connection", "list").stdout; !regexp.MustCompile(`fresh .*NEW \(approval needed\)`).MatchString(list) {
		t.Fatalf("connection list with a first key waiting:\n%s", list)
	}
	r = h.run("--host-key-policy", "approve", "connection", "test", "fresh")
	contains(t, "test under approve", r.stdout+r.stderr, "ssh_handshake", "--host-key-policy approve")
	h.ok("connection", "trust-host-key", "fresh", "--fingerprint", fp)
	h.ok("--host-key-policy", "approve", "query", "fresh", "select 1")

	// The same from the environment; the flag wins over it.
	h.ok(createArgs("envpol", pg, tunnelArgs(b)...)...)
	authorize("envpol")
	h.env["PGRELAY_HOST_KEY_POLICY"] = "approve"
	h.fail(1, "query", "envpol", "select 1")
	h.ok("--host-key-policy", "tofu", "query", "envpol", "select 1")
	delete(h.env, "PGRELAY_HOST_KEY_POLICY")
	r = h.fail(2, "--host-key-policy", "ask", "connection", "list")
	contains(t, "bad policy", r.stderr, "--host-key-policy", `"ask" is not accepted: use tofu`, "or approve")

	// --deny-network: the database on 127.0.0.2 is refused, on 127.0.0.1 not.
	alias := testenv.TCPRelay(t, "127.0.0.2", net.JoinHostPort(pg.Host, strconv.Itoa(pg.Port)))
	h.ok("connection", "create", "alias", "--host", "127.0.0.2", "--port", strconv.Itoa(alias), "--database", pg.DB,
		"--user", pg.User, "--password-env", "DB_PASSWORD", "--sslmode", "disable")
	h.ok(createArgs("plain", pg, "--sslmode", "disable")...)
	h.ok("query", "alias", "select 1")
	r = h.fail(1, "--deny-network", "127.0.0.2/32", "query", "alias", "select 1")
	contains(t, "denied", r.stderr, "127.0.0.2", "refused by pgrelay's network policy", "--deny-network 127.0.0.2/32")
	h.ok("--deny-network", "127.0.0.2/32", "query", "plain", "select 1")
	h.env["PGRELAY_DENY_NETWORK"] = "10.0.0.0/8, 127.0.0.0/24"
	h.fail(1, "query", "alias", "select 1")
	r = h.run("connection", "test", "alias")
	contains(t, "test", r.stdout+r.stderr, "resolve", "--deny-network 127.0.0.0/24")
	if r.code == 0 {
		t.Errorf("connection test of a denied address passed: %s", r)
	}
	// The narrower allowed range wins.
	h.ok("--allow-network", "127.0.0.2", "query", "alias", "select 1")
	delete(h.env, "PGRELAY_DENY_NETWORK")
	r = h.fail(2, "--deny-network", "db.example.com", "connection", "list")
	contains(t, "bad range", r.stderr, "--deny-network", `"db.example.com" is not accepted`, "CIDR")
	r = h.fail(2, "--deny-network", "10.0.0.0/8", "--allow-network", "10.0.0.0/8", "connection", "list")
	contains(t, "conflict", r.stderr, "given to both")

	// Against a server these flags belong to the server.
	h.env["PGRELAY_TOKEN"] = "pgr_" + strings.Repeat("x", 43)
	r = h.fail(2, "--server", "http://127.0.0.1:1", "--host-key-policy", "approve", "connection", "list")
	contains(t, "remote", r.stderr, "pgrelay serve --host-key-policy")
}
