package queue_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// writeElsewhere saves, as another process would, run id changed by f
// with the cleanup f returns in the same write (see
// store.BackendStore.UpdateRunCleanup), reading the run again when a write
// of this process's came in between. It reports to t, not fatally (it is
// called from the queue's goroutines).
func writeElsewhere(t *testing.T, st store.Store, id string, f func(*jobs.Run) *jobs.Cleanup) {
	t.Helper()
	ctx := context.Background()
	for {
		r, err := st.GetRun(ctx, id)
		if err != nil {
			t.Error(err)
			return
		}
		c := f(r)
		err = st.UpdateRunCleanup(ctx, r, c)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			t.Error(err)
		}
		return
	}
}

// requeue is what another process's reaper writes for a lost run with
// retries left: queued again, for any worker.
func requeue(r *jobs.Run) {
	r.Status, r.Reason, r.StartedAt, r.HeartbeatAt, r.Worker = jobs.Queued,
		"retrying: worker w was lost: no heartbeat since then (its process died or lost the store)", nil, nil, ""
	for i := range r.Steps {
		r.Steps[i] = jobs.RunStep{Index: i, Label: r.Steps[i].Label, Kind: r.Steps[i].Kind, Status: jobs.Queued}
	}
}

// TestLateWorkerOfASupersededAttempt: another process's reaper declared
// this worker lost (its heartbeats could not reach the store) and resolved
// its run while the attempt went on: it queued the run again (and a worker
// of a third process may have taken the retry), or failed it. The worker
// comes back and ends its attempt. The run's record stays as the other
// processes left it, and:
//   - its log says what the attempt did, also when the run was queued
//     again or taken by a retry (the outcome used to be dropped without a
//     word);
//   - the attempt's cleanup replaces the run's only where that is this
//     attempt's and still pending: it used to be written over whatever was
//     there, a retry's record included;
//   - the connection's health does not count the attempt's success as the
//     run's (it used to, for a run recorded failed or queued again).
func TestLateWorkerOfASupersededAttempt(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	const other = "other-host:4242"
	for _, tc := range []struct {
		name string
		// timeout: the attempt's statement outlives the job's time limit
		// and is stopped by the worker (a done cleanup); else it succeeds.
		timeout bool
		// resolve is what the other processes wrote, and cleanup the
		// cleanup they saved with it.
		resolve func(*jobs.Run)
		cleanup func(*jobs.Run) *jobs.Cleanup
		// want is the run's status and attempt after the worker came
		// back; says what the log line says of the run.
		want    jobs.Status
		attempt int
		says    string
		// workerCleanup: the attempt's cleanup replaced the one saved.
		workerCleanup bool
	}{
		{name: "QueuedAgainAfterSuccess", resolve: requeue, cleanup: reaperPending,
			want: jobs.Queued, attempt: 1, says: "its attempt (1) had succeeded; the run stays queued for attempt 2"},
		{name: "QueuedAgainAfterTimeout", timeout: true, resolve: requeue, cleanup: reaperPending,
			want: jobs.Queued, attempt: 1, says: "its attempt (1) ended failed (timed out after 1s); the run stays queued for attempt 2",
			workerCleanup: true},
		{name: "RetryTakenAfterTimeout", timeout: true,
			resolve: func(r *jobs.Run) {
				now := time.Now().UTC()
				r.Status, r.Reason, r.Worker, r.Attempt = jobs.Running, "retrying: worker lost", other, r.Attempt+1
				r.StartedAt, r.HeartbeatAt, r.EndedAt = &now, &now, nil
			},
			// The retry's own, saved with its tunnel dropped.
			cleanup: func(r *jobs.Run) *jobs.Cleanup {
				return &jobs.Cleanup{Status: jobs.CleanupPending, Remaining: []uint32{5151}, UpdatedAt: time.Now().UTC(),
					Message: "the retry's cleanup", RunAttempt: r.Attempt}
			},
			want: jobs.Running, attempt: 2, says: "its attempt (1) ended failed (timed out after 1s); the run is attempt 2's now (running)"},
		{name: "FailedAfterSuccess", resolve: func(r *jobs.Run) {
			ended := time.Now().UTC()
			r.Status, r.Reason, r.EndedAt = jobs.Failed, "worker w was lost", &ended
		}, cleanup: reaperPending, want: jobs.Failed, attempt: 1, says: "its attempt had succeeded; the run stays failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			st, qdb := sqliteStore(t)
			ended := make(chan jobs.Result, 1)
			// No heartbeat but those of step changes, no reaper here: the
			// test is the other processes.
			f := newProcess(t, st, queue.Backend{SQLite: qdb}, func(c *queue.Config) {
				c.HeartbeatInterval, c.LostAfter, c.ReapInterval = time.Hour, 2*time.Hour, time.Hour
				prev := c.RunEnded
				c.RunEnded = func(ctx context.Context, j jobs.Job, id string, tr jobs.Trigger, res jobs.Result, d time.Duration) {
					prev(ctx, j, id, tr, res, d)
					ended <- res
				}
			})
			var saved *jobs.Cleanup
			var recorded *jobs.Run
			// Once the attempt has ended, before its worker records it.
			queue.SetBeforeOutcome(f.q, func(id string) {
				writeElsewhere(t, st, id, func(r *jobs.Run) *jobs.Cleanup {
					tc.resolve(r)
					saved = tc.cleanup(r)
					return saved
				})
				var err error
				if recorded, err = st.GetRun(ctx, id); err != nil {
					t.Error(err)
				}
			})
			if _, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "db", Host: pg.Host, Port: pg.Port,
				Database: "postgres", User: pg.SuperUser, Password: secret.New(pg.SuperPassword), SSLMode: connection.SSLDisable}); err != nil {
				t.Fatal(err)
			}
			marker := "superseded_" + strings.ToLower(tc.name)
			job := jobs.Job{Name: "j", Connection: "db", Retries: 1, Steps: []jobs.Step{{SQL: "SELECT 1"}}}
			if tc.timeout {
				job.Timeout = connection.Duration(time.Second)
				job.Steps = []jobs.Step{{SQL: "SELECT pg_sleep(600) AS " + marker}}
			}
			if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{job}); err != nil {
				t.Fatal(err)
			}
			startQueue(t, f)
			r, err := f.svc.RunJob(ctx, "j", jobs.API)
			if err != nil {
				t.Fatal(err)
			}
			res := <-ended
			if !res.Superseded {
				t.Errorf("the attempt's result was not told as superseded: %+v", res)
			}

			lines, err := f.svc.RunLog(ctx, r.ID, 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			line, cleanupLine := "", ""
			for _, l := range lines {
				switch {
				case l.Stream != jobs.StreamSystem:
				case strings.HasPrefix(l.Text, "worker ") && strings.Contains(l.Text, "came back"):
					line = l.Text
				case strings.HasPrefix(l.Text, "cleanup by the worker that came back"):
					cleanupLine = l.Text
				}
			}
			if !strings.Contains(line, tc.says) {
				t.Errorf("the worker's line: %q; want it to say %q; the log:\n%s", line, tc.says, joinText(lines))
			}

			got, err := f.svc.GetRun(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != tc.want || got.Attempt != tc.attempt || got.Reason != recorded.Reason || got.Worker != recorded.Worker ||
				got.Version != recorded.Version {
				t.Errorf("run after its worker came back: %s attempt %d by %q (%q), version %d; want %s attempt %d by %q (%q), "+
					"version %d, as the other processes left it", got.Status, got.Attempt, got.Worker, got.Reason, got.Version,
					tc.want, tc.attempt, recorded.Worker, recorded.Reason, recorded.Version)
			}
			switch {
			case got.Cleanup == nil:
				t.Error("the run's cleanup is gone")
			case tc.workerCleanup && (got.Cleanup.Status != jobs.CleanupDone || got.Cleanup.RunAttempt != 1 || cleanupLine == ""):
				t.Errorf("cleanup: %+v (log line %q); want the worker's (done, attempt 1) in place of the reaper's pending one, "+
					"and said in the log", got.Cleanup, cleanupLine)
			case !tc.workerCleanup && (got.Cleanup.Message != saved.Message || got.Cleanup.Status != saved.Status || cleanupLine != ""):
				t.Errorf("cleanup: %+v (log line %q); want the one saved with the run (%s, %q), alone", got.Cleanup, cleanupLine,
					saved.Status, saved.Message)
			}
			if tc.timeout {
				admin := pg.Connect(t, "postgres")
				pollUntil(t, func() (int, bool) { n := activeCount(t, admin, marker); return n, n == 0 })
			}

			// The connection's health has no entry of the run: the attempt
			// did not end it, and did not see the connection fail.
			v, err := f.svc.GetConnection(ctx, "db")
			if err != nil {
				t.Fatal(err)
			}
			if v.Health != nil {
				for _, ch := range v.Health.Recent {
					if ch.Kind == store.CheckRun && ch.Detail == r.ID {
						t.Errorf("the connection's health counts the superseded attempt as the run's outcome: %+v", ch)
					}
				}
			}
		})
	}
}

