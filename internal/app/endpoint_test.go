package app_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/testenv"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// TestStoredPasswordIsBoundToItsEndpoint checks the rule that a stored
// password only goes to the endpoint it was saved for, at both depths: the
// use case refuses an endpoint change without the password, and a record
// whose endpoint changed behind the use case's back (the store edited
// directly) no longer opens its password at all.
func TestStoredPasswordIsBoundToItsEndpoint(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := context.Background()
	s := spec("e")
	s.Tunnel = &connection.Tunnel{Host: "bastion.example.com", User: "dbtcloud"}
	if _, err := f.svc.CreateConnection(ctx, s); err != nil {
		t.Fatal(err)
	}
	for what, mod := range map[string]func(*connection.Spec){
		"host":         func(s *connection.Spec) { s.Host = "evil.example.com" },
		"port":         func(s *connection.Spec) { s.Port = 6543 },
		"user":         func(s *connection.Spec) { s.User = "postgres" },
		"bastion host": func(s *connection.Spec) { s.Tunnel.Host = "evil.example.com" },
		"bastion port": func(s *connection.Spec) { s.Tunnel.Port = 2222 },
		"bastion user": func(s *connection.Spec) { s.Tunnel.User = "root" },
		"no bastion":   func(s *connection.Spec) { s.Tunnel = nil },
	} {
		next := s.Clone()
		next.Password = secret.Value{}
		mod(&next)
		_, err := f.svc.UpdateConnection(ctx, "e", next, nil)
		var ve *app.ValidationError
		if !errors.As(err, &ve) || !strings.Contains(ve.Fields()["password"], "enter the password again") {
			t.Errorf("changing the %s without the password: %v", what, err)
		}
	}
	// Case and spaces in a host name are the same endpoint.
	same := s.Clone()
	same.Host = " DB.Internal "
	if _, err := f.svc.UpdateConnection(ctx, "e", same, nil); err != nil {
		t.Fatalf("same endpoint in other case: %v", err)
	}

	// Behind the use case's back: the store's record is moved elsewhere.
	rec, err := f.store.GetConnection(ctx, "e")
	if err != nil {
		t.Fatal(err)
	}
	rec.Spec.Host = "evil.example.com"
	if err := f.store.UpdateConnection(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Open(ctx, "e"); !errors.Is(err, secret.ErrOpen) {
		t.Fatalf("open after the endpoint moved in the store: %v, want ErrOpen", err)
	}
}

// TestLegacyPasswordIsBoundOnFirstOpen checks that a password sealed
// before endpoint binding still opens, and is sealed again bound to its
// endpoint, after which moving the record elsewhere makes it unreadable.
func TestLegacyPasswordIsBoundOnFirstOpen(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := context.Background()
	if _, err := f.svc.CreateConnection(ctx, spec("old")); err != nil {
		t.Fatal(err)
	}
	rec, _ := f.store.GetConnection(ctx, "old")
	legacy, err := f.svc.Keyring().Seal([]byte("pw-old"), []byte("pgrelay/connection/"+rec.ID+"/password"))
	if err != nil {
		t.Fatal(err)
	}
	rec.SealedPassword = legacy
	if err := f.store.UpdateConnection(ctx, rec); err != nil {
		t.Fatal(err)
	}
	sess, err := f.svc.Open(ctx, "old")
	if err != nil || sess.Spec().Password.Reveal() != "pw-old" {
		t.Fatalf("legacy password: %v", err)
	}
	rec, _ = f.store.GetConnection(ctx, "old")
	if string(rec.SealedPassword) == string(legacy) {
		t.Fatal("the legacy password was not sealed again")
	}
	rec.Spec.Port = 6543
	if err := f.store.UpdateConnection(ctx, rec); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Open(ctx, "old"); !errors.Is(err, secret.ErrOpen) {
		t.Fatalf("rebound password opened for another endpoint: %v", err)
	}
}

// TestOneBastionPasswordStillOpens stores a password sealed the way it was
// before chains of hops (associated data with the endpoint key of one
// bastion, written out here): it must still open, so existing connections
// keep working.
func TestOneBastionPasswordStillOpens(t *testing.T) {
	t.Parallel()
	pg, b := startPostgresAndBastion(t)
	f := newService(t)
	ctx := context.Background()
	v, err := f.svc.CreateConnection(ctx, tunnelled("old", pg, b))
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, v.SSHTunnel.PublicKey)
	rec, err := f.store.GetConnection(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	kr, _ := secret.NewKeyring(make([]byte, 32))
	ad := "pgrelay/connection/" + rec.ID + "/password\x00endpoint=" +
		fmt.Sprintf(`db=%q:%d:%q;hop=%q:%d:%q`, pg.Host, pg.Port, pg.DB.User, b.Host, b.Port, b.User)
	sealed, err := kr.Seal([]byte(pg.DB.Password), []byte(ad))
	if err != nil {
		t.Fatal(err)
	}
	rec.SealedPassword = sealed
	if err := f.store.UpdateConnection(ctx, rec); err != nil {
		t.Fatal(err)
	}
	sess, err := f.svc.Open(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if sess.Spec().Password.Reveal() != pg.DB.Password {
		t.Fatal("the password sealed for one bastion did not open")
	}
	if rec2, _ := f.store.GetConnection(ctx, "old"); string(rec2.SealedPassword) != string(sealed) {
		t.Fatal("the password was sealed again (it should have opened as it was)")
	}
}

// TestStoredPasswordNotSentWhenVerifiedLess checks that weakening how a
// connection's server is verified counts as leaving its endpoint: a
// connection saved with verify-full and its CA, an impostor answering at
// the same address, and updates (and draft tests) that would hand the
// stored password to it without the password being given again. Each is
// refused, and the impostor receives nothing; stricter settings need no
// password.
func TestStoredPasswordNotSentWhenVerifiedLess(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	real, own := testenv.NewTLSCert(t), testenv.NewTLSCert(t)
	for _, tc := range []struct {
		name     string
		impostor func(testing.TB) *testenv.PasswordCatcher
		weaken   func(*connection.Spec)
		says     string
	}{
		{"sslmode disable, clear text accepted", testenv.StartPasswordCatcher,
			func(s *connection.Spec) {
				s.SSLMode, s.SSLRootCert, s.RequireAuth = connection.SSLDisable, "", "password"
			},
			"sslmode verify-full → disable"},
		{"another CA", func(t testing.TB) *testenv.PasswordCatcher { return testenv.StartTLSPasswordCatcher(t, own) },
			func(s *connection.Spec) { s.SSLRootCert = string(own.CAPEM) },
			"ssl_root_cert"},
		{"sslmode require, clear text accepted", func(t testing.TB) *testenv.PasswordCatcher { return testenv.StartTLSPasswordCatcher(t, own) },
			func(s *connection.Spec) {
				s.SSLMode, s.SSLRootCert, s.RequireAuth = connection.SSLRequire, "", "password"
			},
			"sslmode verify-full → require"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			catcher := tc.impostor(t)
			f := newService(t)
			s := spec("c")
			s.Host, s.Port = catcher.Host, catcher.Port
			s.SSLMode, s.SSLRootCert = connection.SSLVerifyFull, string(real.CAPEM)
			if _, err := f.svc.CreateConnection(ctx, s); err != nil {
				t.Fatal(err)
			}
			next := s.Clone()
			next.Password = secret.Value{}
			tc.weaken(&next)

			_, err := f.svc.UpdateConnection(ctx, "c", next, nil)
			var ve *app.ValidationError
			if !errors.As(err, &ve) || !strings.Contains(ve.Fields()["password"], "enter the password again") ||
				!strings.Contains(ve.Fields()["password"], tc.says) {
				t.Fatalf("update that verifies less, without the password: %v", err)
			}
			_, err = f.svc.TestDraft(ctx, next, "c", nil)
			if !errors.As(err, &ve) || !strings.Contains(ve.Fields()["password"], "enter the password again") {
				t.Fatalf("draft test that verifies less, based on the saved connection: %v", err)
			}
			// What is saved still verifies: the impostor fails the
			// certificate check before any password is asked for.
			if rep, err := f.svc.TestConnection(ctx, "c", nil); err != nil || rep.OK {
				t.Fatalf("test of the saved connection against the impostor: ok=%v, %v", rep != nil && rep.OK, err)
			}
			if got := catcher.Received(); len(got) > 0 {
				t.Fatalf("the impostor received the stored password (%d times)", len(got))
			}
			// Given again, the weaker setting is the user's choice.
			pw := secret.New("typed-again")
			if _, err := f.svc.UpdateConnection(ctx, "c", next, &pw); err != nil {
				t.Fatalf("update with the password given again: %v", err)
			}
		})
	}

	// Stricter settings keep the stored password.
	f := newService(t)
	s := spec("s")
	s.SSLMode = connection.SSLRequire
	if _, err := f.svc.CreateConnection(ctx, s); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.CreateConnection(ctx, func() connection.Spec { c := s.Clone(); c.Name = "public"; return c }()); err != nil {
		t.Fatal(err)
	}
	public := s.Clone()
	public.Name, public.Password, public.SSLMode = "public", secret.Value{}, connection.SSLVerifyFull // the public CAs
	if _, err := f.svc.UpdateConnection(ctx, "public", public, nil); err != nil {
		t.Fatalf("require → verify-full against the public CAs without the password: %v", err)
	}
	// A CA of one's own proves nothing yet: only what was accepted before
	// may be sent without the password (clear text was refused).
	stricter := s.Clone()
	stricter.Password = secret.Value{}
	stricter.SSLMode, stricter.SSLRootCert = connection.SSLVerifyFull, string(real.CAPEM)
	if _, err := f.svc.UpdateConnection(ctx, "s", stricter, nil); err == nil {
		t.Fatal("verify-full with a CA given anew, accepting clear text, without the password: accepted")
	}
	stricter.RequireAuth = "scram-sha-256"
	if _, err := f.svc.UpdateConnection(ctx, "s", stricter, nil); err != nil {
		t.Fatalf("verify-full with a CA of its own, only SCRAM, without the password: %v", err)
	}
	// The same CA as a browser sends it back (CRLF) is the same CA.
	stricter.SSLRootCert = strings.ReplaceAll(string(real.CAPEM), "\n", "\r\n") + "\r\n"
	if _, err := f.svc.UpdateConnection(ctx, "s", stricter, nil); err != nil {
		t.Fatalf("the same CA with other line endings, without the password: %v", err)
	}
}

// TestDeleteConnectionUsedByJobs: a connection a job uses is not deleted
// (the job's every run would fail with "not found"); the refusal names
// the jobs, and once they are gone the connection goes.
func TestDeleteConnectionUsedByJobs(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := context.Background()
	for _, n := range []string{"wh", "crm"} {
		if _, err := f.svc.CreateConnection(ctx, spec(n)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{
		{Name: "nightly", Connection: "wh", Steps: []jobs.Step{{SQL: "select 1"}}},
		{Name: "hourly", Connection: "wh", Steps: []jobs.Step{{SQL: "select 1"}}},
	}); err != nil {
		t.Fatal(err)
	}
	err := f.svc.DeleteConnection(ctx, "wh")
	if !errors.Is(err, app.ErrInvalid) || !strings.Contains(err.Error(), "used by job") ||
		!strings.Contains(err.Error(), "nightly") || !strings.Contains(err.Error(), "hourly") {
		t.Fatalf("delete of a connection jobs use: %v", err)
	}
	if _, err := f.svc.GetConnection(ctx, "wh"); err != nil {
		t.Fatalf("the refused delete lost the connection: %v", err)
	}
	if err := f.svc.DeleteConnection(ctx, "crm"); err != nil {
		t.Fatalf("delete of an unused connection: %v", err)
	}
	for _, j := range []string{"nightly", "hourly"} {
		if err := f.svc.DeleteJob(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.svc.DeleteConnection(ctx, "wh"); err != nil {
		t.Fatalf("delete once no job uses it: %v", err)
	}
}

// TestRunHealthIsTheConnections: a run counts in its connection's health
// only when it says something of the connection (it succeeded, or the
// connection could not be opened or dropped); a cancelled run or a failing
// step of the job's own used to turn a working connection "failing".
func TestRunHealthIsTheConnections(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := context.Background()
	if _, err := f.svc.CreateConnection(ctx, spec("wh")); err != nil {
		t.Fatal(err)
	}
	job := jobs.Job{Name: "j", Connection: "wh"}
	status := func() string {
		v, err := f.svc.GetConnection(ctx, "wh")
		if err != nil {
			t.Fatal(err)
		}
		if v.Health == nil {
			return "none"
		}
		return v.Health.Status
	}
	f.svc.RunEnded(ctx, job, "r1", jobs.Manual, jobs.Result{Status: jobs.Succeeded}, time.Second)
	if got := status(); got != "ok" {
		t.Fatalf("after a successful run: %s", got)
	}
	for _, res := range []jobs.Result{
		{Status: jobs.Cancelled, Err: &jobs.CancelledError{By: "alice"}},
		{Status: jobs.Failed, Err: &jobs.TimeoutError{After: time.Minute}},
		{Status: jobs.Failed, Err: &jobs.StepError{Step: 0, Label: "dbt test", Err: errors.New("dbt exited with code 1")}},
		{Status: jobs.Failed, Err: &jobs.StepError{Step: 0, Label: "dbt", Refused: true, Err: errors.New("not allowed")}},
		{Status: jobs.Failed, Err: &jobs.InterruptedError{Reason: "the pgrelay process running it shut down"}},
	} {
		f.svc.RunEnded(ctx, job, "r2", jobs.Manual, res, time.Second)
		if got := status(); got != "ok" {
			t.Fatalf("after a run that ended %v: %s", res.Err, got)
		}
	}
	for _, res := range []jobs.Result{
		{Status: jobs.Failed, Err: errors.New("SSH tunnel to bastion dropped")},
		{Status: jobs.Failed, Err: &jobs.StepError{Err: &pgconn.ConnectError{}}},
		// The time limit came first, but the tunnel dropped too (the
		// bastion went silent): that says something of the connection.
		{Status: jobs.Failed, Err: fmt.Errorf("%w; its tunnel dropped as the run stopped: %w",
			&jobs.TimeoutError{After: time.Minute}, &app.TunnelDroppedError{Connection: "wh", Err: &tunnel.DroppedError{Addr: "bastion:22", Err: errors.New("keepalive unanswered")}})},
	} {
		f.svc.RunEnded(ctx, job, "r3", jobs.Manual, jobs.Result{Status: jobs.Succeeded}, time.Second)
		f.svc.RunEnded(ctx, job, "r4", jobs.Manual, res, time.Second)
		if got := status(); got != "failing" {
			t.Fatalf("after a run whose connection failed (%v): %s", res.Err, got)
		}
	}
}

// TestSupersededAttemptHealth: an attempt whose run another process
// resolved first (its reaper declared the worker lost, and failed the run
// or queued it again) is not the run's outcome: its success no longer
// counts in the connection's health (it turned a failing connection ok,
// for a run recorded failed). Its connection failing still counts: the
// tunnel dropped whatever became of the run.
func TestSupersededAttemptHealth(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := context.Background()
	if _, err := f.svc.CreateConnection(ctx, spec("wh")); err != nil {
		t.Fatal(err)
	}
	job := jobs.Job{Name: "j", Connection: "wh"}
	recent := func() []store.ConnectionCheck {
		v, err := f.svc.GetConnection(ctx, "wh")
		if err != nil {
			t.Fatal(err)
		}
		if v.Health == nil {
			return nil
		}
		return v.Health.Recent
	}
	dropped := &app.TunnelDroppedError{Connection: "wh", Err: &tunnel.DroppedError{Addr: "bastion:22", Err: errors.New("keepalive unanswered")}}
	f.svc.RunEnded(ctx, job, "r1", jobs.Manual, jobs.Result{Status: jobs.Failed, Err: dropped}, time.Second)
	f.svc.RunEnded(ctx, job, "r2", jobs.Manual, jobs.Result{Status: jobs.Succeeded, Superseded: true}, time.Second)
	if got := recent(); len(got) != 1 || got[0].Detail != "r1" || got[0].OK {
		t.Fatalf("health after a superseded attempt succeeded: %+v; want only r1's failure", got)
	}
	f.svc.RunEnded(ctx, job, "r3", jobs.Manual, jobs.Result{Status: jobs.Succeeded}, time.Second)
	f.svc.RunEnded(ctx, job, "r4", jobs.Manual, jobs.Result{Status: jobs.Failed, Err: dropped, Superseded: true}, time.Second)
	if got := recent(); len(got) != 3 || got[0].Detail != "r4" || got[0].OK {
		t.Fatalf("health after a superseded attempt lost its tunnel: %+v; want r4's failure first", got)
	}
}

// TestHealthOKAfterAUseThatWorked: a query (or any use) that succeeds
// after a failed test makes the connection ok again; it used to stay
// failing until the next test or run.
func TestHealthOKAfterAUseThatWorked(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := context.Background()
	if _, err := f.svc.CreateConnection(ctx, spec("wh")); err != nil {
		t.Fatal(err)
	}
	c, err := f.store.GetConnection(ctx, "wh")
	if err != nil {
		t.Fatal(err)
	}
	status := func() string {
		v, err := f.svc.GetConnection(ctx, "wh")
		if err != nil {
			t.Fatal(err)
		}
		return v.Health.Status
	}
	at := time.Now().UTC().Add(-time.Minute)
	if err := f.store.AddConnectionCheck(ctx, c.ID, store.ConnectionCheck{Kind: store.CheckTest, At: at, OK: false, Step: "tcp"}, 20); err != nil {
		t.Fatal(err)
	}
	if got := status(); got != app.HealthFailing {
		t.Fatalf("after a failed test: %s", got)
	}
	if err := f.store.AddConnectionCheck(ctx, c.ID, store.ConnectionCheck{Kind: store.CheckUse, At: at.Add(time.Second), OK: true, Source: "query"}, 20); err != nil {
		t.Fatal(err)
	}
	if got := status(); got != app.HealthOK {
		t.Errorf("after a query that worked since the failed test: %s, want ok", got)
	}
}

// TestBastionSetupCopyLine: the setup script's example copies it to the
// bastion as scp and ssh want it: an IPv6 address in brackets for scp, a
// port other than 22 as -P and -p.
func TestBastionSetupCopyLine(t *testing.T) {
	t.Parallel()
	f := newService(t)
	ctx := context.Background()
	for name, tc := range map[string]struct {
		host string
		port int
		want string
	}{
		"v6":   {"::1", 22, "scp setup.sh admin@[::1]: && ssh admin@::1 sudo sh setup.sh"},
		"port": {"bastion.example.com", 2222, "scp -P 2222 setup.sh admin@bastion.example.com: && ssh -p 2222 admin@bastion.example.com sudo sh setup.sh"},
	} {
		s := spec(name)
		s.Tunnel = &connection.Tunnel{Host: tc.host, Port: tc.port, User: "dbtcloud"}
		if _, err := f.svc.CreateConnection(ctx, s); err != nil {
			t.Fatal(err)
		}
		script, err := f.svc.BastionSetup(ctx, name)
		if err != nil || !strings.Contains(script, tc.want) {
			t.Fatalf("%s: %v; the script lacks %q:\n%.600s", name, err, tc.want, script)
		}
	}
}

// TestHealthCheckDueOnItsPoll: a connection tested every minute is due
// again on the poll that comes a minute after its last test started, even
// a little early (polls jitter); it is not due half-way. The next test was
// found a few milliseconds short of its interval and waited a whole poll
// more: a 1m interval tested every 90 s.
func TestHealthCheckDueOnItsPoll(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	f := newServiceWith(t, func(c *app.Config) {
		c.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	ctx := context.Background()
	s := spec("every-minute")
	s.Host, s.Port, s.HealthCheckInterval = "127.0.0.1", 1, connection.Duration(time.Minute)
	if _, err := f.svc.CreateConnection(ctx, s); err != nil {
		t.Fatal(err)
	}
	at := func(d time.Duration) int {
		t.Helper()
		mu.Lock()
		now = time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC).Add(d)
		mu.Unlock()
		n, err := f.svc.RunHealthChecks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := at(0); n != 1 {
		t.Fatalf("first poll tested %d connections, want 1", n)
	}
	if n := at(30 * time.Second); n != 0 {
		t.Fatalf("the poll half-way through the interval tested %d connections, want 0", n)
	}
	if n := at(time.Minute - 20*time.Millisecond); n != 1 {
		t.Fatalf("the poll a minute later (20 ms early) tested %d connections, want 1", n)
	}
}
