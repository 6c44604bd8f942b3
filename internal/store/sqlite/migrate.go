package sqlite

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/pgrelay/pgrelay/internal/store"
)

// migrate applies pending migrations in one immediate transaction: it holds
// the database's write lock from its start, so processes that open the
// store together apply each migration once, and a failed migration leaves
// the schema as it was. A store migrated by a newer pgrelay (a migration
// version this binary does not know) is refused before anything is written.
// Before a destructive migration runs on a store that holds data, the
// store is copied to <file>.before-<version>. A disk too full to migrate
// (or to read the store at all) is store.ErrFull.
func (s *Store) migrate(ctx context.Context, o options) (rerr error) {
	defer markFull(&rerr)
	known := o.migrations
	if known == nil {
		var err error
		if known, err = store.LoadMigrations(migrationFS, "migrations"); err != nil {
			return fmt.Errorf("migrate store: %w", err)
		}
	}
	applied, err := s.appliedMigrations(ctx)
	if err != nil {
		return err
	}
	pending, err := store.Pending(known, applied)
	if err != nil {
		return fmt.Errorf("open store %s: %w", s.path, err)
	}
	if len(pending) == 0 {
		return nil
	}
	if len(applied) > 0 && destructive(pending) {
		path, err := s.snapshotBefore(ctx, pending[0].Version)
		if err != nil {
			return fmt.Errorf("migrate store: copy the store before a destructive migration: %w", err)
		}
		o.log.Warn("store copied before a migration that removes data", "snapshot", path,
			"from_version", applied[len(applied)-1], "to_version", known[len(known)-1].Version)
	}

	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate store: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)`); err != nil {
		return fmt.Errorf("migrate store: %w", err)
	}
	// Again under the lock: another process may have migrated meanwhile.
	applied, err = versions(ctx, tx)
	if err != nil {
		return err
	}
	if pending, err = store.Pending(known, applied); err != nil {
		return fmt.Errorf("open store %s: %w", s.path, err)
	}
	for _, m := range pending {
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			return fmt.Errorf("migrate store: apply %s: %w", m.Name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
			m.Version, formatTime(time.Now())); err != nil {
			return fmt.Errorf("migrate store: record %s: %w", m.Name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate store: commit: %w", err)
	}
	for _, m := range pending {
		o.log.Info("store migration applied", "version", m.Version, "name", m.Name)
	}
	return nil
}

// appliedMigrations returns the versions recorded in the store, none for a
// new one.
func (s *Store) appliedMigrations(ctx context.Context) ([]int64, error) {
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&n); err != nil {
		return nil, fmt.Errorf("migrate store: %w", err)
	}
	if n == 0 {
		return nil, nil
	}
	return versions(ctx, s.db)
}

func versions(ctx context.Context, q querier) ([]int64, error) {
	rows, err := q.QueryContext(ctx, `SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		return nil, fmt.Errorf("migrate store: read applied migrations: %w", err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("migrate store: read applied migrations: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func destructive(ms []store.Migration) bool {
	for _, m := range ms {
		if m.Destructive {
			return true
		}
	}
	return false
}

// snapshotBefore copies the store to <file>.before-<version> (with a time
// suffix when that exists) and returns its path.
func (s *Store) snapshotBefore(ctx context.Context, version int64) (string, error) {
	path := fmt.Sprintf("%s.before-%04d", s.path, version)
	if _, err := os.Stat(path); err == nil {
		path += "-" + time.Now().UTC().Format("20060102T150405Z")
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	if err := s.VacuumInto(ctx, path); err != nil {
		return "", err
	}
	return path, nil
}
