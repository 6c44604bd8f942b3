package sqlite_test

import (
	"context"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
	"github.com/pgrelay/pgrelay/internal/store/storetest"
)

// TestAuditTamper: an audit record edited (around the append-only
// trigger) or deleted in the SQLite file makes verification fail at it.
func TestAuditTamper(t *testing.T) {
	t.Parallel()
	exec := func(t *testing.T, s store.Store, q string, args ...any) {
		t.Helper()
		if _, err := s.(*sqlite.Store).DB().ExecContext(context.Background(), q, args...); err != nil {
			t.Fatal(err)
		}
	}
	storetest.ExerciseAuditTamper(t, func(t *testing.T) store.Store { return open(t) }, storetest.Tamper{
		Edit: func(t *testing.T, s store.Store, seq int64) {
			exec(t, s, `DROP TRIGGER audit_log_append_only`)
			exec(t, s, `UPDATE audit_log SET target = 'elsewhere' WHERE seq = ?`, seq)
		},
		Delete: func(t *testing.T, s store.Store, seq int64) {
			exec(t, s, `DELETE FROM audit_log WHERE seq = ?`, seq)
		},
	})
}

// TestAuditAppendOnly: the store refuses to update an audit record.
func TestAuditAppendOnly(t *testing.T) {
	t.Parallel()
	s := open(t)
	_, err := s.DB().ExecContext(context.Background(), `INSERT INTO audit_log VALUES (1, '', '', '', '', '', '', '', '', '', '', '', '', '', '')`)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.DB().ExecContext(context.Background(), `UPDATE audit_log SET target = 'x'`)
	if err == nil || !strings.Contains(err.Error(), "append-only") {
		t.Fatalf("update of an audit record: %v", err)
	}
}
