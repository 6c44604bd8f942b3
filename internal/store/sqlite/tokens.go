package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/pgrelay/pgrelay/internal/store"
)

const tokenColumns = `id, name, role, hash, created_at, last_used_at, revoked_at`

// tokenArgs returns a token's column values in tokenColumns order.
func tokenArgs(t *store.Token) []any {
	return []any{t.ID, t.Name, t.Role, t.Hash, formatTime(t.CreatedAt), formatTime(t.LastUsedAt), formatTime(t.RevokedAt)}
}

func scanToken(sc scanner) (*store.Token, error) {
	var t store.Token
	var created, used, revoked string
	if err := sc.Scan(&t.ID, &t.Name, &t.Role, &t.Hash, &created, &used, &revoked); err != nil {
		return nil, err
	}
	var err error
	if t.CreatedAt, err = parseTime(created); err != nil {
		return nil, fmt.Errorf("decode token %s: %w", t.ID, err)
	}
	if t.LastUsedAt, err = parseTime(used); err != nil {
		return nil, fmt.Errorf("decode token %s: %w", t.ID, err)
	}
	if t.RevokedAt, err = parseTime(revoked); err != nil {
		return nil, fmt.Errorf("decode token %s: %w", t.ID, err)
	}
	return &t, nil
}

// CreateToken implements store.TokenStore.
func (s *Store) CreateToken(ctx context.Context, t *store.Token) (rerr error) {
	defer markFull(&rerr)
	_, err := s.db.ExecContext(ctx, insertToken, tokenArgs(t)...)
	if isUniqueViolation(err) {
		return fmt.Errorf("create token %s: %w", t.Name, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("create token %s: %w", t.Name, err)
	}
	return nil
}

func (s *Store) oneToken(ctx context.Context, where string, arg any) (*store.Token, error) {
	t, err := scanToken(s.db.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM tokens WHERE `+where, arg))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("token: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get token: %w", err)
	}
	return t, nil
}

// TokenByHash implements store.TokenStore.
func (s *Store) TokenByHash(ctx context.Context, hash string) (*store.Token, error) {
	return s.oneToken(ctx, "hash = ?", hash)
}

// GetToken implements store.TokenStore.
func (s *Store) GetToken(ctx context.Context, id string) (*store.Token, error) {
	return s.oneToken(ctx, "id = ?", id)
}

// ListTokens implements store.TokenStore.
func (s *Store) ListTokens(ctx context.Context) ([]*store.Token, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+tokenColumns+` FROM tokens ORDER BY created_at, id`)
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
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return out, nil
}

// RevokeToken implements store.TokenStore.
func (s *Store) RevokeToken(ctx context.Context, id string, at time.Time) (rerr error) {
	defer markFull(&rerr)
	res, err := s.db.ExecContext(ctx, `UPDATE tokens SET revoked_at = CASE WHEN revoked_at = '' THEN ? ELSE revoked_at END
		WHERE id = ?`, formatTime(at), id)
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("token %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// TouchToken implements store.TokenStore.
func (s *Store) TouchToken(ctx context.Context, id string, at time.Time) (rerr error) {
	defer markFull(&rerr)
	if _, err := s.db.ExecContext(ctx, `UPDATE tokens SET last_used_at = ? WHERE id = ?`, formatTime(at), id); err != nil {
		return fmt.Errorf("touch token %s: %w", id, err)
	}
	return nil
}

// CountActiveTokens implements store.TokenStore.
func (s *Store) CountActiveTokens(ctx context.Context) (int, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM tokens WHERE revoked_at = ''`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count tokens: %w", err)
	}
	return n, nil
}
