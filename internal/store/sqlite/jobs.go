package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
)

// PutJob implements store.JobStore.
func (s *Store) PutJob(ctx context.Context, j *jobs.Job, now time.Time) (_ bool, rerr error) {
	defer markFull(&rerr)
	spec, err := json.Marshal(j)
	if err != nil {
		return false, fmt.Errorf("put job %s: %w", j.Name, err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("put job %s: %w", j.Name, err)
	}
	defer func() { _ = tx.Rollback() }()
	res, err := tx.ExecContext(ctx, `UPDATE jobs SET spec = ?, updated_at = ? WHERE name = ?`, string(spec), formatTime(now), j.Name)
	if err != nil {
		return false, fmt.Errorf("put job %s: %w", j.Name, err)
	}
	created := false
	if n, _ := res.RowsAffected(); n == 0 {
		if _, err := tx.ExecContext(ctx, insertJob,
			j.Name, string(spec), formatTime(now), formatTime(now)); err != nil {
			return false, fmt.Errorf("put job %s: %w", j.Name, err)
		}
		created = true
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("put job %s: %w", j.Name, err)
	}
	return created, nil
}

func scanJob(sc scanner) (*store.JobRecord, error) {
	var rec store.JobRecord
	var spec, created, updated string
	if err := sc.Scan(&spec, &created, &updated); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(spec), &rec.Job); err != nil {
		return nil, fmt.Errorf("decode job: %w", err)
	}
	var err error
	if rec.CreatedAt, err = parseTime(created); err != nil {
		return nil, err
	}
	if rec.UpdatedAt, err = parseTime(updated); err != nil {
		return nil, err
	}
	return &rec, nil
}

