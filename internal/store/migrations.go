package store

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Migration is one numbered schema migration of a backend, from a file
// named NNNN_description.sql. Backends apply pending migrations in version
// order when they open a store, under a lock, each in a transaction, and
// record them; a version is never reused or changed once released.
type Migration struct {
	Version int64
	Name    string
	SQL     string
	// Destructive marks a migration that drops or rewrites stored data
	// (its first line is DestructiveMarker). A backend applies it to a store
	// that holds data only after a backup: the embedded store takes a
	// snapshot first; the shared store refuses until the operator confirms
	// that they made one.
	Destructive bool
}

// DestructiveMarker is the first line of a destructive migration.
const DestructiveMarker = "-- pgrelay:destructive"

// LoadMigrations reads the migrations in dir of fsys, ordered by version.
func LoadMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	names, err := fs.Glob(fsys, path.Join(dir, "*.sql"))
	if err != nil {
		return nil, err
	}
	var out []Migration
	seen := map[int64]string{}
	for _, name := range names {
		base := path.Base(name)
		prefix, _, _ := strings.Cut(base, "_")
		v, err := strconv.ParseInt(prefix, 10, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("bad migration name %s: want NNNN_description.sql", base)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s have the same version", other, base)
		}
		seen[v] = base
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: base, SQL: string(body),
			Destructive: strings.HasPrefix(string(body), DestructiveMarker)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// ErrSchemaTooNew is what a SchemaTooNewError is.
var ErrSchemaTooNew = errors.New("store schema is newer than this pgrelay")

// SchemaTooNewError means a newer pgrelay migrated the store: this binary
// does not know its schema and refuses to use it, so as not to damage it.
type SchemaTooNewError struct {
	// Version is the newest migration applied to the store.
	Version int64
	// Known is the newest migration this binary knows.
	Known int64
}

func (e *SchemaTooNewError) Error() string {
	return fmt.Sprintf("the store's schema is at migration %d, but this pgrelay knows migrations up to %d only: "+
		"a newer pgrelay upgraded it. Run that version (or a newer one); this one does not open the store, "+
		"so as not to damage it, and changed nothing", e.Version, e.Known)
}

// Is makes errors.Is(err, ErrSchemaTooNew) true.
func (e *SchemaTooNewError) Is(target error) bool { return target == ErrSchemaTooNew }

// Pending returns the migrations of known not in applied, or a
// *SchemaTooNewError when applied holds a version newer than all of known.
func Pending(known []Migration, applied []int64) ([]Migration, error) {
	done := map[int64]bool{}
	var newest int64
	for _, v := range applied {
		done[v] = true
		newest = max(newest, v)
	}
	var newestKnown int64
	if n := len(known); n > 0 {
		newestKnown = known[n-1].Version
	}
	if newest > newestKnown {
		return nil, &SchemaTooNewError{Version: newest, Known: newestKnown}
	}
	var out []Migration
	for _, m := range known {
		if !done[m.Version] {
			out = append(out, m)
		}
	}
	return out, nil
}

// ErrDestructiveMigration is what a DestructiveMigrationError is.
var ErrDestructiveMigration = errors.New("a pending store migration removes data")

// DestructiveMigrationError means a pending migration drops or rewrites
// data and the operator has not confirmed a backup.
type DestructiveMigrationError struct {
	// Migrations are the names of the destructive migrations pending.
	Migrations []string
	// Hint says how to back up and confirm.
	Hint string
}

func (e *DestructiveMigrationError) Error() string {
	return fmt.Sprintf("this pgrelay upgrades the store with migrations that remove or rewrite data (%s), "+
		"and nothing was changed: %s", strings.Join(e.Migrations, ", "), e.Hint)
}

// Is makes errors.Is(err, ErrDestructiveMigration) true.
func (e *DestructiveMigrationError) Is(target error) bool { return target == ErrDestructiveMigration }
