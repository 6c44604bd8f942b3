package queue

import (
	"context"
	"time"
)

// DefaultPruneInterval is how often a process deletes runs past the run
// retention.
const DefaultPruneInterval = time.Hour

// pruneBatch is how many runs one statement deletes: a run can have a log
// of many lines, so batches keep each transaction small.
const pruneBatch = 100

// startPruning deletes runs past the retention now and every
// PruneInterval, until Stop. Every process sharing a store does so; the
// store's delete is safe to run from several at once.
func (q *Queue) startPruning(ctx context.Context) {
	if q.cfg.RunRetention <= 0 {
		return
	}
	q.cfg.Logger.InfoContext(ctx, "run retention: deleting runs that ended longer ago than the retention",
		"retention", q.cfg.RunRetention.String(), "interval", q.cfg.PruneInterval.String())
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		t := time.NewTicker(q.cfg.PruneInterval)
		defer t.Stop()
		for {
			q.prune(ctx)
			select {
			case <-q.stop:
				return
			case <-t.C:
			}
		}
	}()
}

// prune deletes the runs that ended more than RunRetention ago, with their
// logs, batch by batch, and logs how many it deleted.
func (q *Queue) prune(ctx context.Context) {
	before := q.cfg.Now().Add(-q.cfg.RunRetention)
	total := 0
	for {
		select {
		case <-q.stop:
			return
		default:
		}
		n, err := q.cfg.Store.DeleteRunsEndedBefore(ctx, before, pruneBatch)
		total += n
		if err != nil {
			q.cfg.Logger.WarnContext(ctx, "run retention: could not delete old runs", "runs_deleted", total, "error", err)
			return
		}
		if n < pruneBatch {
			break
		}
	}
	if total > 0 {
		q.cfg.Logger.InfoContext(ctx, "run retention: deleted runs that ended before the retention",
			"runs_deleted", total, "retention", q.cfg.RunRetention.String(), "ended_before", before.UTC().Format(time.RFC3339))
	}
}
