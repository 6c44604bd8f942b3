package web_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/auth"
)

// TestAuditPageRefusalRecorded: the Audit page refused to a signed-in
// viewer or editor is in the audit log as access.refused (class
// forbidden, by the page's route pattern, as that token), as every other
// page refused to a role is.
func TestAuditPageRefusalRecorded(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	for _, role := range []auth.Role{auth.Viewer, auth.Editor} {
		c := s.client(t)
		c.mustLogin(s.Tokens[role].Token)
		if r := c.get("/audit?target=x"); r.Status != http.StatusForbidden || !strings.Contains(r.Body, "only admins can read the audit log") {
			t.Fatalf("%s GET /audit: %d", role, r.Status)
		}
	}
	recs, err := s.store.AuditAfter(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, rec := range recs {
		if rec.Action != "access.refused" {
			continue
		}
		if rec.Target != "GET /audit" || rec.Error != "forbidden" || rec.Outcome != "failed" || rec.Client == "" {
			t.Errorf("refusal record %+v", rec)
		}
		got[rec.Actor.Name] = true
	}
	for _, role := range []auth.Role{auth.Viewer, auth.Editor} {
		if !got[s.Tokens[role].Name] {
			t.Errorf("the %s's refused GET /audit is not in the audit log (refusals recorded for %v)", role, got)
		}
	}
}
