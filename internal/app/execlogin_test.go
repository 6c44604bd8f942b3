package app_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestExecNeverSeesStoredPassword: `pgrelay exec` of a connection with a
// stored password, direct and through a bastion, hands the program a
// password of the run's own as PGPASSWORD, never the stored one, and the
// program's psql logs in through the endpoint all the same, as the
// connection's user.
func TestExecNeverSeesStoredPassword(t *testing.T) {
	if _, err := exec.LookPath("psql"); err != nil {
		t.Skip("psql not installed")
	}
	t.Parallel()
	pg, b := startPostgresAndBastion(t)
	f := newService(t)
	ctx := context.Background()
	v, err := f.svc.CreateConnection(ctx, tunnelled("tun", pg, b))
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	direct := tunnelled("direct", pg, b)
	direct.Tunnel = nil
	if _, err := f.svc.CreateConnection(ctx, direct); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"direct", "tun"} {
		var stdout, stderr testenv.LogBuffer
		res, err := f.svc.Exec(ctx, app.ExecRequest{Connection: name, Command: []string{"sh", "-c",
			`printf 'pw=%s\n' "$PGPASSWORD"; psql -XAtc "select 'who=' || current_user"`},
			Stdio: &jobs.Stdio{In: strings.NewReader(""), Out: &stdout, Err: &stderr}})
		out := stdout.String()
		if err != nil || res.Status != jobs.Succeeded || !strings.Contains(out, "who="+pg.DB.User+"\n") {
			t.Fatalf("exec %s: %v %s %s\n%s%s", name, err, res.Status, res.Reason, out, stderr.String())
		}
		if strings.Contains(out+stderr.String(), pg.DB.Password) {
			t.Fatalf("exec %s: the program got the stored password", name)
		}
		if pw, _, _ := strings.Cut(strings.TrimPrefix(out, "pw="), "\n"); len(pw) < 32 {
			t.Fatalf("exec %s: PGPASSWORD is %d bytes, want the run's own password:\n%s", name, len(pw), out)
		}
	}
}
