package app

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/relay"
)

// levels is a slog.Handler that keeps the level of each record.
type levels struct{ got []slog.Level }

func (l *levels) Enabled(context.Context, slog.Level) bool { return true }
func (l *levels) Handle(_ context.Context, r slog.Record) error {
	l.got = append(l.got, r.Level)
	return nil
}
func (l *levels) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *levels) WithGroup(string) slog.Handler      { return l }

// TestExecLogDemotesRefusedSessionsOnly: exec's log turns a session the
// server refused as it started (the program printed the server's error)
// into an info line, and no other warning: one that merely carries a
// server error (a cleanup that gave up on a refused reconnect) stays a
// warning and says nothing of the program's password.
func TestExecLogDemotesRefusedSessionsOnly(t *testing.T) {
	t.Parallel()
	var refused atomic.Bool
	inner := &levels{}
	h := &execLogHandler{Handler: inner, passwordRefused: &refused}
	pw := &pgconn.PgError{Severity: "FATAL", Code: "28P01", Message: "password authentication failed"}
	warn := func(err error) {
		r := slog.NewRecord(time.Now(), slog.LevelWarn, "something", 0)
		r.AddAttrs(slog.Any("error", err))
		if err := h.Handle(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	warn(fmt.Errorf("cleanup: gave up: %w", pw))
	if len(inner.got) != 1 || inner.got[0] != slog.LevelWarn || refused.Load() {
		t.Fatalf("a cleanup's warning carrying a server error: levels %v, password refused %v", inner.got, refused.Load())
	}
	warn(fmt.Errorf("relay: client 127.0.0.1:5: %w", &relay.RefusedError{Err: pw}))
	if len(inner.got) != 2 || inner.got[1] != slog.LevelInfo || !refused.Load() {
		t.Fatalf("a session refused at its start: levels %v, password refused %v", inner.got, refused.Load())
	}
}
