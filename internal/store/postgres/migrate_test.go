package postgres_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/postgres"
)

// TestMigrationSafety: a store migrated by a newer pgrelay is refused
// before anything is applied; a destructive migration runs on a store with
// data only once the operator confirms a backup; WithoutMigrations leaves
// an older store alone.
func TestMigrationSafety(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	embedded, err := postgres.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	newest := embedded[len(embedded)-1].Version
	scratch := store.Migration{Version: newest + 1, Name: "scratch", SQL: "CREATE TABLE pgrelay_scratch (x int)"}
	drop := store.Migration{Version: newest + 2, Name: "drop_scratch", SQL: store.DestructiveMarker + "\nDROP TABLE pgrelay_scratch",
		Destructive: true}
	open := func(t *testing.T, cs string, opts ...postgres.Option) (*postgres.Store, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := postgres.Open(ctx, cs, opts...)
		if err == nil {
			t.Cleanup(func() { _ = s.Close() })
		}
		return s, err
	}

	t.Run("NewerSchemaRefused", func(t *testing.T) {
		t.Parallel()
		cs := srv.database(t)
		s := openAt(t, cs)
		storeFill(t, s)
		if _, err := s.Pool().Exec(context.Background(),
			`INSERT INTO pgrelay_schema_migrations (version, name) VALUES (9999, '9999_future.sql')`); err != nil {
			t.Fatal(err)
		}
		// This binary has a migration pending as well: it must not apply it.
		_, err := open(t, cs, postgres.WithMigrations(append(slices.Clone(embedded), scratch)))
		if !errors.Is(err, store.ErrSchemaTooNew) {
			t.Fatalf("open a store of a newer pgrelay: %v, want ErrSchemaTooNew", err)
		}
		for _, want := range []string{"9999", "newer pgrelay", "changed nothing"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
		if got := appliedMigrations(t, s); got[len(got)-1] != 9999 || slices.Contains(got, scratch.Version) {
			t.Errorf("applied migrations after the refusal: %v", got)
		}
		var exists bool
		_ = s.Pool().QueryRow(context.Background(), `SELECT to_regclass('pgrelay_scratch') IS NOT NULL`).Scan(&exists)
		if exists {
			t.Error("a pending migration was applied to a newer store")
		}
		if c, err := s.Counts(context.Background()); err != nil || c.Connections != 1 {
			t.Errorf("records after the refusal: %+v %v", c, err)
		}
	})

	t.Run("DestructiveNeedsConfirmation", func(t *testing.T) {
		t.Parallel()
		cs := srv.database(t)
		s, err := open(t, cs, postgres.WithMigrations(append(slices.Clone(embedded), scratch)))
		if err != nil {
			t.Fatal(err)
		}
		storeFill(t, s)
		all := append(slices.Clone(embedded), scratch, drop)
		_, err = open(t, cs, postgres.WithMigrations(all))
		var de *store.DestructiveMigrationError
		if !errors.As(err, &de) || !slices.Equal(de.Migrations, []string{"drop_scratch"}) || !strings.Contains(err.Error(), "pg_dump") {
			t.Fatalf("destructive migration without confirmation: %v", err)
		}
		if got := appliedMigrations(t, s); slices.Contains(got, drop.Version) {
			t.Fatalf("destructive migration applied without confirmation: %v", got)
		}
		if _, err := open(t, cs, postgres.WithMigrations(all), postgres.AllowDestructiveMigrations()); err != nil {
			t.Fatalf("destructive migration with confirmation: %v", err)
		}
		if got := appliedMigrations(t, s); !slices.Contains(got, drop.Version) {
			t.Fatalf("confirmed destructive migration not applied: %v", got)
		}
		// A new store has nothing to lose: no confirmation needed.
		if _, err := open(t, srv.database(t), postgres.WithMigrations(all)); err != nil {
			t.Fatalf("destructive migration on a new store: %v", err)
		}
	})

	t.Run("WithoutMigrations", func(t *testing.T) {
		t.Parallel()
		cs := srv.database(t)
		if _, err := open(t, cs, postgres.WithoutMigrations()); err == nil || !strings.Contains(err.Error(), "older") {
			t.Fatalf("open a new database without migrations: %v, want a refusal", err)
		}
		s := openAt(t, cs)
		if _, err := open(t, cs, postgres.WithoutMigrations()); err != nil {
			t.Fatalf("open a current store without migrations: %v", err)
		}
		if _, err := open(t, cs, postgres.WithoutMigrations(), postgres.WithMigrations(append(slices.Clone(embedded), scratch))); err == nil {
			t.Fatal("open an older store without migrations: no error")
		}
		if got := appliedMigrations(t, s); slices.Contains(got, scratch.Version) {
			t.Fatalf("WithoutMigrations applied a migration: %v", got)
		}
	})
}

// storeFill saves one connection.
func storeFill(t *testing.T, s store.Store) {
	t.Helper()
	c := &store.Connection{ID: "c1", CreatedAt: time.Now(), UpdatedAt: time.Now()}
	c.Spec.Name, c.Spec.Host, c.Spec.Port, c.Spec.Database, c.Spec.User = "wh", "h", 5432, "d", "u"
	if err := s.CreateConnection(context.Background(), c); err != nil {
		t.Fatal(err)
	}
}