// GetJob implements store.JobStore.
func (s *Store) GetJob(ctx context.Context, name string) (*store.JobRecord, error) {
	rec, err := scanJob(s.db.QueryRowContext(ctx, `SELECT spec, created_at, updated_at FROM jobs WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("job %s: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", name, err)
	}
	return rec, nil
}

// ListJobs implements store.JobStore.
func (s *Store) ListJobs(ctx context.Context) ([]*store.JobRecord, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT spec, created_at, updated_at FROM jobs ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	defer rows.Close()
	var out []*store.JobRecord
	for rows.Next() {
		rec, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("list jobs: %w", err)
		}
		out = append(out, rec)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return out, nil
}

// DeleteJob implements store.JobStore.
func (s *Store) DeleteJob(ctx context.Context, name string) (rerr error) {
	defer markFull(&rerr)
	res, err := s.db.ExecContext(ctx, `DELETE FROM jobs WHERE name = ?`, name)
	if err != nil {
		return fmt.Errorf("delete job %s: %w", name, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("job %s: %w", name, store.ErrNotFound)
	}
	return nil
}

const runColumns = `id, job_name, job, trigger, status, reason, queued_at, started_at, ended_at, steps,
	worker, heartbeat_at, attempt, cancel_requested, version`

func optTime(t *time.Time) string {
	if t == nil {
		return ""
	}
	return formatTime(*t)
}

func parseOptTime(s string) (*time.Time, error) {
	if s == "" {
		return nil, nil
	}
	t, err := parseTime(s)
	if err != nil {
		return nil, err
	}
	return &t, nil
}

func runArgs(r *jobs.Run) ([]any, error) {
	job, err := json.Marshal(r.Job)
	if err != nil {
		return nil, err
	}
	steps := r.Steps
	if steps == nil {
		steps = []jobs.RunStep{}
	}
	st, err := json.Marshal(steps)
	if err != nil {
		return nil, err
	}
	cancel := 0
	if r.CancelRequested {
		cancel = 1
	}
	return []any{r.ID, r.JobName, string(job), string(r.Trigger), string(r.Status), r.Reason, formatTime(r.QueuedAt),
		optTime(r.StartedAt), optTime(r.EndedAt), string(st), r.Worker, optTime(r.HeartbeatAt), r.Attempt, cancel, r.Version}, nil
}

func scanRun(sc scanner) (*jobs.Run, error) {
	var r jobs.Run
	var job, steps, trigger, status, queued, started, ended, hb string
	var cancel int
	if err := sc.Scan(&r.ID, &r.JobName, &job, &trigger, &status, &r.Reason, &queued, &started, &ended, &steps,
		&r.Worker, &hb, &r.Attempt, &cancel, &r.Version); err != nil {
		return nil, err
	}
	r.Trigger, r.Status, r.CancelRequested = jobs.Trigger(trigger), jobs.Status(status), cancel != 0
	if err := json.Unmarshal([]byte(job), &r.Job); err != nil {
		return nil, fmt.Errorf("decode run %s: %w", r.ID, err)
	}
	if err := json.Unmarshal([]byte(steps), &r.Steps); err != nil {
		return nil, fmt.Errorf("decode run %s: %w", r.ID, err)
	}
	var err error
	if r.QueuedAt, err = parseTime(queued); err != nil {
		return nil, err
	}
	if r.StartedAt, err = parseOptTime(started); err != nil {
		return nil, err
	}
	if r.EndedAt, err = parseOptTime(ended); err != nil {
		return nil, err
	}
	if r.HeartbeatAt, err = parseOptTime(hb); err != nil {
		return nil, err
	}
	return &r, nil
}

// CreateRun implements store.RunStore.
func (s *Store) CreateRun(ctx context.Context, r *jobs.Run) error {
	return s.CreateRunWith(ctx, r, nil)
}

// CreateRunWith implements store.RunStore; with gets a *sql.Tx.
func (s *Store) CreateRunWith(ctx context.Context, r *jobs.Run, with func(ctx context.Context, tx any) error) (rerr error) {
	defer markFull(&rerr)
	if r.Version == 0 {
		r.Version = 1
	}
	args, err := runArgs(r)
	if err != nil {
		return fmt.Errorf("create run: %w", err)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("create run %s: %w", r.ID, err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, insertRun, args...); err != nil {
		if isUniqueViolation(err) {
			return fmt.Errorf("create run %s: %w", r.ID, store.ErrExists)
		}
		return fmt.Errorf("create run %s: %w", r.ID, err)
	}
	if with != nil {
		if err := with(ctx, tx); err != nil {
			return err
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("create run %s: commit: %w", r.ID, err)
	}
	return nil
}

// GetRun implements store.RunStore.
func (s *Store) GetRun(ctx context.Context, id string) (*jobs.Run, error) {
	r, err := scanRun(s.db.QueryRowContext(ctx, `SELECT `+runColumns+` FROM runs WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("run %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get run %s: %w", id, err)
	}
	return r, nil
}

// ListRuns implements store.RunStore.
func (s *Store) ListRuns(ctx context.Context, f store.RunFilter) ([]*jobs.Run, error) {
	var where []string
	var args []any
	if f.Job != "" {
		where = append(where, "job_name = ?")
		args = append(args, f.Job)
	}
	if len(f.Statuses) > 0 {
		ph := make([]string, len(f.Statuses))
		for i, st := range f.Statuses {
			ph[i] = "?"
			args = append(args, string(st))
		}
		where = append(where, "status IN ("+strings.Join(ph, ", ")+")")
	}
	if f.Before != "" {
		// The run's place in the order: its queued_at as stored (text of
		// fixed width, so text order is time order) and its ID.
		var queued string
		err := s.db.QueryRowContext(ctx, `SELECT queued_at FROM runs WHERE id = ?`, f.Before).Scan(&queued)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("list runs before %s: run %s: %w", f.Before, f.Before, store.ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("list runs before %s: %w", f.Before, err)
		}
		where = append(where, "(queued_at < ? OR (queued_at = ? AND id < ?))")
		args = append(args, queued, queued, f.Before)
	}
	q := `SELECT ` + runColumns + ` FROM runs`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	q += " ORDER BY queued_at DESC, id DESC LIMIT ?"
	args = append(args, limit)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	defer rows.Close()
	var out []*jobs.Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("list runs: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list runs: %w", err)
	}
	return out, nil
}

