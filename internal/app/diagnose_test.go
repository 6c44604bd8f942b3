package app_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/grants"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// testDB is the shared cluster with the test's own database on it.
type testDB struct {
	*testenv.Postgres
	DB *testenv.Database
}

// startPostgresAndBastion returns the shared cluster with a database of
// the test's own, and the shared bastion.
func startPostgresAndBastion(t *testing.T) (testDB, *testenv.Bastion) {
	t.Helper()
	return startPostgresWith(t, testenv.SharedBastion(t, testenv.BastionOptions{}))
}

// startPostgresAndOwnBastion is startPostgresAndBastion with a bastion of
// the test's own, for tests that change it.
func startPostgresAndOwnBastion(t *testing.T) (testDB, *testenv.Bastion) {
	t.Helper()
	return startPostgresWith(t, testenv.StartBastion(t, testenv.BastionOptions{}))
}

func startPostgresWith(t *testing.T, b *testenv.Bastion) (testDB, *testenv.Bastion) {
	t.Helper()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	return testDB{Postgres: pg, DB: pg.NewDatabase(t)}, b
}

func tunnelled(name string, pg testDB, b *testenv.Bastion) connection.Spec {
	return connection.Spec{Name: name, Host: pg.Host, Port: pg.Port, Database: pg.DB.Name, User: pg.DB.User,
		Password: secret.New(pg.DB.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: b.Host, Port: b.Port, User: b.User}}
}

