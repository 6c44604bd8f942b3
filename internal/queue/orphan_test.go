package queue_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/postgres"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// saveOrphan saves a queued run of the job name as Submit's first step
// does, without its River job: what a process that died between the two
// steps (or whose River insert failed) left.
func saveOrphan(t *testing.T, st store.Store, name string) *jobs.Run {
	t.Helper()
	ctx := context.Background()
	rec, err := st.GetJob(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	r := jobs.NewRun(rec.Job, jobs.Manual, time.Now())
	if err := st.CreateRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	return r
}

// waitFor polls the store until the run is in the wanted state, for at
// most within.
func waitFor(t *testing.T, st store.Store, id string, within time.Duration, want func(*jobs.Run) bool) *jobs.Run {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r, err := st.GetRun(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if want(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s did not reach the wanted state within %s: status %s, reason %q", id, within, r.Status, r.Reason)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// riverJobs counts the River jobs of a run (any state).
func riverJobsSQLite(t *testing.T, db *sql.DB, runID string) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM river_job WHERE kind = 'pgrelay_run' AND json_extract(args, '$.run_id') = ?`,
		runID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func riverJobsPG(t *testing.T, pool *pgxpool.Pool, runID string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM river_job WHERE kind = 'pgrelay_run' AND args->>'run_id' = $1`,
		runID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestOrphanedQueuedRunIsWorked: a run saved as queued whose River job was
// never inserted used to stay queued forever (the reaper looked only at
// running runs); the reaper queues it again and it is worked, once.
func TestOrphanedQueuedRunIsWorked(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	f := start(t, pg, nil) // LostAfter 1 s, ReapInterval 200 ms
	ctx := context.Background()
	if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "quick", Connection: "db", Steps: []jobs.Step{
		{Command: []string{"sh", "-c", "true"}}}}}); err != nil {
		t.Fatal(err)
	}
	r := saveOrphan(t, f.st, "quick")
	got := waitFor(t, f.st, r.ID, 10*time.Second, terminal)
	if got.Status != jobs.Succeeded || got.Attempt != 1 {
		t.Fatalf("orphaned run: status %s attempt %d reason %q, want succeeded at attempt 1", got.Status, got.Attempt, got.Reason)
	}
	time.Sleep(time.Second) // sweeps after it ended queue nothing more
	if n := riverJobsSQLite(t, f.qdb, r.ID); n != 1 {
		t.Fatalf("the orphaned run has %d River jobs, want 1", n)
	}
}

// TestOrphanedQueuedRunIsWorkedPostgres is TestOrphanedQueuedRunIsWorked
// on a shared PostgreSQL store, with two processes sweeping it.
func TestOrphanedQueuedRunIsWorkedPostgres(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	ctx := context.Background()
	st, err := postgres.Open(ctx, pg.ConnString(db.User, db.Password, db.Name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	f := startOn(t, pg, st, queue.Backend{Postgres: st.Pool()}, func(c *queue.Config) { c.Worker = "one" })
	// A second process on the same store (its connection "db" saved by
	// the first).
	kr, _ := secret.NewKeyring(make([]byte, 32))
	conn, err := app.NewConnector(app.Config{Store: st, Keyring: kr})
	if err != nil {
		t.Fatal(err)
	}
	q2, err := queue.New(queue.Config{Store: st, Backend: queue.Backend{Postgres: st.Pool()}, Open: conn.OpenConn,
		Commands: jobs.CommandPolicy{Allow: allowlist(t, "sh")}, Worker: "two",
		HeartbeatInterval: 200 * time.Millisecond, LostAfter: time.Second, ReapInterval: 200 * time.Millisecond,
		ScheduleSync: 200 * time.Millisecond, KillGrace: time.Second, ShutdownGrace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := q2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q2.Stop(context.Background()) })
	if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "quick", Connection: "db", Steps: []jobs.Step{
		{Command: []string{"sh", "-c", "true"}}}}}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for range 3 {
		ids = append(ids, saveOrphan(t, st, "quick").ID)
	}
	for _, id := range ids {
		got := waitFor(t, st, id, 10*time.Second, terminal)
		if got.Status != jobs.Succeeded || got.Attempt != 1 {
			t.Fatalf("orphaned run: status %s attempt %d reason %q, want succeeded at attempt 1", got.Status, got.Attempt, got.Reason)
		}
	}
	time.Sleep(time.Second)
	for _, id := range ids {
		if n := riverJobsPG(t, st.Pool(), id); n != 1 {
			t.Fatalf("orphaned run %s has %d River jobs, want 1", id, n)
		}
	}
}

// TestWaitingRunIsNotQueuedAgain: a run whose job waits for a worker (the
// process works --max-runs at once) is left alone, however long it waits.
func TestWaitingRunIsNotQueuedAgain(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	f := start(t, pg, func(c *queue.Config) { c.MaxRuns = 1 })
	ctx := context.Background()
	release := filepath.Join(t.TempDir(), "release")
	if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{
		{Name: "held", Connection: "db", Steps: []jobs.Step{
			{Command: []string{"sh", "-c", "while [ ! -e " + release + " ]; do sleep 0.05; done"}}}},
		{Name: "quick", Connection: "db", Steps: []jobs.Step{{Command: []string{"sh", "-c", "true"}}}},
	}); err != nil {
		t.Fatal(err)
	}
	held, err := f.svc.RunJob(ctx, "held", jobs.Manual)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, f.st, held.ID, 10*time.Second, func(r *jobs.Run) bool { return r.Status == jobs.Running })
	next, err := f.svc.RunJob(ctx, "quick", jobs.Manual)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // LostAfter (1 s) and many sweeps (200 ms)
	if r, _ := f.st.GetRun(ctx, next.ID); r.Status != jobs.Queued {
		t.Fatalf("the waiting run is %s, want queued", r.Status)
	}
	if n := riverJobsSQLite(t, f.qdb, next.ID); n != 1 {
		t.Fatalf("the waiting run has %d River jobs, want 1", n)
	}
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got := waitFor(t, f.st, next.ID, 10*time.Second, terminal)
	if got.Status != jobs.Succeeded || got.Attempt != 1 {
		t.Fatalf("waiting run: status %s attempt %d, want succeeded at attempt 1", got.Status, got.Attempt)
	}
	if n := riverJobsSQLite(t, f.qdb, next.ID); n != 1 {
		t.Fatalf("the waiting run has %d River jobs, want 1", n)
	}
}

