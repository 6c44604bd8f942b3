package cli

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/postgres"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
)

// storeURL is --store, else $PGRELAY_STORE.
func (r *runner) storeTarget() string {
	if r.storeURL != "" {
		return r.storeURL
	}
	return r.env.Getenv("PGRELAY_STORE")
}

// embeddedStore reports whether this run's store is the SQLite store in
// the data dir.
func (r *runner) embeddedStore() bool {
	t := r.storeTarget()
	return t == "" || t == "sqlite"
}

func isPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// openStore opens the embedded SQLite store in the data dir, or the shared
// PostgreSQL store given with --store.
func (r *runner) openStore(ctx context.Context) (store.Store, error) {
	target := r.storeTarget()
	switch {
	case r.embeddedStore():
		st, err := sqlite.Open(ctx, filepath.Join(r.dataDir, sqlite.FileName), sqlite.WithLogger(r.logger))
		if err != nil {
			return nil, err
		}
		r.store = st
		return st, nil
	case isPostgresURL(target):
		st, err := postgres.Open(ctx, target, r.postgresOptions()...)
		if err != nil {
			return nil, confirmHint(err)
		}
		r.pg = st
		return st, nil
	}
	return nil, usagef("--store: accepted are an empty value (the embedded SQLite store in the data dir) or a postgres:// URL such as postgres://pgrelay@db.internal/pgrelay")
}

// checkSharedMasterKey refuses to invent a master key for a shared store:
// every process sharing it needs the same key.
// A URL that cannot be parsed is refused first: no key would make it open.
func (r *runner) checkSharedMasterKey() error {
	if t := r.storeTarget(); isPostgresURL(t) {
		if _, err := pgconn.ParseConfig(t); err != nil {
			return usagef("--store (or PGRELAY_STORE) %s: not a valid PostgreSQL URL; accepted is postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=...], "+
				"e.g. postgres://pgrelay@db.internal/pgrelay (an IPv6 host in brackets; the password may come from ~/.pgpass or PGPASSWORD)", shownURL(t))
		}
	}
	if !isPostgresURL(r.storeTarget()) || r.env.Getenv(secret.MasterKeyEnv) != "" || r.env.Getenv(secret.MasterKeyFileEnv) != "" {
		return nil
	}
	if _, err := os.Stat(filepath.Join(r.dataDir, secret.MasterKeyFile)); errors.Is(err, fs.ErrNotExist) {
		return usagef("a shared PostgreSQL store needs the same master key in every process: set %s (base64 of 32 bytes, e.g. `openssl rand -base64 32`), or %s to a file holding it, or put it in %s",
			secret.MasterKeyEnv, secret.MasterKeyFileEnv, filepath.Join(r.dataDir, secret.MasterKeyFile))
	}
	return nil
}

// allowDestructiveEnv confirms that the operator backed up a PostgreSQL
// store before an upgrade whose migrations remove or rewrite data.
const allowDestructiveEnv = "PGRELAY_ALLOW_DESTRUCTIVE_MIGRATIONS"

// postgresOptions are the options of a PostgreSQL store this run opens.
func (r *runner) postgresOptions() []postgres.Option {
	opts := []postgres.Option{postgres.WithLogger(r.logger)}
	if r.env.Getenv(allowDestructiveEnv) == "1" {
		opts = append(opts, postgres.AllowDestructiveMigrations())
	}
	return opts
}

// confirmHint completes the hint of a refused destructive migration with
// how to confirm the backup.
func confirmHint(err error) error {
	var de *store.DestructiveMigrationError
	if errors.As(err, &de) {
		de.Hint += " by starting pgrelay once with " + allowDestructiveEnv + "=1"
	}
	return err
}
