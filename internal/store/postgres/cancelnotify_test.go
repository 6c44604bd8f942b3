package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store/postgres"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestUpdateRunNotifiesCancel: the update that records a run's cancel
// request notifies postgres.RunCancelChannel with the run's ID, once: the
// updates after it (the worker's heartbeats, its end) do not.
func TestUpdateRunNotifiesCancel(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	db := pg.NewDatabase(t)
	s := openAt(t, db.ConnString())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	listener, err := pgx.Connect(ctx, db.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = listener.Close(context.Background()) })
	channel := pgx.Identifier{postgres.RunCancelChannel}.Sanitize()
	if _, err := listener.Exec(ctx, "LISTEN "+channel); err != nil {
		t.Fatal(err)
	}
	// next returns the next notification's payload.
	next := func() string {
		t.Helper()
		n, err := listener.WaitForNotification(ctx)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		if n.Channel != postgres.RunCancelChannel {
			t.Fatalf("notification on %q", n.Channel)
		}
		return n.Payload
	}
	// mark sends a notification of its own after the updates so far:
	// notifications arrive in the order their transactions committed, so
	// the next one being the mark means that the updates sent none.
	mark := func(payload string) {
		t.Helper()
		if _, err := s.Pool().Exec(ctx, `SELECT pg_notify($1, $2)`, postgres.RunCancelChannel, payload); err != nil {
			t.Fatal(err)
		}
	}

	r := jobs.NewRun(*sampleJob(), jobs.API, time.Now())
	if err := s.CreateRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	r.Status, r.StartedAt, r.HeartbeatAt, r.Worker, r.Attempt = jobs.Running, &now, &now, "one", 1
	if err := s.UpdateRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	mark("started")
	if got := next(); got != "started" {
		t.Fatalf("starting the run notified %q", got)
	}

	r.CancelRequested, r.Reason = true, "cancelled by bob"
	if err := s.UpdateRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	mark("requested")
	if got := next(); got != r.ID {
		t.Fatalf("the cancel request notified %q, want the run's ID %q", got, r.ID)
	}
	if got := next(); got != "requested" {
		t.Fatalf("the cancel request notified %q after the run's ID", got)
	}

	// A heartbeat, then the end, with the request still set.
	r.HeartbeatAt = &now
	if err := s.UpdateRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	r.Status, r.EndedAt = jobs.Cancelled, &now
	if err := s.UpdateRun(ctx, r); err != nil {
		t.Fatal(err)
	}
	mark("ended")
	if got := next(); got != "ended" {
		t.Fatalf("an update after the cancel request notified %q again", got)
	}
}