// TestRetriedRunWithDeadJobIsWorked: the reaper queued a lost run again
// and its process died before it inserted the run's new River job; the
// dead worker's job stays "running" in River (its rescuer waits past the
// longest run), which does not keep the run from being queued again.
func TestRetriedRunWithDeadJobIsWorked(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	f := start(t, pg, nil)
	ctx := context.Background()
	if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "again", Connection: "db", Retries: 1, Steps: []jobs.Step{
		{Command: []string{"sh", "-c", "true"}}}}}); err != nil {
		t.Fatal(err)
	}
	rec, err := f.st.GetJob(ctx, "again")
	if err != nil {
		t.Fatal(err)
	}
	r := jobs.NewRun(rec.Job, jobs.Manual, time.Now().Add(-time.Minute))
	r.Attempt, r.Reason = 1, "retrying: worker deadhost:1 was lost"
	if err := f.st.CreateRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	if _, err := f.qdb.Exec(`INSERT INTO river_job (args, kind, max_attempts, state, attempt, attempted_at)
		VALUES (jsonb(json_object('run_id', ?)), 'pgrelay_run', 1, 'running', 1, datetime('now', '-1 minute'))`, r.ID); err != nil {
		t.Fatal(err)
	}
	got := waitFor(t, f.st, r.ID, 10*time.Second, terminal)
	if got.Status != jobs.Succeeded || got.Attempt != 2 {
		t.Fatalf("retried run: status %s attempt %d reason %q, want succeeded at attempt 2", got.Status, got.Attempt, got.Reason)
	}
	time.Sleep(time.Second)
	if n := riverJobsSQLite(t, f.qdb, r.ID); n != 2 {
		t.Fatalf("the retried run has %d River jobs, want 2 (the dead worker's and its own)", n)
	}
}
