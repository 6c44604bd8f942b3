package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
)

// querier is what the pool and a transaction have in common.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// exportPage is how many runs, and how many log lines, Export reads at a
// time.
const exportPage = 500

// Counts implements store.TransferStore.
func (s *Store) Counts(ctx context.Context) (store.Counts, error) { return counts(ctx, s.pool) }

func counts(ctx context.Context, q querier) (store.Counts, error) {
	var c store.Counts
	err := q.QueryRow(ctx, `SELECT (SELECT count(*) FROM pgrelay_connections), (SELECT count(*) FROM pgrelay_tokens),
		(SELECT count(*) FROM pgrelay_jobs), (SELECT count(*) FROM pgrelay_runs), (SELECT count(*) FROM pgrelay_run_logs),
		(SELECT count(*) FROM pgrelay_audit)`).
		Scan(&c.Connections, &c.Tokens, &c.Jobs, &c.Runs, &c.RunLogLines, &c.AuditRecords)
	if err != nil {
		return store.Counts{}, fmt.Errorf("count records: %w", err)
	}
	return c, nil
}

// Export implements store.TransferStore. It reads in one REPEATABLE READ,
// READ ONLY transaction: one snapshot, and writers are not blocked.
func (s *Store) Export(ctx context.Context, w store.RecordWriter) error {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("export: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := exportFrom(ctx, tx, w); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

func exportFrom(ctx context.Context, q querier, w store.RecordWriter) error {
	rows, err := q.Query(ctx, `SELECT key, value FROM pgrelay_meta ORDER BY key`)
	if err != nil {
		return fmt.Errorf("read meta: %w", err)
	}
	type kv struct {
		k string
		v []byte
	}
	meta, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (kv, error) {
		var m kv
		err := r.Scan(&m.k, &m.v)
		return m, err
	})
	if err != nil {
		return fmt.Errorf("read meta: %w", err)
	}
	for _, m := range meta {
		if err := w.PutMeta(ctx, m.k, m.v); err != nil {
			return err
		}
	}
	conns, err := listConnections(ctx, q, `SELECT `+connectionColumns+` FROM pgrelay_connections ORDER BY id`)
	if err != nil {
		return err
	}
	for _, c := range conns {
		if err := w.CopyConnection(ctx, c); err != nil {
			return err
		}
	}
	rows, err = q.Query(ctx, `SELECT `+tokenColumns+` FROM pgrelay_tokens ORDER BY id`)
	if err != nil {
		return fmt.Errorf("list tokens: %w", err)
	}
	tokens, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*store.Token, error) { return scanToken(r) })
	if err != nil {
		return fmt.Errorf("list tokens: %w", err)
	}
	for _, t := range tokens {
		if err := w.CopyToken(ctx, t); err != nil {
			return err
		}
	}
	rows, err = q.Query(ctx, `SELECT spec, created_at, updated_at FROM pgrelay_jobs ORDER BY name`)
	if err != nil {
		return fmt.Errorf("list jobs: %w", err)
	}
	js, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*store.JobRecord, error) { return scanJob(r) })
	if err != nil {
		return fmt.Errorf("list jobs: %w", err)
	}
	for _, j := range js {
		if err := w.CopyJob(ctx, j); err != nil {
			return err
		}
	}
	after := ""
	for {
		rows, err := q.Query(ctx, `SELECT `+runColumns+` FROM pgrelay_runs WHERE id > $1 ORDER BY id LIMIT $2`, after, exportPage)
		if err != nil {
			return fmt.Errorf("list runs: %w", err)
		}
		runs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*jobs.Run, error) { return scanRun(r) })
		if err != nil {
			return fmt.Errorf("list runs: %w", err)
		}
		for _, r := range runs {
			if err := w.CopyRun(ctx, r); err != nil {
				return err
			}
			if err := exportRunLog(ctx, q, r.ID, w); err != nil {
				return err
			}
			if err := exportRunBackends(ctx, q, r.ID, w); err != nil {
				return err
			}
		}
		if len(runs) < exportPage {
			if err := exportAudit(ctx, q, w); err != nil {
				return err
			}
			return exportChecks(ctx, q, w)
		}
		after = runs[len(runs)-1].ID
	}
}

func listConnections(ctx context.Context, q querier, query string) ([]*store.Connection, error) {
	rows, err := q.Query(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*store.Connection, error) { return scanConnection(r) })
	if err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	return out, nil
}

