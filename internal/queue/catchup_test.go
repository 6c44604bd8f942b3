package queue_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestMissedFiringCaughtUp: a daily schedule comes due while no process
// leads the job queue (here, none runs). The next leader queues that
// firing once as it starts; a leader after it (another process, at its
// start) does not queue it again. River's periodic jobs live in the
// leader's memory and a new leader scheduled each from its own start: a
// firing due between two leaders (a restart, a failover, the instant of an
// election) was skipped.
func TestMissedFiringCaughtUp(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	st, qdb := sqliteStore(t)
	ctx := context.Background()
	caught := make(chan []string, 4)
	hook := func(c *queue.Config) { c.CaughtUp = func(q []string) { caught <- q } }
	one := newProcess(t, st, queue.Backend{SQLite: qdb}, hook)
	if _, err := one.svc.CreateConnection(ctx, connection.Spec{Name: "db", Host: pg.Host, Port: pg.Port, Database: "postgres",
		User: pg.SuperUser, Password: secret.New(pg.SuperPassword), SSLMode: connection.SSLDisable}); err != nil {
		t.Fatal(err)
	}
	// Once a day, two seconds from now (in UTC), and a daily job whose
	// time passed before it was saved (nothing is owed to it).
	at := time.Now().UTC().Add(2 * time.Second).Truncate(time.Second)
	past := at.Add(-time.Minute)
	daily := func(t time.Time) string {
		return fmt.Sprintf("CRON_TZ=UTC %d %d %d * * *", t.Second(), t.Minute(), t.Hour())
	}
	if _, err := one.svc.ApplyJobs(ctx, []jobs.Job{
		{Name: "nightly", Connection: "db", Schedule: daily(at), Steps: []jobs.Step{{SQL: "select 1"}}},
		{Name: "earlier", Connection: "db", Schedule: daily(past), Steps: []jobs.Step{{SQL: "select 1"}}},
	}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(at.Add(500 * time.Millisecond))) // the firing comes due with no process running
	startQueue(t, one)
	wait := func(what string) []string {
		t.Helper()
		select {
		case q := <-caught:
			return q
		case <-time.After(30 * time.Second):
			t.Fatalf("no schedule catch-up within 30 s of %s", what)
		}
		return nil
	}
	if q := wait("the first leader's start"); !slices.Equal(q, []string{"nightly"}) {
		t.Fatalf("the first leader caught up %v, want [nightly]", q)
	}
	scheduled := func() int {
		t.Helper()
		n := 0
		for _, name := range []string{"nightly", "earlier"} {
			runs, err := st.ListRuns(ctx, store.RunFilter{Job: name})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range runs {
				if r.Trigger == jobs.Schedule {
					n++
				}
			}
		}
		return n
	}
	for deadline := time.Now().Add(30 * time.Second); scheduled() == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the missed firing queued no run within 30 s")
		}
	}
	if err := one.q.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// The next leader: it has nothing to catch up.
	two := newProcess(t, st, queue.Backend{SQLite: qdb}, hook)
	startQueue(t, two)
	if q := wait("the second leader's start"); len(q) != 0 {
		t.Fatalf("the second leader caught up %v again", q)
	}
	if n := scheduled(); n != 1 {
		t.Fatalf("%d scheduled runs, want the one missed firing", n)
	}
}

// TestEveryFiringCaughtUp: an @every schedule counts from when its job was
// saved, so a firing it missed while no process led the queue is queued by
// the next leader, once. It counted from each leader's start instead: a
// restart delayed it by up to an interval, and processes restarted more
// often than the interval never ran it.
func TestEveryFiringCaughtUp(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	st, qdb := sqliteStore(t)
	ctx := context.Background()
	p := newProcess(t, st, queue.Backend{SQLite: qdb}, nil)
	if _, err := p.svc.CreateConnection(ctx, connection.Spec{Name: "db", Host: pg.Host, Port: pg.Port, Database: "postgres",
		User: pg.SuperUser, Password: secret.New(pg.SuperPassword), SSLMode: connection.SSLDisable}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.svc.ApplyJobs(ctx, []jobs.Job{{Name: "every", Connection: "db", Schedule: "@every 5m",
		Steps: []jobs.Step{{SQL: "select 1"}}}}); err != nil {
		t.Fatal(err)
	}
	rec, err := st.GetJob(ctx, "every")
	if err != nil {
		t.Fatal(err)
	}
	saved := rec.UpdatedAt.Truncate(time.Second)
	startQueue(t, p) // its own catch-up at its start finds nothing owed yet
	// Seven minutes after the save no process ran: the firing at five
	// minutes is owed.
	now := saved.Add(7 * time.Minute)
	if q, err := queue.CatchUp(ctx, p.q, now); err != nil || !slices.Equal(q, []string{"every"}) {
		t.Fatalf("catch-up at save + 7m queued %v (%v), want [every]", q, err)
	}
	if q, err := queue.CatchUp(ctx, p.q, now.Add(time.Second)); err != nil || len(q) != 0 {
		t.Fatalf("a second catch-up queued %v (%v), want nothing", q, err)
	}
	// next_run_at is the interval's next instant from the save.
	v, err := p.svc.GetJob(ctx, "every")
	if err != nil {
		t.Fatal(err)
	}
	if v.NextRunAt == nil || v.NextRunAt.Sub(saved)%(5*time.Minute) != 0 {
		t.Fatalf("next_run_at %v is not saved (%v) + n × 5m", v.NextRunAt, saved)
	}
}