// reaperPending is the pending cleanup the reaper saves with the write
// that resolves run r (stopping the sessions the lost worker recorded).
func reaperPending(r *jobs.Run) *jobs.Cleanup {
	return &jobs.Cleanup{Status: jobs.CleanupPending, Remaining: []uint32{4242}, UpdatedAt: time.Now().UTC(),
		Message: "the reaper's cleanup", RunAttempt: r.Attempt}
}

// reapBeforePending is a store on which, right before the first pending
// cleanup of a run is saved through it (the worker's, its server out of
// reach), another process's reaper declares the run's worker lost, fails
// the run and then records that it stopped the run's statements. It keeps
// each cleanup saved through it and the run's cleanup right after.
type reapBeforePending struct {
	store.Store
	t      *testing.T
	once   sync.Once
	reaper *jobs.Cleanup
	mu     sync.Mutex
	writes []cleanupWrite
}

// cleanupWrite is a cleanup saved through reapBeforePending and the run's
// cleanup right after.
type cleanupWrite struct {
	c, after jobs.Cleanup
}

func (s *reapBeforePending) PutRunCleanup(ctx context.Context, id string, c *jobs.Cleanup) (bool, error) {
	if c.Status == jobs.CleanupPending {
		s.once.Do(func() {
			var attempt int
			writeElsewhere(s.t, s.Store, id, func(r *jobs.Run) *jobs.Cleanup {
				ended := time.Now().UTC()
				r.Status, r.Reason, r.EndedAt, attempt = jobs.Failed, "worker w was lost", &ended, r.Attempt
				return reaperPending(r)
			})
			s.reaper = &jobs.Cleanup{Status: jobs.CleanupDone, Cancelled: []uint32{4242}, UpdatedAt: time.Now().UTC(),
				Message: "the reaper stopped them", RunAttempt: attempt}
			if _, err := s.Store.PutRunCleanup(ctx, id, s.reaper); err != nil {
				s.t.Error(err)
			}
		})
	}
	saved, err := s.Store.PutRunCleanup(ctx, id, c)
	after, aerr := s.Store.RunCleanup(ctx, id)
	if aerr != nil || after == nil {
		s.t.Errorf("cleanup of run %s after a write: %+v, %v", id, after, aerr)
		after = &jobs.Cleanup{}
	}
	s.mu.Lock()
	s.writes = append(s.writes, cleanupWrite{c: *c, after: *after})
	s.mu.Unlock()
	return saved, err
}

