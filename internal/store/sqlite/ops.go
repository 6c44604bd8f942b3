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

// querier is what the database and a transaction have in common.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// exportPage is how many runs, and how many log lines, Export reads at a
// time.
const exportPage = 500

// Counts implements store.TransferStore.
func (s *Store) Counts(ctx context.Context) (store.Counts, error) { return counts(ctx, s.db) }

func counts(ctx context.Context, q querier) (store.Counts, error) {
	var c store.Counts
	err := q.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM connections), (SELECT count(*) FROM tokens),
		(SELECT count(*) FROM jobs), (SELECT count(*) FROM runs), (SELECT count(*) FROM run_logs),
		(SELECT count(*) FROM audit_log)`).
		Scan(&c.Connections, &c.Tokens, &c.Jobs, &c.Runs, &c.RunLogLines, &c.AuditRecords)
	if err != nil {
		return store.Counts{}, fmt.Errorf("count records: %w", err)
	}
	return c, nil
}

// Export implements store.TransferStore. It reads in one read transaction,
// which in WAL mode sees one snapshot and does not block writers.
func (s *Store) Export(ctx context.Context, w store.RecordWriter) error {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("export: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := exportFrom(ctx, tx, w); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

func exportFrom(ctx context.Context, q querier, w store.RecordWriter) error {
	meta, err := allMeta(ctx, q)
	if err != nil {
		return err
	}
	for _, m := range meta {
		if err := w.PutMeta(ctx, m.key, m.value); err != nil {
			return err
		}
	}
	conns, err := listConnections(ctx, q, `SELECT `+connectionColumns+` FROM connections ORDER BY id`)
	if err != nil {
		return err
	}
	for _, c := range conns {
		if err := w.CopyConnection(ctx, c); err != nil {
			return err
		}
	}
	tokens, err := listTokens(ctx, q)
	if err != nil {
		return err
	}
	for _, t := range tokens {
		if err := w.CopyToken(ctx, t); err != nil {
			return err
		}
	}
	js, err := listJobs(ctx, q)
	if err != nil {
		return err
	}
	for _, j := range js {
		if err := w.CopyJob(ctx, j); err != nil {
			return err
		}
	}
	after := ""
	for {
		runs, err := runPage(ctx, q, after)
		if err != nil {
			return err
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

type metaValue struct {
	key   string
	value []byte
}

func allMeta(ctx context.Context, q querier) ([]metaValue, error) {
	rows, err := q.QueryContext(ctx, `SELECT key, value FROM meta ORDER BY key`)
	if err != nil {
		return nil, fmt.Errorf("read meta: %w", err)
	}
	defer rows.Close()
	var out []metaValue
	for rows.Next() {
		var m metaValue
		if err := rows.Scan(&m.key, &m.value); err != nil {
			return nil, fmt.Errorf("read meta: %w", err)
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

func listConnections(ctx context.Context, q querier, query string) ([]*store.Connection, error) {
	rows, err := q.QueryContext(ctx, query)
	if err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	defer rows.Close()
	var out []*store.Connection
	for rows.Next() {
		c, err := scanConnection(rows)
		if err != nil {
			return nil, fmt.Errorf("list connections: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list connections: %w", err)
	}
	return out, nil
}

func listTokens(ctx context.Context, q querier) ([]*store.Token, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+tokenColumns+` FROM tokens ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	defer rows.Close()
	var out []*store.Token
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list tokens: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