func exportRunLog(ctx context.Context, q querier, runID string, w store.RecordWriter) error {
	var after int64
	for {
		rows, err := q.Query(ctx, `SELECT seq, ts, stream, step, text FROM pgrelay_run_logs
			WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3`, runID, after, exportPage)
		if err != nil {
			return fmt.Errorf("run log %s: %w", runID, err)
		}
		lines, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (jobs.LogLine, error) {
			var l jobs.LogLine
			var text []byte
			err := r.Scan(&l.Seq, &l.Time, &l.Stream, &l.Step, &text)
			l.Time, l.Text = l.Time.UTC(), string(text)
			return l, err
		})
		if err != nil {
			return fmt.Errorf("run log %s: %w", runID, err)
		}
		if len(lines) > 0 {
			if err := w.CopyRunLog(ctx, runID, lines); err != nil {
				return err
			}
			after = lines[len(lines)-1].Seq
		}
		if len(lines) < exportPage {
			return nil
		}
	}
}

// Import implements store.TransferStore.
func (s *Store) Import(ctx context.Context, fill func(w store.RecordWriter) error) (rerr error) {
	defer markFull(&rerr)
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("import: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := fill(&writer{tx: tx}); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("import: commit: %w", err)
	}
	return nil
}

// writer is a store.RecordWriter into a transaction. A failed insert
// aborts the transaction: Import then rolls it back.
type writer struct{ tx pgx.Tx }

func (w *writer) Counts(ctx context.Context) (store.Counts, error) { return counts(ctx, w.tx) }

func (w *writer) PutMeta(ctx context.Context, key string, value []byte) error {
	return putMeta(ctx, w.tx, key, value)
}

func (w *writer) CopyConnection(ctx context.Context, c *store.Connection) error {
	v, err := connToValues(c)
	if err != nil {
		return fmt.Errorf("copy connection %s: %w", c.Spec.Name, err)
	}
	_, err = w.tx.Exec(ctx, insertConnection, v.args()...)
	return insertError("connection "+c.Spec.Name, err)
}

func (w *writer) CopyToken(ctx context.Context, t *store.Token) error {
	_, err := w.tx.Exec(ctx, insertToken, tokenArgs(t)...)
	return insertError(fmt.Sprintf("token %s (%s)", t.Name, t.ID), err)
}

func (w *writer) CopyJob(ctx context.Context, j *store.JobRecord) error {
	spec, err := json.Marshal(&j.Job)
	if err != nil {
		return fmt.Errorf("copy job %s: %w", j.Job.Name, err)
	}
	_, err = w.tx.Exec(ctx, insertJob, j.Job.Name, spec, j.CreatedAt, j.UpdatedAt)
	return insertError("job "+j.Job.Name, err)
}

func (w *writer) CopyRun(ctx context.Context, r *jobs.Run) error {
	args, err := runArgs(r)
	if err != nil {
		return fmt.Errorf("copy run %s: %w", r.ID, err)
	}
	_, err = w.tx.Exec(ctx, insertRun, args...)
	return insertError("run "+r.ID, err)
}

