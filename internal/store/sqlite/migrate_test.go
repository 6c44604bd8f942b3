package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
	"github.com/pgrelay/pgrelay/internal/store/storetest"
)

func applied(t *testing.T, s *sqlite.Store) []int64 {
	t.Helper()
	rows, err := s.DB().Query(`SELECT version FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			t.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

func tableExists(t *testing.T, s *sqlite.Store, name string) bool {
	t.Helper()
	var n int
	if err := s.DB().QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, name).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

func addConnection(t *testing.T, s store.Store, name string) {
	t.Helper()
	c := &store.Connection{ID: "id-" + name, Spec: connection.Spec{Name: name, Host: "h", Port: 5432, Database: "d", User: "u"},
		CreatedAt: time.Now(), UpdatedAt: time.Now()}
	if err := s.CreateConnection(context.Background(), c); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentOpen: processes that open a new store together apply each
// migration once, under the database's write lock.
func TestConcurrentOpen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), sqlite.FileName)
	var wg sync.WaitGroup
	stores := make([]*sqlite.Store, 6)
	for i := range stores {
		wg.Go(func() {
			s, err := sqlite.Open(context.Background(), path)
			if err != nil {
				t.Error(err)
				return
			}
			stores[i] = s
		})
	}
	wg.Wait()
	for _, s := range stores {
		if s != nil {
			defer s.Close()
		}
	}
	if t.Failed() {
		return
	}
	embedded, _ := sqlite.Embedded()
	var want []int64
	for _, m := range embedded {
		want = append(want, m.Version)
	}
	if got := applied(t, stores[0]); !slices.Equal(got, want) {
		t.Fatalf("applied migrations = %v, want %v once each", got, want)
	}
}

// TestNewerSchemaRefused: a store migrated by a newer pgrelay is refused
// with a clear error before this binary applies anything.
func TestNewerSchemaRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), sqlite.FileName)
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	addConnection(t, s, "wh")
	if _, err := s.DB().Exec(`INSERT INTO schema_migrations (version, applied_at) VALUES (9999, '2099-01-01T00:00:00.000000000Z')`); err != nil {
		t.Fatal(err)
	}
	embedded, _ := sqlite.Embedded()
	scratch := store.Migration{Version: embedded[len(embedded)-1].Version + 1, Name: "scratch", SQL: "CREATE TABLE scratch (x)"}
	_, err = sqlite.Open(ctx, path, sqlite.WithMigrations(append(embedded, scratch)))
	if !errors.Is(err, store.ErrSchemaTooNew) {
		t.Fatalf("open a store of a newer pgrelay: %v, want ErrSchemaTooNew", err)
	}
	for _, want := range []string{"9999", "newer pgrelay", "changed nothing", path} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if tableExists(t, s, "scratch") || slices.Contains(applied(t, s), scratch.Version) {
		t.Error("a pending migration was applied to a newer store")
	}
	if _, err := sqlite.OpenReadOnly(ctx, path); !errors.Is(err, store.ErrSchemaTooNew) {
		t.Errorf("read-only open of a newer store: %v, want ErrSchemaTooNew", err)
	}
	if c, err := s.Counts(ctx); err != nil || c.Connections != 1 {
		t.Errorf("records after the refusal: %+v %v", c, err)
	}
}

// TestDestructiveMigrationSnapshot: before a destructive migration runs
// on a store with data, the store is copied beside itself.
func TestDestructiveMigrationSnapshot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, sqlite.FileName)
	embedded, _ := sqlite.Embedded()
	next := embedded[len(embedded)-1].Version + 1
	scratch := store.Migration{Version: next, Name: "scratch", SQL: "CREATE TABLE scratch (x); INSERT INTO scratch VALUES (42)"}
	drop := store.Migration{Version: next + 1, Name: "drop", SQL: store.DestructiveMarker + "\nDROP TABLE scratch", Destructive: true}
	s, err := sqlite.Open(ctx, path, sqlite.WithMigrations(append(slices.Clone(embedded), scratch)))
	if err != nil {
		t.Fatal(err)
	}
	addConnection(t, s, "wh")
	_ = s.Close()
	s, err = sqlite.Open(ctx, path, sqlite.WithMigrations(append(slices.Clone(embedded), scratch, drop)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if tableExists(t, s, "scratch") {
		t.Fatal("destructive migration not applied")
	}
	snapPath := fmt.Sprintf("%s.before-%04d", path, drop.Version)
	snap, err := sql.Open("sqlite", "file:"+snapPath+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	var x, n int
	if err := snap.QueryRow(`SELECT x FROM scratch`).Scan(&x); err != nil || x != 42 {
		entries, _ := os.ReadDir(dir)
		t.Fatalf("snapshot lacks the data the migration dropped: %d %v (dir: %v)", x, err, entries)
	}
	if err := snap.QueryRow(`SELECT count(*) FROM connections`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("snapshot connections: %d %v", n, err)
	}
	fi, _ := os.Stat(fmt.Sprintf("%s.before-%04d", path, drop.Version))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("snapshot mode %v, want 0600", fi.Mode().Perm())
	}
	// A new store has nothing to lose: no snapshot.
	fresh := filepath.Join(t.TempDir(), sqlite.FileName)
	s2, err := sqlite.Open(ctx, fresh, sqlite.WithMigrations(append(slices.Clone(embedded), scratch, drop)))
	if err != nil {
		t.Fatal(err)
	}
	_ = s2.Close()
	if m, _ := filepath.Glob(fresh + ".before-*"); len(m) > 0 {
		t.Errorf("snapshot of a new store: %v", m)
	}
}

// TestVacuumIntoWhileWriting: a snapshot taken while another connection
// writes is one consistent state, opens read-only and has mode 0600.
func TestVacuumIntoWhileWriting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	s := open(t)
	storetest.Fill(t, s)
	want := storetest.Read(t, s)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			addConnection(t, s, "w"+strconv.Itoa(i))
		}
	})
	var snaps []string
	for i := range 5 {
		p := filepath.Join(dir, "snap"+strconv.Itoa(i)+".db")
		if err := s.VacuumInto(ctx, p); err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, p)
	}
	close(stop)
	wg.Wait()
	if err := s.VacuumInto(ctx, snaps[0]); err == nil {
		t.Error("VacuumInto replaced an existing file")
	}
	for _, p := range snaps {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("snapshot %s: %v %v", p, fi, err)
		}
		snap, err := sqlite.OpenReadOnly(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		got := storetest.Read(t, snap)
		// Everything Fill saved is there; the writer's connections are a
		// prefix of what it wrote.
		extra := got.Counts.Connections - want.Counts.Connections
		got.Connections = got.Connections[:2]
		got.Counts.Connections -= extra
		if err := storetest.Equal(want, got); err != nil {
			t.Errorf("snapshot %s: %v", p, err)
		}
		_ = snap.Close()
		if m, _ := filepath.Glob(p + "-*"); len(m) > 0 {
			t.Errorf("reading a snapshot wrote beside it: %v", m)
		}
	}
}
