package sqlite

import (
	"context"
	"fmt"
)

// PutMetaIfAbsent implements store.MetaStore.
func (s *Store) PutMetaIfAbsent(ctx context.Context, key string, value []byte) (_ []byte, rerr error) {
	defer markFull(&rerr)
	if _, err := s.db.ExecContext(ctx, `INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING`, key, value); err != nil {
		return nil, fmt.Errorf("put meta %s: %w", key, err)
	}
	var out []byte
	if err := s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, key).Scan(&out); err != nil {
		return nil, fmt.Errorf("get meta %s: %w", key, err)
	}
	return out, nil
}