// CopyRunLog inserts the lines and advances the run's log_seq past them,
// so that lines appended later get the Seqs that follow.
func (w *writer) CopyRunLog(ctx context.Context, runID string, lines []jobs.LogLine) error {
	if len(lines) == 0 {
		return nil
	}
	seqs := make([]int64, len(lines))
	ts := make([]time.Time, len(lines))
	streams := make([]string, len(lines))
	steps := make([]int32, len(lines))
	texts := make([][]byte, len(lines))
	var last int64
	for i, l := range lines {
		seqs[i], ts[i], streams[i], steps[i], texts[i] = l.Seq, l.Time, string(l.Stream), int32(l.Step), []byte(l.Text)
		last = max(last, l.Seq)
	}
	tag, err := w.tx.Exec(ctx, `UPDATE pgrelay_runs SET log_seq = greatest(log_seq, $2) WHERE id = $1`, runID, last)
	if err != nil {
		return fmt.Errorf("copy run log %s: %w", runID, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("copy run log: run %s: %w", runID, store.ErrNotFound)
	}
	_, err = w.tx.Exec(ctx, `INSERT INTO pgrelay_run_logs (run_id, seq, ts, stream, step, text)
		SELECT $1, l.seq, l.ts, l.stream, l.step, l.text
		FROM unnest($2::bigint[], $3::timestamptz[], $4::text[], $5::integer[], $6::bytea[]) AS l (seq, ts, stream, step, text)`,
		runID, seqs, ts, streams, steps, texts)
	return insertError("log of run "+runID, err)
}

// insertError names what could not be copied; a record that is there
// already is store.ErrExists.
func insertError(what string, err error) error {
	switch {
	case err == nil:
		return nil
	case isUniqueViolation(err):
		return fmt.Errorf("copy %s: %w", what, store.ErrExists)
	}
	return fmt.Errorf("copy %s: %w", what, err)
}

func putMeta(ctx context.Context, q querier, key string, value []byte) error {
	if _, err := q.Exec(ctx, `INSERT INTO pgrelay_meta (key, value) VALUES ($1, $2)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value); err != nil {
		return fmt.Errorf("put meta %s: %w", key, err)
	}
	return nil
}

func getMeta(ctx context.Context, q querier, key string) ([]byte, error) {
	var out []byte
	err := q.QueryRow(ctx, `SELECT value FROM pgrelay_meta WHERE key = $1`, key).Scan(&out)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("meta %s: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get meta %s: %w", key, err)
	}
	return out, nil
}

// GetMeta implements store.SecretsStore.
func (s *Store) GetMeta(ctx context.Context, key string) ([]byte, error) {
	return getMeta(ctx, s.pool, key)
}

// WithSecrets implements store.SecretsStore. The transaction first locks
// the meta table and the connections table against writes (SHARE ROW
// EXCLUSIVE: readers go on, writers wait), so that no sealed value changes
// or appears meanwhile.
func (s *Store) WithSecrets(ctx context.Context, fn func(tx store.SecretsTx) error) (rerr error) {
	defer markFull(&rerr)
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("secrets transaction: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, `LOCK TABLE pgrelay_meta, pgrelay_connections IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return fmt.Errorf("secrets transaction: lock: %w", err)
	}
	if err := fn(secretsTx{q: tx}); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("secrets transaction: commit: %w", err)
	}
	return nil
}

type secretsTx struct{ q querier }

func (t secretsTx) ListConnections(ctx context.Context) ([]*store.Connection, error) {
	return listConnections(ctx, t.q, `SELECT `+connectionColumns+` FROM pgrelay_connections ORDER BY name`)
}

func (t secretsTx) CreateConnection(ctx context.Context, c *store.Connection) error {
	return createConnection(ctx, t.q, c)
}

func (t secretsTx) SetConnectionSecrets(ctx context.Context, id string, sealedPassword, sealedPrivateKey []byte) error {
	tag, err := t.q.Exec(ctx, `UPDATE pgrelay_connections SET sealed_password = $2, sealed_private_key = $3,
		version = version + 1 WHERE id = $1`, id, sealedPassword, sealedPrivateKey)
	if err != nil {
		return fmt.Errorf("set secrets of connection %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("connection %s: %w", id, store.ErrNotFound)
	}
	return nil
}

func (t secretsTx) SetConnectionAuthSecret(ctx context.Context, id string, sealed []byte) error {
	tag, err := t.q.Exec(ctx, `UPDATE pgrelay_connections SET sealed_auth_secret = $2, version = version + 1 WHERE id = $1`, id, sealed)
	if err != nil {
		return fmt.Errorf("set auth secret of connection %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("connection %s: %w", id, store.ErrNotFound)
	}
	return nil
}

func (t secretsTx) SetConnectionPendingKey(ctx context.Context, id string, sealed []byte) error {
	tag, err := t.q.Exec(ctx, `UPDATE pgrelay_connections SET sealed_pending_private_key = $2,
		version = version + 1 WHERE id = $1`, id, sealed)
	if err != nil {
		return fmt.Errorf("set pending key of connection %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("connection %s: %w", id, store.ErrNotFound)
	}
	return nil
}

func (t secretsTx) SetConnectionHopKeys(ctx context.Context, id string, keys []store.HopKey) error {
	enc, err := hopKeysJSON(keys)
	if err != nil {
		return fmt.Errorf("set hop keys of connection %s: %w", id, err)
	}
	tag, err := t.q.Exec(ctx, `UPDATE pgrelay_connections SET hop_keys = $2, version = version + 1 WHERE id = $1`, id, enc)
	if err != nil {
		return fmt.Errorf("set hop keys of connection %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("connection %s: %w", id, store.ErrNotFound)
	}
	return nil
}

func (t secretsTx) GetMeta(ctx context.Context, key string) ([]byte, error) {
	return getMeta(ctx, t.q, key)
}

func (t secretsTx) PutMeta(ctx context.Context, key string, value []byte) error {
	return putMeta(ctx, t.q, key, value)
}