// UpdateRun implements store.RunStore.
func (s *Store) UpdateRun(ctx context.Context, r *jobs.Run) (rerr error) {
	defer markFull(&rerr)
	if err := updateRunIn(ctx, s.db, r); err != nil {
		return err
	}
	r.Version++
	return nil
}

// UpdateRunCleanup implements store.BackendStore.
func (s *Store) UpdateRunCleanup(ctx context.Context, r *jobs.Run, c *jobs.Cleanup) (rerr error) {
	if c == nil {
		return s.UpdateRun(ctx, r)
	}
	defer markFull(&rerr)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("update run %s: %w", r.ID, err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := updateRunIn(ctx, tx, r); err != nil {
		return err
	}
	if _, err := putRunCleanup(ctx, tx, r.ID, c); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("update run %s: commit: %w", r.ID, err)
	}
	r.Version++
	return nil
}

// updateRunIn writes r through q if its version is the stored one (the
// caller advances r.Version once the write is committed).
func updateRunIn(ctx context.Context, q querier, r *jobs.Run) error {
	args, err := runArgs(r)
	if err != nil {
		return fmt.Errorf("update run %s: %w", r.ID, err)
	}
	res, err := q.ExecContext(ctx, updateRun, append(args[1:len(args)-1], r.ID, r.Version)...)
	if err != nil {
		return fmt.Errorf("update run %s: %w", r.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		var exists bool
		if err := q.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM runs WHERE id = ?)`, r.ID).Scan(&exists); err != nil {
			return fmt.Errorf("update run %s: %w", r.ID, err)
		}
		if !exists {
			return fmt.Errorf("run %s: %w", r.ID, store.ErrNotFound)
		}
		return fmt.Errorf("update run %s: %w", r.ID, store.ErrConflict)
	}
	return nil
}

// AppendRunLog implements store.RunStore.
func (s *Store) AppendRunLog(ctx context.Context, runID string, lines []jobs.LogLine) (rerr error) {
	defer markFull(&rerr)
	if len(lines) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("append run log: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var seq int64
	if err := tx.QueryRowContext(ctx, `SELECT coalesce(max(seq), 0) FROM run_logs WHERE run_id = ?`, runID).Scan(&seq); err != nil {
		return fmt.Errorf("append run log: %w", err)
	}
	stmt, err := tx.PrepareContext(ctx, insertRunLog)
	if err != nil {
		return fmt.Errorf("append run log: %w", err)
	}
	defer stmt.Close()
	for i := range lines {
		seq++
		lines[i].Seq = seq
		if _, err := stmt.ExecContext(ctx, runID, seq, formatTime(lines[i].Time), lines[i].Stream, lines[i].Step, lines[i].Text); err != nil {
			if isForeignKeyViolation(err) {
				return fmt.Errorf("append run log: run %s: %w", runID, store.ErrNotFound)
			}
			return fmt.Errorf("append run log: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("append run log: %w", err)
	}
	return nil
}

// RunLog implements store.RunStore.
func (s *Store) RunLog(ctx context.Context, runID string, afterSeq int64, limit int) ([]jobs.LogLine, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.db.QueryContext(ctx, `SELECT seq, ts, stream, step, text FROM run_logs
		WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?`, runID, afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("run log %s: %w", runID, err)
	}
	defer rows.Close()
	var out []jobs.LogLine
	for rows.Next() {
		var l jobs.LogLine
		var ts string
		if err := rows.Scan(&l.Seq, &ts, &l.Stream, &l.Step, &l.Text); err != nil {
			return nil, fmt.Errorf("run log %s: %w", runID, err)
		}
		if l.Time, err = parseTime(ts); err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// CreateJob implements store.JobStore.
func (s *Store) CreateJob(ctx context.Context, j *jobs.Job, now time.Time) (rerr error) {
	defer markFull(&rerr)
	spec, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("create job %s: %w", j.Name, err)
	}
	_, err = s.db.ExecContext(ctx, insertJob,
		j.Name, string(spec), formatTime(now), formatTime(now))
	if isUniqueViolation(err) {
		return fmt.Errorf("create job %s: %w", j.Name, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("create job %s: %w", j.Name, err)
	}
	return nil
}
