package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

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
	// Insert, else update; a job deleted between the two is inserted
	// again. Each statement is atomic, so racing PutJobs of a new name
	// report created exactly once and never fail with a unique violation.
	for {
		tag, err := s.pool.Exec(ctx, insertJob+` ON CONFLICT (name) DO NOTHING`, j.Name, spec, now, now)
		if err != nil {
			return false, fmt.Errorf("put job %s: %w", j.Name, err)
		}
		if tag.RowsAffected() == 1 {
			return true, nil
		}
		tag, err = s.pool.Exec(ctx, `UPDATE pgrelay_jobs SET spec = $2, updated_at = $3 WHERE name = $1`,
			j.Name, spec, now)
		if err != nil {
			return false, fmt.Errorf("put job %s: %w", j.Name, err)
		}
		if tag.RowsAffected() == 1 {
			return false, nil
		}
		if err := ctx.Err(); err != nil {
			return false, fmt.Errorf("put job %s: %w", j.Name, err)
		}
	}
}

func scanJob(row pgx.Row) (*store.JobRecord, error) {
	var rec store.JobRecord
	var spec []byte
	if err := row.Scan(&spec, &rec.CreatedAt, &rec.UpdatedAt); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(spec, &rec.Job); err != nil {
		return nil, fmt.Errorf("decode job: %w", err)
	}
	rec.CreatedAt, rec.UpdatedAt = rec.CreatedAt.UTC(), rec.UpdatedAt.UTC()
	return &rec, nil
}

