package cli_test

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/sshkey"
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

// TestRotateKeyStartPrintsLocalExpiryForm: `rotate-key --start` prints the
// old line with expiry-time in UTC ("…Z", OpenSSH 8.5 and later) and the
// command that prints the form for sshd before 8.5 (which refuses the Z
// and the whole line with it): run on a host in UTC+5:30, whose sshd is in
// that zone too, it gives the same instant, and the old line with it lets
// the old key log in.
func TestRotateKeyStartPrintsLocalExpiryForm(t *testing.T) {
	t.Parallel()
	const tz = "XST-5:30"
	pg := sharedDB(t)
	b := testenv.StartBastion(t, testenv.BastionOptions{TZ: tz})
	h := newHarness(t)
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(append(createArgs("le", pg), tunnelArgs(b)...)...)
	b.SetAuthorizedKeys(t, strings.TrimSpace(h.ok("connection", "public-key", "le", "--restricted").stdout))
	h.ok("query", "le", "select 1")

	out := h.ok("connection", "rotate-key", "le", "--start", "--old-key-lifetime", "2h").stdout
	var withExpiry, command string
	for l := range strings.SplitSeq(out, "\n") {
		if strings.HasPrefix(l, "expiry-time=") && strings.Contains(l, "restrict,") {
			withExpiry = l
		}
		if c, _, ok := strings.Cut(strings.TrimSpace(l), "   (BSD:"); ok && strings.HasPrefix(c, "date -d @") {
			command = c
		}
	}
	m := regexp.MustCompile(`^expiry-time="([0-9]{14})Z"(,.*)$`).FindStringSubmatch(withExpiry)
	if m == nil || command == "" {
		t.Fatalf("rotate-key --start printed no old line with expiry-time=\"…Z\" (%q) or no command for the local form:\n%s", withExpiry, out)
	}
	cmd := exec.Command("sh", "-c", command)
	cmd.Env = append(os.Environ(), "TZ="+tz)
	local, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", command, err)
	}
	v := strings.TrimSpace(string(local))
	utc, err1 := time.Parse(sshkey.LocalExpiryTimeFormat, m[1])
	at, err2 := time.ParseInLocation(sshkey.LocalExpiryTimeFormat, v, time.FixedZone("XST", 5*3600+30*60))
	if err1 != nil || err2 != nil || !at.Equal(utc) {
		t.Fatalf("%s in UTC+5:30 printed %q (%v), want %s UTC in that zone (%v)", command, v, err2, m[1], err1)
	}
	b.SetAuthorizedKeys(t, `expiry-time="`+v+`"`+m[2])
	h.ok("query", "le", "select 1") // the old key, with the local form
}
