package postgres

import (
	"errors"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/store"
)

// The server's disk_full error cannot be provoked cheaply on a test server,
// so the mapping is checked on the error value the server would send.
func TestMarkFull(t *testing.T) {
	t.Parallel()
	full := fmt.Errorf("create run r1: %w", &pgconn.PgError{Code: "53100", Message: "could not extend file"})
	markFull(&full)
	if !errors.Is(full, store.ErrFull) {
		t.Fatalf("disk_full not marked: %v", full)
	}
	other := fmt.Errorf("create run r1: %w", &pgconn.PgError{Code: "23505"})
	markFull(&other)
	if errors.Is(other, store.ErrFull) {
		t.Fatalf("unique violation marked full: %v", other)
	}
	var none error
	markFull(&none)
	if none != nil {
		t.Fatal("nil error changed")
	}
}
