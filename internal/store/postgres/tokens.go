package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/store"
)

const tokenColumns = `id, name, role, hash, created_at, last_used_at, revoked_at`

// tokenArgs returns a token's column values in tokenColumns order.
func tokenArgs(t *store.Token) []any {
	return []any{t.ID, t.Name, t.Role, t.Hash, t.CreatedAt, nullTime(t.LastUsedAt), nullTime(t.RevokedAt)}
}

func scanToken(row pgx.Row) (*store.Token, error) {
	var t store.Token
	var used, revoked *time.Time
	if err := row.Scan(&t.ID, &t.Name, &t.Role, &t.Hash, &t.CreatedAt, &used, &revoked); err != nil {
		return nil, err
	}
	t.CreatedAt, t.LastUsedAt, t.RevokedAt = t.CreatedAt.UTC(), utc(used), utc(revoked)
	return &t, nil
}

// CreateToken implements store.TokenStore.
func (s *Store) CreateToken(ctx context.Context, t *store.Token) (rerr error) {
	defer markFull(&rerr)
	_, err := s.pool.Exec(ctx, insertToken, tokenArgs(t)...)
	if isUniqueViolation(err) {
		return fmt.Errorf("create token %s: %w", t.Name, store.ErrExists)
	}
	if err != nil {
		return fmt.Errorf("create token %s: %w", t.Name, err)
	}
	return nil
}

func (s *Store) oneToken(ctx context.Context, where string, arg any) (*store.Token, error) {
	t, err := scanToken(s.pool.QueryRow(ctx, `SELECT `+tokenColumns+` FROM pgrelay_tokens WHERE `+where, arg))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("token: %w", store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get token: %w", err)
	}
	return t, nil
}

// TokenByHash implements store.TokenStore.
func (s *Store) TokenByHash(ctx context.Context, hash string) (*store.Token, error) {
	return s.oneToken(ctx, "hash = $1", hash)
}

// GetToken implements store.TokenStore.
func (s *Store) GetToken(ctx context.Context, id string) (*store.Token, error) {
	return s.oneToken(ctx, "id = $1", id)
}

// ListTokens implements store.TokenStore.
func (s *Store) ListTokens(ctx context.Context) ([]*store.Token, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+tokenColumns+` FROM pgrelay_tokens ORDER BY created_at, id`)
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
	tag, err := s.pool.Exec(ctx, `UPDATE pgrelay_tokens SET revoked_at = coalesce(revoked_at, $2) WHERE id = $1`,
		id, nullTime(at))
	if err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("token %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// TouchToken implements store.TokenStore.
func (s *Store) TouchToken(ctx context.Context, id string, at time.Time) (rerr error) {
	defer markFull(&rerr)
	if _, err := s.pool.Exec(ctx, `UPDATE pgrelay_tokens SET last_used_at = $2 WHERE id = $1`, id, nullTime(at)); err != nil {
		return fmt.Errorf("touch token %s: %w", id, err)
	}
	return nil
}

// CountActiveTokens implements store.TokenStore.
func (s *Store) CountActiveTokens(ctx context.Context) (int, error) {
	var n int
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM pgrelay_tokens WHERE revoked_at IS NULL`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count tokens: %w", err)
	}
	return n, nil
}
