package jobs_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// TestStopperStopsBackends checks the Stopper against a real PostgreSQL
// through a real bastion: running statements are cancelled, a row lock is
// released, a backend that stays is terminated, and backends of another
// role or started at another time are never touched.
func TestStopperStopsBackends(t *testing.T) {
	t.Parallel()
	e := setup(t, time.Second, 5)
	ctx := context.Background()
	conn, err := e.svc.Open(ctx, "wh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	admin := e.pg.Connect(t, e.db)
	if _, err := admin.Exec(ctx, `CREATE TABLE public.stop_t (id int PRIMARY KEY, v int); INSERT INTO public.stop_t VALUES (1, 0);
		GRANT ALL ON public.stop_t TO `+pgx.Identifier{e.user}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	otherRole := e.user + "_other" // the cluster is shared: a name of the test's own
	e.pg.CreateRole(t, otherRole, "other-pw")
	t.Cleanup(func() {
		e.pg.Exec(t, "REVOKE ALL ON DATABASE "+pgx.Identifier{e.db}.Sanitize()+" FROM "+pgx.Identifier{otherRole}.Sanitize())
		e.pg.Exec(t, "DROP ROLE "+pgx.Identifier{otherRole}.Sanitize())
	})
	if _, err := admin.Exec(ctx, `GRANT CONNECT ON DATABASE `+pgx.Identifier{e.db}.Sanitize()+` TO `+pgx.Identifier{otherRole}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	// open starts a session through the tunnel running sql in the
	// background, and returns its backend and what closes its client
	// (the socket first, so that the statement's goroutine returns
	// before the connection is closed: a pgx.Conn is not for two
	// goroutines at once).
	open := func(sql ...string) (jobs.Backend, func()) {
		t.Helper()
		c, err := conn.Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b := jobs.Backend{PID: c.PgConn().PID(), SecretKey: c.PgConn().SecretKey(), User: e.user, Database: e.db,
			OpenedAt: time.Now().UTC()}
		for _, q := range sql[:len(sql)-1] {
			if _, err := c.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		last := sql[len(sql)-1]
		if !strings.Contains(last, "pg_sleep") {
			if _, err := c.Exec(ctx, last); err != nil {
				t.Fatal(err)
			}
			return b, func() { _ = c.Close(ctx) }
		}
		return b, execInBackground(t, c, admin, b.PID, last)
	}
	alive := func(pid uint32) bool {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	}

	t.Run("CancelReleasesRowLock", func(t *testing.T) {
		sleeper, c1 := open("select pg_sleep(300)")
		locker, c2 := open("BEGIN", "UPDATE public.stop_t SET v = v + 1 WHERE id = 1", "select pg_sleep(300)")
		s := &jobs.Stopper{Conn: conn, Grace: 10 * time.Second}
		start := time.Now()
		c, err := s.Stop(ctx, []jobs.Backend{sleeper, locker}, func() {
			c1()
			c2()
		})
		if err != nil || c.Status != jobs.CleanupDone || len(c.Cancelled) != 2 || len(c.Terminated) != 0 {
			t.Fatalf("cleanup %+v, %v", c, err)
		}
		if !strings.HasPrefix(c.Message, "cancelled 2 statements on the server (pid ") {
			t.Errorf("message %q", c.Message)
		}
		if alive(sleeper.PID) || alive(locker.PID) {
			t.Fatal("a backend is still there after the cleanup")
		}
		// A second session takes the lock at once.
		var v int
		if _, err := admin.Exec(ctx, `SET lock_timeout = '2s'`); err != nil {
			t.Fatal(err)
		}
		if err := admin.QueryRow(ctx, `SELECT v FROM public.stop_t WHERE id = 1 FOR UPDATE`).Scan(&v); err != nil {
			t.Fatalf("row lock not released: %v", err)
		}
		t.Logf("two statements stopped in %v", time.Since(start))
	})

	t.Run("TerminatesWhatStays", func(t *testing.T) {
		// Its client stays open (a run that could not close it): after
		// the grace period, it is terminated.
		idle, c1 := open("BEGIN", "UPDATE public.stop_t SET v = v + 1 WHERE id = 1", "select 1")
		defer c1()
		s := &jobs.Stopper{Conn: conn, Grace: 300 * time.Millisecond}
		c, err := s.Stop(ctx, []jobs.Backend{idle}, nil)
		if err != nil || c.Status != jobs.CleanupDone || !slices.Equal(c.Terminated, []uint32{idle.PID}) {
			t.Fatalf("cleanup %+v, %v", c, err)
		}
		if alive(idle.PID) {
			t.Fatal("the backend survived pg_terminate_backend")
		}
	})

	t.Run("TerminatesOnlyItsOwn", func(t *testing.T) {
		// Several sessions to terminate at once, and a session of the
		// same user that is not the run's. The terminate once ran
		// pg_terminate_backend on every backend of the server before it
		// looked at their process IDs (the planner evaluates the
		// cheapest filter first, and pid = ANY($1) of three or more is
		// dearer): as this user, it failed on the first superuser's or
		// background process (the statements ran on, the cleanup was
		// pending for 10 minutes), and could end the user's other
		// sessions before that.
		var recorded []jobs.Backend
		for range 3 {
			b, c := open("BEGIN", "UPDATE public.stop_t SET v = v + 1 WHERE id = 1 AND false", "select 1")
			defer c()
			recorded = append(recorded, b)
		}
		bystander, c := open("select 1")
		defer c()
		s := &jobs.Stopper{Conn: conn, Grace: 300 * time.Millisecond}
		cl, err := s.Stop(ctx, recorded, nil)
		if err != nil || cl.Status != jobs.CleanupDone || len(cl.Terminated) != len(recorded) {
			t.Fatalf("cleanup %+v, %v", cl, err)
		}
		for _, b := range recorded {
			if alive(b.PID) {
				t.Fatalf("pid %d survived pg_terminate_backend", b.PID)
			}
		}
		if !alive(bystander.PID) {
			t.Fatal("a session of the same user that was not the run's was terminated")
		}
	})

	t.Run("NeverTouchesOthers", func(t *testing.T) {
		// Another role's statement, recorded as if it were the run's.
		oc, err := pgx.ConnectConfig(ctx, otherConfig(t, e, otherRole, "other-pw"))
		if err != nil {
			t.Fatal(err)
		}
		other := jobs.Backend{PID: oc.PgConn().PID(), SecretKey: oc.PgConn().SecretKey(), OpenedAt: time.Now().UTC()}
		defer execInBackground(t, oc, admin, other.PID, "select pg_sleep(300)")()
		// The run's own user, but a session started long after the
		// recorded one (a reused process ID).
		later, c1 := open("select pg_sleep(300)")
		defer c1()
		later.OpenedAt = later.OpenedAt.Add(-time.Hour)
		s := &jobs.Stopper{Conn: conn, Grace: 200 * time.Millisecond}
		c, err := s.Stop(ctx, []jobs.Backend{other, later}, nil)
		if err != nil || len(c.Cancelled)+len(c.Terminated)+len(c.Remaining) != 0 {
			t.Fatalf("cleanup touched something: %+v, %v", c, err)
		}
		for _, pid := range []uint32{other.PID, later.PID} {
			var state string
			if err := admin.QueryRow(ctx, `SELECT state FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&state); err != nil || state != "active" {
				t.Fatalf("pid %d: %q, %v", pid, state, err)
			}
		}
		if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query = 'select pg_sleep(300)'`); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("Unreachable", func(t *testing.T) {
		b := jobs.Backend{PID: 1, SecretKey: []byte{1, 2, 3, 4}, OpenedAt: time.Now()}
		s := &jobs.Stopper{Conn: failingConn{conn}}
		c, err := s.Stop(ctx, []jobs.Backend{b}, nil)
		if err == nil || c.Status != jobs.CleanupPending || !slices.Equal(c.Remaining, []uint32{1}) ||
			!strings.Contains(c.Message, "could not be reached") {
			t.Fatalf("cleanup %+v, %v", c, err)
		}
	})
}

// failingConn is a Conn whose database cannot be reached.
type failingConn struct{ jobs.Conn }

func (failingConn) Connect(context.Context) (*pgx.Conn, error) {
	return nil, errors.New("the bastion did not answer")
}

// execInBackground runs sql on c in a goroutine until pid (c's backend)
// runs it, and returns what closes c: its socket, then, once the
// statement's goroutine returned, the connection.
func execInBackground(t *testing.T, c *pgx.Conn, admin *pgx.Conn, pid uint32, sql string) func() {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.Exec(context.Background(), sql)
	}()
	waitActive(t, admin, pid)
	return func() {
		_ = c.PgConn().Conn().Close()
		<-done
		_ = c.Close(context.Background())
	}
}

// waitActive waits until pid runs a statement.
func waitActive(t *testing.T, admin *pgx.Conn, pid uint32) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		var n int
		if err := admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
			WHERE pid = $1 AND state = 'active' AND wait_event = 'PgSleep'`, pid).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			return
		}
	}
	t.Fatalf("pid %d never ran its statement", pid)
}

func otherConfig(t *testing.T, e *env, user, pw string) *pgx.ConnConfig {
	t.Helper()
	spec := connection.Spec{Name: "other", Host: e.pg.Host, Port: e.pg.Port, Database: e.db, User: user,
		Password: secret.New(pw), SSLMode: connection.SSLDisable}
	cfg, err := spec.PgxConfig()
	if err != nil {
		t.Fatal(fmt.Errorf("config: %w", err))
	}
	return cfg
}

// TestStopperWithRoleSetting checks the Stopper for a user whose sessions
// start as another role (ALTER ROLE … SET role, common for dbt users):
// current_user is then that role, which neither sees the run's backends
// (usename is the user that logged in) nor may signal them, so a cleanup
// that asked as current_user found nothing and said it was done while the
// statement ran on.
func TestStopperWithRoleSetting(t *testing.T) {
	t.Parallel()
	e := setup(t, time.Second, 5)
	ctx := context.Background()
	group := e.user + "_transform"
	e.pg.CreateRole(t, group, "group-pw")
	user, groupID := pgx.Identifier{e.user}.Sanitize(), pgx.Identifier{group}.Sanitize()
	e.pg.Exec(t, "GRANT "+groupID+" TO "+user)
	e.pg.Exec(t, "ALTER ROLE "+user+" SET role = "+groupID)
	t.Cleanup(func() {
		e.pg.Exec(t, "ALTER ROLE "+user+" RESET role")
		e.pg.Exec(t, "REVOKE "+groupID+" FROM "+user)
		e.pg.Exec(t, "DROP ROLE "+groupID)
	})
	admin := e.pg.Connect(t, e.db)
	conn, err := e.svc.Open(ctx, "wh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	c, err := conn.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var current string
	if err := c.QueryRow(ctx, "select current_user").Scan(&current); err != nil || current != group {
		t.Fatalf("current_user %q, %v: the role setting did not apply", current, err)
	}
	b := jobs.Backend{PID: c.PgConn().PID(), SecretKey: c.PgConn().SecretKey(), User: e.user, Database: e.db,
		OpenedAt: time.Now().UTC()}
	defer execInBackground(t, c, admin, b.PID, "select pg_sleep(300)")()
	// As after a dropped tunnel: no client of the run's to close, so the
	// statement must be cancelled or its backend terminated.
	s := &jobs.Stopper{Conn: conn, Grace: 300 * time.Millisecond}
	cl, err := s.Stop(ctx, []jobs.Backend{b}, nil)
	if err != nil || cl.Status != jobs.CleanupDone || len(cl.Cancelled)+len(cl.Terminated) != 1 {
		t.Fatalf("cleanup %+v, %v", cl, err)
	}
	var n int
	if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'`, b.PID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("cleanup says %q, but pid %d still runs its statement", cl.Message, b.PID)
	}
}
