package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
)

// exerciseRunRetention checks DeleteRunsEndedBefore: ended runs older than
// the cut go with their logs, recent ones and runs that have not ended
// stay (even with a stale ended_at), and concurrent callers together
// delete each run once. It also checks UpdateRunLogText.
func exerciseRunRetention(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	cut := now.Add(-24 * time.Hour)
	mk := func(id string, status jobs.Status, ended *time.Time) {
		t.Helper()
		queued := now.Add(-1000 * time.Hour)
		r := &jobs.Run{ID: id, JobName: "nightly", Job: *sampleJob("nightly"), Trigger: jobs.Schedule, Status: status,
			QueuedAt: queued, StartedAt: &queued, EndedAt: ended,
			Steps: []jobs.RunStep{{Index: 0, Label: "sql", Kind: "sql", Status: status}}}
		if err := s.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		if err := s.AppendRunLog(ctx, id, []jobs.LogLine{{Time: queued, Stream: "stdout", Step: 0, Text: "line of " + id}}); err != nil {
			t.Fatal(err)
		}
	}
	at := func(d time.Duration) *time.Time { x := now.Add(-d); return &x }
	mk("old-ok", jobs.Succeeded, at(48*time.Hour))
	mk("old-failed", jobs.Failed, at(25*time.Hour))
	mk("old-cancelled", jobs.Cancelled, at(1000*time.Hour))
	mk("recent", jobs.Succeeded, at(time.Hour))
	mk("edge", jobs.Failed, &cut) // ended exactly at the cut: kept
	mk("running", jobs.Running, at(48*time.Hour))
	mk("queued", jobs.Queued, at(48*time.Hour))
	mk("never-started", jobs.Queued, nil)

	// Two at a time, one run per call: every old run is deleted once.
	var mu sync.Mutex
	deleted := 0
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				n, err := s.DeleteRunsEndedBefore(ctx, cut, 1)
				if err != nil {
					t.Error(err)
					return
				}
				if n == 0 {
					return
				}
				mu.Lock()
				deleted += n
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if deleted != 3 {
		t.Errorf("deleted %d runs, want 3 (old-ok, old-failed, old-cancelled)", deleted)
	}
	for _, id := range []string{"old-ok", "old-failed", "old-cancelled"} {
		if _, err := s.GetRun(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("run %s after retention: %v, want ErrNotFound", id, err)
		}
		if log, err := s.RunLog(ctx, id, 0, 0); err != nil || len(log) != 0 {
			t.Errorf("log of deleted run %s: %d lines, %v", id, len(log), err)
		}
	}
	for _, id := range []string{"recent", "edge", "running", "queued", "never-started"} {
		r, err := s.GetRun(ctx, id)
		if err != nil || len(r.Steps) != 1 {
			t.Errorf("run %s must stay: %+v %v", id, r, err)
		}
		if log, err := s.RunLog(ctx, id, 0, 0); err != nil || len(log) != 1 || log[0].Text != "line of "+id {
			t.Errorf("log of kept run %s: %+v %v", id, log, err)
		}
	}
	if n, err := s.DeleteRunsEndedBefore(ctx, cut, 100); err != nil || n != 0 {
		t.Errorf("second pass deleted %d, %v; want 0", n, err)
	}
	// A larger batch takes several at once, oldest first.
	for i := range 5 {
		mk(fmt.Sprintf("batch-%d", i), jobs.Succeeded, at(time.Duration(30+i)*time.Hour))
	}
	if n, err := s.DeleteRunsEndedBefore(ctx, cut, 3); err != nil || n != 3 {
		t.Fatalf("batch of 3: %d, %v", n, err)
	}
	for i, want := range []bool{true, true, false, false, false} { // batch-0 and -1 ended last
		_, err := s.GetRun(ctx, fmt.Sprintf("batch-%d", i))
		if kept := err == nil; kept != want {
			t.Errorf("batch-%d kept=%v, want %v (%v)", i, kept, want, err)
		}
	}

	// UpdateRunLogText replaces one line's text.
	if err := s.AppendRunLog(ctx, "recent", []jobs.LogLine{{Time: now, Stream: "system", Step: -1, Text: "marker, 1 byte"},
		{Time: now, Stream: "system", Step: -1, Text: "after"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateRunLogText(ctx, "recent", 2, "marker, 30 MiB\x00"); err != nil {
		t.Fatal(err)
	}
	log, err := s.RunLog(ctx, "recent", 0, 0)
	if err != nil || len(log) != 3 || log[1].Text != "marker, 30 MiB\x00" || log[1].Seq != 2 || log[2].Text != "after" {
		t.Fatalf("log after update: %+v %v", log, err)
	}
	if err := s.UpdateRunLogText(ctx, "recent", 99, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("update a missing line: %v, want ErrNotFound", err)
	}
	if err := s.UpdateRunLogText(ctx, "nope", 1, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("update a line of a missing run: %v, want ErrNotFound", err)
	}
}
