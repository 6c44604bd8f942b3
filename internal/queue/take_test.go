package queue_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestCancelAsTheRunIsTaken: a run is cancelled right after a worker took
// it (saved it as running) and before it started. The request reaches the
// worker at once and the run ends cancelled without starting its first
// step. It used to be lost until the run's first heartbeat, which comes as
// the first step starts: the step ran (here, created its table) although
// the run had been cancelled before.
func TestCancelAsTheRunIsTaken(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	slow := func(c *queue.Config) { c.HeartbeatInterval, c.LostAfter = time.Hour, 2*time.Hour }

	check := func(t *testing.T, st store.Store, backend queue.Backend) {
		var b [6]byte
		_, _ = rand.Read(b[:])
		table := "taken_" + hex.EncodeToString(b[:])
		f := newProcess(t, st, backend, slow)
		queue.SetAfterTake(f.q, func(id string) {
			if _, err := f.svc.CancelRun(context.Background(), id, "bob"); err != nil {
				t.Error(err)
			}
		})
		ctx := context.Background()
		if _, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "db", Host: pg.Host, Port: pg.Port,
			Database: "postgres", User: pg.SuperUser, Password: secret.New(pg.SuperPassword),
			SSLMode: connection.SSLDisable}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "taken", Connection: "db", Steps: []jobs.Step{
			{SQL: "CREATE TABLE " + table + " (x int)"}, {SQL: "SELECT 1"}}}}); err != nil {
			t.Fatal(err)
		}
		startQueue(t, f)
		admin := pg.Connect(t, "postgres")
		t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP TABLE IF EXISTS "+table) })
		r, err := f.svc.RunJob(ctx, "taken", jobs.API)
		if err != nil {
			t.Fatal(err)
		}
		r = waitRun(t, f.svc, r.ID, terminal)
		if r.Status != jobs.Cancelled || r.Reason != "cancelled by bob" || r.Attempt != 1 {
			t.Fatalf("run %s: status %s, reason %q, attempt %d; want cancelled by bob", r.ID, r.Status, r.Reason, r.Attempt)
		}
		for _, s := range r.Steps {
			if s.Status != jobs.Skipped || s.StartedAt != nil {
				t.Errorf("step %d: %s (started %v), want skipped", s.Index+1, s.Status, s.StartedAt)
			}
		}
		lines, err := f.svc.RunLog(ctx, r.ID, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			if strings.HasPrefix(l.Text, "step ") {
				t.Errorf("the run's log says a step started: %q", l.Text)
			}
		}
		var exists bool
		if err := admin.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if exists {
			t.Errorf("the cancelled run's first step ran: table %s exists", table)
		}
	}

	t.Run("SQLite", func(t *testing.T) {
		st, qdb := sqliteStore(t)
		check(t, st, queue.Backend{SQLite: qdb})
	})
	t.Run("PostgreSQL", func(t *testing.T) {
		st, backend := pgStore(t, pg.NewDatabase(t))
		check(t, st, backend)
	})
}
