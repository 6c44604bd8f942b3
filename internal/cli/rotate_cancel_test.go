package cli_test

import (
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestRotateKeyCancelRestoresCurrentLine: after `rotate-key --start` the
// admin puts the current key's line with expiry-time in place, as told;
// `rotate-key --cancel` keeps the current key as the only one, so it must
// say to put its line back without expiry-time (printing it), or sshd
// refuses the only key once that time passes. Following what it prints, the
// bastion holds the current key's line without expiry and logins work.
func TestRotateKeyCancelRestoresCurrentLine(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	b := testenv.StartBastion(t, testenv.BastionOptions{})
	h := newHarness(t)
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(append(createArgs("rc", pg), tunnelArgs(b)...)...)
	current := strings.TrimSpace(h.ok("connection", "public-key", "rc", "--restricted").stdout)
	b.SetAuthorizedKeys(t, current)
	h.ok("query", "rc", "select 1")

	var withExpiry string
	for l := range strings.SplitSeq(h.ok("connection", "rotate-key", "rc", "--start", "--old-key-lifetime", "2h").stdout, "\n") {
		if strings.HasPrefix(l, "expiry-time=") && strings.Contains(l, "restrict,") {
			withExpiry = l
		}
	}
	if withExpiry == "" {
		t.Fatal("rotate-key --start printed no restricted old line with expiry-time")
	}
	b.SetAuthorizedKeys(t, withExpiry)
	h.ok("query", "rc", "select 1") // the old key, until its expiry-time

	r := h.ok("connection", "rotate-key", "rc", "--cancel")
	var back []string
	for l := range strings.SplitSeq(r.stdout, "\n") {
		if strings.HasPrefix(l, "restrict,") {
			back = append(back, l)
		}
	}
	if len(back) != 1 || back[0] != current {
		t.Fatalf("rotate-key --cancel printed lines %q, want the current key's line without expiry-time %q:\n%s", back, current, r.stdout)
	}
	contains(t, "rotate-key --cancel", r.stdout, "expiry-time", "bastion-setup rc")
	b.SetAuthorizedKeys(t, back...)
	h.ok("query", "rc", "select 1")
}
