package queue_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// readCounter counts the queue's reads of each run.
type readCounter struct {
	store.Store
	mu    sync.Mutex
	reads map[string]int
}

func (s *readCounter) GetRun(ctx context.Context, id string) (*jobs.Run, error) {
	s.mu.Lock()
	s.reads[id]++
	s.mu.Unlock()
	return s.Store.GetRun(ctx, id)
}

func (s *readCounter) count(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads[id]
}

// testRunReadOnce checks that a worker reads its run once, when it takes
// it, and writes its heartbeats and its end from what it last wrote: one
// query per update instead of two, on a store every process shares.
func testRunReadOnce(t *testing.T, pg *testenv.Postgres) {
	counter := &readCounter{reads: map[string]int{}}
	f := start(t, pg, func(c *queue.Config) {
		counter.Store = c.Store
		c.Store = counter
	})
	ctx := context.Background()
	if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "beats", Connection: "db", Steps: []jobs.Step{
		{SQL: "select 1"}, {Command: []string{"sleep", "1"}}, {SQL: "select 2"}}}}); err != nil {
		t.Fatal(err)
	}
	r, err := f.svc.RunJob(ctx, "beats", jobs.Manual)
	if err != nil {
		t.Fatal(err)
	}
	r = waitRun(t, f.svc, r.ID, terminal)
	if r.Status != jobs.Succeeded || r.HeartbeatAt == nil || !r.HeartbeatAt.After(*r.StartedAt) {
		t.Fatalf("run %+v", r)
	}
	for i, s := range r.Steps {
		if s.Status != jobs.Succeeded {
			t.Fatalf("step %d: %+v", i, s)
		}
	}
	// Three step starts and ends and about five heartbeats (every 200 ms
	// over the second's sleep) were written.
	if n := counter.count(r.ID); n != 1 {
		t.Fatalf("the queue read run %s %d times, want once (when it took it)", r.ID, n)
	}
}

// testCancelFromAnotherProcess checks that a cancel request saved in the
// store by another process (without this one's queue.Cancel) reaches the
// worker at its next heartbeat: the write from its own copy of the run
// conflicts, and it reads the request.
func testCancelFromAnotherProcess(t *testing.T, pg *testenv.Postgres) {
	f := start(t, pg, nil)
	ctx := context.Background()
	if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "long", Connection: "db", Steps: []jobs.Step{
		{Command: []string{"sleep", "60"}}}}}); err != nil {
		t.Fatal(err)
	}
	r, err := f.svc.RunJob(ctx, "long", jobs.API)
	if err != nil {
		t.Fatal(err)
	}
	waitRun(t, f.svc, r.ID, func(r *jobs.Run) bool { return r.Status == jobs.Running })
	const reason = "cancelled by another process"
	for {
		cur, err := f.st.GetRun(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		cur.CancelRequested, cur.Reason = true, reason
		err = f.st.UpdateRun(ctx, cur)
		if errors.Is(err, store.ErrConflict) {
			continue // a heartbeat came in between
		}
		if err != nil {
			t.Fatal(err)
		}
		break
	}
	// waitRun gives up after 30 s, well before the sleep would end.
	r = waitRun(t, f.svc, r.ID, terminal)
	if r.Status != jobs.Cancelled || !strings.Contains(r.Reason, reason) {
		t.Fatalf("run %+v", r)
	}
}
