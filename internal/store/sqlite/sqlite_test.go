package sqlite_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
	"github.com/pgrelay/pgrelay/internal/store/storetest"
)

func open(t *testing.T) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "sub", sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestStore(t *testing.T) {
	t.Parallel()
	storetest.Exercise(t, func(t *testing.T) store.Store { return open(t) })
}

func TestFileModeAndReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, sqlite.FileName)
	s, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ListConnections(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("stat %s: %v", p, err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", filepath.Base(p), fi.Mode().Perm())
		}
	}
	_ = s.Close()
	// Reopening runs the migrations again without harm.
	s2, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	_ = s2.Close()
}

// TestFullIsErrFull fills the database to a page limit (as a full disk
// would stop it): the failed write is store.ErrFull, reads go on.
func TestFullIsErrFull(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := open(t)
	db := s.DB()
	db.SetMaxOpenConns(1) // the page limit is per connection
	var pages int
	if err := db.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, fmt.Sprintf("PRAGMA max_page_count = %d", pages)); err != nil {
		t.Fatal(err)
	}
	c := &store.Connection{ID: "c1", Spec: connection.Spec{Name: "big", Host: "h", Port: 5432, Database: "d", User: "u"},
		SealedPassword: make([]byte, 64<<10)}
	err := s.CreateConnection(ctx, c)
	if !errors.Is(err, store.ErrFull) {
		t.Fatalf("write beyond the page limit: %v, want store.ErrFull", err)
	}
	if _, err := s.ListConnections(ctx); err != nil {
		t.Fatalf("read on a full store: %v", err)
	}
}
