package jobs_test

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestCommandSessionsEndAsTheirClientEnded: a command that ends its
// database session (psql sends Terminate) and exits leaves a session that
// ends as terminated, never one taken for a client that went away: when
// the run succeeded, its end waits for the endpoint's sessions to end by
// themselves before it closes the endpoint. (It used to close the
// endpoint as soon as the command exited, now and then before the relay
// had read the Terminate: the session then counted as closed by pgrelay,
// and a cancel request went to the server over a new channel, a round
// trip or two at the end of every such run.)
func TestCommandSessionsEndAsTheirClientEnded(t *testing.T) {
	t.Parallel()
	e := setup(t, 30*time.Second, 10)
	var logs testenv.LogBuffer
	r := e.runner(t)
	r.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	const runs = 20
	for i := range runs {
		res := r.Run(context.Background(), job("wh", jobs.Step{Command: []string{"psql", "-X", "-At", "-c", "select 1"}}), jobs.Hooks{})
		if res.Status != jobs.Succeeded {
			t.Fatalf("run %d: %+v", i+1, res)
		}
	}
	ends := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(logs.String()))
	for sc.Scan() {
		var rec struct {
			Msg string `json:"msg"`
			How string `json:"how"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && strings.HasPrefix(rec.Msg, "relay: session ended") {
			ends[rec.How]++
		}
	}
	if ends["terminated"] != runs || len(ends) != 1 {
		t.Errorf("sessions of %d psql commands ended as %v, want all %d terminated", runs, ends, runs)
	}
}
