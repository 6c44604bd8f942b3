package app_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// rowsSink keeps the text of the first column of every row.
type rowsSink struct{ rows []string }

func (s *rowsSink) Begin([]app.Column) error { return nil }
func (s *rowsSink) Row(v [][]byte) error {
	s.rows = append(s.rows, string(v[0]))
	return nil
}
func (s *rowsSink) End(string) error { return nil }
func (s *rowsSink) String() string   { return strings.Join(s.rows, ",") }

// logRecorder keeps a run's log lines.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (r *logRecorder) add(l jobs.LogLine) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, string(l.Stream)+": "+l.Text)
}

func (r *logRecorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.lines, "\n")
}

// allowlistOf allows programs, as `pgrelay serve --allow-command` does.
func allowlistOf(t *testing.T, programs ...string) *jobs.Allowlist {
	t.Helper()
	a, err := jobs.NewAllowlist(programs)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// waitFor polls cond until it holds or the time is up.
func waitFor(t *testing.T, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countActive counts the active sessions running query.
func countActive(t *testing.T, pg *testenv.Postgres, query string) int {
	t.Helper()
	conn := pg.Connect(t, "postgres")
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(context.Background(),
		"select count(*) from pg_stat_activity where state = 'active' and query = $1", query).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
