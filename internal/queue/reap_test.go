package queue_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestLostRunIsNeverEndedWithoutItsCleanup: the reaper resolves a run
// whose process was lost while its statement ran on the server. The run
// used to be saved as failed (or queued again) first and its cleanup
// recorded only after: in between, a client polling the run (`job run
// --wait`, the API, the web page) read it as ended with nothing said of
// the statement, which still ran. The write that resolves the run now
// says the cleanup is pending; once the statement is stopped it says
// done.
func TestLostRunIsNeverEndedWithoutItsCleanup(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	for _, tc := range []struct {
		name    string
		retries int
		// held is the run's status while the reaper is held, final once
		// it ended.
		held, final jobs.Status
	}{
		{"Failed", 0, jobs.Failed, jobs.Failed},
		{"Retried", 1, jobs.Queued, jobs.Succeeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			st, qdb := sqliteStore(t)
			f := newProcess(t, st, queue.Backend{SQLite: qdb}, nil)
			held := make(chan string)
			release := make(chan struct{})
			var releaseOnce sync.Once
			queue.SetAfterReap(f.q, func(id string) {
				held <- id
				<-release
			})
			if _, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "db", Host: pg.Host, Port: pg.Port,
				Database: "postgres", User: pg.SuperUser, Password: secret.New(pg.SuperPassword),
				SSLMode: connection.SSLDisable}); err != nil {
				t.Fatal(err)
			}
			if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "lost", Connection: "db", Retries: tc.retries,
				Steps: []jobs.Step{{SQL: "SELECT 1"}}}}); err != nil {
				t.Fatal(err)
			}
			startQueue(t, f)
			// Before the queue's Stop (cleanups run last first): it waits
			// for the reaper.
			t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })

			// The statement the lost process left running: a session of
			// the connection's user, recorded as the run's.
			var b [6]byte
			_, _ = rand.Read(b[:])
			marker := "lost_" + hex.EncodeToString(b[:])
			lostConn, err := pgx.Connect(ctx, pg.ConnString(pg.SuperUser, pg.SuperPassword, "postgres"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = lostConn.Close(context.Background()) })
			var opened time.Time
			if err := lostConn.QueryRow(ctx, `SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()`).
				Scan(&opened); err != nil {
				t.Fatal(err)
			}
			pid, key := lostConn.PgConn().PID(), lostConn.PgConn().SecretKey()
			go func() {
				// Cancelled by the reaper's cleanup; the session then
				// ends, as a dead process's would.
				_, _ = lostConn.Exec(context.Background(), "SELECT pg_sleep(600) AS "+marker)
				_ = lostConn.Close(context.Background())
			}()
			pg.WaitActive(t, marker, 30*time.Second)
			admin := pg.Connect(t, "postgres")

			// The run as its lost process left it: running, its step
			// started, its session recorded. Saved with a heartbeat to
			// come, so that the reaper leaves it until it has its
			// session, then with the last heartbeat a minute ago.
			rec, err := st.GetJob(ctx, "lost")
			if err != nil {
				t.Fatal(err)
			}
			started := time.Now().UTC().Add(-time.Minute)
			later := time.Now().UTC().Add(time.Hour)
			r := jobs.NewRun(rec.Job, jobs.Manual, started)
			r.Status, r.Worker, r.Attempt, r.StartedAt, r.HeartbeatAt = jobs.Running, "deadhost:1", 1, &started, &later
			r.Steps[0].Status, r.Steps[0].StartedAt = jobs.Running, &started
			if err := st.CreateRun(ctx, r); err != nil {
				t.Fatal(err)
			}
			if err := st.AddRunBackend(ctx, r.ID, jobs.Backend{PID: pid, SecretKey: key, Step: 0, User: pg.SuperUser,
				Database: "postgres", OpenedAt: opened.UTC()}); err != nil {
				t.Fatal(err)
			}
			r.HeartbeatAt = &started
			if err := st.UpdateRun(ctx, r); err != nil {
				t.Fatal(err)
			}

			if id := <-held; id != r.ID {
				t.Fatalf("the reaper resolved run %s, want %s", id, r.ID)
			}
			// The reaper has resolved the run and not yet stopped its
			// statement: the run says its cleanup is pending.
			got, err := f.svc.GetRun(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			if n := activeCount(t, admin, marker); n != 1 {
				t.Fatalf("%d statements of the lost run running while the reaper is held, want 1: this test proves nothing", n)
			}
			if got.Status != tc.held {
				t.Fatalf("run resolved by the reaper: status %s, reason %q; want %s", got.Status, got.Reason, tc.held)
			}
			if got.Cleanup == nil || got.Cleanup.Status != jobs.CleanupPending || !slices.Contains(got.Cleanup.Remaining, pid) {
				t.Fatalf("run %s (%q) while its statement still runs: cleanup %+v, want pending with pid %d",
					got.Status, got.Reason, got.Cleanup, pid)
			}
			releaseOnce.Do(func() { close(release) })

			pollUntil(t, func() (int, bool) { n := activeCount(t, admin, marker); return n, n == 0 })
			got = waitRun(t, f.svc, r.ID, func(r *jobs.Run) bool {
				return r.Status == tc.final && r.Cleanup != nil && r.Cleanup.Status != jobs.CleanupPending
			})
			if got.Cleanup.Status != jobs.CleanupDone || !slices.Contains(got.Cleanup.Cancelled, pid) {
				t.Fatalf("cleanup once the reaper stopped the statement: %+v, want done with pid %d cancelled", got.Cleanup, pid)
			}
		})
	}
}

// activeCount counts the statements running on admin's server whose text
// has marker.
func activeCount(t *testing.T, admin *pgx.Conn, marker string) int {
	t.Helper()
	var n int
	if err := admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
		WHERE state = 'active' AND pid <> pg_backend_pid() AND strpos(query, $1) > 0`, marker).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
