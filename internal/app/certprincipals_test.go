package app_test

import (
	"context"
	"errors"
	osuser "os/user"
	"slices"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestCertificatePrincipals: pgrelay's SSH CA signs certificates only for
// the bastion users of its list. sshd's TrustedUserCAKeys accepts a
// certificate for any local user it names, so without the list an editor
// could log in as any user of every bastion that trusts the CA by naming
// it. With the list, a certificate connection (or a draft test) naming
// another user is refused with a field error on that hop's user; a
// connection saved before the list changed gets no certificate: the error
// names the hop, the user and the fix, and the bastion sees no connection
// at all. An allowed user logs in through a real sshd; only an admin
// changes the list, and each change is audited.
func TestCertificatePrincipals(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	f := newService(t)
	ctx := context.Background()
	svc := f.svc
	editor := auth.WithPrincipal(ctx, &auth.Principal{TokenID: "t-ed", Name: "ed", Role: auth.Editor})
	admin := auth.WithPrincipal(ctx, &auth.Principal{TokenID: "t-ad", Name: "ad", Role: auth.Admin})

	// The bastion's user (testenv's: the current user), and another
	// account of the same machine that sshd would let a certificate in as
	// just as well.
	me, err := osuser.Current()
	if err != nil {
		t.Fatal(err)
	}
	user, intruder := me.Username, "root"
	if user == "root" {
		intruder = "daemon"
	}
	if _, err := svc.InitSSHCA(editor, user); !errors.Is(err, app.ErrForbidden) {
		t.Fatalf("an editor creating the CA: %v, want ErrForbidden", err)
	}
	var ve *app.ValidationError
	for _, bad := range []struct{ principal, want string }{
		{"", "empty"},
		{"dbt,etl", "comma"},
		{"*", "patterns are not accepted"},
		{"dbt etl", "white space"},
		{"dbt\x1b[2J", "control characters"},
		{strings.Repeat("u", 33), "at most 32"},
	} {
		_, err := svc.InitSSHCA(admin, user, bad.principal)
		if !errors.As(err, &ve) || !strings.Contains(ve.Fields()["principals[1]"], bad.want) {
			t.Fatalf("principal %q: %v, want a problem on principals[1] saying %q", bad.principal, err, bad.want)
		}
	}
	if _, err := svc.SSHCA(ctx); !errors.Is(err, app.ErrNotFound) {
		t.Fatalf("a refused init made a CA: %v", err)
	}
	ca, err := svc.InitSSHCA(admin, user)
	if err != nil {
		t.Fatal(err)
	}
	if ca.AnyPrincipal || !slices.Equal(ca.Principals, []string{user}) {
		t.Fatalf("CA made with --principal %s: principals %v, any %v", user, ca.Principals, ca.AnyPrincipal)
	}
	b := testenv.StartBastion(t, testenv.BastionOptions{ExtraConfig: []string{
		"TrustedUserCAKeys " + writeFile(t, "pgrelay_user_ca.pub", ca.PublicKey+"\n")}})
	if b.User != user {
		t.Fatalf("the bastion's user is %s, not the current user %s", b.User, user)
	}
	spec := func(name, hopUser string, next ...connection.Hop) connection.Spec {
		return connection.Spec{Name: name, Host: pg.Host, Port: pg.Port, Database: db.Name, User: db.User,
			Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
			Tunnel: &connection.Tunnel{Host: b.Host, Port: b.Port, User: hopUser, Auth: connection.SSHAuthCertificate, Next: next}}
	}
	refused := func(what string, err error, field, hopUser string) {
		t.Helper()
		if !errors.As(err, &ve) {
			t.Fatalf("%s: %v, want a field error on %s", what, err, field)
		}
		p := ve.Fields()[field]
		for _, want := range []string{`"` + hopUser + `"`, user, "pgrelay ssh-ca principals " + user + " " + hopUser} {
			if !strings.Contains(p, want) {
				t.Fatalf("%s: problem on %s is %q, want it to name %q\n(all: %v)", what, field, p, want, ve.Fields())
			}
		}
	}

	// An editor naming another user is refused, on every hop and in a
	// draft test too.
	_, err = svc.CreateConnection(editor, spec("intruder", intruder))
	refused("create as "+intruder, err, "ssh_tunnel.user", intruder)
	_, err = svc.CreateConnection(editor, spec("intruder", user, connection.Hop{Host: b.Host, Port: b.Port, User: intruder}))
	refused("create with hop 2 as "+intruder, err, "ssh_hops.1.user", intruder)
	_, err = svc.TestDraft(editor, spec("intruder", intruder), "", nil)
	refused("draft test as "+intruder, err, "ssh_tunnel.user", intruder)
	if _, err := svc.GetConnection(ctx, "intruder"); !errors.Is(err, app.ErrNotFound) {
		t.Fatalf("a refused connection was saved: %v", err)
	}

	// An allowed user logs in end to end with a certificate; changing it
	// to another is refused.
	if _, err := svc.CreateConnection(editor, spec("allowed", user)); err != nil {
		t.Fatal(err)
	}
	var sink rowsSink
	if err := svc.Query(editor, "allowed", "select 7", &sink); err != nil || sink.String() != "7" {
		t.Fatalf("query as an allowed principal: %q %v\n%s", sink.String(), err, b.LogTail())
	}
	if log := b.Log(); !strings.Contains(log, "ID pgrelay connection=allowed") {
		t.Fatalf("sshd's log has no certificate login of connection allowed:\n%s", log)
	}
	_, err = svc.UpdateConnection(editor, "allowed", spec("allowed", intruder), nil)
	refused("update to "+intruder, err, "ssh_tunnel.user", intruder)
	_, err = svc.TestDraft(editor, spec("allowed", intruder), "allowed", nil)
	refused("draft test of allowed as "+intruder, err, "ssh_tunnel.user", intruder)

	// Only an admin changes the list.
	if _, err := svc.SetSSHCAPrincipals(editor, app.SSHCAPrincipals{Principals: []string{intruder}}); !errors.Is(err, app.ErrForbidden) {
		t.Fatalf("an editor setting the principals: %v, want ErrForbidden", err)
	}
	if _, err := svc.SetSSHCAPrincipals(editor, app.SSHCAPrincipals{Any: true}); !errors.Is(err, app.ErrForbidden) {
		t.Fatalf("an editor removing the list: %v, want ErrForbidden", err)
	}
	for _, bad := range []struct {
		p           app.SSHCAPrincipals
		field, want string
	}{
		{app.SSHCAPrincipals{}, "principals", "at least one"},
		{app.SSHCAPrincipals{Principals: []string{user}, Any: true}, "any", "not both"},
		{app.SSHCAPrincipals{Principals: []string{user, "a b"}}, "principals[1]", "white space"},
	} {
		if _, err := svc.SetSSHCAPrincipals(admin, bad.p); !errors.As(err, &ve) || !strings.Contains(ve.Fields()[bad.field], bad.want) {
			t.Fatalf("principals %+v: %v, want a problem on %s saying %q", bad.p, err, bad.field, bad.want)
		}
	}

	// The list changes under a saved connection: no certificate is signed
	// for it, and nothing reaches the bastion.
	ca, err = svc.SetSSHCAPrincipals(admin, app.SSHCAPrincipals{Principals: []string{"dbtcloud", "etl", "dbtcloud"}})
	if err != nil || ca.AnyPrincipal || !slices.Equal(ca.Principals, []string{"dbtcloud", "etl"}) {
		t.Fatalf("set principals: %+v %v", ca, err)
	}
	connects := strings.Count(b.Log(), "Connection from")
	for what, use := range map[string]func() error{
		"query": func() error { return svc.Query(editor, "allowed", "select 1", &rowsSink{}) },
		"open":  func() error { _, err := svc.Open(editor, "allowed"); return err },
	} {
		err := use()
		var na *app.PrincipalNotAllowedError
		if !errors.As(err, &na) || !errors.Is(err, app.ErrInvalid) {
			t.Fatalf("%s after the list changed: %v, want a PrincipalNotAllowedError", what, err)
		}
		for _, want := range []string{"SSH bastion " + b.Addr(), `user "` + user + `"`, "dbtcloud, etl",
			"nothing was sent to the bastion", "pgrelay ssh-ca principals dbtcloud etl " + user, "pgrelay connection update allowed --ssh-user USER"} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("%s after the list changed: %q does not say %q", what, err, want)
			}
		}
	}
	if n := strings.Count(b.Log(), "Connection from"); n != connects {
		t.Fatalf("the bastion saw %d connections after the list left its user out:\n%s", n-connects, b.LogTail())
	}
	// The test is a report, not an error: the bastion is reached (with a
	// throwaway key) and its login step fails, naming the user, the
	// principals and both fixes.
	rep, err := svc.TestConnection(editor, "allowed", nil)
	if err != nil {
		t.Fatalf("test after the list changed: %v, want a report", err)
	}
	fs := rep.Failed()
	if fs == nil || fs.ID != diagnose.StepSSHAuth {
		t.Fatalf("test after the list changed failed at %+v, want ssh_auth", fs)
	}
	for _, want := range []string{`user "` + user + `"`, "dbtcloud, etl"} {
		if !strings.Contains(fs.Error, want) {
			t.Fatalf("the ssh_auth step's error %q does not say %q", fs.Error, want)
		}
	}
	for _, want := range []string{"pgrelay ssh-ca principals dbtcloud etl " + user, "pgrelay connection update allowed --ssh-user USER"} {
		if !strings.Contains(fs.Hint, want) {
			t.Fatalf("the ssh_auth step's hint %q does not say %q", fs.Hint, want)
		}
	}
	if rep.Steps[0].Status != diagnose.StatusOK || rep.Steps[1].Status != diagnose.StatusOK {
		t.Fatalf("the test did not reach the bastion: %+v", rep.Steps)
	}

	// A list that does not read fails closed.
	if err := f.store.WithSecrets(ctx, func(tx store.SecretsTx) error {
		return tx.PutMeta(ctx, "ssh_user_ca_principals", []byte(`{"principals": "everyone"}`))
	}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Query(editor, "allowed", "select 1", &rowsSink{}); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("query with a damaged list: %v, want refused", err)
	}
	if _, err := svc.CreateConnection(editor, spec("damaged", user)); !errors.As(err, &ve) ||
		!strings.Contains(ve.Fields()["ssh_tunnel.auth"], "damaged") {
		t.Fatalf("create with a damaged list: %v, want a problem on ssh_tunnel.auth", err)
	}

	// Allowing the user again lets the saved connection in.
	if _, err := svc.SetSSHCAPrincipals(admin, app.SSHCAPrincipals{Principals: []string{"dbtcloud", user}}); err != nil {
		t.Fatal(err)
	}
	if err := svc.Query(editor, "allowed", "select 1", &rowsSink{}); err != nil {
		t.Fatalf("query once the user is allowed again: %v", err)
	}
	// Any principal: as before the list existed, with the warning.
	if ca, err = svc.SetSSHCAPrincipals(admin, app.SSHCAPrincipals{Any: true}); err != nil || !ca.AnyPrincipal || len(ca.Principals) != 0 {
		t.Fatalf("any principal: %+v %v", ca, err)
	}
	if note := ca.PrincipalsNote(); !strings.Contains(note, "editors included") || !strings.Contains(note, "pgrelay ssh-ca principals USER") {
		t.Fatalf("note of a CA that signs for anyone: %q", note)
	}

	// Every change is audited, with who made it and the list.
	recs, err := svc.ListAudit(ctx, audit.Filter{Action: "ssh_ca"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		if strings.HasPrefix(r.Action, "ssh_ca.") && r.Outcome == audit.OK {
			got = append(got, r.Action+" by "+r.Actor.Name+": "+r.Detail)
		}
	}
	slices.Reverse(got) // oldest first
	want := []string{"ssh_ca.init by ad: principals: " + user, "ssh_ca.set_principals by ad: principals: dbtcloud, etl",
		"ssh_ca.set_principals by ad: principals: dbtcloud, " + user, "ssh_ca.set_principals by ad: any principal"}
	if !slices.Equal(got, want) {
		t.Fatalf("audit records:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
