package app_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/auth"
)

// TestRefusedChangeAuditedAsForbidden: a change the role allows the route
// for but not the change itself (an editor creating the SSH CA, or
// replacing a pinned host key) is audited as refused, with the class
// "forbidden", as a route refused to the role is (access.refused). It was
// recorded as failed with the class "error", which reads as pgrelay's own
// failure and hides the refusal from a search for them.
func TestRefusedChangeAuditedAsForbidden(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := context.Background()
	editor := auth.WithPrincipal(ctx, &auth.Principal{TokenID: "t-ed", Name: "ed", Role: auth.Editor})
	if _, err := f.svc.InitSSHCA(editor, "dbtcloud"); !errors.Is(err, app.ErrForbidden) {
		t.Fatalf("an editor creating the CA: %v, want ErrForbidden", err)
	}
	recs, err := f.svc.ListAudit(ctx, audit.Filter{Action: "ssh_ca"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.Action+" by "+r.Actor.Name+": "+string(r.Outcome)+" ("+r.Error+")")
	}
	if want := "ssh_ca.init by ed: failed (forbidden)"; len(got) != 1 || got[0] != want {
		t.Fatalf("audit records of the refused change:\n%s\nwant %s", strings.Join(got, "\n"), want)
	}
}
