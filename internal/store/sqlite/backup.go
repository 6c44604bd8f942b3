package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"

	"github.com/pgrelay/pgrelay/internal/store"
)

// VacuumInto writes a consistent copy of the store to path, a file that
// must not exist, with mode 0600 (SQLite's VACUUM INTO, which reads one
// snapshot: other connections and processes keep reading and writing
// meanwhile). The copy is synced to disk; it is a single file without WAL.
// When the copy's disk fills up, the error names its directory (which
// may be on another disk than the store).
func (s *Store) VacuumInto(ctx context.Context, path string) error {
	// VACUUM INTO accepts an empty file: creating it first fixes its mode.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("copy store: %w", err)
	}
	_ = f.Close()
	if _, err := s.db.ExecContext(ctx, `VACUUM INTO ?`, path); err != nil {
		_ = os.Remove(path)
		if isFull(err) {
			return fmt.Errorf("copy store to %s: no space left on the disk of %s for the copy (the store itself is unchanged): "+
				"free space there, or write the copy to another disk, and retry: %w", path, filepath.Dir(path), err)
		}
		return fmt.Errorf("copy store to %s: %w", path, err)
	}
	if err := syncFile(path); err != nil {
		_ = os.Remove(path)
		return fmt.Errorf("copy store to %s: %w", path, err)
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	serr := f.Sync()
	cerr := f.Close()
	return errors.Join(serr, cerr)
}

// OpenReadOnly opens a store file for reading only (SQLite's mode=ro), such
// as a backup or a store another process serves: it is neither created nor
// migrated nor switched to WAL; VacuumInto works on it. It checks that the file is an intact SQLite
// database (quick_check) of a schema this pgrelay knows: the same as its
// own, or older (then Pending says what opening it for writing would
// apply). A schema newer than this binary's is a *store.SchemaTooNewError.
func OpenReadOnly(ctx context.Context, path string) (*Store, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("open store %s: not a regular file", path)
	}
	q := url.Values{}
	q.Set("mode", "ro")
	q.Add("_pragma", "busy_timeout(10000)")
	dsn := "file:" + path + "?" + q.Encode()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	s := &Store{db: db, path: path, dsn: dsn}
	if err := s.checkReadable(ctx); err != nil {
		_ = db.Close()
		// A store in WAL mode is read through its -shm file, which SQLite
		// creates beside it when no process has the store open.
		if _, serr := os.Stat(path + "-shm"); errors.Is(serr, fs.ErrNotExist) {
			if werr := dirWritable(filepath.Dir(path)); werr != nil {
				return nil, fmt.Errorf("open store %s: cannot read it: %w%s", path, werr, writableHint(werr, filepath.Dir(path)))
			}
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return s, nil
}

// ErrNotAStore marks a file that OpenReadOnly cannot take for a pgrelay
// store: not SQLite, damaged, or without pgrelay's schema.
var ErrNotAStore = errors.New("not a pgrelay store")

func (s *Store) checkReadable(ctx context.Context) error {
	var res string
	if err := s.db.QueryRowContext(ctx, `PRAGMA quick_check`).Scan(&res); err != nil {
		return fmt.Errorf("%w: not readable as one (%w)", ErrNotAStore, err)
	}
	if res != "ok" {
		return fmt.Errorf("%w: the file is damaged (SQLite quick_check: %s)", ErrNotAStore, res)
	}
	applied, err := s.appliedMigrations(ctx)
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		return fmt.Errorf("%w: it has no schema_migrations table", ErrNotAStore)
	}
	known, err := store.LoadMigrations(migrationFS, "migrations")
	if err != nil {
		return err
	}
	_, err = store.Pending(known, applied)
	return err
}

// Pending returns the migrations that opening the store for writing would
// apply (none for a store of this binary's schema).
func (s *Store) Pending(ctx context.Context) ([]store.Migration, error) {
	known, err := store.LoadMigrations(migrationFS, "migrations")
	if err != nil {
		return nil, err
	}
	applied, err := s.appliedMigrations(ctx)
	if err != nil {
		return nil, err
	}
	return store.Pending(known, applied)
}

// SnapshotStore returns a private copy of the store file at path, taken
// with VACUUM INTO into dir (while other processes may use the store) and
// opened with Open, so that it is migrated to this binary's schema without
// touching the original. The caller closes the copy and removes dir.
func SnapshotStore(ctx context.Context, path, dir string) (*Store, error) {
	src, err := OpenReadOnly(ctx, path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	tmp := filepath.Join(dir, "snapshot.db")
	if err := src.VacuumInto(ctx, tmp); err != nil {
		return nil, err
	}
	return Open(ctx, tmp)
}

// CopyFile copies a store file (such as a backup) to path, which must not
// exist, with mode 0600, synced to disk with its directory: first to a
// temporary name beside it, then renamed.
func CopyFile(from, to string) (rerr error) {
	in, err := os.Open(from)
	if err != nil {
		return fmt.Errorf("copy %s: %w", from, err)
	}
	defer in.Close()
	if _, err := os.Lstat(to); err == nil {
		return fmt.Errorf("copy to %s: %w", to, fs.ErrExist)
	}
	tmp := to + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("copy to %s: %w", to, err)
	}
	defer func() {
		if rerr != nil {
			_ = os.Remove(tmp)
		}
	}()
	_, cerr := io.Copy(out, in)
	serr := out.Sync()
	xerr := out.Close()
	if err := errors.Join(cerr, serr, xerr); err != nil {
		return fmt.Errorf("copy to %s: %w", to, err)
	}
	if err := os.Rename(tmp, to); err != nil {
		return fmt.Errorf("copy to %s: %w", to, err)
	}
	return syncDir(filepath.Dir(to))
}

// syncDir syncs a directory, making renames and new files in it durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	serr := d.Sync()
	cerr := d.Close()
	if err := errors.Join(serr, cerr); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
