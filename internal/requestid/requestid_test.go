package requestid_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/pgrelay/pgrelay/internal/requestid"
)

// TestHandlerAddsRunID: a record written with a run's context gets run_id
// (the lines of the run's tunnel and endpoint had none, so that with
// several runs on one connection none could be told apart), once: not
// when the record or its logger has its own.
func TestHandlerAddsRunID(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	log := slog.New(requestid.NewHandler(slog.NewJSONHandler(&out, nil)))
	ctx := requestid.WithRun(requestid.With(context.Background(), "req-12345678"), "run-1")
	log.InfoContext(ctx, "ssh tunnel up")
	log.InfoContext(ctx, "run started", "run_id", "run-1")
	log.With("run_id", "run-1").InfoContext(ctx, "session ended")
	log.With("run_id", "run-1").WithGroup("g").InfoContext(ctx, "grouped")
	log.Info("no context")
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	want := []string{"run-1", "run-1", "run-1", "run-1", ""}
	if len(lines) != len(want) {
		t.Fatalf("%d lines:\n%s", len(lines), out.String())
	}
	for i, line := range lines {
		if n := strings.Count(line, `"run_id"`); want[i] != "" && n != 1 {
			t.Errorf("line %d has run_id %d times: %s", i, n, line)
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatal(err)
		}
		if got, _ := rec["run_id"].(string); got != want[i] {
			t.Errorf("line %d: run_id %q, want %q: %s", i, got, want[i], line)
		}
	}
	if !strings.Contains(lines[0], `"request_id":"req-12345678"`) {
		t.Errorf("request_id missing: %s", lines[0])
	}
}
