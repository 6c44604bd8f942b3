package queue_test

import (
	"context"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/postgres"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestSubmitSavesRunAndJobTogether: a run and its River job are saved in
// one transaction. When the job's insert fails after the run was written
// (here a trigger on River's table refuses it, as a full disk or a lost
// connection would), the caller is told, and no run is left behind: a
// process that stopped at that point used to leave a run queued with no
// job, which only the reaper's orphan sweep found again.
func TestSubmitSavesRunAndJobTogether(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	// check queues a run that is worked, then has refuse make River's
	// inserts fail and queues another.
	check := func(t *testing.T, f *fixture, st store.Store, jobsOf func(runID string) int, refuse func()) {
		t.Helper()
		ctx := context.Background()
		if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "quick", Connection: "db", Steps: []jobs.Step{
			{Command: []string{"sh", "-c", "true"}}}}}); err != nil {
			t.Fatal(err)
		}
		ok, err := f.svc.RunJob(ctx, "quick", jobs.Manual)
		if err != nil {
			t.Fatal(err)
		}
		if got := waitRun(t, f.svc, ok.ID, terminal); got.Status != jobs.Succeeded {
			t.Fatalf("run: status %s, reason %q", got.Status, got.Reason)
		}
		if n := jobsOf(ok.ID); n != 1 {
			t.Fatalf("the run has %d River jobs, want 1", n)
		}
		refuse()
		_, err = f.svc.RunJob(ctx, "quick", jobs.Manual)
		if err == nil || !strings.Contains(err.Error(), "insert its River job") || !strings.Contains(err.Error(), "refused by the test") {
			t.Fatalf("RunJob with River's insert failing: %v, want an error saying the River job could not be inserted", err)
		}
		runs, err := st.ListRuns(ctx, store.RunFilter{Job: "quick"})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range runs {
			if r.ID != ok.ID {
				t.Errorf("run %s left behind: status %s, reason %q", r.ID, r.Status, r.Reason)
			}
		}
	}
	t.Run("SQLite", func(t *testing.T) {
		f := start(t, pg, nil)
		check(t, f, f.st, func(id string) int { return riverJobsSQLite(t, f.qdb, id) }, func() {
			if _, err := f.qdb.Exec(`CREATE TRIGGER refuse_runs BEFORE INSERT ON river_job WHEN NEW.kind = 'pgrelay_run'
				BEGIN SELECT RAISE(ABORT, 'refused by the test'); END`); err != nil {
				t.Fatal(err)
			}
		})
	})
	t.Run("Postgres", func(t *testing.T) {
		db := pg.NewDatabase(t)
		ctx := context.Background()
		st, err := postgres.Open(ctx, pg.ConnString(db.User, db.Password, db.Name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Close() })
		f := startOn(t, pg, st, queue.Backend{Postgres: st.Pool()}, nil)
		check(t, f, st, func(id string) int { return riverJobsPG(t, st.Pool(), id) }, func() {
			for _, sql := range []string{
				`CREATE FUNCTION refuse_runs() RETURNS trigger LANGUAGE plpgsql AS $$
				BEGIN RAISE EXCEPTION 'refused by the test'; END $$`,
				`CREATE TRIGGER refuse_runs BEFORE INSERT ON river_job FOR EACH ROW WHEN (NEW.kind = 'pgrelay_run') EXECUTE FUNCTION refuse_runs()`,
			} {
				if _, err := st.Pool().Exec(ctx, sql); err != nil {
					t.Fatal(err)
				}
			}
		})
	})
}
