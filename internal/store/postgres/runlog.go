package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
)

// UpdateRunLogText implements store.RunStore.
func (s *Store) UpdateRunLogText(ctx context.Context, runID string, seq int64, text string) (rerr error) {
	defer markFull(&rerr)
	tag, err := s.pool.Exec(ctx, `UPDATE pgrelay_run_logs SET text = $3 WHERE run_id = $1 AND seq = $2`,
		runID, seq, []byte(text))
	if err != nil {
		return fmt.Errorf("update run log %s line %d: %w", runID, seq, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("run log %s line %d: %w", runID, seq, store.ErrNotFound)
	}
	return nil
}

// DeleteRunsEndedBefore implements store.RunStore. Log lines go with their
// run (ON DELETE CASCADE); steps are part of the run's row. Rows another
// process is deleting at the same time are skipped, not waited for.
func (s *Store) DeleteRunsEndedBefore(ctx context.Context, before time.Time, limit int) (_ int, rerr error) {
	defer markFull(&rerr)
	if limit <= 0 {
		limit = 100
	}
	ended := []string{string(jobs.Succeeded), string(jobs.Failed), string(jobs.Cancelled)}
	tag, err := s.pool.Exec(ctx, `DELETE FROM pgrelay_runs WHERE id IN (
			SELECT id FROM pgrelay_runs WHERE status = ANY($1) AND ended_at < $2
			ORDER BY ended_at LIMIT $3 FOR UPDATE SKIP LOCKED)`, ended, before, limit)
	if err != nil {
		return 0, fmt.Errorf("delete runs ended before %s: %w", before.UTC().Format(time.RFC3339), err)
	}
	return int(tag.RowsAffected()), nil
}
