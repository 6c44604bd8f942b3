package postgres_test

import (
	"context"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/postgres"
	"github.com/pgrelay/pgrelay/internal/store/storetest"
)

// TestAuditTamper: an audit record edited (around the append-only
// trigger) or deleted in the PostgreSQL store makes verification fail at
// it; the store's role cannot update a record while the trigger is there.
func TestAuditTamper(t *testing.T) {
	t.Parallel()
	srv := startServer(t)
	exec := func(t *testing.T, s store.Store, q string, args ...any) error {
		t.Helper()
		_, err := s.(*postgres.Store).Pool().Exec(context.Background(), q, args...)
		return err
	}
	must := func(t *testing.T, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	storetest.ExerciseAuditTamper(t, func(t *testing.T) store.Store { return srv.open(t) }, storetest.Tamper{
		Edit: func(t *testing.T, s store.Store, seq int64) {
			err := exec(t, s, `UPDATE pgrelay_audit SET target = 'elsewhere' WHERE seq = $1`, seq)
			if err == nil || !strings.Contains(err.Error(), "append-only") {
				t.Fatalf("update with the trigger in place: %v", err)
			}
			must(t, exec(t, s, `ALTER TABLE pgrelay_audit DISABLE TRIGGER pgrelay_audit_append_only`))
			must(t, exec(t, s, `UPDATE pgrelay_audit SET target = 'elsewhere' WHERE seq = $1`, seq))
		},
		Delete: func(t *testing.T, s store.Store, seq int64) {
			must(t, exec(t, s, `DELETE FROM pgrelay_audit WHERE seq = $1`, seq))
		},
	})
}
