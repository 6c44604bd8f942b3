package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// WithAdvisoryLock runs fn on a connection of pool of its own while that
// session holds the advisory lock key (pg_advisory_lock), so that
// processes sharing a database do it one at a time: the store's
// migrations (MigrationLockKey) and River's (queue.MigrationLockKey). The
// lock belongs to the session: if it cannot be released (ctx cancelled,
// connection broken), the session is ended so that the server releases
// it, rather than returned to the pool.
func WithAdvisoryLock(ctx context.Context, pool *pgxpool.Pool, key int64, fn func(conn *pgxpool.Conn) error) (err error) {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("take advisory lock %d: %w", key, err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, key); err != nil {
		return fmt.Errorf("take advisory lock %d: %w", key, err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, uerr := conn.Exec(uctx, `SELECT pg_advisory_unlock($1)`, key); uerr != nil {
			_ = conn.Conn().Close(uctx)
			if err == nil {
				err = fmt.Errorf("release advisory lock %d: %w", key, uerr)
			}
		}
	}()
	return fn(conn)
}
