package cli_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestManInTheMiddleRefusedOnEveryPath pins a bastion's host key, then puts
// a server with another host key at the same address (the bastion's key is
// replaced): every path that opens the connection must refuse it, naming
// both fingerprints, and nothing may reach the database.
func TestManInTheMiddleRefusedOnEveryPath(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	b := testenv.StartBastion(t, testenv.BastionOptions{})
	h := newHarness(t)
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(append(createArgs("wh", pg), tunnelArgs(b)...)...)
	b.Authorize(t, strings.TrimSpace(h.ok("connection", "public-key", "wh").stdout))
	h.ok("query", "wh", "select 1") // pins the real key
	pinned := sshkey.Fingerprint(b.HostKey)
	// Approving the pinned key says it is pinned already, in plain words
	// (no API category before them).
	r := h.fail(2, "connection", "trust-host-key", "wh", "--fingerprint", pinned)
	contains(t, "trust the pinned key", r.stderr, "Error: host key "+pinned+" is already pinned for "+b.Addr()+
		" of connection wh: nothing to approve")
	if strings.Contains(r.stderr, "invalid request") || strings.Contains(r.stderr, "no host key waiting") {
		t.Errorf("trust-host-key of the pinned key:\n%s", r.stderr)
	}

	b.RotateHostKey(t) // the impostor: same address, another key
	impostor := sshkey.Fingerprint(b.HostKey)
	marker := filepath.Join(t.TempDir(), "ran")
	jobsFile := filepath.Join(t.TempDir(), "jobs.yaml")
	if err := os.WriteFile(jobsFile, []byte("jobs:\n  - name: j\n    connection: wh\n    steps:\n      - command: [touch, "+marker+"]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.ok("job", "apply", "-f", jobsFile)

	check := func(what string, r result) {
		t.Helper()
		if r.code == 0 {
			t.Fatalf("%s succeeded through a bastion with a changed host key: %s", what, r)
		}
		out := r.stdout + r.stderr
		for _, want := range []string{pinned, impostor} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: output does not name fingerprint %s:\n%s", what, want, out)
			}
		}
	}
	check("connection test", h.run("connection", "test", "wh"))
	check("query", h.run("query", "wh", "select 1"))
	check("exec", h.run("exec", "wh", "--", "touch", marker))
	check("job run", h.run("job", "run", "j", "--allow-command", "touch"))
	port := testenv.FreePort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	check("proxy", h.runCtx(ctx, "", "proxy", "wh", "--listen", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))))
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a command ran through the impostor")
	}
	// The pin is unchanged and the impostor's key waits for approval.
	r = h.ok("connection", "show", "wh")
	contains(t, "show", r.stdout, pinned+" (pinned)", "CHANGED", impostor)
}
