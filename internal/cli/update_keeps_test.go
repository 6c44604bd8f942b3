package cli_test

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/api/apitest"
)

// showJSON is `connection show NAME -o json` as a map, without what every
// update changes (updated_at) and what a test of the connection records
// (health).
func (h *harness) showJSON(name string) map[string]any {
	h.t.Helper()
	var v map[string]any
	if err := json.Unmarshal([]byte(h.ok("connection", "show", name, "-o", "json").stdout), &v); err != nil {
		h.t.Fatal(err)
	}
	delete(v, "updated_at")
	delete(v, "health")
	return v
}

// TestCLIUpdateKeepsWhatIsNotGiven: `connection update NAME` with one flag
// changes that setting and nothing else of a chain of hops with an own key
// pair on hop 2: giving the hops again with --ssh-hop (to add one, or change
// another) keeps hop 2's own key pair, as the hop stays.
func TestCLIUpdateKeepsWhatIsNotGiven(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.env["DB_PASSWORD"] = "pw-1"
	h.ok("connection", "create", "own", "--host", "db.internal", "--database", "analytics", "--user", "dbt",
		"--password-env", "DB_PASSWORD", "--schema", "marts", "--threads", "7", "--health-check-interval", "20m",
		"--require-auth", "scram-sha-256", "--ssh-keepalive-interval", "45s",
		"--ssh-hop", "jump@bastion-a.internal:2222", "--ssh-hop", "u2@bastion-b.internal", "--ssh-hop-own-key", "u2@bastion-b.internal",
		"--ssh-proxy-command", `["sh", "-c", "exec nc bastion-a.internal 2222"]`)
	cases := []struct {
		name string
		args []string
		// changed are the top-level keys the update may change.
		changed []string
		check   func(t *testing.T, before, after map[string]any)
	}{
		{name: "threads", args: []string{"--threads", "3"}, changed: []string{"threads"}},
		{name: "same hops again", args: []string{"--ssh-hop", "jump@bastion-a.internal:2222", "--ssh-hop", "u2@bastion-b.internal"}},
		{name: "a hop added", args: []string{"--ssh-hop", "jump@bastion-a.internal:2222", "--ssh-hop", "u2@bastion-b.internal",
			"--ssh-hop", "u3@bastion-c.internal", "--password-env", "DB_PASSWORD"}, changed: []string{"ssh_hops"},
			check: func(t *testing.T, before, after map[string]any) {
				b, a := before["ssh_hops"].([]any), after["ssh_hops"].([]any)
				if len(a) != 3 || !reflect.DeepEqual(a[:2], b) {
					t.Errorf("ssh_hops after adding a third hop:\n%v\nwant the first two as before:\n%v", a, b)
				}
			}},
	}
	for _, tc := range cases {
		before := h.showJSON("own")
		h.ok(append([]string{"connection", "update", "own"}, tc.args...)...)
		after := h.showJSON("own")
		for _, k := range slices.Sorted(maps.Keys(before)) {
			if slices.Contains(tc.changed, k) {
				continue
			}
			if !reflect.DeepEqual(before[k], after[k]) {
				t.Errorf("%s: update changed %s:\n%v\nwas\n%v", tc.name, k, after[k], before[k])
			}
		}
		if tc.check != nil {
			tc.check(t, before, after)
		}
	}
}

