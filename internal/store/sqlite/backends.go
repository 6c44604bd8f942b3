package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
)

// AddRunBackend implements store.BackendStore.
func (s *Store) AddRunBackend(ctx context.Context, runID string, b jobs.Backend) (rerr error) {
	defer markFull(&rerr)
	return addRunBackend(ctx, s.db, runID, b)
}

func addRunBackend(ctx context.Context, q querier, runID string, b jobs.Backend) error {
	key := b.SecretKey
	if key == nil {
		key = []byte{}
	}
	_, err := q.ExecContext(ctx, `INSERT INTO run_backends (run_id, pid, secret_key, step, usr, database, opened_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`, runID, int64(b.PID), key, b.Step, b.User, b.Database, formatTime(b.OpenedAt))
	if isForeignKeyViolation(err) {
		return fmt.Errorf("add backend to run %s: %w", runID, store.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("add backend to run %s: %w", runID, err)
	}
	return nil
}

// RunBackends implements store.BackendStore.
func (s *Store) RunBackends(ctx context.Context, runID string) ([]jobs.Backend, error) {
	return runBackends(ctx, s.db, runID)
}

func runBackends(ctx context.Context, q querier, runID string) ([]jobs.Backend, error) {
	rows, err := q.QueryContext(ctx, `SELECT pid, secret_key, step, usr, database, opened_at FROM run_backends
		WHERE run_id = ? ORDER BY seq`, runID)
	if err != nil {
		return nil, fmt.Errorf("backends of run %s: %w", runID, err)
	}
	defer rows.Close()
	var out []jobs.Backend
	for rows.Next() {
		var b jobs.Backend
		var pid int64
		var opened string
		if err := rows.Scan(&pid, &b.SecretKey, &b.Step, &b.User, &b.Database, &opened); err != nil {
			return nil, fmt.Errorf("backends of run %s: %w", runID, err)
		}
		b.PID = uint32(pid)
		if b.OpenedAt, err = parseTime(opened); err != nil {
			return nil, fmt.Errorf("backends of run %s: %w", runID, err)
		}
		out = append(out, b)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("backends of run %s: %w", runID, err)
	}
	return out, nil
}

// PutRunCleanup implements store.BackendStore.
func (s *Store) PutRunCleanup(ctx context.Context, runID string, c *jobs.Cleanup) (saved bool, rerr error) {
	defer markFull(&rerr)
	return putRunCleanup(ctx, s.db, runID, c)
}

// putCleanup saves a run's cleanup unless the saved one is to stand (see
// store.BackendStore.PutRunCleanup), in one statement. A record of the
// same attempt, or of an unknown one, replaces only a pending one (?3),
// or a failed one (?4) when it is done (?5: another process confirmed
// what this one gave up on); else the newer attempt's stands.
const putCleanup = `INSERT INTO run_cleanups (run_id, cleanup) VALUES (?1, ?2)
	ON CONFLICT (run_id) DO UPDATE SET cleanup = excluded.cleanup
	WHERE CASE
		WHEN json_extract(run_cleanups.cleanup, '$.run_attempt') IS NULL OR json_extract(excluded.cleanup, '$.run_attempt') IS NULL
			OR json_extract(run_cleanups.cleanup, '$.run_attempt') = json_extract(excluded.cleanup, '$.run_attempt')
		THEN json_extract(run_cleanups.cleanup, '$.status') = ?3
			OR json_extract(run_cleanups.cleanup, '$.status') = ?4 AND json_extract(excluded.cleanup, '$.status') = ?5
		ELSE json_extract(excluded.cleanup, '$.run_attempt') > json_extract(run_cleanups.cleanup, '$.run_attempt')
	END`

func putRunCleanup(ctx context.Context, q querier, runID string, c *jobs.Cleanup) (bool, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return false, fmt.Errorf("cleanup of run %s: %w", runID, err)
	}
	res, err := q.ExecContext(ctx, putCleanup, runID, string(b), string(jobs.CleanupPending), string(jobs.CleanupFailed), string(jobs.CleanupDone))
	if isForeignKeyViolation(err) {
		return false, fmt.Errorf("cleanup of run %s: %w", runID, store.ErrNotFound)
	}
	if err != nil {
		return false, fmt.Errorf("cleanup of run %s: %w", runID, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("cleanup of run %s: %w", runID, err)
	}
	return n > 0, nil
}

// RunCleanup implements store.BackendStore.
func (s *Store) RunCleanup(ctx context.Context, runID string) (*jobs.Cleanup, error) {
	return runCleanup(ctx, s.db, runID)
}

func runCleanup(ctx context.Context, q querier, runID string) (*jobs.Cleanup, error) {
	var text string
	err := q.QueryRowContext(ctx, `SELECT cleanup FROM run_cleanups WHERE run_id = ?`, runID).Scan(&text)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cleanup of run %s: %w", runID, err)
	}
	var c jobs.Cleanup
	if err := json.Unmarshal([]byte(text), &c); err != nil {
		return nil, fmt.Errorf("cleanup of run %s: %w", runID, err)
	}
	c.UpdatedAt = c.UpdatedAt.UTC()
	return &c, nil
}

// CopyRunBackends implements store.RecordWriter.
func (w *writer) CopyRunBackends(ctx context.Context, runID string, bs []jobs.Backend, c *jobs.Cleanup) error {
	for _, b := range bs {
		if err := addRunBackend(ctx, w.q, runID, b); err != nil {
			return err
		}
	}
	if c != nil {
		_, err := putRunCleanup(ctx, w.q, runID, c)
		return err
	}
	return nil
}

// exportRunBackends hands a run's backends and cleanup to w.
func exportRunBackends(ctx context.Context, q querier, runID string, w store.RecordWriter) error {
	bs, err := runBackends(ctx, q, runID)
	if err != nil {
		return err
	}
	c, err := runCleanup(ctx, q, runID)
	if err != nil {
		return err
	}
	if len(bs) == 0 && c == nil {
		return nil
	}
	return w.CopyRunBackends(ctx, runID, bs, c)
}
