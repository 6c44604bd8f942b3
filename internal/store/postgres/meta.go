package postgres

import (
	"context"
	"fmt"
)

// PutMetaIfAbsent implements store.MetaStore.
func (s *Store) PutMetaIfAbsent(ctx context.Context, key string, value []byte) (_ []byte, rerr error) {
	defer markFull(&rerr)
	if _, err := s.pool.Exec(ctx, `INSERT INTO pgrelay_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING`, key, value); err != nil {
		return nil, fmt.Errorf("put meta %s: %w", key, err)
	}
	var out []byte
	if err := s.pool.QueryRow(ctx, `SELECT value FROM pgrelay_meta WHERE key = $1`, key).Scan(&out); err != nil {
		return nil, fmt.Errorf("get meta %s: %w", key, err)
	}
	return out, nil
}