// TestCLIUpdateNothingToChange: `connection update NAME` without a flag,
// or with flags that repeat the settings, says the connection is
// unchanged and writes nothing (updated_at stays), locally and through a
// server's PUT; exit 0. A change still says "updated".
func TestCLIUpdateNothingToChange(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	for _, remote := range []bool{false, true} {
		h := newHarnessOn(t, srv, remote)
		h.env["DB_PASSWORD"] = "pw-1"
		h.ok("connection", "create", "same", "--host", "db.internal", "--database", "analytics", "--user", "dbt",
			"--password-env", "DB_PASSWORD", "--schema", "marts",
			"--ssh-hop", "jump@bastion-a.internal:2222", "--ssh-hop", "u2@bastion-b.internal", "--ssh-hop-own-key", "u2@bastion-b.internal")
		updatedAt := func() string {
			var v struct {
				UpdatedAt string `json:"updated_at"`
			}
			if err := json.Unmarshal([]byte(h.ok("connection", "show", "same", "-o", "json").stdout), &v); err != nil {
				t.Fatal(err)
			}
			return v.UpdatedAt
		}
		was := updatedAt()
		r := h.ok("connection", "update", "same")
		contains(t, "no flag", r.stdout, `Connection "same" unchanged: no flag was given`)
		r = h.ok("connection", "update", "same", "--schema", "marts", "--ssh-port", "2222")
		contains(t, "the same settings", r.stdout, `Connection "same" unchanged: it already has the settings given`)
		if now := updatedAt(); now != was {
			t.Errorf("remote %v: an update with nothing to change moved updated_at from %s to %s", remote, was, now)
		}
		contains(t, "a change", h.ok("connection", "update", "same", "--schema", "staging").stdout, `Connection "same" updated.`)
		if updatedAt() == was {
			t.Errorf("remote %v: a change kept updated_at", remote)
		}
	}
}

// TestCLIUpdateDroppingOwnKeySaysToInstall: `--ssh-hop-own-key ""` drops
// hop 2's own key pair; the hop now logs in with the connection's key, so
// the update says so and prints the connection's line for that hop (its
// line of `connection public-key NAME --restricted`), locally and
// through a server.
func TestCLIUpdateDroppingOwnKeySaysToInstall(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	for _, remote := range []bool{false, true} {
		h := newHarnessOn(t, srv, remote)
		h.ok("connection", "create", "own", "--host", "db.internal", "--database", "analytics", "--user", "dbt",
			"--ssh-hop", "jump@bastion-a.internal:2222", "--ssh-hop", "u2@bastion-b.internal", "--ssh-hop", "u3@bastion-c.internal",
			"--ssh-hop-own-key", "u2@bastion-b.internal")
		r := h.ok("connection", "update", "own", "--ssh-hop-own-key", "")
		lines := strings.Split(strings.TrimSpace(h.ok("connection", "public-key", "own", "--restricted").stdout), "\n")
		if len(lines) != 3 {
			t.Fatalf("public-key --restricted: %q", lines)
		}
		contains(t, "own key dropped", r.stdout, "Hop 2 (u2@bastion-b.internal:22) no longer has a key pair of its own",
			"it now logs in with the connection's key", "~u2/.ssh/authorized_keys", "\n"+lines[1]+"\n",
			"pgrelay connection bastion-setup own --hop 2")
		if strings.Contains(r.stdout, "Hop 3") || strings.Contains(r.stdout, "Hop 1") {
			t.Errorf("remote %v: a notice for a hop whose key did not change:\n%s", remote, r.stdout)
		}
		// Nothing dropped, nothing said.
		if r := h.ok("connection", "update", "own", "--schema", "marts"); strings.Contains(r.stdout, "no longer has") {
			t.Errorf("remote %v: notice without a dropped key:\n%s", remote, r.stdout)
		}
	}
}