// GetJob implements store.JobStore.
func (s *Store) GetJob(ctx context.Context, name string) (*store.JobRecord, error) {
	rec, err := scanJob(s.pool.QueryRow(ctx, `SELECT spec, created_at, updated_at FROM pgrelay_jobs WHERE name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("job %s: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get job %s: %w", name, err)
	}
	return rec, nil
}

// ListJobs implements store.JobStore.
func (s *Store) ListJobs(ctx context.Context) ([]*store.JobRecord, error) {
	rows, err := s.pool.Query(ctx, `SELECT spec, created_at, updated_at FROM pgrelay_jobs ORDER BY name`)
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
	tag, err := s.pool.Exec(ctx, `DELETE FROM pgrelay_jobs WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("delete job %s: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("job %s: %w", name, store.ErrNotFound)
	}
	return nil
}

const runColumns = `id, job_name, job, trigger, status, reason, queued_at, started_at, ended_at, steps,
	worker, heartbeat_at, attempt, cancel_requested, version`

// runArgs returns a run's column values in runColumns order.
func runArgs(r *jobs.Run) ([]any, error) {
	job, err := json.Marshal(r.Job)
	if err != nil {
		return nil, fmt.Errorf("encode job: %w", err)
	}
	steps := r.Steps
	if steps == nil {
		steps = []jobs.RunStep{}
	}
	st, err := json.Marshal(steps)
	if err != nil {
		return nil, fmt.Errorf("encode steps: %w", err)
	}
	return []any{r.ID, r.JobName, job, string(r.Trigger), string(r.Status), r.Reason, r.QueuedAt,
		nullTimePtr(r.StartedAt), nullTimePtr(r.EndedAt), st, r.Worker, nullTimePtr(r.HeartbeatAt),
		r.Attempt, r.CancelRequested, r.Version}, nil
}

func scanRun(row pgx.Row) (*jobs.Run, error) {
	var r jobs.Run
	var job, steps []byte
	var trigger, status string
	var started, ended, hb *time.Time
	if err := row.Scan(&r.ID, &r.JobName, &job, &trigger, &status, &r.Reason, &r.QueuedAt, &started, &ended, &steps,
		&r.Worker, &hb, &r.Attempt, &r.CancelRequested, &r.Version); err != nil {
		return nil, err
	}
	r.Trigger, r.Status = jobs.Trigger(trigger), jobs.Status(status)
	if err := json.Unmarshal(job, &r.Job); err != nil {
		return nil, fmt.Errorf("decode run %s: %w", r.ID, err)
	}
	if err := json.Unmarshal(steps, &r.Steps); err != nil {
		return nil, fmt.Errorf("decode run %s: %w", r.ID, err)
	}
	r.QueuedAt = r.QueuedAt.UTC()
	r.StartedAt, r.EndedAt, r.HeartbeatAt = utcPtr(started), utcPtr(ended), utcPtr(hb)
	return &r, nil
}

// CreateRun implements store.RunStore.
func (s *Store) CreateRun(ctx context.Context, r *jobs.Run) error {
	return s.CreateRunWith(ctx, r, nil)
}

// CreateRunWith implements store.RunStore; with gets a pgx.Tx.
func (s *Store) CreateRunWith(ctx context.Context, r *jobs.Run, with func(ctx context.Context, tx any) error) (rerr error) {
	defer markFull(&rerr)
	if r.Version == 0 {
		r.Version = 1
	}
	args, err := runArgs(r)
	if err != nil {
		return fmt.Errorf("create run %s: %w", r.ID, err)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("create run %s: %w", r.ID, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	_, err = tx.Exec(ctx, insertRun, args...)
	if isUniqueViolation(err) {
		return fmt.Errorf("create run %s: %w", r.ID, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("create run %s: %w", r.ID, err)
	}
	if with != nil {
		if err := with(ctx, tx); err != nil {
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("create run %s: commit: %w", r.ID, err)
	}
	return nil
}

// GetRun implements store.RunStore.
func (s *Store) GetRun(ctx context.Context, id string) (*jobs.Run, error) {
	r, err := scanRun(s.pool.QueryRow(ctx, `SELECT `+runColumns+` FROM pgrelay_runs WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
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
	param := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Job != "" {
		where = append(where, "job_name = "+param(f.Job))
	}
	if len(f.Statuses) > 0 {
		st := make([]string, len(f.Statuses))
		for i, s := range f.Statuses {
			st[i] = string(s)
		}
		where = append(where, "status = ANY("+param(st)+")")
	}
	if f.Before != "" {
		// The run's place in the order: its queued_at and its ID (COLLATE
		// "C", so bytewise as ORDER BY id is).
		var queued time.Time
		err := s.pool.QueryRow(ctx, `SELECT queued_at FROM pgrelay_runs WHERE id = $1`, f.Before).Scan(&queued)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("list runs before %s: run %s: %w", f.Before, f.Before, store.ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("list runs before %s: %w", f.Before, err)
		}
		where = append(where, "(queued_at, id) < ("+param(queued)+", "+param(f.Before)+")")
	}
	q := `SELECT ` + runColumns + ` FROM pgrelay_runs`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	q += " ORDER BY queued_at DESC, id DESC LIMIT " + param(limit)
	rows, err := s.pool.Query(ctx, q, args...)
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

// RunCancelChannel is the channel UpdateRun notifies (pg_notify, with the
// run's ID as payload) when it records a cancel request on a run that had
// none: a process working the run LISTENs on it to stop the run at once,
// rather than at its next heartbeat. The notification is sent in the
// transaction that records the request, so it is heard only once the
// request is committed.
const RunCancelChannel = "pgrelay_run_cancel"

// UpdateRun implements store.RunStore. An update that sets the run's cancel
// request notifies RunCancelChannel.
func (s *Store) UpdateRun(ctx context.Context, r *jobs.Run) (rerr error) {
	defer markFull(&rerr)
	if err := updateRunIn(ctx, s.pool, r); err != nil {
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
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("update run %s: %w", r.ID, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := updateRunIn(ctx, tx, r); err != nil {
		return err
	}
	if _, err := putRunCleanup(ctx, tx, r.ID, c); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
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
	// args: id, job_name, ..., cancel_requested, version. The run's
	// log_seq is not part of the record and stays as it is. All parts of
	// the statement see one snapshot: old is the row at the version
	// updated (when u updated it), so the notification goes once, with
	// the update that set the request, not with every later heartbeat.
	// The notification is counted because a CTE that nothing reads is not
	// run.
	var updated, exists bool
	err = q.QueryRow(ctx, `WITH old AS (
			SELECT cancel_requested FROM pgrelay_runs WHERE id = $1 AND version = `+runVersionArg+`),
		u AS (
			UPDATE pgrelay_runs SET `+updateRunSet+`, version = version + 1
			WHERE id = $1 AND version = `+runVersionArg+`
			RETURNING cancel_requested),
		notified AS MATERIALIZED (
			SELECT pg_notify('`+RunCancelChannel+`', $1) FROM u, old
			WHERE u.cancel_requested AND NOT old.cancel_requested)
		SELECT EXISTS (SELECT FROM u), EXISTS (SELECT FROM pgrelay_runs WHERE id = $1),
			(SELECT count(*) FROM notified)`, args...).Scan(&updated, &exists, new(int64))
	switch {
	case err != nil:
		return fmt.Errorf("update run %s: %w", r.ID, err)
	case !updated && !exists:
		return fmt.Errorf("run %s: %w", r.ID, store.ErrNotFound)
	case !updated:
		return fmt.Errorf("update run %s: %w", r.ID, store.ErrConflict)
	}
	return nil
}

// AppendRunLog implements store.RunStore. Seqs are reserved by advancing
// the run's log_seq in the same statement that inserts the lines, so
// appenders in any number of processes get distinct, gapless Seqs in
// commit order; appending to a run that does not exist is ErrNotFound.
func (s *Store) AppendRunLog(ctx context.Context, runID string, lines []jobs.LogLine) (rerr error) {
	defer markFull(&rerr)
	if len(lines) == 0 {
		return nil
	}
	ts := make([]time.Time, len(lines))
	streams := make([]string, len(lines))
	steps := make([]int32, len(lines))
	texts := make([][]byte, len(lines))
	for i, l := range lines {
		ts[i], streams[i], steps[i], texts[i] = l.Time, string(l.Stream), int32(l.Step), []byte(l.Text)
	}
	var last int64
	var n int
	err := s.pool.QueryRow(ctx, `WITH r AS (
			UPDATE pgrelay_runs SET log_seq = log_seq + $2 WHERE id = $1 RETURNING log_seq),
		ins AS (
			INSERT INTO pgrelay_run_logs (run_id, seq, ts, stream, step, text)
			SELECT $1, r.log_seq - $2 + l.ord, l.ts, l.stream, l.step, l.text
			FROM r, unnest($3::timestamptz[], $4::text[], $5::integer[], $6::bytea[])
				WITH ORDINALITY AS l (ts, stream, step, text, ord)
			RETURNING seq)
		SELECT coalesce(max(seq), 0), count(*) FROM ins`,
		runID, int64(len(lines)), ts, streams, steps, texts).Scan(&last, &n)
	if err != nil {
		return fmt.Errorf("append run log %s: %w", runID, err)
	}
	if n == 0 {
		return fmt.Errorf("append run log: run %s: %w", runID, store.ErrNotFound)
	}
	if n != len(lines) {
		return fmt.Errorf("append run log %s: inserted %d of %d lines", runID, n, len(lines))
	}
	for i := range lines {
		lines[i].Seq = last - int64(len(lines)) + int64(i) + 1
	}
	return nil
}

// RunLog implements store.RunStore.
func (s *Store) RunLog(ctx context.Context, runID string, afterSeq int64, limit int) ([]jobs.LogLine, error) {
	if limit <= 0 {
		limit = 1000
	}
	rows, err := s.pool.Query(ctx, `SELECT seq, ts, stream, step, text FROM pgrelay_run_logs
		WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, runID, afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("run log %s: %w", runID, err)
	}
	defer rows.Close()
	var out []jobs.LogLine
	for rows.Next() {
		var l jobs.LogLine
		var text []byte
		if err := rows.Scan(&l.Seq, &l.Time, &l.Stream, &l.Step, &text); err != nil {
			return nil, fmt.Errorf("run log %s: %w", runID, err)
		}
		l.Time, l.Text = l.Time.UTC(), string(text)
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("run log %s: %w", runID, err)
	}
	return out, nil
}

// CreateJob implements store.JobStore.
func (s *Store) CreateJob(ctx context.Context, j *jobs.Job, now time.Time) (rerr error) {
	defer markFull(&rerr)
	spec, err := json.Marshal(j)
	if err != nil {
		return fmt.Errorf("create job %s: %w", j.Name, err)
	}
	_, err = s.pool.Exec(ctx, insertJob, j.Name, spec, now, now)
	if isUniqueViolation(err) {
		return fmt.Errorf("create job %s: %w", j.Name, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("create job %s: %w", j.Name, err)
	}
	return nil
}
