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

// foreignKeyViolation is SQLSTATE 23503.
const foreignKeyViolation = "23503"

// CreateSession implements store.SessionStore.
func (s *Store) CreateSession(ctx context.Context, sess *store.Session) (rerr error) {
	defer markFull(&rerr)
	_, err := s.pool.Exec(ctx, `INSERT INTO pgrelay_sessions (id, token_id, created_at, expires_at) VALUES ($1, $2, $3, $4)`,
		sess.ID, sess.TokenID, sess.CreatedAt, sess.ExpiresAt)
	var pe *pgconn.PgError
	switch {
	case isUniqueViolation(err):
		return fmt.Errorf("create session: %w", store.ErrExists)
	case errors.As(err, &pe) && pe.Code == foreignKeyViolation:
		return fmt.Errorf("create session: token %s: %w", sess.TokenID, store.ErrNotFound)
	case err != nil:
		return fmt.Errorf("create session: %w", err)
	}
	return nil
}

// GetSession implements store.SessionStore.
func (s *Store) GetSession(ctx context.Context, id string) (*store.Session, error) {
	var sess store.Session
	err := s.pool.QueryRow(ctx, `SELECT id, token_id, created_at, expires_at FROM pgrelay_sessions WHERE id = $1`, id).
		Scan(&sess.ID, &sess.TokenID, &sess.CreatedAt, &sess.ExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("session: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get session: %w", err)
	}
	sess.CreatedAt, sess.ExpiresAt = sess.CreatedAt.UTC(), sess.ExpiresAt.UTC()
	return &sess, nil
}

// DeleteSession implements store.SessionStore.
func (s *Store) DeleteSession(ctx context.Context, id string) (rerr error) {
	defer markFull(&rerr)
	tag, err := s.pool.Exec(ctx, `DELETE FROM pgrelay_sessions WHERE id = $1`, id)
	if err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("session: %w", store.ErrNotFound)
	}
	return nil
}

// DeleteExpiredSessions implements store.SessionStore.
func (s *Store) DeleteExpiredSessions(ctx context.Context, now time.Time) (_ int, rerr error) {
	defer markFull(&rerr)
	tag, err := s.pool.Exec(ctx, `DELETE FROM pgrelay_sessions WHERE expires_at <= $1`, now)
	if err != nil {
		return 0, fmt.Errorf("delete expired sessions: %w", err)
	}
	return int(tag.RowsAffected()), nil
}
