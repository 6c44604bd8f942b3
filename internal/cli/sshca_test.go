package cli_test

import (
	"encoding/json"
	"os"
	osuser "os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestCLISSHCAPrincipals: `ssh-ca init --principal` gives the CA its list
// of bastion users, `ssh-ca show` and `ssh-ca principals` print it, and
// `ssh-ca principals USER...` / `--any` change it, locally and through a
// server. A certificate connection naming another user is refused naming
// --ssh-user; a saved one whose user the list leaves out is refused
// before anything reaches the bastion; bad input names the flag or
// argument. Through a server, an editor's token may not change the list.
func TestCLISSHCAPrincipals(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	me, err := osuser.Current()
	if err != nil {
		t.Fatal(err)
	}
	user, intruder := me.Username, "root"
	if user == "root" {
		intruder = "daemon"
	}
	for _, mode := range []string{"local", "remote"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			h.env["DB_PASSWORD"] = pg.Password
			var srv *apitest.Server
			if mode == "remote" {
				srv = apitest.Start(t, apitest.Options{})
				h.env["PGRELAY_SERVER"] = srv.URL
				h.env["PGRELAY_TOKEN"] = srv.AdminToken
			}
			r := h.fail(2, "ssh-ca", "init", "--principal", user, "--principal", "dbt,etl")
			contains(t, "init with a comma", r.stderr, "--principal", `"dbt,etl" contains a comma`)
			h.fail(3, "ssh-ca", "show")
			r = h.ok("ssh-ca", "init", "--principal", user)
			contains(t, "init", r.stdout, "TrustedUserCAKeys", "Principals: "+user+".")
			if strings.Contains(r.stdout, "Warning") {
				t.Errorf("init with a principal warns:\n%s", r.stdout)
			}
			r = h.ok("ssh-ca", "show")
			pub := strings.TrimSpace(r.stdout)
			if !strings.HasPrefix(pub, "ssh-ed25519 ") || strings.Contains(pub, "\n") {
				t.Fatalf("ssh-ca show's stdout is not the CA's line alone: %q", r.stdout)
			}
			contains(t, "show's stderr", r.stderr, "Principals: "+user+".")
			var ca app.SSHCAView
			if err := json.Unmarshal([]byte(h.ok("ssh-ca", "show", "-o", "json").stdout), &ca); err != nil ||
				ca.AnyPrincipal || len(ca.Principals) != 1 || ca.Principals[0] != user {
				t.Fatalf("ssh-ca show -o json: %+v %v", ca, err)
			}
			caFile := filepath.Join(t.TempDir(), "ca.pub")
			if err := os.WriteFile(caFile, []byte(pub+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			b := testenv.StartBastion(t, testenv.BastionOptions{ExtraConfig: []string{"TrustedUserCAKeys " + caFile}})
			cert := func(name, hopUser string) []string {
				return append(createArgs(name, pg, "--sslmode", "disable"), "--ssh-host", b.Host, "--ssh-port", strconv.Itoa(b.Port),
					"--ssh-user", hopUser, "--ssh-auth", "certificate")
			}
			r = h.fail(2, cert("intruder", intruder)...)
			contains(t, "create as "+intruder, r.stderr, "--ssh-user", `"`+intruder+`"`, "pgrelay ssh-ca principals "+user+" "+intruder)
			h.ok(cert("cert", user)...)
			contains(t, "query as "+user, h.ok("query", "cert", "select 'in'").stdout, "in")
			// A new key pair needs nothing installed: the hops trust the CA.
			r = h.ok("connection", "rotate-key", "cert")
			contains(t, "rotate-key of a certificate connection", r.stdout, "nothing to install")
			if strings.Contains(r.stdout, "authorized_keys") {
				t.Errorf("rotate-key of a certificate connection asks for authorized_keys:\n%s", r.stdout)
			}
			contains(t, "query after rotate-key", h.ok("query", "cert", "select 'again'").stdout, "again")

			r = h.fail(2, "ssh-ca", "principals", "--any", "dbtcloud")
			contains(t, "--any with users", r.stderr, "--any", "takes no USER arguments")
			r = h.fail(2, "ssh-ca", "principals", "dbtcloud", "a b")
			contains(t, "a principal with a space", r.stderr, "USER argument 2", "white space")
			r = h.ok("ssh-ca", "principals", "dbtcloud", "etl")
			contains(t, "principals set", r.stdout, "SSH CA principals set.", "Principals: dbtcloud, etl.")
			contains(t, "principals", h.ok("ssh-ca", "principals").stdout, "Principals: dbtcloud, etl.")

			connects := strings.Count(b.Log(), "Connection from")
			r = h.fail(2, "query", "cert", "select 1")
			contains(t, "query after the list changed", r.stderr, `user "`+user+`"`, "nothing was sent to the bastion",
				"pgrelay ssh-ca principals dbtcloud etl "+user)
			if n := strings.Count(b.Log(), "Connection from"); n != connects {
				t.Fatalf("the bastion saw %d connections after the list left its user out:\n%s", n-connects, b.LogTail())
			}
			// The test reports it as its failed login step, in JSON too.
			r = h.fail(1, "connection", "test", "cert", "-o", "json")
			contains(t, "test after the list changed", r.stdout, `"id": "ssh_auth"`, `"status": "failed"`,
				"pgrelay connection update cert --ssh-user USER", "pgrelay ssh-ca principals dbtcloud etl "+user)

			if srv != nil {
				h.env["PGRELAY_TOKEN"] = srv.Token(t, "ed", auth.Editor).Token
				h.fail(4, "ssh-ca", "principals", "dbtcloud", intruder)
				h.fail(4, "ssh-ca", "principals", "--any")
				h.env["PGRELAY_TOKEN"] = srv.AdminToken
			}
			r = h.ok("ssh-ca", "principals", "--any")
			contains(t, "--any", r.stdout, "Warning: Principals: any.", "editors included", "pgrelay ssh-ca principals USER")
			if err := json.Unmarshal([]byte(h.ok("ssh-ca", "principals", "-o", "json").stdout), &ca); err != nil ||
				!ca.AnyPrincipal || len(ca.Principals) != 0 {
				t.Fatalf("ssh-ca principals -o json after --any: %+v %v", ca, err)
			}
			contains(t, "show after --any", h.ok("ssh-ca", "show").stderr, "Warning:", "editors included")
			h.ok("query", "cert", "select 1")
		})
	}
}
