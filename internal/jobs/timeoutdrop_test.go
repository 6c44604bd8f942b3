package jobs_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// TestTimeoutWhileBastionSilent: a run's time limit passes while its
// tunnel's bastion has gone silent, and the tunnel is found dropped (its
// keepalives unanswered) while the run stops. The run fails for its time
// limit, the first cause, with the tunnel's state as detail: it used to
// fail naming only the tunnel drop, as if the tunnel had stopped it. A
// drop that comes first is still the reason, alone.
func TestTimeoutWhileBastionSilent(t *testing.T) {
	t.Parallel()
	const interval, count = 200 * time.Millisecond, 3
	e := setup(t, interval, count)
	admin := e.pg.Connect(t, e.db)
	ctx := context.Background()
	running := func(tag string) bool {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND state = 'active' AND query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()`, tag).Scan(&n); err != nil {
			t.Error(err)
			return true
		}
		return n > 0
	}
	// run runs a statement tagged tag with rctx and, once it runs,
	// freezes the bastion and calls then; it returns the run's result, the
	// bastion answering again and the statement ended.
	run := func(t *testing.T, rctx context.Context, tag string, then func()) jobs.Result {
		t.Helper()
		frozen := make(chan struct{})
		go func() {
			defer close(frozen)
			for end := time.Now().Add(15 * time.Second); !running(tag); time.Sleep(20 * time.Millisecond) {
				if time.Now().After(end) {
					t.Error("the statement did not start")
					return
				}
			}
			e.fp.Freeze()
			then()
		}()
		res := e.runner(t).Run(rctx, job("wh", jobs.Step{SQL: "SELECT pg_sleep(300) /* " + tag + " */"}), jobs.Hooks{})
		<-frozen // done with admin
		e.fp.Thaw()
		if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE query LIKE '%' || $1 || '%' AND pid <> pg_backend_pid()`, tag); err != nil {
			t.Fatal(err)
		}
		t.Logf("reason: %s", res.Reason)
		return res
	}
	const detail = "its tunnel dropped as the run stopped"

	t.Run("TimeLimitFirst", func(t *testing.T) {
		rctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		// The bastion goes silent, then the time limit passes.
		got := run(t, rctx, "timeout-frozen", func() { cancel(&jobs.TimeoutError{After: time.Minute}) })
		var te *jobs.TimeoutError
		var dropped *tunnel.DroppedError
		if got.Status != jobs.Failed || !errors.As(got.Err, &te) || !strings.HasPrefix(got.Reason, "timed out after 1m0s") {
			t.Fatalf("run stopped by its time limit while the bastion was silent: status %s, reason %q; "+
				"want failed, timed out after 1m0s", got.Status, got.Reason)
		}
		if !errors.As(got.Err, &dropped) || !strings.Contains(got.Reason, detail+": SSH tunnel to bastion") {
			t.Fatalf("reason %q: want the tunnel's drop as detail", got.Reason)
		}
	})
	t.Run("DropFirst", func(t *testing.T) {
		got := run(t, ctx, "drop-frozen", func() {})
		if got.Status != jobs.Failed || !strings.HasPrefix(got.Reason, "SSH tunnel to bastion") ||
			strings.Contains(got.Reason, detail) || strings.Count(got.Reason, "no keepalive reply") != 1 {
			t.Fatalf("run stopped by its tunnel's drop: status %s, reason %q; want failed, naming the drop once",
				got.Status, got.Reason)
		}
	})
}