func listJobs(ctx context.Context, q querier) ([]*store.JobRecord, error) {
	rows, err := q.QueryContext(ctx, `SELECT spec, created_at, updated_at FROM jobs ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	defer rows.Close()
	var out []*store.JobRecord
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("list jobs: %w", err)
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

func runPage(ctx context.Context, q querier, after string) ([]*jobs.Run, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+runColumns+` FROM runs WHERE id > ? ORDER BY id LIMIT ?`, after, exportPage)
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
	return out, rows.Err()
}

func exportRunLog(ctx context.Context, q querier, runID string, w store.RecordWriter) error {
	var after int64
	for {
		lines, err := runLogPage(ctx, q, runID, after)
		if err != nil {
			return err
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

func runLogPage(ctx context.Context, q querier, runID string, after int64) ([]jobs.LogLine, error) {
	rows, err := q.QueryContext(ctx, `SELECT seq, ts, stream, step, text FROM run_logs
		WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?`, runID, after, exportPage)
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
			return nil, fmt.Errorf("run log %s: %w", runID, err)
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// Import implements store.TransferStore: fill writes into one immediate
// transaction, which holds the database's write lock until it ends.
func (s *Store) Import(ctx context.Context, fill func(w store.RecordWriter) error) (rerr error) {
	defer markFull(&rerr)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("import: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := fill(&writer{q: tx}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("import: commit: %w", err)
	}
	return nil
}

// writer is a store.RecordWriter into a transaction.
type writer struct{ q querier }

func (w *writer) Counts(ctx context.Context) (store.Counts, error) { return counts(ctx, w.q) }

func (w *writer) PutMeta(ctx context.Context, key string, value []byte) error {
	return putMeta(ctx, w.q, key, value)
}

func (w *writer) CopyConnection(ctx context.Context, c *store.Connection) error {
	args, err := connArgs(c)
	if err != nil {
		return fmt.Errorf("copy connection %s: %w", c.Spec.Name, err)
	}
	_, err = w.q.ExecContext(ctx, insertConnection, args...)
	return insertError("connection "+c.Spec.Name, err)
}

func (w *writer) CopyToken(ctx context.Context, t *store.Token) error {
	_, err := w.q.ExecContext(ctx, insertToken, tokenArgs(t)...)
	return insertError(fmt.Sprintf("token %s (%s)", t.Name, t.ID), err)
}

func (w *writer) CopyJob(ctx context.Context, j *store.JobRecord) error {
	spec, err := json.Marshal(&j.Job)
	if err != nil {
		return fmt.Errorf("copy job %s: %w", j.Job.Name, err)
	}
	_, err = w.q.ExecContext(ctx, insertJob,
		j.Job.Name, string(spec), formatTime(j.CreatedAt), formatTime(j.UpdatedAt))
	return insertError("job "+j.Job.Name, err)
}

func (w *writer) CopyRun(ctx context.Context, r *jobs.Run) error {
	args, err := runArgs(r)
	if err != nil {
		return fmt.Errorf("copy run %s: %w", r.ID, err)
	}
	_, err = w.q.ExecContext(ctx, insertRun, args...)
	return insertError("run "+r.ID, err)
}

func (w *writer) CopyRunLog(ctx context.Context, runID string, lines []jobs.LogLine) error {
	for _, l := range lines {
		_, err := w.q.ExecContext(ctx, insertRunLog,
			runID, l.Seq, formatTime(l.Time), l.Stream, l.Step, l.Text)
		if isForeignKeyViolation(err) {
			return fmt.Errorf("copy run log: run %s: %w", runID, store.ErrNotFound)
		}
		if err := insertError(fmt.Sprintf("log line %d of run %s", l.Seq, runID), err); err != nil {
			return err
		}
	}
	return nil
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
	if _, err := q.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value); err != nil {
		return fmt.Errorf("put meta %s: %w", key, err)
	}
	return nil
}

func getMeta(ctx context.Context, q querier, key string) ([]byte, error) {
	var out []byte
	err := q.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&out)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("meta %s: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get meta %s: %w", key, err)
	}
	return out, nil
}

// GetMeta implements store.SecretsStore.
func (s *Store) GetMeta(ctx context.Context, key string) ([]byte, error) {
	return getMeta(ctx, s.db, key)
}

// WithSecrets implements store.SecretsStore. The transaction is immediate:
// it holds the database's write lock from its start, so no other writer
// changes a sealed value meanwhile.
func (s *Store) WithSecrets(ctx context.Context, fn func(tx store.SecretsTx) error) (rerr error) {
	defer markFull(&rerr)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("secrets transaction: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := fn(secretsTx{q: tx}); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("secrets transaction: commit: %w", err)
	}
	return nil
}

type secretsTx struct{ q querier }

func (t secretsTx) ListConnections(ctx context.Context) ([]*store.Connection, error) {
	return listConnections(ctx, t.q, `SELECT `+connectionColumns+` FROM connections ORDER BY name`)
}

func (t secretsTx) CreateConnection(ctx context.Context, c *store.Connection) error {
	return createConnection(ctx, t.q, c)
}

func (t secretsTx) SetConnectionSecrets(ctx context.Context, id string, sealedPassword, sealedPrivateKey []byte) error {
	res, err := t.q.ExecContext(ctx, `UPDATE connections SET sealed_password = ?, sealed_private_key = ?,
		version = version + 1 WHERE id = ?`, sealedPassword, sealedPrivateKey, id)
	if err != nil {
		return fmt.Errorf("set secrets of connection %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("connection %s: %w", id, store.ErrNotFound)
	}
	return nil
}

func (t secretsTx) SetConnectionAuthSecret(ctx context.Context, id string, sealed []byte) error {
	res, err := t.q.ExecContext(ctx, `UPDATE connections SET sealed_auth_secret = ?, version = version + 1 WHERE id = ?`, sealed, id)
	if err != nil {
		return fmt.Errorf("set auth secret of connection %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("connection %s: %w", id, store.ErrNotFound)
	}
	return nil
}

func (t secretsTx) SetConnectionPendingKey(ctx context.Context, id string, sealed []byte) error {
	res, err := t.q.ExecContext(ctx, `UPDATE connections SET sealed_pending_private_key = ?,
		version = version + 1 WHERE id = ?`, sealed, id)
	if err != nil {
		return fmt.Errorf("set pending key of connection %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("connection %s: %w", id, store.ErrNotFound)
	}
	return nil
}

func (t secretsTx) SetConnectionHopKeys(ctx context.Context, id string, keys []store.HopKey) error {
	enc, err := hopKeysJSON(keys)
	if err != nil {
		return fmt.Errorf("set hop keys of connection %s: %w", id, err)
	}
	res, err := t.q.ExecContext(ctx, `UPDATE connections SET hop_keys = ?, version = version + 1 WHERE id = ?`, enc, id)
	if err != nil {
		return fmt.Errorf("set hop keys of connection %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
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
