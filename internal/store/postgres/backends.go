package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
)

// isForeignKeyViolation reports whether err is a foreign_key_violation
// (SQLSTATE 23503): the row refers to a run that does not exist.
func isForeignKeyViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23503"
}

// AddRunBackend implements store.BackendStore.
func (s *Store) AddRunBackend(ctx context.Context, runID string, b jobs.Backend) (rerr error) {
	defer markFull(&rerr)
	return addRunBackend(ctx, s.pool, runID, b)
}

func addRunBackend(ctx context.Context, q querier, runID string, b jobs.Backend) error {
	key := b.SecretKey
	if key == nil {
		key = []byte{}
	}
	_, err := q.Exec(ctx, `INSERT INTO pgrelay_run_backends (run_id, pid, secret_key, step, usr, database, opened_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, runID, int64(b.PID), key, b.Step, b.User, b.Database, b.OpenedAt)
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
	return runBackends(ctx, s.pool, runID)
}

func runBackends(ctx context.Context, q querier, runID string) ([]jobs.Backend, error) {
	rows, err := q.Query(ctx, `SELECT pid, secret_key, step, usr, database, opened_at FROM pgrelay_run_backends
		WHERE run_id = $1 ORDER BY seq`, runID)
	if err != nil {
		return nil, fmt.Errorf("backends of run %s: %w", runID, err)
	}
	defer rows.Close()
	var out []jobs.Backend
	for rows.Next() {
		var b jobs.Backend
		var pid int64
		if err := rows.Scan(&pid, &b.SecretKey, &b.Step, &b.User, &b.Database, &b.OpenedAt); err != nil {
			return nil, fmt.Errorf("backends of run %s: %w", runID, err)
		}
		b.PID, b.OpenedAt = uint32(pid), b.OpenedAt.UTC()
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
	return putRunCleanup(ctx, s.pool, runID, c)
}

// putCleanup saves a run's cleanup ($2) unless the saved one is to stand
// (see store.BackendStore.PutRunCleanup), in one statement: the upsert
// locks the row and tests its latest version. A record of the same
// attempt, or of an unknown one, replaces only a pending one ($3), or a
// failed one ($4) when it is done ($5: another process confirmed what
// this one gave up on); else the newer attempt's stands.
const putCleanup = `INSERT INTO pgrelay_run_cleanups (run_id, cleanup) VALUES ($1, $2)
	ON CONFLICT (run_id) DO UPDATE SET cleanup = excluded.cleanup
	WHERE CASE
		WHEN (pgrelay_run_cleanups.cleanup->>'run_attempt') IS NULL OR (excluded.cleanup->>'run_attempt') IS NULL
			OR (pgrelay_run_cleanups.cleanup->>'run_attempt')::bigint = (excluded.cleanup->>'run_attempt')::bigint
		THEN pgrelay_run_cleanups.cleanup->>'status' = $3
			OR pgrelay_run_cleanups.cleanup->>'status' = $4 AND excluded.cleanup->>'status' = $5
		ELSE (excluded.cleanup->>'run_attempt')::bigint > (pgrelay_run_cleanups.cleanup->>'run_attempt')::bigint
	END`

func putRunCleanup(ctx context.Context, q querier, runID string, c *jobs.Cleanup) (bool, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return false, fmt.Errorf("cleanup of run %s: %w", runID, err)
	}
	tag, err := q.Exec(ctx, putCleanup, runID, b, string(jobs.CleanupPending), string(jobs.CleanupFailed), string(jobs.CleanupDone))
	if isForeignKeyViolation(err) {
		return false, fmt.Errorf("cleanup of run %s: %w", runID, store.ErrNotFound)
	}
	if err != nil {
		return false, fmt.Errorf("cleanup of run %s: %w", runID, err)
	}
	return tag.RowsAffected() > 0, nil
}

// RunCleanup implements store.BackendStore.
func (s *Store) RunCleanup(ctx context.Context, runID string) (*jobs.Cleanup, error) {
	return runCleanup(ctx, s.pool, runID)
}

func runCleanup(ctx context.Context, q querier, runID string) (*jobs.Cleanup, error) {
	var b []byte
	err := q.QueryRow(ctx, `SELECT cleanup FROM pgrelay_run_cleanups WHERE run_id = $1`, runID).Scan(&b)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cleanup of run %s: %w", runID, err)
	}
	var c jobs.Cleanup
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("cleanup of run %s: %w", runID, err)
	}
	c.UpdatedAt = c.UpdatedAt.UTC()
	return &c, nil
}

// CopyRunBackends implements store.RecordWriter.
func (w *writer) CopyRunBackends(ctx context.Context, runID string, bs []jobs.Backend, c *jobs.Cleanup) error {
	for _, b := range bs {
		if err := addRunBackend(ctx, w.tx, runID, b); err != nil {
			return err
		}
	}
	if c != nil {
		_, err := putRunCleanup(ctx, w.tx, runID, c)
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
