package sqlite

import (
	"context"
	"fmt"

	"github.com/pgrelay/pgrelay/internal/store"
)

// checkColumns are the columns of a connection's health entry, in
// checkArgs's order.
const checkColumns = `connection_id, kind, at, ok, source, step, detail, duration_ms`

// checkArgs returns a health entry's column values in checkColumns order.
func checkArgs(connectionID string, c store.ConnectionCheck) []any {
	return []any{connectionID, c.Kind, formatTime(c.At), c.OK, c.Source, c.Step, c.Detail, c.DurationMS}
}

// AddConnectionCheck implements store.HealthStore.
func (s *Store) AddConnectionCheck(ctx context.Context, connectionID string, c store.ConnectionCheck, keep int) (rerr error) {
	defer markFull(&rerr)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("record connection check: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := writeCheck(ctx, tx, connectionID, c); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM connection_checks WHERE connection_id = ? AND kind = ? AND id NOT IN
		(SELECT id FROM connection_checks WHERE connection_id = ? AND kind = ? ORDER BY id DESC LIMIT ?)`,
		connectionID, c.Kind, connectionID, c.Kind, keep); err != nil {
		return fmt.Errorf("record connection check: prune: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("record connection check: commit: %w", err)
	}
	return nil
}

func writeCheck(ctx context.Context, q querier, connectionID string, c store.ConnectionCheck) error {
	_, err := q.ExecContext(ctx, insertCheck, checkArgs(connectionID, c)...)
	if isForeignKeyViolation(err) {
		return fmt.Errorf("record connection check: connection %s: %w", connectionID, store.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("record connection check: %w", err)
	}
	return nil
}

// ConnectionChecks implements store.HealthStore.
func (s *Store) ConnectionChecks(ctx context.Context, connectionID string, limit int) ([]store.ConnectionCheck, error) {
	m, err := queryChecks(ctx, s.db, `SELECT `+checkColumns+` FROM connection_checks
		WHERE connection_id = ? ORDER BY id DESC LIMIT ?`, connectionID, limit)
	return m[connectionID], err
}

// RecentChecks implements store.HealthStore.
func (s *Store) RecentChecks(ctx context.Context, perConnection int) (map[string][]store.ConnectionCheck, error) {
	return queryChecks(ctx, s.db, `SELECT `+checkColumns+` FROM (
		SELECT *, row_number() OVER (PARTITION BY connection_id ORDER BY id DESC) AS n FROM connection_checks)
		WHERE n <= ? ORDER BY connection_id, id DESC`, perConnection)
}

func queryChecks(ctx context.Context, q querier, query string, args ...any) (map[string][]store.ConnectionCheck, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read connection checks: %w", err)
	}
	defer rows.Close()
	out := map[string][]store.ConnectionCheck{}
	for rows.Next() {
		var id, at string
		var c store.ConnectionCheck
		if err := rows.Scan(&id, &c.Kind, &at, &c.OK, &c.Source, &c.Step, &c.Detail, &c.DurationMS); err != nil {
			return nil, fmt.Errorf("read connection checks: %w", err)
		}
		if c.At, err = parseTime(at); err != nil {
			return nil, fmt.Errorf("read connection checks: %w", err)
		}
		out[id] = append(out[id], c)
	}
	return out, rows.Err()
}

// exportChecks hands every connection's checks, oldest first, to w.
func exportChecks(ctx context.Context, q querier, w store.RecordWriter) error {
	m, err := queryChecks(ctx, q, `SELECT `+checkColumns+` FROM connection_checks ORDER BY connection_id, id`)
	if err != nil {
		return err
	}
	for id, cs := range m {
		if err := w.CopyConnectionChecks(ctx, id, cs); err != nil {
			return err
		}
	}
	return nil
}

func (w *writer) CopyConnectionChecks(ctx context.Context, connectionID string, cs []store.ConnectionCheck) error {
	for _, c := range cs {
		if err := writeCheck(ctx, w.q, connectionID, c); err != nil {
			return err
		}
	}
	return nil
}
