package cli_test

import (
	"strings"
	"testing"
)

// TestFirstHourWording checks messages a new user meets first: command
// line words (flags, not fields), a duplicate name pointing at `connection
// update`, the next step after create, counted arguments, and a test of a
// missing connection failing before it starts.
func TestFirstHourWording(t *testing.T) {
	t.Parallel()
	h := newHarness(t)

	r := h.ok("connection", "create", "wh", "--host", "db.internal", "--database", "analytics", "--user", "dbt")
	contains(t, "create output", r.stdout, "pgrelay connection test wh")
	r = h.ok("connection", "create", "tun", "--host", "db.internal", "--database", "analytics", "--user", "dbt",
		"--ssh-host", "bastion.internal", "--ssh-user", "pgrelay")
	contains(t, "create output with a tunnel", r.stdout, "pgrelay connection test tun")

	r = h.fail(2, "connection", "create", "wh", "--host", "db.internal", "--database", "analytics", "--user", "dbt")
	contains(t, "duplicate", r.stderr, `"wh" already exists`, "pgrelay connection update wh")

	r = h.fail(2, "connection", "create", "x", "--host", "db.internal:5432", "--database", "d", "--user", "u",
		"--ssh-host", "bastion.internal:2222", "--ssh-user", "pgrelay")
	contains(t, "host with a port", r.stderr, "--host db.internal --port 5432", "--ssh-host bastion.internal --ssh-port 2222")
	if strings.Contains(r.stderr, "field") {
		t.Errorf("a command line error speaks of fields:\n%s", r.stderr)
	}
	r = h.fail(2, "connection", "update", "wh", "--host", "db.internal:6432")
	contains(t, "update host with a port", r.stderr, "--host db.internal --port 6432")

	r = h.fail(2, "connection", "show")
	contains(t, "no argument", r.stderr, "needs NAME, but got none")
	r = h.fail(2, "connection", "show", "a", "b c")
	contains(t, "two arguments", r.stderr, "needs NAME, but got 2 arguments: a 'b c'")
	r = h.fail(2, "query", "wh")
	contains(t, "one argument", r.stderr, "needs NAME and SQL, but got 1 argument: wh")
	r = h.fail(2, "connection", "list", "x")
	contains(t, "extra argument", r.stderr, "takes no arguments, but got 1 argument: x")
	for _, out := range []string{r.stderr} {
		if strings.Contains(out, "1 arguments") {
			t.Errorf("wrong plural: %s", out)
		}
	}

	r = h.fail(3, "connection", "test", "nosuch")
	if strings.Contains(r.stdout, "Testing") {
		t.Errorf("a missing connection was tested:\n%s", r)
	}
	contains(t, "missing connection", r.stderr, "nosuch", "not found")
}
