package cli_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
)

// TestRestoreFailsUnfinishedRuns: runs that were queued or running when a
// backup was made (`backup` while serve runs) are failed by `restore`,
// saying why, and their database sessions are left alone, as `store copy`
// does. Before, they were restored as they were: a server on the restored
// store, once their heartbeat was older than --lost-after, declared the
// running ones lost and cancelled their statements on the warehouse (those
// of the process that made the backup, still running them in a restore
// drill or a move to another machine), queued again those with retries,
// and worked the queued ones: each job run twice.
func TestRestoreFailsUnfinishedRuns(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	h := newHarness(t)
	h.ok("run", "list") // makes the data dir, its store and master key
	st, err := sqlite.Open(ctx, filepath.Join(h.dataDir, sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	job := jobs.Job{Name: "nightly", Connection: "wh", Steps: []jobs.Step{{SQL: "select pg_sleep(600)"}}, Retries: 1}
	now := time.Now().UTC()
	add := func(status jobs.Status) string {
		r := jobs.NewRun(job, jobs.Manual, now.Add(-time.Minute))
		if err := st.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		if status == jobs.Running {
			r.Status, r.StartedAt, r.HeartbeatAt, r.Worker, r.Attempt = jobs.Running, &now, &now, "elsewhere:1", 1
			if err := st.UpdateRun(ctx, r); err != nil {
				t.Fatal(err)
			}
			if err := st.AddRunBackend(ctx, r.ID, jobs.Backend{PID: 4242, SecretKey: []byte{1, 2, 3, 4}, User: "dbt", Database: "analytics", OpenedAt: now}); err != nil {
				t.Fatal(err)
			}
		}
		return r.ID
	}
	running, queued := add(jobs.Running), add(jobs.Queued)
	done := jobs.NewRun(job, jobs.Manual, now.Add(-time.Hour))
	if err := st.CreateRun(ctx, done); err != nil {
		t.Fatal(err)
	}
	done.Status, done.EndedAt = jobs.Succeeded, &now
	if err := st.UpdateRun(ctx, done); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	backup := filepath.Join(t.TempDir(), "pgrelay.db")
	h.ok("backup", "--out", backup)

	b := newHarness(t)
	key, err := os.ReadFile(filepath.Join(h.dataDir, secret.MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.dataDir, secret.MasterKeyFile), key, 0o600); err != nil {
		t.Fatal(err)
	}
	contains(t, "restore output", b.ok("restore", backup).stdout, "3 runs",
		"2 runs were queued or running when the backup was made; the restored store has them as failed")

	rs, err := sqlite.Open(ctx, filepath.Join(b.dataDir, sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer rs.Close()
	for _, id := range []string{running, queued} {
		r, err := rs.GetRun(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != jobs.Failed || r.Reason != app.RestoredUnfinishedReason || r.EndedAt == nil || r.CancelRequested {
			t.Errorf("restored run %s: status %s, reason %q, ended %v; want failed, %q, ended", id, r.Status, r.Reason, r.EndedAt,
				app.RestoredUnfinishedReason)
		}
		if c, err := rs.RunCleanup(ctx, id); err != nil || c != nil {
			t.Errorf("restored run %s: cleanup %+v (%v), want none: its sessions are not this store's to stop", id, c, err)
		}
	}
	if bs, err := rs.RunBackends(ctx, running); err != nil || len(bs) != 1 {
		t.Errorf("restored run's backends: %v (%v), want the one it had", bs, err)
	}
	if r, err := rs.GetRun(ctx, done.ID); err != nil || r.Status != jobs.Succeeded || r.Reason != "" {
		t.Errorf("restored run that had ended: %+v (%v), want it as it was", r, err)
	}
}
