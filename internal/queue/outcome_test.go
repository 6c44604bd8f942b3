package queue_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/store/postgres"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestOutcomeRecordedAfterStoreOutage: the shared store cannot be reached
// (its role may not log in) as a run ends; the worker writes the run's
// end once it can again, instead of leaving the run running until the
// reaper declares it lost (and fails it, or runs it again).
func TestOutcomeRecordedAfterStoreOutage(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	ctx := context.Background()
	st, err := postgres.Open(ctx, pg.ConnString(db.User, db.Password, db.Name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	logs := &testenv.LogBuffer{}
	f := startOn(t, pg, st, queue.Backend{Postgres: st.Pool()}, func(c *queue.Config) {
		// Not declared lost by its own process's reaper during the outage.
		c.LostAfter, c.ReapInterval = time.Minute, time.Minute
		c.Logger = slog.New(slog.NewTextHandler(logs, nil))
	})
	svc := f.svc
	release := filepath.Join(t.TempDir(), "release")
	if _, err := svc.ApplyJobs(ctx, []jobs.Job{{Name: "held", Connection: "db", Steps: []jobs.Step{
		{Command: []string{"sh", "-c", "while [ ! -e " + release + " ]; do sleep 0.05; done"}}}}}); err != nil {
		t.Fatal(err)
	}
	r, err := svc.RunJob(ctx, "held", jobs.Manual)
	if err != nil {
		t.Fatal(err)
	}
	waitRun(t, svc, r.ID, func(r *jobs.Run) bool { return r.Status == jobs.Running })

	// The outage: the store's role may not log in, its sessions are ended.
	admin, err := pgx.Connect(ctx, pg.ConnString(pg.SuperUser, pg.SuperPassword, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	restore := storeOutage(t, admin, db.User)
	defer restore()
	// The run ends while the store is out of reach; its end cannot be written.
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(logs.String(), "could not record run outcome") {
		if time.Now().After(deadline) {
			t.Fatalf("the run's end was not attempted during the outage:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	restore()
	got := waitRun(t, svc, r.ID, func(r *jobs.Run) bool { return r.Status.Terminal() })
	if got.Status != jobs.Succeeded {
		t.Fatalf("run after the outage: %+v", got)
	}
}

// storeOutage puts a store out of reach of its processes: its role, user,
// may no longer log in and its sessions are ended (admin is a superuser's
// connection). restore lets it log in again; it is safe to call twice.
func storeOutage(t *testing.T, admin *pgx.Conn, user string) (restore func()) {
	t.Helper()
	ctx := context.Background()
	role := pgx.Identifier{user}.Sanitize()
	if _, err := admin.Exec(ctx, "ALTER ROLE "+role+" NOLOGIN"); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore = func() {
		if !restored {
			restored = true
			if _, err := admin.Exec(ctx, "ALTER ROLE "+role+" LOGIN"); err != nil {
				t.Error(err)
			}
		}
	}
	if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", user); err != nil {
		restore()
		t.Fatal(err)
	}
	return restore
}
