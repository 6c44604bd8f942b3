package queue_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/connection"
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

// slowCleanups is a store slow to save a pending cleanup: it holds the
// write back until a final outcome was saved (or 3 s passed), as a store
// under load may reorder them. It keeps the statuses saved, in order.
type slowCleanups struct {
	store.Store
	final    chan struct{}
	once     sync.Once
	mu       sync.Mutex
	statuses []jobs.CleanupStatus
}

func (s *slowCleanups) PutRunCleanup(ctx context.Context, id string, c *jobs.Cleanup) (bool, error) {
	if c.Status == jobs.CleanupPending {
		select {
		case <-s.final:
		case <-time.After(3 * time.Second):
		}
	}
	saved, err := s.Store.PutRunCleanup(ctx, id, c)
	s.mu.Lock()
	s.statuses = append(s.statuses, c.Status)
	s.mu.Unlock()
	if c.Status != jobs.CleanupPending {
		s.once.Do(func() { close(s.final) })
	}
	return saved, err
}

func (s *slowCleanups) saved() []jobs.CleanupStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.statuses)
}

// refusingMonitor is a run's connection on which only the first database
// session opens: the run's own. The session that is to stop the run's
// statements fails to open, so the cleanup is retried in the background
// (on a connection opened again, which works).
type refusingMonitor struct {
	jobs.Conn
	opened atomic.Int32
}

func (c *refusingMonitor) Connect(ctx context.Context) (*pgx.Conn, error) {
	if c.opened.Add(1) > 1 {
		return nil, errors.New("test: the server cannot be reached for the cleanup")
	}
	return c.Conn.Connect(ctx)
}

// testFinalCleanupWins checks that a cleanup retried in the background
// ends with its final outcome recorded even when that outcome is saved
// before the worker saved the run's end: the pending record, once saved
// by the worker after the run had ended, replaced it.
func testFinalCleanupWins(t *testing.T, pg *testenv.Postgres) {
	slow := &slowCleanups{final: make(chan struct{})}
	var opens atomic.Int32
	f := start(t, pg, func(c *queue.Config) {
		slow.Store = c.Store
		c.Store = slow
		open := c.Open
		c.Open = func(ctx context.Context, name string) (jobs.Conn, error) {
			conn, err := open(ctx, name)
			if err != nil || opens.Add(1) > 1 {
				return conn, err
			}
			return &refusingMonitor{Conn: conn}, nil
		}
	})
	ctx := context.Background()
	if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "late-cleanup", Connection: "db", Timeout: connection.Duration(time.Second),
		Steps: []jobs.Step{{SQL: "select pg_sleep(30)"}}}}); err != nil {
		t.Fatal(err)
	}
	r, err := f.svc.RunJob(ctx, "late-cleanup", jobs.Manual)
	if err != nil {
		t.Fatal(err)
	}
	waitRun(t, f.svc, r.ID, terminal)
	// Both the pending record and the retry's outcome are saved.
	deadline := time.Now().Add(30 * time.Second)
	for len(slow.saved()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("cleanups saved: %v", slow.saved())
		}
		time.Sleep(20 * time.Millisecond)
	}
	got := waitRun(t, f.svc, r.ID, func(r *jobs.Run) bool { return r.Cleanup != nil })
	if got.Cleanup.Status != jobs.CleanupDone {
		t.Fatalf("the run's cleanup is %s (saved in this order: %v), want done: %+v", got.Cleanup.Status, slow.saved(), got.Cleanup)
	}
}
