package postgres

import "github.com/pgrelay/pgrelay/internal/store"

// WithMigrations makes Open use ms instead of the embedded migrations.
func WithMigrations(ms []store.Migration) Option {
	return func(o *options) { o.migrations = ms }
}

// Embedded returns the embedded migrations.
func Embedded() ([]store.Migration, error) { return store.LoadMigrations(migrationFS, "migrations") }
