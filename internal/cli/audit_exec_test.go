package cli_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestExecAuditOutcome: `pgrelay exec` is recorded with the outcome of
// opening its connection: failed (with the class) when the connection
// does not exist or the bastion refuses the key, so that the program
// never ran; ok when it opened (whatever the program then does).
func TestExecAuditOutcome(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	b := testenv.SharedBastion(t, testenv.BastionOptions{})
	h := newHarness(t)
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(append(createArgs("wh", pg), tunnelArgs(b)...)...)

	if r := h.run("exec", "nosuch", "--", "true"); r.code == 0 {
		t.Fatalf("exec over a missing connection succeeded: %s", r)
	}
	if r := h.run("exec", "wh", "--", "true"); r.code == 0 { // key not installed yet
		t.Fatalf("exec with a key the bastion refuses succeeded: %s", r)
	}
	b.Authorize(t, strings.TrimSpace(h.ok("connection", "public-key", "wh").stdout))
	if r := h.run("exec", "wh", "--", "sh", "-c", "exit 7"); r.code != 7 {
		t.Fatalf("exec exit code = %d, want 7: %s", r.code, r)
	}

	var recs []audit.Record
	if err := json.Unmarshal([]byte(h.ok("audit", "list", "--action", "connection.exec", "-o", "json").stdout), &recs); err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := len(recs) - 1; i >= 0; i-- {
		got = append(got, fmt.Sprintf("%s %s %s", recs[i].Target, recs[i].Outcome, recs[i].Error))
	}
	want := []string{"nosuch failed not_found", "wh failed ssh_auth", "wh ok "}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("exec records (oldest first) = %q, want %q", got, want)
	}
}

// TestLocalJobRunRefusedAudited: a local `pgrelay job run` of a job that
// does not exist is recorded as a failed run.start, as the API records
// one, not left out of the audit log.
func TestLocalJobRunRefusedAudited(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	if r := h.run("job", "run", "nosuch"); r.code == 0 {
		t.Fatalf("local run of a missing job succeeded: %s", r)
	}
	var recs []audit.Record
	if err := json.Unmarshal([]byte(h.ok("audit", "list", "--action", "run.start", "-o", "json").stdout), &recs); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Target != "nosuch" || recs[0].Outcome != audit.Failed || recs[0].Error != "not_found" ||
		recs[0].Actor.Kind != audit.ActorLocal || recs[0].Detail != "local" {
		t.Fatalf("run.start records: %+v", recs)
	}
}
