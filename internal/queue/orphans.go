package queue

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
)

// Submit saves a run and inserts its River job in one transaction of the
// store, so that neither exists without the other. A run can still be left
// queued with no worker to take it: saved by an older release, which wrote
// the two apart (a process that died between the two steps, or a River
// insert that failed after the run was saved), queued again by the reaper
// (reap) whose insert then failed, or taken by a worker that could not
// read it. The sweep below (part of reap) queues such runs again.

// liveJob is a River job of a run in a state that will still be worked.
type liveJob struct {
	id    int64
	state string
}

// liveStates are the River job states that will still be worked.
const liveStates = "('available', 'pending', 'scheduled', 'retryable', 'running')"

// Queries of the run jobs that will still be worked (River keeps a job's
// args as JSON): all of them, and those of one run.
const (
	sqliteLiveJobs = `SELECT json_extract(args, '$.run_id'), id, state FROM river_job
		WHERE kind = 'pgrelay_run' AND state IN ` + liveStates
	sqliteLiveJobsOf = `SELECT json_extract(args, '$.run_id'), id, state FROM river_job
		WHERE kind = 'pgrelay_run' AND state IN ` + liveStates + ` AND json_extract(args, '$.run_id') = ?`
	pgLiveJobs = `SELECT args->>'run_id', id, state::text FROM river_job
		WHERE kind = 'pgrelay_run' AND state IN ` + liveStates
	pgLiveJobsOf = `SELECT args->>'run_id', id, state::text FROM river_job
		WHERE kind = 'pgrelay_run' AND state IN ` + liveStates + ` AND args->>'run_id' = $1`
)

// OrphanLockKey is the key of the transaction-level advisory lock under
// which a process sharing a PostgreSQL store checks that a run has no
// River job and inserts one: two processes sweeping at once do not both
// queue it. It is the bytes of "pgorphan".
const OrphanLockKey int64 = 0x70676f727068616e

// orphanBackend is how the sweep reads River's jobs and inserts one under
// a check, on one backend.
type orphanBackend struct {
	// live lists the run jobs that will still be worked, by run ID.
	live func(ctx context.Context) (map[string][]liveJob, error)
	// insertIf inserts a job for the run in a transaction (serialized
	// with the other processes' sweeps) if ok accepts the run's jobs that
	// will still be worked, read in that transaction.
	insertIf func(ctx context.Context, runID string, ok func([]liveJob) bool) (bool, error)
}

type rowScanner interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

func scanLive(rows rowScanner) (map[string][]liveJob, error) {
	out := map[string][]liveJob{}
	for rows.Next() {
		var (
			run sql.NullString
			j   liveJob
		)
		if err := rows.Scan(&run, &j.id, &j.state); err != nil {
			return nil, err
		}
		out[run.String] = append(out[run.String], j)
	}
	return out, rows.Err()
}

// insertChecked reads the run's jobs that will still be worked with live,
// inside the transaction tx, and inserts a job for the run in tx if ok
// accepts them.
func insertChecked[TTx any](ctx context.Context, client *river.Client[TTx], tx TTx, runID string,
	live func() (map[string][]liveJob, error), ok func([]liveJob) bool) (bool, error) {
	jobs, err := live()
	if err != nil {
		return false, err
	}
	if !ok(jobs[runID]) {
		return false, nil
	}
	if _, err := client.InsertTx(ctx, tx, RunArgs{RunID: runID}, nil); err != nil {
		return false, err
	}
	return true, nil
}

// sqlLive runs a query of live jobs on a database/sql handle.
func sqlLive(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, query string, args ...any) (map[string][]liveJob, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return scanLive(rows)
}

// pgLive runs a query of live jobs on a pgx handle.
func pgLive(ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, query string, args ...any) (map[string][]liveJob, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return scanLive(rows)
}

func sqliteOrphans(db *sql.DB, client *river.Client[*sql.Tx]) orphanBackend {
	return orphanBackend{
		live: func(ctx context.Context) (map[string][]liveJob, error) { return sqlLive(ctx, db, sqliteLiveJobs) },
		insertIf: func(ctx context.Context, runID string, ok func([]liveJob) bool) (bool, error) {
			// The store's transactions are IMMEDIATE (_txlock): this one
			// holds the write lock from its start, so no other writer
			// inserts between the check and the insert.
			tx, err := db.BeginTx(ctx, nil)
			if err != nil {
				return false, err
			}
			defer func() { _ = tx.Rollback() }()
			inserted, err := insertChecked(ctx, client, tx, runID,
				func() (map[string][]liveJob, error) { return sqlLive(ctx, tx, sqliteLiveJobsOf, runID) }, ok)
			if err != nil || !inserted {
				return false, err
			}
			return true, tx.Commit()
		},
	}
}

func pgOrphans(pool *pgxpool.Pool, client *river.Client[pgx.Tx]) orphanBackend {
	return orphanBackend{
		live: func(ctx context.Context) (map[string][]liveJob, error) { return pgLive(ctx, pool, pgLiveJobs) },
		insertIf: func(ctx context.Context, runID string, ok func([]liveJob) bool) (bool, error) {
			tx, err := pool.Begin(ctx)
			if err != nil {
				return false, err
			}
			defer func() { _ = tx.Rollback(ctx) }()
			// Serialized with the other processes' sweeps.
			if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", OrphanLockKey); err != nil {
				return false, err
			}
			inserted, err := insertChecked(ctx, client, tx, runID,
				func() (map[string][]liveJob, error) { return pgLive(ctx, tx, pgLiveJobsOf, runID) }, ok)
			if err != nil || !inserted {
				return false, err
			}
			return true, tx.Commit(ctx)
		},
	}
}

