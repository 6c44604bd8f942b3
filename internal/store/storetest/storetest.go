// Package storetest is the one test suite every store backend must pass.
// A backend's tests call Exercise with a function that opens a fresh,
// empty store.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
)

// Exercise runs the shared suite against stores made by open.
func Exercise(t *testing.T, open func(t *testing.T) store.Store) {
	t.Run("Connections", func(t *testing.T) {
		t.Parallel()
		exerciseConnections(t, open(t))
	})
	t.Run("ConnectionConflicts", func(t *testing.T) {
		t.Parallel()
		exerciseConflicts(t, open(t))
	})
	t.Run("KeyUse", func(t *testing.T) {
		t.Parallel()
		exerciseKeyUse(t, open(t))
	})
	t.Run("Tokens", func(t *testing.T) {
		t.Parallel()
		exerciseTokens(t, open(t))
	})
	t.Run("Sessions", func(t *testing.T) {
		t.Parallel()
		exerciseSessions(t, open(t))
	})
	t.Run("Meta", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := context.Background()
		got, err := s.PutMetaIfAbsent(ctx, "k", []byte{1, 2, 0, 3})
		if err != nil || string(got) != "\x01\x02\x00\x03" {
			t.Fatalf("first put: %v %v", got, err)
		}
		got, err = s.PutMetaIfAbsent(ctx, "k", []byte("other"))
		if err != nil || string(got) != "\x01\x02\x00\x03" {
			t.Fatalf("second put replaced the value: %q %v", got, err)
		}
	})
	t.Run("Jobs", func(t *testing.T) {
		t.Parallel()
		exerciseJobs(t, open(t))
	})
	t.Run("Runs", func(t *testing.T) {
		t.Parallel()
		exerciseRuns(t, open(t))
	})
	t.Run("RunPaging", func(t *testing.T) {
		t.Parallel()
		exerciseRunPaging(t, open(t))
	})
	t.Run("RunWith", func(t *testing.T) {
		t.Parallel()
		exerciseRunWith(t, open(t))
	})
	t.Run("RunLogs", func(t *testing.T) {
		t.Parallel()
		exerciseRunLogs(t, open(t))
	})
	t.Run("RunRetention", func(t *testing.T) {
		t.Parallel()
		exerciseRunRetention(t, open(t))
	})
	t.Run("Ordering", func(t *testing.T) {
		t.Parallel()
		exerciseOrdering(t, open(t))
	})
	t.Run("RunBackends", func(t *testing.T) {
		t.Parallel()
		exerciseRunBackends(t, open(t))
	})
	t.Run("RunCleanupOrder", func(t *testing.T) {
		t.Parallel()
		exerciseRunCleanupOrder(t, open(t))
	})
	t.Run("Health", func(t *testing.T) {
		t.Parallel()
		exerciseHealth(t, open(t))
	})
	t.Run("Audit", func(t *testing.T) {
		t.Parallel()
		exerciseAudit(t, open(t))
	})
	t.Run("Transfer", func(t *testing.T) {
		t.Parallel()
		exerciseTransfer(t, open)
	})
	t.Run("Secrets", func(t *testing.T) {
		t.Parallel()
		exerciseSecrets(t, open(t))
	})
}

func exerciseRunBackends(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	run := &jobs.Run{ID: "rb", JobName: "nightly", Job: *sampleJob("nightly"), Trigger: jobs.Manual, Status: jobs.Running, QueuedAt: now}
	if err := s.CreateRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	if got, err := s.RunBackends(ctx, "rb"); err != nil || len(got) != 0 {
		t.Fatalf("backends of a new run: %v, %v", got, err)
	}
	if c, err := s.RunCleanup(ctx, "rb"); err != nil || c != nil {
		t.Fatalf("cleanup of a new run: %+v, %v", c, err)
	}
	want := []jobs.Backend{
		{PID: 4312, SecretKey: []byte{0, 1, 2, 255}, Step: 0, User: "dbt", Database: "analytics", OpenedAt: now},
		{PID: 4294967295, SecretKey: make([]byte, 32), Step: 2, User: "Dbt User", Database: "wh", OpenedAt: now.Add(time.Second)},
	}
	for _, b := range want {
		if err := s.AddRunBackend(ctx, "rb", b); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.RunBackends(ctx, "rb")
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("backends: %+v, %v; want %+v", got, err, want)
	}
	if err := s.AddRunBackend(ctx, "nope", want[0]); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("backend of a missing run: %v, want ErrNotFound", err)
	}
	c := &jobs.Cleanup{Status: jobs.CleanupPending, Remaining: []uint32{4312}, Attempts: 1, UpdatedAt: now}
	c.Summarize()
	if saved, err := s.PutRunCleanup(ctx, "rb", c); err != nil || !saved {
		t.Fatalf("first cleanup: saved %v, %v; want saved", saved, err)
	}
	c2 := &jobs.Cleanup{Status: jobs.CleanupDone, Cancelled: []uint32{4312}, Terminated: []uint32{7}, Attempts: 2, UpdatedAt: now.Add(time.Minute),
		RunAttempt: 1}
	c2.Summarize()
	// A pending cleanup is replaced, a done one is not (c's attempt is not
	// known: it counts as c2's).
	if saved, err := s.PutRunCleanup(ctx, "rb", c2); err != nil || !saved {
		t.Fatalf("cleanup put over a pending one: saved %v, %v; want saved", saved, err)
	}
	if saved, err := s.PutRunCleanup(ctx, "rb", c); err != nil || saved {
		t.Fatalf("cleanup put over a done one: saved %v, %v; want not saved", saved, err)
	}
	if gotC, err := s.RunCleanup(ctx, "rb"); err != nil || !reflect.DeepEqual(gotC, c2) {
		t.Fatalf("cleanup: %+v, %v; want %+v", gotC, err, c2)
	}
	if _, err := s.PutRunCleanup(ctx, "nope", c2); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("cleanup of a missing run: %v, want ErrNotFound", err)
	}

	// A run ended with its cleanup (of a newer attempt) in one write; a
	// stale write saves neither.
	cur, err := s.GetRun(ctx, "rb")
	if err != nil {
		t.Fatal(err)
	}
	stale := *cur
	ended := now.Add(2 * time.Minute)
	cur.Status, cur.EndedAt = jobs.Failed, &ended
	c3 := &jobs.Cleanup{Status: jobs.CleanupPending, Remaining: []uint32{4312, 9}, UpdatedAt: ended, RunAttempt: 2}
	c3.Summarize()
	if err := s.UpdateRunCleanup(ctx, cur, c3); err != nil {
		t.Fatal(err)
	}
	if r, err := s.GetRun(ctx, "rb"); err != nil || r.Status != jobs.Failed || r.Version != cur.Version {
		t.Fatalf("run after UpdateRunCleanup: %+v, %v; want failed at version %d", r, err, cur.Version)
	}
	if gotC, err := s.RunCleanup(ctx, "rb"); err != nil || !reflect.DeepEqual(gotC, c3) {
		t.Fatalf("cleanup after UpdateRunCleanup: %+v, %v; want %+v", gotC, err, c3)
	}
	stale.Status = jobs.Succeeded
	if err := s.UpdateRunCleanup(ctx, &stale, c2); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("UpdateRunCleanup of a stale run: %v, want ErrConflict", err)
	}
	if gotC, err := s.RunCleanup(ctx, "rb"); err != nil || !reflect.DeepEqual(gotC, c3) {
		t.Fatalf("cleanup after a refused UpdateRunCleanup: %+v, %v; want %+v (unchanged)", gotC, err, c3)
	}
	missing := *cur
	missing.ID = "nope"
	if err := s.UpdateRunCleanup(ctx, &missing, c3); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("UpdateRunCleanup of a missing run: %v, want ErrNotFound", err)
	}
}

