package queue

import (
	"context"
	"time"
)

// SetAfterTake makes q's workers call f right after they took a run (saved
// it as running), before it starts: a test holds that moment open.
func SetAfterTake(q *Queue, f func(id string)) { q.afterTake = f }

// SetAfterReap makes q's reaper call f right after it resolved a lost run
// (saved it as failed, or queued it again), before it stops the run's
// database sessions: a test holds that moment open.
func SetAfterReap(q *Queue, f func(id string)) { q.afterReap = f }

// SetBeforeOutcome makes q's workers call f once a run has ended (its last
// step done, its sessions stopped), before they record its outcome: a test
// holds that moment open.
func SetBeforeOutcome(q *Queue, f func(id string)) { q.beforeOutcome = f }

// CatchUp runs q's schedule catch-up as a new leader would at now.
func CatchUp(ctx context.Context, q *Queue, now time.Time) ([]string, error) {
	return q.catchUp(ctx, now)
}
