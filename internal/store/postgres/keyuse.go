package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/pgrelay/pgrelay/internal/store"
)

// MarkKeyUsed implements store.Store.
func (s *Store) MarkKeyUsed(ctx context.Context, id, usedFor string, at time.Time) (rerr error) {
	defer markFull(&rerr)
	tag, err := s.pool.Exec(ctx, `UPDATE pgrelay_connections SET key_used_at = $2, key_used_for = $3 WHERE id = $1`,
		id, nullTime(at), usedFor)
	if err != nil {
		return fmt.Errorf("mark key of connection %s used: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("connection %s: %w", id, store.ErrNotFound)
	}
	return nil
}
