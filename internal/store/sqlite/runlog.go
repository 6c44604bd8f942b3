package sqlite

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
	res, err := s.db.ExecContext(ctx, `UPDATE run_logs SET text = ? WHERE run_id = ? AND seq = ?`, text, runID, seq)
	if err != nil {
		return fmt.Errorf("update run log %s line %d: %w", runID, seq, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("run log %s line %d: %w", runID, seq, store.ErrNotFound)
	}
	return nil
}

// DeleteRunsEndedBefore implements store.RunStore. Log lines go with their
// run (ON DELETE CASCADE); steps are part of the run's row.
func (s *Store) DeleteRunsEndedBefore(ctx context.Context, before time.Time, limit int) (_ int, rerr error) {
	defer markFull(&rerr)
	if limit <= 0 {
		limit = 100
	}
	res, err := s.db.ExecContext(ctx, `DELETE FROM runs WHERE id IN (
			SELECT id FROM runs WHERE status IN (?, ?, ?) AND ended_at != '' AND ended_at < ?
			ORDER BY ended_at LIMIT ?)`,
		string(jobs.Succeeded), string(jobs.Failed), string(jobs.Cancelled), formatTime(before), limit)
	if err != nil {
		return 0, fmt.Errorf("delete runs ended before %s: %w", before.UTC().Format(time.RFC3339), err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("delete runs ended before %s: %w", before.UTC().Format(time.RFC3339), err)
	}
	return int(n), nil
}
