package cli_test

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"testing"
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
