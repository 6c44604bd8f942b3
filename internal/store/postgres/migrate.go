package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgrelay/pgrelay/internal/store"
)

// DestructiveHint says how to back up the store before a destructive
// migration; the caller adds how to confirm (AllowDestructiveMigrations).
const DestructiveHint = "back up the database first (e.g. pg_dump --format=custom --file pgrelay-before-upgrade.dump 'postgres://...'), then confirm"

// migrate applies pending migrations on one connection that holds the
// migration advisory lock for the whole time, each migration in its own
// transaction. A store migrated by a newer pgrelay (a migration version
// this binary does not know) is refused before anything is written, and so
// is a destructive migration on a store with data unless allowed.
func (s *Store) migrate(ctx context.Context, o options) (err error) {
	known := o.migrations
	if known == nil {
		if known, err = store.LoadMigrations(migrationFS, "migrations"); err != nil {
			return fmt.Errorf("migrate store: %w", err)
		}
	}
	var inner error
	err = WithAdvisoryLock(ctx, s.pool, MigrationLockKey, func(conn *pgxpool.Conn) error {
		inner = s.migrateLocked(ctx, conn, known, o)
		return inner
	})
	if err != nil && err != inner {
		return fmt.Errorf("migrate store: %w", err)
	}
	return err
}

// migrateLocked is migrate's work under the lock.
func (s *Store) migrateLocked(ctx context.Context, conn *pgxpool.Conn, known []store.Migration, o options) error {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('pgrelay_schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return fmt.Errorf("migrate store: %w", err)
	}
	var applied []int64
	if exists {
		rows, err := conn.Query(ctx, `SELECT version FROM pgrelay_schema_migrations ORDER BY version`)
		if err != nil {
			return fmt.Errorf("migrate store: read applied migrations: %w", err)
		}
		if applied, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
			return fmt.Errorf("migrate store: read applied migrations: %w", err)
		}
	}
	pending, err := store.Pending(known, applied)
	if err != nil {
		return err
	}
	if o.noMigrate {
		if len(pending) > 0 {
			return fmt.Errorf("the store's schema is older than this pgrelay's (%d migrations to apply, from %s): "+
				"upgrade it first by starting this pgrelay on it once (e.g. `pgrelay --store ... connection list`), then retry",
				len(pending), pending[0].Name)
		}
		return nil
	}
	if len(pending) == 0 {
		return nil
	}
	if len(applied) > 0 {
		var names []string
		for _, m := range pending {
			if m.Destructive {
				names = append(names, m.Name)
			}
		}
		if len(names) > 0 && !o.allowDestructive {
			return &store.DestructiveMigrationError{Migrations: names, Hint: DestructiveHint}
		}
		s.log.Info("upgrading the store's schema", "from_version", applied[len(applied)-1],
			"to_version", known[len(known)-1].Version, "backup_hint", "pg_dump before upgrades")
	}
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS pgrelay_schema_migrations (
		version    bigint PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("migrate store: create pgrelay_schema_migrations: %w", err)
	}
	for _, m := range pending {
		if err := applyMigration(ctx, conn.Conn(), m); err != nil {
			return err
		}
		s.log.Info("store migration applied", "version", m.Version, "name", m.Name)
	}
	return nil
}

// applyMigration runs one migration and records it, in one transaction.
func applyMigration(ctx context.Context, conn *pgx.Conn, m store.Migration) error {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate store: apply %s: begin: %w", m.Name, err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// Without arguments pgx uses the simple protocol, which accepts several
	// statements in one string.
	if _, err := tx.Exec(ctx, m.SQL); err != nil {
		return fmt.Errorf("migrate store: apply %s: %w", m.Name, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO pgrelay_schema_migrations (version, name) VALUES ($1, $2)`,
		m.Version, m.Name); err != nil {
		return fmt.Errorf("migrate store: record %s: %w", m.Name, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate store: commit %s: %w", m.Name, err)
	}
	return nil
}
