package queue_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// testLogLimit: a command printing 30 MiB under a 1 MiB limit keeps at most
// 1 MiB of output and one marker line that says, in the end, how much was
// dropped (line breaks included); the command is drained (the run
// succeeds, the next step runs) and the password is masked in what is
// kept.
func testLogLimit(t *testing.T, pg *testenv.Postgres) {
	const limit = 1 << 20
	const flood = 30 << 20
	f := start(t, pg, func(c *queue.Config) {
		c.LogLimit = limit
		c.Commands = jobs.CommandPolicy{Allow: allowlist(t, "sh")}
	})
	ctx := context.Background()
	script := fmt.Sprintf(`echo "pw=$PGPASSWORD"; head -c %d /dev/zero | tr '\0' x; echo; echo "pw=$PGPASSWORD"`, flood)
	if _, err := f.svc.ApplyJobs(ctx, []jobs.Job{{Name: "flood", Connection: "db", Steps: []jobs.Step{
		{Command: []string{"sh", "-c", script}}, {Command: []string{"sh", "-c", "echo second step"}}}}}); err != nil {
		t.Fatal(err)
	}
	r, err := f.svc.RunJob(ctx, "flood", jobs.Manual)
	if err != nil {
		t.Fatal(err)
	}
	r = waitRun(t, f.svc, r.ID, terminal)
	if r.Status != jobs.Succeeded || len(r.Steps) != 2 || r.Steps[1].Status != jobs.Succeeded {
		t.Fatalf("run did not succeed through both steps (blocked on its output?): %+v", r)
	}
	lines, err := f.st.RunLog(ctx, r.ID, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var markers []jobs.LogLine
	var total, output, beforeMarker, afterMarker int
	for _, l := range lines {
		if strings.Contains(l.Text, pg.SuperPassword) {
			t.Fatalf("log line %d shows the password", l.Seq)
		}
		total += len(l.Text)
		if strings.HasPrefix(l.Text, jobs.MarkerPrefix) {
			markers = append(markers, l)
			continue
		}
		if l.Stream != "system" {
			output += len(l.Text)
			if !strings.HasPrefix(l.Text, "x") {
				// Its line break, which the limit counts too; the pieces of
				// the flood's one long line have none of their own.
				output++
			}
		}
		if len(markers) == 0 {
			beforeMarker += len(l.Text)
		} else {
			if l.Stream != "system" {
				t.Fatalf("program output after the marker: line %d %s %.80q", l.Seq, l.Stream, l.Text)
			}
			afterMarker += len(l.Text)
		}
	}
	if len(markers) != 1 {
		t.Fatalf("%d marker lines, want 1 (log of %d lines, %d bytes)", len(markers), len(lines), total)
	}
	if beforeMarker > limit || total > limit+len(markers[0].Text)+afterMarker {
		t.Fatalf("log keeps %d bytes before the marker and %d in all: limit %d", beforeMarker, total, limit)
	}
	if beforeMarker < limit-64<<10 {
		t.Fatalf("log keeps only %d bytes before the marker: it should fill the %d-byte limit", beforeMarker, limit)
	}
	// Every byte of output either kept or counted, as masked.
	produced := 2*len("pw=[redacted]\n") + flood + len("\n") + len("second step\n")
	want := fmt.Sprintf("%s1 MiB (--run-log-limit): %d further bytes of output", jobs.MarkerPrefix, produced-output)
	if !strings.HasPrefix(markers[0].Text, want) {
		t.Fatalf("marker %q, want it to start %q", markers[0].Text, want)
	}
	if lines[0].Stream != "system" || !strings.Contains(joinText(lines[:min(len(lines), 10)]), "pw=[redacted]") {
		t.Fatalf("masked password line not kept at the start: %q", joinText(lines[:min(len(lines), 10)]))
	}
}

func joinText(lines []jobs.LogLine) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.Text[:min(len(l.Text), 200)])
		b.WriteByte('\n')
	}
	return b.String()
}

// testRunRetention: the queue deletes a run that ended before the
// retention, with its log, and keeps one that ended since and one that is
// running; it logs how many it deleted.
func testRunRetention(t *testing.T, pg *testenv.Postgres) {
	var logs testenv.LogBuffer
	f := start(t, pg, func(c *queue.Config) {
		c.RunRetention = 24 * time.Hour
		c.PruneInterval = 100 * time.Millisecond
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	ctx := context.Background()
	now := time.Now().UTC()
	j := jobs.Job{Name: "kept", Connection: "db", Steps: []jobs.Step{{SQL: "select 1"}}}
	j.ApplyDefaults()
	mk := func(status jobs.Status, started, ended time.Time, heartbeat *time.Time) *jobs.Run {
		t.Helper()
		r := jobs.NewRun(j, jobs.Schedule, started)
		r.Status, r.StartedAt, r.HeartbeatAt, r.Attempt = status, &started, heartbeat, 1
		if status.Terminal() {
			r.EndedAt = &ended
		} else {
			r.Worker = "otherhost:1"
		}
		if err := f.st.CreateRun(ctx, r); err != nil {
			t.Fatal(err)
		}
		if err := f.st.AppendRunLog(ctx, r.ID, []jobs.LogLine{{Time: started, Stream: "stdout", Text: "SELECT 1"}}); err != nil {
			t.Fatal(err)
		}
		return r
	}
	alive := now.Add(time.Hour) // a heartbeat the reaper leaves alone
	running := mk(jobs.Running, now.Add(-72*time.Hour), time.Time{}, &alive)
	recent := mk(jobs.Failed, now.Add(-2*time.Hour), now.Add(-time.Hour), nil)
	old := mk(jobs.Succeeded, now.Add(-49*time.Hour), now.Add(-48*time.Hour), nil)

	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := f.st.GetRun(ctx, old.ID)
		if errors.Is(err, store.ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the run that ended 48h ago was not deleted with a retention of 24h")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if log, err := f.st.RunLog(ctx, old.ID, 0, 0); err != nil || len(log) != 0 {
		t.Fatalf("log of the deleted run: %d lines, %v", len(log), err)
	}
	for _, r := range []*jobs.Run{recent, running} {
		got, err := f.st.GetRun(ctx, r.ID)
		if err != nil || got.Status != r.Status {
			t.Fatalf("run %s (%s) must be kept: %+v %v", r.ID, r.Status, got, err)
		}
		if log, err := f.st.RunLog(ctx, r.ID, 0, 0); err != nil || len(log) != 1 {
			t.Fatalf("log of kept run %s: %d lines, %v", r.ID, len(log), err)
		}
	}
	for !strings.Contains(logs.String(), "runs_deleted=1 ") {
		if time.Now().After(deadline) {
			t.Fatalf("no log line with runs_deleted=1:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
