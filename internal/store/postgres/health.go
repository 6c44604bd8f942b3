package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/store"
)

// checkColumns are the columns of a connection's health entry, in
// checkArgs's order.
const checkColumns = `connection_id, kind, at, ok, source, step, detail, duration_ms`

// checkArgs returns a health entry's column values in checkColumns order.
func checkArgs(connectionID string, c store.ConnectionCheck) []any {
	return []any{connectionID, c.Kind, c.At, c.OK, c.Source, c.Step, c.Detail, c.DurationMS}
}

// AddConnectionCheck implements store.HealthStore.
func (s *Store) AddConnectionCheck(ctx context.Context, connectionID string, c store.ConnectionCheck, keep int) (rerr error) {
	defer markFull(&rerr)
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("record connection check: begin: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := writeCheck(ctx, tx, connectionID, c); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM pgrelay_connection_checks WHERE connection_id = $1 AND kind = $2 AND id NOT IN
		(SELECT id FROM pgrelay_connection_checks WHERE connection_id = $1 AND kind = $2 ORDER BY id DESC LIMIT $3)`,
		connectionID, c.Kind, keep); err != nil {
		return fmt.Errorf("record connection check: prune: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("record connection check: commit: %w", err)
	}
	return nil
}

func writeCheck(ctx context.Context, q querier, connectionID string, c store.ConnectionCheck) error {
	_, err := q.Exec(ctx, insertCheck, checkArgs(connectionID, c)...)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == foreignKeyViolation {
		return fmt.Errorf("record connection check: connection %s: %w", connectionID, store.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("record connection check: %w", err)
	}
	return nil
}

// ConnectionChecks implements store.HealthStore.
func (s *Store) ConnectionChecks(ctx context.Context, connectionID string, limit int) ([]store.ConnectionCheck, error) {
	m, err := queryChecks(ctx, s.pool, `SELECT `+checkColumns+` FROM pgrelay_connection_checks
		WHERE connection_id = $1 ORDER BY id DESC LIMIT $2`, connectionID, limit)
	return m[connectionID], err
}

// RecentChecks implements store.HealthStore.
func (s *Store) RecentChecks(ctx context.Context, perConnection int) (map[string][]store.ConnectionCheck, error) {
	return queryChecks(ctx, s.pool, `SELECT `+checkColumns+` FROM (
		SELECT *, row_number() OVER (PARTITION BY connection_id ORDER BY id DESC) AS n FROM pgrelay_connection_checks) c
		WHERE n <= $1 ORDER BY connection_id, id DESC`, perConnection)
}

func queryChecks(ctx context.Context, q querier, query string, args ...any) (map[string][]store.ConnectionCheck, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read connection checks: %w", err)
	}
	defer rows.Close()
	out := map[string][]store.ConnectionCheck{}
	for rows.Next() {
		var id string
		var at time.Time
		var c store.ConnectionCheck
		if err := rows.Scan(&id, &c.Kind, &at, &c.OK, &c.Source, &c.Step, &c.Detail, &c.DurationMS); err != nil {
			return nil, fmt.Errorf("read connection checks: %w", err)
		}
		c.At = at.UTC()
		out[id] = append(out[id], c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read connection checks: %w", err)
	}
	return out, nil
}

// exportChecks hands every connection's checks, oldest first, to w.
func exportChecks(ctx context.Context, q querier, w store.RecordWriter) error {
	m, err := queryChecks(ctx, q, `SELECT `+checkColumns+` FROM pgrelay_connection_checks ORDER BY connection_id, id`)
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
	if len(cs) == 0 {
		return nil
	}
	rows := make([][]any, len(cs))
	for i, c := range cs {
		rows[i] = []any{connectionID, c.Kind, c.At, c.OK, c.Source, c.Step, c.Detail, c.DurationMS}
	}
	_, err := w.tx.CopyFrom(ctx, pgx.Identifier{"pgrelay_connection_checks"},
		[]string{"connection_id", "kind", "at", "ok", "source", "step", "detail", "duration_ms"}, pgx.CopyFromRows(rows))
	if err != nil {
		return fmt.Errorf("copy checks of connection %s: %w", connectionID, err)
	}
	return nil
}