// exerciseRunCleanupOrder checks that a run's cleanup record is written
// only where it does not replace one that is to stand: a final outcome
// (done, failed) by a late pending record or another outcome of the same
// attempt (but for done, confirmed, over failed, given up), or a newer
// attempt's record by an older attempt's. Writes used
// to replace whatever was there: a worker declared lost that came back
// wrote "pending" over the outcome of the reaper that had stopped its
// statements, and an old attempt's outcome over its retry's record.
func exerciseRunCleanupOrder(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	run := &jobs.Run{ID: "ro", JobName: "nightly", Job: *sampleJob("nightly"), Trigger: jobs.Manual, Status: jobs.Running,
		QueuedAt: now, Attempt: 1}
	if err := s.CreateRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	cleanup := func(st jobs.CleanupStatus, attempt int, by string) *jobs.Cleanup {
		return &jobs.Cleanup{Status: st, Remaining: []uint32{4312}, Message: by, UpdatedAt: now, RunAttempt: attempt}
	}
	var want *jobs.Cleanup
	for _, step := range []struct {
		what  string
		c     *jobs.Cleanup
		saved bool
	}{
		{"the reaper's pending record of attempt 1", cleanup(jobs.CleanupPending, 1, "reaper"), true},
		{"attempt 1's worker's pending record over it", cleanup(jobs.CleanupPending, 1, "worker"), true},
		{"the reaper's outcome of attempt 1", cleanup(jobs.CleanupDone, 1, "reaper stopped it"), true},
		{"a late pending record of attempt 1", cleanup(jobs.CleanupPending, 1, "late worker"), false},
		{"another outcome of attempt 1", cleanup(jobs.CleanupFailed, 1, "late worker gave up"), false},
		{"a record of an unknown attempt over a final one", cleanup(jobs.CleanupPending, 0, "unknown"), false},
		{"attempt 2's pending record", cleanup(jobs.CleanupPending, 2, "retry"), true},
		{"a late outcome of attempt 1", cleanup(jobs.CleanupDone, 1, "late worker stopped it"), false},
		{"attempt 2's outcome", cleanup(jobs.CleanupFailed, 2, "retry gave up"), true},
		{"a late pending record of attempt 2", cleanup(jobs.CleanupPending, 2, "retry, late"), false},
		{"attempt 2's statements found stopped by another process", cleanup(jobs.CleanupDone, 2, "reaper stopped them"), true},
		{"attempt 2's worker giving up after that", cleanup(jobs.CleanupFailed, 2, "retry gave up, late"), false},
	} {
		saved, err := s.PutRunCleanup(ctx, "ro", step.c)
		if err != nil {
			t.Fatalf("%s: %v", step.what, err)
		}
		if step.saved {
			want = step.c
		}
		got, err := s.RunCleanup(ctx, "ro")
		if err != nil {
			t.Fatal(err)
		}
		if saved != step.saved || !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: saved %v, want %v; the run's cleanup is now %+v, want %+v", step.what, saved, step.saved, got, want)
		}
	}

	// The reaper resolves the run with a pending record of attempt 2 in
	// the same write: the run's update is saved, attempt 2's outcome
	// stays.
	cur, err := s.GetRun(ctx, "ro")
	if err != nil {
		t.Fatal(err)
	}
	cur.Status = jobs.Failed
	if err := s.UpdateRunCleanup(ctx, cur, cleanup(jobs.CleanupPending, 2, "reaper, late")); err != nil {
		t.Fatal(err)
	}
	if r, err := s.GetRun(ctx, "ro"); err != nil || r.Status != jobs.Failed || r.Version != cur.Version {
		t.Fatalf("run after UpdateRunCleanup: %+v, %v; want failed at version %d", r, err, cur.Version)
	}
	if got, err := s.RunCleanup(ctx, "ro"); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("cleanup after UpdateRunCleanup with a late pending record: %+v, %v; want %+v", got, err, want)
	}

	// Outcomes of one attempt written at once over its pending record:
	// one is saved, and it is the one that stays.
	if saved, err := s.PutRunCleanup(ctx, "ro", cleanup(jobs.CleanupPending, 3, "attempt 3")); err != nil || !saved {
		t.Fatalf("attempt 3's pending record: saved %v, %v", saved, err)
	}
	const writers = 8
	var wg sync.WaitGroup
	savedBy := make([]bool, writers)
	errs := make([]error, writers)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			savedBy[i], errs[i] = s.PutRunCleanup(ctx, "ro", cleanup(jobs.CleanupDone, 3, fmt.Sprintf("writer %d", i)))
		}()
	}
	wg.Wait()
	winner := -1
	for i := range writers {
		if errs[i] != nil {
			t.Fatalf("writer %d: %v", i, errs[i])
		}
		if savedBy[i] {
			if winner >= 0 {
				t.Fatalf("writers %d and %d both replaced attempt 3's pending record", winner, i)
			}
			winner = i
		}
	}
	if got, err := s.RunCleanup(ctx, "ro"); err != nil || got == nil || got.Message != fmt.Sprintf("writer %d", winner) {
		t.Fatalf("cleanup after concurrent outcomes: %+v, %v; want writer %d's", got, err, winner)
	}
}