// TestCLIUpdateGivingOwnKeySaysToInstall: `--ssh-hop-own-key` on an
// update gives hop 3 a new key pair of its own, which the hop refuses
// until its line is installed; the update says so and prints that line
// (its line of `connection public-key NAME --restricted`), locally and
// through a server. It used to say only "updated", and the next run
// failed at hop 3's login.
func TestCLIUpdateGivingOwnKeySaysToInstall(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	for _, remote := range []bool{false, true} {
		h := newHarnessOn(t, srv, remote)
		h.ok("connection", "create", "gain", "--host", "db.internal", "--database", "analytics", "--user", "dbt",
			"--ssh-hop", "jump@bastion-a.internal:2222", "--ssh-hop", "u2@bastion-b.internal", "--ssh-hop", "u3@bastion-c.internal")
		r := h.ok("connection", "update", "gain", "--ssh-hop-own-key", "u3@bastion-c.internal")
		lines := strings.Split(strings.TrimSpace(h.ok("connection", "public-key", "gain", "--restricted").stdout), "\n")
		if len(lines) != 3 {
			t.Fatalf("public-key --restricted: %q", lines)
		}
		contains(t, "own key given", r.stdout, "Hop 3 (u3@bastion-c.internal:22) now logs in with a key pair of its own",
			"~u3/.ssh/authorized_keys", "\n"+lines[2]+"\n", "pgrelay connection bastion-setup gain --hop 3")
		if strings.Contains(r.stdout, "Hop 2") || strings.Contains(r.stdout, "Hop 1") {
			t.Errorf("remote %v: a notice for a hop whose key did not change:\n%s", remote, r.stdout)
		}
		// A hop that keeps its own key: nothing said.
		if r := h.ok("connection", "update", "gain", "--schema", "marts"); strings.Contains(r.stdout, "of its own") {
			t.Errorf("remote %v: notice without a new key:\n%s", remote, r.stdout)
		}
		h.ok("connection", "delete", "gain", "--yes")
	}
}

// TestCLIUpdateChainChangeSaysToInstall: an update that changes where a
// hop may forward to (a hop added after it, the database moved) changes
// that hop's restricted authorized_keys line, and a hop added to the chain
// needs one: the update says so for those hops and prints their lines,
// locally and through a server. It used to say only "updated", and the
// next run was refused by the hop ("administratively prohibited").
func TestCLIUpdateChainChangeSaysToInstall(t *testing.T) {
	t.Parallel()
	srv := apitest.Start(t, apitest.Options{})
	for _, remote := range []bool{false, true} {
		h := newHarnessOn(t, srv, remote)
		h.ok("connection", "create", "moved", "--host", "db.internal", "--database", "analytics", "--user", "dbt",
			"--ssh-hop", "jump@bastion-a.internal:2222", "--ssh-hop", "u2@bastion-b.internal")
		lines := func() []string {
			l := strings.Split(strings.TrimSpace(h.ok("connection", "public-key", "moved", "--restricted").stdout), "\n")
			if len(l) != 3 {
				t.Fatalf("public-key --restricted: %q", l)
			}
			return l
		}
		r := h.ok("connection", "update", "moved", "--ssh-hop", "jump@bastion-a.internal:2222", "--ssh-hop", "u2@bastion-b.internal",
			"--ssh-hop", "u3@bastion-c.internal")
		l := lines()
		contains(t, "hop added", r.stdout, "Hop 2 (u2@bastion-b.internal:22): its line changed", "\n"+l[1]+"\n",
			"Hop 3 (u3@bastion-c.internal:22): it is new in the chain", "\n"+l[2]+"\n", "~u3/.ssh/authorized_keys",
			"pgrelay connection bastion-setup moved --hop 3")
		if strings.Contains(r.stdout, "Hop 1") {
			t.Errorf("remote %v: a notice for hop 1, whose line did not change:\n%s", remote, r.stdout)
		}
		r = h.ok("connection", "update", "moved", "--port", "5433")
		contains(t, "database moved", r.stdout, "Hop 3 (u3@bastion-c.internal:22): its line changed", "\n"+lines()[2]+"\n")
		if strings.Contains(r.stdout, "Hop 1") || strings.Contains(r.stdout, "Hop 2") {
			t.Errorf("remote %v: a notice for a hop whose line did not change:\n%s", remote, r.stdout)
		}
		if r := h.ok("connection", "update", "moved", "--schema", "marts"); strings.Contains(r.stdout, "Hop ") {
			t.Errorf("remote %v: notice without a changed line:\n%s", remote, r.stdout)
		}
		h.ok("connection", "delete", "moved", "--yes")
	}
}