// TestConnectionTestHostKeys: a test pins the bastion's key on first use,
// records a changed key for approval, and passes again once it is trusted.
func TestConnectionTestHostKeys(t *testing.T) {
	t.Parallel()
	pg, b := startPostgresAndOwnBastion(t) // its host key is rotated
	f := newService(t)
	ctx := context.Background()
	v, err := f.svc.CreateConnection(ctx, tunnelled("wh", pg, b))
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	// Several sessions that first use the bastion at once (two runs of a
	// new connection) all pin the same key: none fails.
	if _, err := f.svc.CreateConnection(ctx, tunnelled("together", pg, b)); err != nil {
		t.Fatal(err)
	}
	if v2, _ := f.svc.GetConnection(ctx, "together"); v2 != nil {
		b.Authorize(t, v2.SSHTunnel.PublicKey)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for range 6 {
		wg.Go(func() {
			sess, err := f.svc.Open(ctx, "together")
			if err == nil {
				_ = sess.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent first use: %v", err)
		}
	}

	var steps []diagnose.StepID
	rep, err := f.svc.TestConnection(ctx, "wh", func(s diagnose.Step) { steps = append(steps, s.ID) })
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || len(steps) != 9 || rep.Server.CurrentUser != pg.DB.User {
		t.Fatalf("first test: ok=%v steps=%v failed=%+v", rep.OK, steps, rep.Failed())
	}
	first := sshkey.Fingerprint(b.HostKey)
	if rep.HostKey.State != diagnose.HostKeyFirstUse {
		t.Fatalf("host key state %s, want first_use", rep.HostKey.State)
	}
	if v, _ := f.svc.GetConnection(ctx, "wh"); v.SSHTunnel.HostKeyFingerprint != first {
		t.Fatalf("not pinned after the first test: %+v", v.SSHTunnel)
	}

	b.RotateHostKey(t)
	second := sshkey.Fingerprint(b.HostKey)
	rep, err = f.svc.TestConnection(ctx, "wh", nil)
	if err != nil {
		t.Fatal(err)
	}
	fail := rep.Failed()
	if fail == nil || fail.ID != diagnose.StepSSHHandshake ||
		!strings.Contains(fail.Hint, "pgrelay connection trust-host-key wh --fingerprint "+second) {
		t.Fatalf("after rotation: %+v", rep.Steps)
	}
	v, _ = f.svc.GetConnection(ctx, "wh")
	if v.SSHTunnel.HostKeyFingerprint != first || v.SSHTunnel.PendingHostKeyFingerprint != second {
		t.Fatalf("after rotation: pinned %s pending %s", v.SSHTunnel.HostKeyFingerprint, v.SSHTunnel.PendingHostKeyFingerprint)
	}
	if _, err := f.svc.TrustHostKey(ctx, "wh", second); err != nil {
		t.Fatal(err)
	}
	if rep, _ = f.svc.TestConnection(ctx, "wh", nil); !rep.OK || rep.HostKey.State != diagnose.HostKeyPinned {
		t.Fatalf("after trusting: %+v", rep.Failed())
	}
	if _, err := f.svc.TestConnection(ctx, "nope", nil); !errors.Is(err, app.ErrNotFound) {
		t.Fatalf("unknown connection: %v", err)
	}
}

// TestDraft: an unsaved form can be tested; without a key pair it stops at
// ssh_auth; based on a saved connection it uses that key and password and
// pins nothing.
func TestDraft(t *testing.T) {
	t.Parallel()
	pg, b := startPostgresAndBastion(t)
	f := newService(t)
	ctx := context.Background()

	rep, err := f.svc.TestDraft(ctx, tunnelled("", pg, b), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if fail := rep.Failed(); fail == nil || fail.ID != diagnose.StepSSHAuth || !errors.Is(fail.Err, diagnose.ErrNoKeyPair) {
		t.Fatalf("draft without key: %+v", rep.Steps)
	}
	if rep.HostKey == nil || rep.HostKey.Fingerprint != sshkey.Fingerprint(b.HostKey) {
		t.Fatalf("draft host key = %+v", rep.HostKey)
	}

	// A direct draft needs nothing saved.
	direct := tunnelled("", pg, b)
	direct.Tunnel = nil
	if rep, err := f.svc.TestDraft(ctx, direct, "", nil); err != nil || !rep.OK {
		t.Fatalf("direct draft: %v %+v", err, rep)
	}

	v, err := f.svc.CreateConnection(ctx, tunnelled("saved", pg, b))
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	draft := tunnelled("", pg, b)
	draft.Password = secret.Value{} // an edit form keeps the saved password
	draft.Database = "postgres"     // the edit being tried
	rep, err = f.svc.TestDraft(ctx, draft, "saved", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.Server.Database != "postgres" {
		t.Fatalf("draft based on saved: %+v", rep.Failed())
	}
	if v, _ := f.svc.GetConnection(ctx, "saved"); v.SSHTunnel.HostKeyFingerprint != "" || v.Database != pg.DB.Name {
		t.Fatalf("testing a draft changed the saved connection: %+v", v)
	}

	bad := direct
	bad.Port = 70000
	var ve *app.ValidationError
	if _, err := f.svc.TestDraft(ctx, bad, "", nil); !errors.As(err, &ve) {
		t.Fatalf("invalid draft: %v", err)
	}
	if _, err := f.svc.TestDraft(ctx, direct, "nope", nil); !errors.Is(err, app.ErrNotFound) {
		t.Fatalf("draft based on unknown connection: %v", err)
	}
}

// TestGrants audits through a saved connection: a user without CONNECT
// gets the GRANT that lets it in; once run, the full audit follows.
func TestGrants(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	d := pg.NewDatabase(t) // its role; the database it lacks CONNECT on:
	locked := d.Name + "_locked"
	pg.CreateDatabase(t, locked, pg.SuperUser)
	t.Cleanup(func() { pg.Exec(t, "DROP DATABASE "+locked+" WITH (FORCE)") }) // before d's role
	pg.Exec(t, "REVOKE CONNECT ON DATABASE "+locked+" FROM PUBLIC")
	f := newService(t)
	ctx := context.Background()
	s := connection.Spec{Name: "wh", Host: pg.Host, Port: pg.Port, Database: locked, User: d.User,
		Password: secret.New(d.Password), SSLMode: connection.SSLDisable, Schema: "analytics"}
	if _, err := f.svc.CreateConnection(ctx, s); err != nil {
		t.Fatal(err)
	}
	res, err := f.svc.Grants(ctx, "wh", grants.Request{SourceSchemas: []string{"public"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.OK() || res.Incomplete == "" || !strings.Contains(res.SQL(), `GRANT CONNECT ON DATABASE "`+locked+`" TO "`+d.User+`";`) {
		t.Fatalf("without CONNECT: %+v", res)
	}
	pg.Exec(t, "GRANT CONNECT ON DATABASE "+locked+" TO "+d.User)
	res, err = f.svc.Grants(ctx, "wh", grants.Request{SourceSchemas: []string{"public"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Request.TargetSchema != "analytics" || res.Incomplete != "" ||
		!strings.Contains(res.SQL(), `GRANT CREATE ON DATABASE "`+locked+`" TO "`+d.User+`";`) {
		t.Fatalf("with CONNECT: %+v\n%s", res, res.SQL())
	}
	if _, err := f.svc.Grants(ctx, "wh", grants.Request{TargetSchema: "a", Role: "nobody"}); !errors.Is(err, app.ErrInvalid) {
		t.Fatalf("unknown role: %v", err)
	}
}