// orphanPrint describes a queued run and its River jobs that will still be
// worked, and whether one of them waits for a worker (then the run is not
// orphaned: it is taken in its turn, however long the queue).
func orphanPrint(version int64, live []liveJob) (print string, waiting bool) {
	ids := make([]string, 0, len(live))
	for _, j := range live {
		if j.state != "running" {
			return "", true
		}
		ids = append(ids, strconv.FormatInt(j.id, 10))
	}
	sort.Strings(ids)
	return strconv.FormatInt(version, 10) + ":" + strings.Join(ids, ","), false
}

// sweepOrphans queues again the runs queued for longer than LostAfter that
// no River job will work: none waits for a worker (available, pending,
// scheduled, retryable) and those running (a worker that died taking it;
// the reaper queued the run again and could not insert its job) were
// running at the previous sweep too, the run unchanged since. Seen twice
// so, a ReapInterval apart, the run is orphaned: a worker that takes a job
// marks its run running at once. Its job is inserted in a transaction that
// checks again that it has no waiting job (serialized with the other
// processes' sweeps), and a worker takes a run only while it is queued
// (see work), so two jobs never work one run.
func (q *Queue) sweepOrphans(ctx context.Context) {
	runs, err := q.cfg.Store.ListRuns(ctx, store.RunFilter{Statuses: []jobs.Status{jobs.Queued}, Limit: 1000})
	if err != nil {
		q.cfg.Logger.WarnContext(ctx, "reaper: list queued runs", "error", err)
		return
	}
	now := q.cfg.Now().UTC()
	var old []*jobs.Run
	for _, r := range runs {
		if now.Sub(r.QueuedAt) >= q.cfg.LostAfter {
			old = append(old, r)
		}
	}
	seen := map[string]string{}
	defer func() { q.orphans = seen }()
	if len(old) == 0 {
		return
	}
	live, err := q.orphanDB.live(ctx)
	if err != nil {
		q.cfg.Logger.WarnContext(ctx, "reaper: list the runs' River jobs", "error", err)
		seen = q.orphans // judge them at the next sweep
		return
	}
	for _, r := range old {
		print, waiting := orphanPrint(r.Version, live[r.ID])
		if waiting {
			continue
		}
		seen[r.ID] = print
		if q.orphans[r.ID] != print {
			continue // first seen so: judged at the next sweep
		}
		if r.Worker != "" {
			// A local run (RunLocal) whose process stopped before it
			// started: not for this process's workers to run.
			q.failOrphan(ctx, r)
			delete(seen, r.ID)
			continue
		}
		inserted, err := q.orphanDB.insertIf(ctx, r.ID, func(jobsNow []liveJob) bool {
			if p, w := orphanPrint(r.Version, jobsNow); w || p != print {
				return false // queued since, by another process
			}
			// Still queued, unchanged, as the lock is held?
			cur, err := q.cfg.Store.GetRun(ctx, r.ID)
			return err == nil && cur.Status == jobs.Queued && cur.Version == r.Version
		})
		if err != nil {
			q.cfg.Logger.ErrorContext(ctx, "reaper: queue an orphaned run again", "run_id", r.ID, "error", err)
			continue
		}
		if !inserted {
			continue
		}
		delete(seen, r.ID)
		msg := fmt.Sprintf("queued again: the run was queued since %s but no worker had it "+
			"(the process that queued it stopped, or could not hand it to the workers)", r.QueuedAt.Format(time.RFC3339))
		_ = q.cfg.Store.AppendRunLog(ctx, r.ID, []jobs.LogLine{{Time: now, Stream: jobs.StreamSystem, Step: -1, Text: msg}})
		q.cfg.Logger.WarnContext(ctx, "run queued with no job for a worker; queued again", "run_id", r.ID, "queued_at", r.QueuedAt)
	}
}

// failOrphan fails a local run (RunLocal names its process as the run's
// worker when it saves it) that is still queued: its process stopped
// before it started the run.
func (q *Queue) failOrphan(ctx context.Context, r *jobs.Run) {
	now := q.cfg.Now().UTC()
	reason := fmt.Sprintf("the local pgrelay process %s that saved this run stopped before it started it; run the job again", r.Worker)
	upd, err := q.update(ctx, r.ID, func(c *jobs.Run) bool {
		if c.Status != jobs.Queued || c.Version != r.Version {
			return false
		}
		c.Status, c.Reason, c.EndedAt = jobs.Failed, reason, &now
		for i := range c.Steps {
			c.Steps[i].Status = jobs.Skipped
		}
		return true
	})
	if err != nil {
		q.cfg.Logger.ErrorContext(ctx, "reaper: fail an orphaned local run", "run_id", r.ID, "error", err)
		return
	}
	if upd.Status == jobs.Failed && upd.Reason == reason {
		q.cfg.Logger.WarnContext(ctx, "local run never started; failed", "run_id", r.ID, "worker", r.Worker)
	}
}
