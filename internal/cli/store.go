package cli

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

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

func isPostgresURL(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// openStore opens the embedded SQLite store in the data dir, or the shared
// PostgreSQL store given with --store.
func (r *runner) openStore(ctx context.Context) (store.Store, error) {
	target := r.storeTarget()
	switch {
	case target == "" || target == "sqlite":
		st, err := sqlite.Open(ctx, filepath.Join(r.dataDir, sqlite.FileName))
		if err != nil {
			return nil, err
		}
		r.store = st
		return st, nil
	case isPostgresURL(target):
		st, err := postgres.Open(ctx, target, postgres.WithLogger(r.logger))
		if err != nil {
			return nil, err
		}
		r.pg = st
		return st, nil
	}
	return nil, usagef("--store: accepted are an empty value (the embedded SQLite store in the data dir) or a postgres:// URL such as postgres://pgrelay@db.internal/pgrelay")
}

// checkSharedMasterKey refuses to invent a master key for a shared store:
// every process sharing it needs the same key.
func (r *runner) checkSharedMasterKey() error {
	if !isPostgresURL(r.storeTarget()) || r.env.Getenv(secret.MasterKeyEnv) != "" {
		return nil
	}
	if _, err := os.Stat(filepath.Join(r.dataDir, secret.MasterKeyFile)); errors.Is(err, fs.ErrNotExist) {
		return usagef("a shared PostgreSQL store needs the same master key in every process: set %s (base64 of 32 bytes, e.g. `openssl rand -base64 32`) or put it in %s",
			secret.MasterKeyEnv, filepath.Join(r.dataDir, secret.MasterKeyFile))
	}
	return nil
}