func sampleJob(name string) *jobs.Job {
	j := &jobs.Job{Name: name, Connection: "wh", Schedule: "0 3 * * *", TargetSchema: "Analytics",
		Retries: 1, Steps: []jobs.Step{{SQL: "create schema if not exists analytics"},
			{Name: "dbt", Command: []string{"dbt", "build", "--target", "prod"}, Workdir: "/srv/dbt"}}}
	j.ApplyDefaults()
	return j
}

func exerciseJobs(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	j := sampleJob("nightly")
	created, err := s.PutJob(ctx, j, now)
	if err != nil || !created {
		t.Fatalf("put new job: %v %v", created, err)
	}
	j.Timeout = connection.Duration(2 * time.Hour)
	created, err = s.PutJob(ctx, j, now.Add(time.Second))
	if err != nil || created {
		t.Fatalf("put existing job: %v %v", created, err)
	}
	rec, err := s.GetJob(ctx, "nightly")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(rec.Job, *j) || !rec.CreatedAt.Equal(now) || !rec.UpdatedAt.Equal(now.Add(time.Second)) {
		t.Fatalf("job round trip: %+v", rec)
	}
	if _, err := s.PutJob(ctx, sampleJob("a-first"), now); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateJob(ctx, sampleJob("nightly"), now); !errors.Is(err, store.ErrExists) {
		t.Fatalf("create existing job: %v, want ErrExists", err)
	}
	if err := s.CreateJob(ctx, sampleJob("b-created"), now); err != nil {
		t.Fatalf("create job: %v", err)
	}
	if err := s.DeleteJob(ctx, "b-created"); err != nil {
		t.Fatal(err)
	}
	list, err := s.ListJobs(ctx)
	if err != nil || len(list) != 2 || list[0].Job.Name != "a-first" {
		t.Fatalf("list jobs: %v %v", list, err)
	}
	if err := s.DeleteJob(ctx, "nightly"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetJob(ctx, "nightly"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted job: %v", err)
	}
	if err := s.DeleteJob(ctx, "nightly"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	// Racing puts of a new name: one creates it, the others replace it,
	// none fails.
	var wg sync.WaitGroup
	var mu sync.Mutex
	creates := 0
	for range 8 {
		wg.Go(func() {
			created, err := s.PutJob(ctx, sampleJob("raced"), now)
			if err != nil {
				t.Error(err)
				return
			}
			if created {
				mu.Lock()
				creates++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if creates != 1 {
		t.Fatalf("racing puts of a new job reported %d creations, want 1", creates)
	}
}

func exerciseRuns(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	mk := func(id, job string, at time.Time) *jobs.Run {
		return &jobs.Run{ID: id, JobName: job, Job: *sampleJob(job), Trigger: jobs.Manual, Status: jobs.Queued, QueuedAt: at}
	}
	r1 := mk("r1", "nightly", now)
	if err := s.CreateRun(ctx, r1); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRun(ctx, mk("r2", "nightly", now.Add(time.Second))); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRun(ctx, mk("r3", "other", now.Add(2*time.Second))); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRun(ctx, mk("r1", "nightly", now)); !errors.Is(err, store.ErrExists) {
		t.Fatalf("create duplicate run: %v, want ErrExists", err)
	}
	got, err := s.GetRun(ctx, "r1")
	if err != nil || got.Status != jobs.Queued || !reflect.DeepEqual(got.Job, r1.Job) || got.Version != 1 {
		t.Fatalf("get run: %+v %v", got, err)
	}
	// Times come back in UTC; a run without steps has an empty, non-nil
	// list (so that it encodes as [] rather than null).
	if got.QueuedAt.Location() != time.UTC || !got.QueuedAt.Equal(now) || got.Steps == nil || len(got.Steps) != 0 ||
		got.StartedAt != nil || got.EndedAt != nil || got.HeartbeatAt != nil {
		t.Fatalf("new run: %+v", got)
	}
	started := now.Add(3 * time.Second)
	code := 2
	got.Status, got.StartedAt, got.HeartbeatAt, got.Worker, got.Attempt = jobs.Running, &started, &started, "host:1", 1
	got.Steps = []jobs.RunStep{{Index: 0, Label: "sql", Kind: "sql", Status: jobs.Failed, ExitCode: &code, DurationMS: 12, Error: "boom"}}
	if err := s.UpdateRun(ctx, got); err != nil {
		t.Fatal(err)
	}
	stale := *got
	stale.Version--
	if err := s.UpdateRun(ctx, &stale); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale run update: %v", err)
	}
	again, _ := s.GetRun(ctx, "r1")
	if again.Status != jobs.Running || again.Worker != "host:1" || len(again.Steps) != 1 || *again.Steps[0].ExitCode != 2 ||
		!again.StartedAt.Equal(started) || again.EndedAt != nil {
		t.Fatalf("after update: %+v", again)
	}
	runs, err := s.ListRuns(ctx, store.RunFilter{Job: "nightly"})
	if err != nil || len(runs) != 2 || runs[0].ID != "r2" {
		t.Fatalf("list by job: %v %v", runs, err)
	}
	runs, err = s.ListRuns(ctx, store.RunFilter{Statuses: []jobs.Status{jobs.Running}})
	if err != nil || len(runs) != 1 || runs[0].ID != "r1" {
		t.Fatalf("list by status: %v %v", runs, err)
	}
	runs, err = s.ListRuns(ctx, store.RunFilter{Limit: 2})
	if err != nil || len(runs) != 2 || runs[0].ID != "r3" {
		t.Fatalf("list limit: %v %v", runs, err)
	}
	lines := []jobs.LogLine{{Time: now, Stream: "stdout", Step: 0, Text: "hello"}, {Time: now, Stream: "stderr", Step: 0, Text: "wörld\ttab"}}
	if err := s.AppendRunLog(ctx, "r1", lines); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendRunLog(ctx, "r1", []jobs.LogLine{{Time: now, Stream: "system", Step: -1, Text: "done"}}); err != nil {
		t.Fatal(err)
	}
	log, err := s.RunLog(ctx, "r1", 0, 0)
	if err != nil || len(log) != 3 || log[0].Seq != 1 || log[2].Seq != 3 || log[1].Text != "wörld\ttab" || log[2].Step != -1 {
		t.Fatalf("run log: %+v %v", log, err)
	}
	log, err = s.RunLog(ctx, "r1", 2, 10)
	if err != nil || len(log) != 1 || log[0].Text != "done" {
		t.Fatalf("run log after 2: %+v %v", log, err)
	}
	if _, err := s.GetRun(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing run: %v", err)
	}
	gone := mk("nope", "nightly", now)
	gone.Version = 1
	if err := s.UpdateRun(ctx, gone); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update missing run: %v, want ErrNotFound", err)
	}
}

// exerciseRunPaging checks that paging through the runs with
// RunFilter.Before lists each run exactly once, newest first, when many
// share a timestamp: among those, IDs descend bytewise whatever the
// database's collation ("_" > "A" > "0" > "-"). Before combines with the job and
// status filters, may name a run the filters leave out, and must name a
// run.
func exerciseRunPaging(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	mk := func(id, job string, at time.Time, st jobs.Status) {
		t.Helper()
		r := &jobs.Run{ID: id, JobName: job, Job: *sampleJob(job), Trigger: jobs.Manual, Status: st, QueuedAt: at}
		if err := s.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// Newest first: the newest alone, five at one instant, the oldest
	// alone; created in no particular order.
	want := []string{"new", "tie_z", "tie_b", "tieA", "tie0", "tie-b", "old"}
	mk("tie0", "a", now, jobs.Failed)
	mk("old", "b", now.Add(-time.Second), jobs.Succeeded)
	mk("tie_b", "b", now, jobs.Succeeded)
	mk("new", "a", now.Add(time.Second), jobs.Queued)
	mk("tieA", "b", now, jobs.Failed)
	mk("tie-b", "a", now, jobs.Succeeded)
	mk("tie_z", "a", now, jobs.Failed)
	ids := func(runs []*jobs.Run) []string {
		out := []string{}
		for _, r := range runs {
			out = append(out, r.ID)
		}
		return out
	}
	// page lists every page of f's runs, size at a time, and returns the
	// IDs in the order listed.
	page := func(f store.RunFilter, size int) []string {
		t.Helper()
		var got []string
		f.Limit = size
		for range len(want) + 1 {
			runs, err := s.ListRuns(ctx, f)
			if err != nil {
				t.Fatalf("list runs before %q: %v", f.Before, err)
			}
			got = append(got, ids(runs)...)
			if len(runs) < size {
				return got
			}
			f.Before = runs[len(runs)-1].ID
		}
		t.Fatalf("paging %+v did not end: %v", f, got)
		return nil
	}
	all, err := s.ListRuns(ctx, store.RunFilter{})
	if err != nil || !reflect.DeepEqual(ids(all), want) {
		t.Fatalf("list all = %v %v, want %v", ids(all), err, want)
	}
	for size := 1; size <= len(want); size++ {
		if got := page(store.RunFilter{}, size); !reflect.DeepEqual(got, want) {
			t.Errorf("pages of %d = %v, want %v", size, got, want)
		}
	}
	if got, w := page(store.RunFilter{Job: "a"}, 2), []string{"new", "tie_z", "tie0", "tie-b"}; !reflect.DeepEqual(got, w) {
		t.Errorf("pages of job a = %v, want %v", got, w)
	}
	failed := store.RunFilter{Statuses: []jobs.Status{jobs.Failed}}
	if got, w := page(failed, 1), []string{"tie_z", "tieA", "tie0"}; !reflect.DeepEqual(got, w) {
		t.Errorf("pages of failed runs = %v, want %v", got, w)
	}
	// Before may name a run the filter leaves out (tie_b is job b's).
	runs, err := s.ListRuns(ctx, store.RunFilter{Job: "a", Before: "tie_b"})
	if got, w := ids(runs), []string{"tie0", "tie-b"}; err != nil || !reflect.DeepEqual(got, w) {
		t.Errorf("job a before tie_b = %v %v, want %v", got, err, w)
	}
	if runs, err := s.ListRuns(ctx, store.RunFilter{Before: "old"}); err != nil || len(runs) != 0 {
		t.Errorf("before the oldest = %v %v, want none", ids(runs), err)
	}
	if runs, err := s.ListRuns(ctx, store.RunFilter{Before: "nosuchrun"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("before a missing run = %v %v, want ErrNotFound", ids(runs), err)
	}
}

// exerciseRunWith checks CreateRunWith: the run is saved only when with
// succeeds, and with's error comes back as it is.
func exerciseRunWith(t *testing.T, s store.Store) {
	ctx := context.Background()
	mk := func(id string) *jobs.Run {
		return &jobs.Run{ID: id, JobName: "j", Job: *sampleJob("j"), Trigger: jobs.Manual, Status: jobs.Queued, QueuedAt: time.Now().UTC()}
	}
	refused := errors.New("refused")
	if err := s.CreateRunWith(ctx, mk("w1"), func(_ context.Context, tx any) error {
		if tx == nil {
			t.Error("CreateRunWith called with without a transaction")
		}
		return refused
	}); !errors.Is(err, refused) {
		t.Fatalf("create run with a failing with: %v, want its error", err)
	}
	if _, err := s.GetRun(ctx, "w1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("run saved although with failed: %v", err)
	}
	called := 0
	with := func(context.Context, any) error { called++; return nil }
	if err := s.CreateRunWith(ctx, mk("w1"), with); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetRun(ctx, "w1"); err != nil || got.Status != jobs.Queued || got.Version != 1 || called != 1 {
		t.Fatalf("run saved with with: %+v %v (with called %d times)", got, err, called)
	}
	if err := s.CreateRunWith(ctx, mk("w1"), with); !errors.Is(err, store.ErrExists) || called != 1 {
		t.Fatalf("create duplicate run: %v (with called %d times), want ErrExists before with", err, called)
	}
}

func exerciseRunLogs(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	run := &jobs.Run{ID: "r", JobName: "nightly", Job: *sampleJob("nightly"), Trigger: jobs.Manual, Status: jobs.Running, QueuedAt: now}
	if err := s.CreateRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendRunLog(ctx, "r", nil); err != nil {
		t.Fatalf("append nothing: %v", err)
	}
	// Lines are process output: any bytes come back as written, times in
	// UTC.
	odd := []string{"nul\x00byte", "latin-1 caf\xe9", "\xff\xfe", "", "  spaces and \r\n  "}
	var lines []jobs.LogLine
	for i, text := range odd {
		lines = append(lines, jobs.LogLine{Time: now.In(time.FixedZone("X", 3600)), Stream: "stdout", Step: i, Text: text})
	}
	if err := s.AppendRunLog(ctx, "r", lines); err != nil {
		t.Fatalf("append odd bytes: %v", err)
	}
	log, err := s.RunLog(ctx, "r", 0, 0)
	if err != nil || len(log) != len(odd) {
		t.Fatalf("run log: %d lines, %v", len(log), err)
	}
	for i, l := range log {
		if l.Text != odd[i] || l.Seq != int64(i+1) || lines[i].Seq != l.Seq || !l.Time.Equal(now) || l.Time.Location() != time.UTC {
			t.Errorf("line %d = %+v (seq given %d), want text %q at %v in UTC", i, l, lines[i].Seq, odd[i], now)
		}
	}
	if err := s.AppendRunLog(ctx, "nope", []jobs.LogLine{{Time: now, Stream: "stdout", Text: "x"}}); err == nil {
		t.Errorf("append to a missing run succeeded")
	}

	// Concurrent appenders get distinct, consecutive Seqs.
	const writers, batches, perBatch = 4, 10, 3
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for b := range batches {
				batch := make([]jobs.LogLine, perBatch)
				for k := range batch {
					batch[k] = jobs.LogLine{Time: now, Stream: "stderr", Step: w, Text: fmt.Sprint(w, "/", b, "/", k)}
				}
				if err := s.AppendRunLog(ctx, "r", batch); err != nil {
					t.Error(err)
					return
				}
				for k := 1; k < perBatch; k++ {
					if batch[k].Seq != batch[k-1].Seq+1 {
						t.Errorf("seqs within a batch: %d then %d", batch[k-1].Seq, batch[k].Seq)
					}
				}
			}
		})
	}
	wg.Wait()
	total := len(odd) + writers*batches*perBatch
	log, err = s.RunLog(ctx, "r", 0, total+10)
	if err != nil || len(log) != total {
		t.Fatalf("after concurrent appends: %d lines, %v; want %d", len(log), err, total)
	}
	for i, l := range log {
		if l.Seq != int64(i+1) {
			t.Fatalf("line %d has seq %d: seqs must be 1, 2, 3, ...", i, l.Seq)
		}
	}
	log, err = s.RunLog(ctx, "r", int64(total-2), 1)
	if err != nil || len(log) != 1 || log[0].Seq != int64(total-1) {
		t.Fatalf("one line after %d: %+v %v", total-2, log, err)
	}
}

// exerciseOrdering checks that lists sort names and IDs bytewise, whatever
// a database's collation: "-" < "0" < "_" < "a".
func exerciseOrdering(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	shuffled := []string{"ab", "a_b", "a0", "a-b"}
	want := "a-b a0 a_b ab"
	for _, n := range shuffled {
		c := sampleConnection(n)
		if err := s.CreateConnection(ctx, c); err != nil {
			t.Fatal(err)
		}
		if _, err := s.PutJob(ctx, sampleJob(n), now); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateToken(ctx, &store.Token{ID: n, Name: n, Role: "viewer", Hash: "h" + n, CreatedAt: now}); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateRun(ctx, &jobs.Run{ID: n, JobName: "j", Job: *sampleJob("j"), Trigger: jobs.API, Status: jobs.Queued, QueuedAt: now}); err != nil {
			t.Fatal(err)
		}
	}
	conns, err := s.ListConnections(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names(conns), " "); got != want {
		t.Errorf("connections ordered %s, want %s", got, want)
	}
	js, err := s.ListJobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, j := range js {
		got = append(got, j.Job.Name)
	}
	if strings.Join(got, " ") != want {
		t.Errorf("jobs ordered %s, want %s", strings.Join(got, " "), want)
	}
	toks, err := s.ListTokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	for _, tok := range toks {
		got = append(got, tok.ID)
	}
	if strings.Join(got, " ") != want {
		t.Errorf("tokens created at the same time ordered %s, want %s (by ID)", strings.Join(got, " "), want)
	}
	runs, err := s.ListRuns(ctx, store.RunFilter{Statuses: []jobs.Status{jobs.Queued, jobs.Running}})
	if err != nil {
		t.Fatal(err)
	}
	got = nil
	for _, r := range runs {
		got = append(got, r.ID)
	}
	if strings.Join(got, " ") != "ab a_b a0 a-b" {
		t.Errorf("runs queued at the same time ordered %s, want ab a_b a0 a-b (newest first, then by ID descending)", strings.Join(got, " "))
	}
}

func exerciseTokens(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	if n, err := s.CountActiveTokens(ctx); err != nil || n != 0 {
		t.Fatalf("count on empty store = %d, %v", n, err)
	}
	a := &store.Token{ID: "t1", Name: "ci", Role: "editor", Hash: "h1", CreatedAt: now}
	if err := s.CreateToken(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateToken(ctx, &store.Token{ID: "t2", Name: "ci", Role: "viewer", Hash: "h2", CreatedAt: now}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate active name: got %v, want ErrExists", err)
	}
	if err := s.CreateToken(ctx, &store.Token{ID: "t2", Name: "other", Role: "viewer", Hash: "h1", CreatedAt: now}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate hash: got %v, want ErrExists", err)
	}
	got, err := s.TokenByHash(ctx, "h1")
	if err != nil || got.ID != "t1" || got.Role != "editor" || !got.CreatedAt.Equal(now) || !got.RevokedAt.IsZero() ||
		!got.LastUsedAt.IsZero() || got.CreatedAt.Location() != time.UTC {
		t.Fatalf("by hash = %+v, %v", got, err)
	}
	if _, err := s.TokenByHash(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown hash: %v", err)
	}
	// Times given in another zone keep their instant and come back in UTC.
	if err := s.TouchToken(ctx, "t1", now.Add(time.Minute).In(time.FixedZone("Y", -5*3600))); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeToken(ctx, "t1", now.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeToken(ctx, "t1", now.Add(3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	got, err = s.GetToken(ctx, "t1")
	if err != nil || !got.RevokedAt.Equal(now.Add(2*time.Minute)) || !got.LastUsedAt.Equal(now.Add(time.Minute)) ||
		got.LastUsedAt.Location() != time.UTC {
		t.Fatalf("after revoke = %+v, %v", got, err)
	}
	if err := s.RevokeToken(ctx, "nope", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("revoke unknown: %v", err)
	}
	// A revoked token's name can be reused.
	if err := s.CreateToken(ctx, &store.Token{ID: "t3", Name: "ci", Role: "viewer", Hash: "h3", CreatedAt: now.Add(time.Second)}); err != nil {
		t.Fatalf("reuse name of revoked token: %v", err)
	}
	list, err := s.ListTokens(ctx)
	if err != nil || len(list) != 2 || list[0].ID != "t1" || list[1].ID != "t3" {
		t.Fatalf("list = %v, %v", list, err)
	}
	if n, err := s.CountActiveTokens(ctx); err != nil || n != 1 {
		t.Fatalf("active count = %d, %v", n, err)
	}
	// Whole seconds sort before the fractions of that second.
	whole := time.Date(2030, 1, 2, 12, 0, 0, 0, time.UTC)
	if err := s.CreateToken(ctx, &store.Token{ID: "t5", Name: "late", Role: "viewer", Hash: "h5", CreatedAt: whole.Add(500 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateToken(ctx, &store.Token{ID: "t4", Name: "early", Role: "viewer", Hash: "h4", CreatedAt: whole}); err != nil {
		t.Fatal(err)
	}
	list, err = s.ListTokens(ctx)
	if err != nil || len(list) != 4 || list[2].ID != "t4" || list[3].ID != "t5" {
		t.Fatalf("order at whole seconds: %v %v", list, err)
	}
}

// exerciseSessions checks that sessions can be created, found, ended one
// by one (signing out) and swept when expired.
func exerciseSessions(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	if err := s.CreateToken(ctx, &store.Token{ID: "t1", Name: "web", Role: "viewer", Hash: "h1", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	a := &store.Session{ID: "s1", TokenID: "t1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	if err := s.CreateSession(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSession(ctx, &store.Session{ID: "s1", TokenID: "t1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate session ID: %v, want ErrExists", err)
	}
	if err := s.CreateSession(ctx, &store.Session{ID: "s9", TokenID: "nope", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("session of an unknown token: %v, want ErrNotFound", err)
	}
	// Times in another zone keep their instant and come back in UTC.
	zone := time.FixedZone("Y", -5*3600)
	if err := s.CreateSession(ctx, &store.Session{ID: "s2", TokenID: "t1", CreatedAt: now.In(zone), ExpiresAt: now.Add(-time.Second).In(zone)}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSession(ctx, &store.Session{ID: "s3", TokenID: "t1", CreatedAt: now, ExpiresAt: now}); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetSession(ctx, "s1")
	if err != nil || got.TokenID != "t1" || !got.CreatedAt.Equal(now) || !got.ExpiresAt.Equal(now.Add(time.Hour)) ||
		got.ExpiresAt.Location() != time.UTC {
		t.Fatalf("get = %+v, %v", got, err)
	}
	if got, err := s.GetSession(ctx, "s2"); err != nil || !got.ExpiresAt.Equal(now.Add(-time.Second)) || got.CreatedAt.Location() != time.UTC {
		t.Fatalf("get expired = %+v, %v", got, err)
	}
	if _, err := s.GetSession(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("get unknown: %v, want ErrNotFound", err)
	}
	// Sessions that expired at or before now go; the live one stays.
	if n, err := s.DeleteExpiredSessions(ctx, now); err != nil || n != 2 {
		t.Fatalf("delete expired = %d, %v; want 2", n, err)
	}
	for _, id := range []string{"s2", "s3"} {
		if _, err := s.GetSession(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("expired session %s after the sweep: %v, want ErrNotFound", id, err)
		}
	}
	// Signing out deletes exactly that session.
	if err := s.CreateSession(ctx, &store.Session{ID: "s4", TokenID: "t1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSession(ctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSession(ctx, "s1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted session: %v, want ErrNotFound", err)
	}
	if err := s.DeleteSession(ctx, "s1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delete twice: %v, want ErrNotFound", err)
	}
	if _, err := s.GetSession(ctx, "s4"); err != nil {
		t.Fatalf("another session of the token after signing out of one: %v", err)
	}
}

// sampleConnection returns a full connection record named name.
func sampleConnection(name string) *store.Connection {
	now := time.Now().UTC().Truncate(time.Microsecond)
	return &store.Connection{
		ID: "id-" + name,
		Spec: connection.Spec{
			Name: name, Flavor: connection.AlloyDB, Host: "2001:db8::5", Port: 5433, Database: "analytics",
			User: "dbt", SSLMode: connection.SSLVerifyFull, SSLRootCert: "-----BEGIN CERTIFICATE-----\n...",
			Schema: "marts", Threads: 8, Pooler: connection.PoolerTransaction,
			Auth: &connection.Auth{Kind: connection.AuthAlloyDBIAM, ServiceAccount: "dbt@p.iam.gserviceaccount.com",
				Scope: connection.DefaultAlloyDBScope},
			Tunnel: &connection.Tunnel{Host: "bastion.example.com", Port: 2222, User: "dbtcloud", KeyType: "rsa",
				KeepaliveInterval: connection.Duration(15 * time.Second), KeepaliveCountMax: 4,
				ProxyCommand: []string{"socat", "STDIO", "TCP:bastion.internal:22"}, Auth: connection.SSHAuthCertificate,
				Next:            []connection.Hop{{Host: "b2.internal", Port: 22, User: "jump", OwnKey: true}, {Host: "b3.internal", Port: 2022, User: "dbt", OwnKey: true}},
				HostAuthorities: []string{"@cert-authority *.internal ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA"}},
		},
		HopHostKeys: []store.HopHostKeys{
			{Addr: "b2.internal:22", Keys: []string{"ssh-ed25519 FFFF"}, Pending: "ssh-ed25519 GGGG", PendingSeen: now},
			{Addr: "b3.internal:2022", Keys: []string{"ssh-ed25519 HHHH", "ssh-ed25519 IIII"}},
		},
		PendingPublicKey:        "ssh-ed25519 JJJJ",
		SealedPendingPrivateKey: []byte{6, 5, 0, 4},
		HopKeys: []store.HopKey{
			{Hop: "jump@b2.internal:22", PublicKey: "ssh-rsa KKKK", SealedPrivateKey: []byte{3, 0, 1, 255}, CreatedAt: now,
				PendingPublicKey: "ssh-rsa MMMM", SealedPendingPrivateKey: []byte{7, 0, 7}},
			{Hop: "dbt@b3.internal:2022", PublicKey: "ssh-rsa LLLL", SealedPrivateKey: []byte{2, 0, 2}, CreatedAt: now.Add(time.Second)},
		},
		KeyRotation: store.KeyRotation{StartedAt: now, OldKeyExpiresAt: now.Add(7 * 24 * time.Hour),
			PromotedAt: now.Add(time.Hour), PromotedBy: "login"},
		SealedPassword:     []byte{1, 2, 3, 0, 255},
		SSHPublicKey:       "ssh-ed25519 AAAA",
		SealedPrivateKey:   []byte{9, 8, 7},
		SealedAuthSecret:   []byte{4, 0, 5, 6},
		PreviousPublicKey:  "ssh-ed25519 BBBB",
		HostKeys:           []string{"ssh-ed25519 CCCC", "ssh-ed25519 DDDD"},
		HostKeysAddr:       "bastion.example.com:2222",
		PendingHostKey:     "ssh-ed25519 EEEE",
		PendingHostKeySeen: now,
		CreatedAt:          now,
		UpdatedAt:          now,
	}
}

func exerciseConnections(t *testing.T, s store.Store) {
	ctx := context.Background()
	want := sampleConnection("wh")
	if err := s.CreateConnection(ctx, want); err != nil {
		t.Fatalf("create: %v", err)
	}
	got, err := s.GetConnection(ctx, "wh")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if err := equal(want, got); err != nil {
		t.Fatalf("round trip: %v", err)
	}
	if got.Version != 1 {
		t.Errorf("version after create = %d, want 1", got.Version)
	}

	dup := sampleConnection("wh")
	dup.ID = "other"
	if err := s.CreateConnection(ctx, dup); !errors.Is(err, store.ErrExists) {
		t.Errorf("create duplicate name: got %v, want ErrExists", err)
	}
	if _, err := s.GetConnection(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("get missing: got %v, want ErrNotFound", err)
	}

	direct := sampleConnection("a-direct")
	direct.Spec.Tunnel = nil
	direct.SealedPassword, direct.SealedPrivateKey, direct.HostKeys = nil, nil, nil
	direct.Spec.Auth, direct.SealedAuthSecret = nil, nil
	direct.HopHostKeys, direct.PendingPublicKey, direct.SealedPendingPrivateKey = nil, "", nil
	direct.KeyRotation, direct.HopKeys = store.KeyRotation{}, nil
	if err := s.CreateConnection(ctx, direct); err != nil {
		t.Fatalf("create direct: %v", err)
	}
	list, err := s.ListConnections(ctx)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if len(list) != 2 || list[0].Spec.Name != "a-direct" || list[1].Spec.Name != "wh" {
		t.Fatalf("list = %v, want a-direct, wh in order", names(list))
	}
	if list[0].Spec.Tunnel != nil || len(list[0].SealedPassword) != 0 || len(list[0].SealedAuthSecret) != 0 || list[0].Spec.Auth != nil {
		t.Errorf("direct connection came back with tunnel or password: %+v", list[0])
	}
	// No pinned host keys reads as an empty, non-nil list (encoded as []
	// rather than null); a zero time stays zero; times are in UTC.
	if list[0].HostKeys == nil || len(list[0].HostKeys) != 0 {
		t.Errorf("host keys of a connection without any = %#v, want []string{}", list[0].HostKeys)
	}
	if list[1].CreatedAt.Location() != time.UTC || list[1].PendingHostKeySeen.Location() != time.UTC {
		t.Errorf("times not in UTC: %v, %v", list[1].CreatedAt, list[1].PendingHostKeySeen)
	}
	// Renaming onto a taken name.
	renamed := *list[0]
	renamed.Spec.Name = "wh"
	if err := s.UpdateConnection(ctx, &renamed); !errors.Is(err, store.ErrExists) {
		t.Errorf("rename onto a taken name: got %v, want ErrExists", err)
	}

	if len(list[0].HopHostKeys) != 0 || list[0].PendingPublicKey != "" || !list[0].KeyRotation.StartedAt.IsZero() || list[0].HopKeys != nil {
		t.Errorf("a connection without hops or rotation came back with them: %+v", list[0])
	}
	if k := got.HopKeyFor("dbt@b3.internal:2022"); k == nil || k.PublicKey != "ssh-rsa LLLL" || string(k.SealedPrivateKey) != string([]byte{2, 0, 2}) {
		t.Errorf("hop key of dbt@b3.internal:2022 = %+v", k)
	}
	got.Spec.Port = 6543
	// Hop 3 gives up its own key: its key pair goes.
	got.Spec.Tunnel.Next[1].OwnKey = false
	got.HopKeys = got.HopKeys[:1]
	got.HopHostKeys = got.HopHostKeys[:1]
	got.PendingPublicKey, got.SealedPendingPrivateKey = "", nil
	got.KeyRotation.CancelledAt = got.KeyRotation.StartedAt
	got.HostKeys = nil
	got.PendingHostKey = ""
	got.PendingHostKeySeen = time.Time{}
	if err := s.UpdateConnection(ctx, got); err != nil {
		t.Fatalf("update: %v", err)
	}
	if got.Version != 2 {
		t.Errorf("version after update = %d, want 2", got.Version)
	}
	again, err := s.GetConnection(ctx, "wh")
	if err != nil {
		t.Fatalf("get after update: %v", err)
	}
	if err := equal(got, again); err != nil {
		t.Fatalf("after update: %v", err)
	}

	if err := s.DeleteConnection(ctx, "wh"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if err := s.DeleteConnection(ctx, "wh"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("delete twice: got %v, want ErrNotFound", err)
	}
	if _, err := s.GetConnection(ctx, "wh"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("get deleted: got %v, want ErrNotFound", err)
	}
	if err := s.UpdateConnection(ctx, again); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("update deleted: got %v, want ErrNotFound", err)
	}
	// Nothing else was lost.
	if _, err := s.GetConnection(ctx, "a-direct"); err != nil {
		t.Errorf("other connection lost: %v", err)
	}
}

func exerciseConflicts(t *testing.T, s store.Store) {
	ctx := context.Background()
	if err := s.CreateConnection(ctx, sampleConnection("c")); err != nil {
		t.Fatal(err)
	}
	a, _ := s.GetConnection(ctx, "c")
	b, _ := s.GetConnection(ctx, "c")
	a.Spec.Port = 1
	if err := s.UpdateConnection(ctx, a); err != nil {
		t.Fatal(err)
	}
	b.Spec.Port = 2
	if err := s.UpdateConnection(ctx, b); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("stale update: got %v, want ErrConflict", err)
	}
	// Concurrent writers: exactly one of each pair of racing updates wins,
	// and none is lost silently.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := s.GetConnection(ctx, "c")
				if err != nil {
					t.Error(err)
					return
				}
				c.Spec.Threads = c.Spec.Threads + 1
				c.Spec.Schema = fmt.Sprint("w", i)
				err = s.UpdateConnection(ctx, c)
				if errors.Is(err, store.ErrConflict) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				wins++
				mu.Unlock()
				return
			}
		}()
	}
	wg.Wait()
	final, err := s.GetConnection(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if wins != 8 || final.Spec.Threads != 8+8 {
		t.Fatalf("concurrent increments: wins=%d threads=%d, want 8 and 16", wins, final.Spec.Threads)
	}
}

func names(cs []*store.Connection) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Spec.Name)
	}
	return out
}

func equal(want, got *store.Connection) error {
	if !want.CreatedAt.Equal(got.CreatedAt) || !want.UpdatedAt.Equal(got.UpdatedAt) || !want.PendingHostKeySeen.Equal(got.PendingHostKeySeen) ||
		!want.KeyUsedAt.Equal(got.KeyUsedAt) {
		return fmt.Errorf("times differ: want %v/%v/%v/%v got %v/%v/%v/%v", want.CreatedAt, want.UpdatedAt, want.PendingHostKeySeen,
			want.KeyUsedAt, got.CreatedAt, got.UpdatedAt, got.PendingHostKeySeen, got.KeyUsedAt)
	}
	norm := func(c store.Connection) store.Connection {
		c.CreatedAt, c.UpdatedAt, c.PendingHostKeySeen, c.KeyUsedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
		if len(c.HostKeys) == 0 {
			c.HostKeys = nil
		}
		if len(c.SealedPassword) == 0 {
			c.SealedPassword = nil
		}
		if len(c.SealedPrivateKey) == 0 {
			c.SealedPrivateKey = nil
		}
		if len(c.SealedAuthSecret) == 0 {
			c.SealedAuthSecret = nil
		}
		if len(c.SealedPendingPrivateKey) == 0 {
			c.SealedPendingPrivateKey = nil
		}
		if len(c.HopHostKeys) == 0 {
			c.HopHostKeys = nil
		}
		if len(c.HopKeys) == 0 {
			c.HopKeys = nil
		}
		return c
	}
	w, g := norm(*want), norm(*got)
	if !reflect.DeepEqual(w, g) {
		return fmt.Errorf("\nwant %+v %+v\n got %+v %+v", w, w.Spec.Tunnel, g, g.Spec.Tunnel)
	}
	return nil
}