func (s *reapBeforePending) saved() []cleanupWrite {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]cleanupWrite(nil), s.writes...)
}

// TestLateCleanupKeepsTheReapersOutcome: a run's server cannot be reached
// to stop its statement when it stops (its time limit), so its worker
// records the cleanup as pending and retries it in the background. Just
// before, another process's reaper had declared the worker lost, failed
// the run and recorded that it stopped the run's statements (done). The
// worker's pending record, and then its retry's outcome, used to be
// written over the reaper's: the run read "pending" (statements may still
// run) after they were known stopped. The reaper's outcome stands now.
func TestLateCleanupKeepsTheReapersOutcome(t *testing.T) {
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	st, qdb := sqliteStore(t)
	wrapped := &reapBeforePending{Store: st, t: t}
	ended := make(chan jobs.Result, 1)
	f := newProcess(t, wrapped, queue.Backend{SQLite: qdb}, func(c *queue.Config) {
		// No heartbeat but those of step changes, no reaper here: the
		// test is the other process's reaper.
		c.HeartbeatInterval, c.LostAfter, c.ReapInterval = time.Hour, 2*time.Hour, time.Hour
		open := c.Open
		opened := 0
		var mu sync.Mutex
		c.Open = func(ctx context.Context, name string) (jobs.Conn, error) {
			conn, err := open(ctx, name)
			mu.Lock()
			defer mu.Unlock()
			if opened++; err != nil || opened > 1 {
				return conn, err
			}
			return &refusingMonitor{Conn: conn}, nil
		}
		prev := c.RunEnded
		c.RunEnded = func(ctx context.Context, j jobs.Job, id string, tr jobs.Trigger, res jobs.Result, d time.Duration) {
			prev(ctx, j, id, tr, res, d)
			ended <- res
		}
	})
	ctx := context.Background()
	if _, err := f.svc.CreateConnection(ctx, connection.Spec{Name: "db", Host: pg.Host, Port: pg.Port,
		Database: "postgres", User: pg.SuperUser, Password: secret.New(pg.SuperPassword), SSLMode: connection.SSLDisable}); err != nil {
		t.Fatal(err)
	}
	const marker = "late_cleanup_keeps_the_reapers"
	if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "late-cleanup", Connection: "db", Timeout: connection.Duration(time.Second),
		Steps: []jobs.Step{{SQL: "SELECT pg_sleep(600) AS " + marker}}}}); err != nil {
		t.Fatal(err)
	}
	startQueue(t, f)
	r, err := f.svc.RunJob(ctx, "late-cleanup", jobs.Manual)
	if err != nil {
		t.Fatal(err)
	}
	if res := <-ended; !res.Superseded || res.Cleanup == nil || res.Cleanup.Status != jobs.CleanupPending {
		t.Fatalf("the attempt ended %s (%q), superseded %v, cleanup %+v; want superseded with its cleanup pending: "+
			"this test proves nothing", res.Status, res.Reason, res.Superseded, res.Cleanup)
	}
	// The worker's retry reaches the server and stops the statement, and
	// its outcome is written.
	admin := pg.Connect(t, "postgres")
	pollUntil(t, func() (int, bool) { n := activeCount(t, admin, marker); return n, n == 0 })
	writes := pollUntil(t, func() ([]cleanupWrite, bool) { w := wrapped.saved(); return w, len(w) == 2 })
	for i, w := range writes {
		if w.after.Status != jobs.CleanupDone || w.after.Message != wrapped.reaper.Message {
			t.Errorf("after the worker's cleanup %d (%s: %q) was written, the run's cleanup is %s (%q); "+
				"want the reaper's outcome (%s: %q)", i+1, w.c.Status, w.c.Message, w.after.Status, w.after.Message,
				wrapped.reaper.Status, wrapped.reaper.Message)
		}
	}
	got, err := f.svc.GetRun(ctx, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != jobs.Failed || got.Cleanup == nil || got.Cleanup.Status != jobs.CleanupDone ||
		got.Cleanup.Message != wrapped.reaper.Message {
		t.Fatalf("run %s with cleanup %+v; want failed by the reaper, with its cleanup", got.Status, got.Cleanup)
	}
}
