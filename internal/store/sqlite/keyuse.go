package sqlite

import (
	"context"
	"fmt"
	"time"

	"github.com/pgrelay/pgrelay/internal/store"
)

// MarkKeyUsed implements store.Store.
func (s *Store) MarkKeyUsed(ctx context.Context, id, usedFor string, at time.Time) (rerr error) {
	defer markFull(&rerr)
	res, err := s.db.ExecContext(ctx, `UPDATE connections SET key_used_at = ?, key_used_for = ? WHERE id = ?`,
		formatTime(at), usedFor, id)
	if err != nil {
		return fmt.Errorf("mark key of connection %s used: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("mark key of connection %s used: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("connection %s: %w", id, store.ErrNotFound)
	}
	return nil
}
