package queue_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestCancelAsTheRunFinishes: a cancel request is accepted (the run is
// still recorded as running) after the run's last step has ended, as its
// worker records its end. The run stays succeeded, with cancel_requested,
// and its log says why: it used to say nothing of the request, and the
// run's record read as a cancel that was ignored.
func TestCancelAsTheRunFinishes(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	ctx := context.Background()
	st, qdb := sqliteStore(t)
	// Heartbeats an hour apart: the worker learns of the request only as
	// it records the run's end.
	f := newProcess(t, st, queue.Backend{SQLite: qdb}, func(c *queue.Config) {
		c.HeartbeatInterval, c.LostAfter = time.Hour, 2*time.Hour
	})
	queue.SetBeforeOutcome(f.q, func(id string) {
		r, err := f.svc.CancelRun(context.Background(), id, "bob")
		if err != nil {
			t.Error(err)
			return
		}
		if r.Status != jobs.Running || !r.CancelRequested {
			t.Errorf("cancel accepted as the run finishes: status %s, cancel_requested %v; want running with the request",
				r.Status, r.CancelRequested)
		}
	})
	if _, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "db", Host: pg.Host, Port: pg.Port,
		Database: "postgres", User: pg.SuperUser, Password: secret.New(pg.SuperPassword),
		SSLMode: connection.SSLDisable}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "quick", Connection: "db", Steps: []jobs.Step{
		{SQL: "SELECT 1"}}}}); err != nil {
		t.Fatal(err)
	}
	startQueue(t, f)
	r, err := f.svc.RunJob(ctx, "quick", jobs.API)
	if err != nil {
		t.Fatal(err)
	}
	r = waitRun(t, f.svc, r.ID, terminal)
	if r.Status != jobs.Succeeded || !r.CancelRequested || r.Reason != "" {
		t.Fatalf("run %s: status %s, cancel_requested %v, reason %q; want succeeded with the request",
			r.ID, r.Status, r.CancelRequested, r.Reason)
	}
	lines, err := f.svc.RunLog(ctx, r.ID, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	const want = "a cancel request (cancelled by bob) arrived after the run's last step had ended; " +
		"the run succeeded and was not cancelled"
	for _, l := range lines {
		if l.Stream == jobs.StreamSystem && l.Text == want {
			return
		}
	}
	t.Fatalf("the run's log says nothing of the late cancel request (want %q):\n%s", want, joinText(lines))
}

// TestCancelAfterTheRunWasStopped: a cancel request reaches the worker as
// it records the end of a run that its time limit stopped (as the fence or
// a shutdown may). The run's log used to say that the request "arrived
// after the run's last step had ended", untrue of a step that was stopped;
// it now says the run had ended failed, and why.
func TestCancelAfterTheRunWasStopped(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	ctx := context.Background()
	st, qdb := sqliteStore(t)
	f := newProcess(t, st, queue.Backend{SQLite: qdb}, func(c *queue.Config) {
		c.HeartbeatInterval, c.LostAfter = time.Hour, 2*time.Hour
	})
	queue.SetBeforeOutcome(f.q, func(id string) {
		if _, err := f.svc.CancelRun(context.Background(), id, "bob"); err != nil {
			t.Error(err)
		}
	})
	if _, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "db", Host: pg.Host, Port: pg.Port,
		Database: "postgres", User: pg.SuperUser, Password: secret.New(pg.SuperPassword),
		SSLMode: connection.SSLDisable}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "limited", Connection: "db",
		Timeout: connection.Duration(time.Second), Steps: []jobs.Step{{SQL: "SELECT pg_sleep(600)"}}}}); err != nil {
		t.Fatal(err)
	}
	startQueue(t, f)
	r, err := f.svc.RunJob(ctx, "limited", jobs.API)
	if err != nil {
		t.Fatal(err)
	}
	r = waitRun(t, f.svc, r.ID, terminal)
	if r.Status != jobs.Failed || !r.CancelRequested {
		t.Fatalf("run %s: status %s, cancel_requested %v, reason %q; want failed with the request",
			r.ID, r.Status, r.CancelRequested, r.Reason)
	}
	lines, err := f.svc.RunLog(ctx, r.ID, 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	want := "a cancel request (cancelled by bob) reached the worker only after the run had ended failed (" +
		r.Reason + "); the run is recorded so, not as cancelled"
	found := false
	for _, l := range lines {
		if l.Stream == jobs.StreamSystem && strings.Contains(l.Text, "cancel request") {
			if l.Text != want {
				t.Errorf("the run's log says %q, want %q", l.Text, want)
			}
			found = true
		}
	}
	if !found {
		t.Fatalf("the run's log says nothing of the late cancel request (want %q):\n%s", want, joinText(lines))
	}
}
