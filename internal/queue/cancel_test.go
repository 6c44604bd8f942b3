package queue_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/store/postgres"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestCancelReachesTheWorkerAtOnce: a cancel request stops the run's
// statement on the server at once, wherever it was made. Heartbeats are an
// hour apart in every process, so a run could not learn of a request
// through them before the test gives up.
func TestCancelReachesTheWorkerAtOnce(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	slow := func(worker string) func(*queue.Config) {
		return func(c *queue.Config) {
			c.Worker, c.HeartbeatInterval, c.LostAfter = worker, time.Hour, 2*time.Hour
		}
	}

	// On SQLite, one process: its own Cancel stops the run.
	t.Run("SQLite", func(t *testing.T) {
		f := start(t, pg, slow("one"))
		sleeper, marker := sleepJob(t, f)
		r, err := f.svc.RunJob(context.Background(), sleeper, jobs.API)
		if err != nil {
			t.Fatal(err)
		}
		pg.WaitActive(t, marker, 30*time.Second)
		cancel(t, f, r.ID)
		waitCancelled(t, pg, f, r.ID, marker)
	})

	// On PostgreSQL, a run one process works is cancelled through
	// another: the request reaches the worker by a notification.
	t.Run("AnotherProcess", func(t *testing.T) {
		db := pg.NewDatabase(t)
		st, backend := pgStore(t, db)
		one := startOn(t, pg, st, backend, slow("one"))
		sleeper, marker := sleepJob(t, one)
		id := runOn(t, pg, one, sleeper, marker)
		st2, backend2 := pgStore(t, db)
		two := newProcess(t, st2, backend2, slow("two"))
		startQueue(t, two)
		cancel(t, two, id)
		waitCancelled(t, pg, one, id, marker)
	})

	// The worker's listener, its connection ended, listens again, and
	// then looks for the requests made while it could not hear them.
	t.Run("ListenerReconnects", func(t *testing.T) {
		db := pg.NewDatabase(t)
		st, backend := pgStore(t, db)
		one := startOn(t, pg, st, backend, slow("one"))
		sleeper, marker := sleepJob(t, one)
		id := runOn(t, pg, one, sleeper, marker)
		// Another process, with its own pool (holding the connection
		// it opened the store with).
		st2, backend2 := pgStore(t, db)
		two := newProcess(t, st2, backend2, slow("two"))
		ctx := context.Background()
		admin := pg.Connect(t, "postgres")
		listen := "LISTEN " + pgx.Identifier{postgres.RunCancelChannel}.Sanitize()
		pid := pollUntil(t, func() ([]int32, bool) {
			rows, err := admin.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = $1 AND query = $2`, db.Name, listen)
			if err != nil {
				t.Fatal(err)
			}
			pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
			if err != nil {
				t.Fatal(err)
			}
			return pids, len(pids) == 1
		})[0]
		// The listener cannot connect again until the request is saved:
		// its notification is lost.
		allow := func(ok bool) {
			if _, err := admin.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{db.Name}.Sanitize()+
				" ALLOW_CONNECTIONS "+strconv.FormatBool(ok)); err != nil {
				t.Fatal(err)
			}
		}
		allow(false)
		t.Cleanup(func() { allow(true) })
		if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
			t.Fatal(err)
		}
		pollUntil(t, func() (int, bool) {
			var n int
			if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n, n == 0
		})
		cancel(t, two, id)
		allow(true)
		waitCancelled(t, pg, one, id, marker)
	})

	// A local `job run` (the CLI's, whose queue is not started) is
	// cancelled through a server sharing its store.
	t.Run("LocalRun", func(t *testing.T) {
		db := pg.NewDatabase(t)
		st, backend := pgStore(t, db)
		server := startOn(t, pg, st, backend, slow("server"))
		sleeper, marker := sleepJob(t, server)
		lst, lbackend := pgStore(t, db)
		local := newProcess(t, lst, lbackend, slow("local"))
		ctx, stop := context.WithCancelCause(context.Background())
		started := make(chan string, 1)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, err := local.svc.RunJobLocally(ctx, sleeper, func(r *jobs.Run) { started <- r.ID })
			if err != nil {
				t.Error(err)
			}
		}()
		t.Cleanup(func() {
			stop(&jobs.CancelledError{Reason: "the test ended"})
			<-done
		})
		id := <-started
		pg.WaitActive(t, marker, 30*time.Second)
		cancel(t, server, id)
		waitCancelled(t, pg, local, id, marker)
	})
}

// pgStore opens a PostgreSQL store on db, as one process does.
func pgStore(t *testing.T, db *testenv.Database) (*postgres.Store, queue.Backend) {
	t.Helper()
	st, err := postgres.Open(context.Background(), db.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st, queue.Backend{Postgres: st.Pool()}
}

// startQueue starts f's queue, stopped when the test ends.
func startQueue(t *testing.T, f *fixture) {
	t.Helper()
	if err := f.q.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.q.Stop(context.Background()) })
}

// sleepJob saves a job whose statement sleeps for ten minutes; marker is in
// its text, and in no other test's.
func sleepJob(t *testing.T, f *fixture) (name, marker string) {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	marker = "sleeper_" + hex.EncodeToString(b[:])
	if _, err := f.svc.ApplyJobs(context.Background(), []jobs.Job{{Name: "sleeper", Connection: "db",
		Steps: []jobs.Step{{SQL: "SELECT pg_sleep(600) AS " + marker}}}}); err != nil {
		t.Fatal(err)
	}
	return "sleeper", marker
}

// runOn runs job through f's queue, the only one started, and returns once
// its statement runs on the server.
func runOn(t *testing.T, pg *testenv.Postgres, f *fixture, job, marker string) string {
	t.Helper()
	r, err := f.svc.RunJob(context.Background(), job, jobs.API)
	if err != nil {
		t.Fatal(err)
	}
	pg.WaitActive(t, marker, 30*time.Second)
	if r = waitRun(t, f.svc, r.ID, func(r *jobs.Run) bool { return r.Status == jobs.Running }); r.Worker != f.q.Worker() {
		t.Fatalf("run worked by %q, want %q", r.Worker, f.q.Worker())
	}
	return r.ID
}

// cancel cancels run id through f, on behalf of bob.
func cancel(t *testing.T, f *fixture, id string) {
	t.Helper()
	if _, err := f.svc.CancelRun(context.Background(), id, "bob"); err != nil {
		t.Fatal(err)
	}
}

// waitCancelled waits until the statement marked marker is gone from the
// server and run id is recorded as cancelled by bob (read through worker).
func waitCancelled(t *testing.T, pg *testenv.Postgres, worker *fixture, id, marker string) {
	t.Helper()
	ctx := context.Background()
	admin := pg.Connect(t, "postgres")
	pollUntil(t, func() (int, bool) {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE state = 'active' AND pid <> pg_backend_pid() AND strpos(query, $1) > 0`, marker).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n, n == 0
	})
	r := waitRun(t, worker.svc, id, terminal)
	if r.Status != jobs.Cancelled || r.Reason != "cancelled by bob" {
		t.Fatalf("run %+v, want cancelled by bob", r)
	}
}

// pollUntil calls f until it says done, and fails the test when it has not
// after 30 s (heartbeats in these tests are an hour apart).
func pollUntil[T any](t *testing.T, f func() (T, bool)) T {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, done := f()
		if done {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %v after 30 s", v)
		}
		time.Sleep(20 * time.Millisecond) // polling the server
	}
}
