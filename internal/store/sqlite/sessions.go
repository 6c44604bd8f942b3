package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/pgrelay/pgrelay/internal/store"
)

// CreateSession implements store.SessionStore.
func (s *Store) CreateSession(ctx context.Context, sess *store.Session) (rerr error) {
	defer markFull(&rerr)
	_, err := s.db.ExecContext(ctx, `INSERT INTO sessions (id, token_id, created_at, expires_at) VALUES (?, ?, ?, ?)`,
		sess.ID, sess.TokenID, formatTime(sess.CreatedAt), formatTime(sess.ExpiresAt))
	var se *sqlite.Error
	switch {
	case isUniqueViolation(err):
		return fmt.Errorf("create session: %w", store.ErrExists)
	case errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
		return fmt.Errorf("create session: token %s: %w", sess.TokenID, store.ErrNotFound)
	case err != nil:
		return fmt.Errorf("create session: %w", err)
	}
	return nil
}

// GetSession implements store.SessionStore.
func (s *Store) GetSession(ctx context.Context, id string) (*store.Session, error) {
	var sess store.Session
	var created, expires string
	err := s.db.QueryRowContext(ctx, `SELECT id, token_id, created_at, expires_at FROM sessions WHERE id = ?`, id).
		Scan(&sess.ID, &sess.TokenID, &created, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("session: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get session: %w", err)
	}
	if sess.CreatedAt, err = parseTime(created); err != nil {
		return nil, fmt.Errorf("decode session: %w", err)
	}
	if sess.ExpiresAt, err = parseTime(expires); err != nil {
		return nil, fmt.Errorf("decode session: %w", err)
	}
	return &sess, nil
}

// DeleteSession implements store.SessionStore.
func (s *Store) DeleteSession(ctx context.Context, id string) (rerr error) {
	defer markFull(&rerr)
	res, err := s.db.ExecContext(ctx, `DELETE FROM sessions WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("session: %w", store.ErrNotFound)
	}
	return nil
}

// DeleteExpiredSessions implements store.SessionStore.
func (s *Store) DeleteExpiredSessions(ctx context.Context, now time.Time) (_ int, rerr error) {
	defer markFull(&rerr)
	res, err := s.db.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at <= ?`, formatTime(now))
	if err != nil {
		return 0, fmt.Errorf("delete expired sessions: %w", err)
	}
	n, _ := res.RowsAffected()
	return int(n), nil
}
