package cli_test

import (
	"context"
	"encoding/base64"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestLocalJobRunTakesTheServersLostAfter: a local `job run` on a shared
// PostgreSQL store takes --lost-after as serve does. It always used the
// default (30s, heartbeats every 5s): the reaper of a serve at
// --lost-after 3s declared its healthy run lost ("worker ... was lost")
// before its second heartbeat. With --lost-after 3s it heartbeats every
// second, and its run outlives the servers' --lost-after and succeeds.
// Against a server the flag is refused, naming why.
func TestLocalJobRunTakesTheServersLostAfter(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	storeDB := pg.NewDatabase(t)
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i*11 + 5)
	}
	h := newHarness(t)
	h.env["PGRELAY_STORE"] = storeDB.ConnString()
	h.env["PGRELAY_MASTER_KEY"] = base64.StdEncoding.EncodeToString(key)
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(createArgs("wh", pg)...)
	// Its statement outlasts the servers' --lost-after (3s) and the
	// default heartbeat interval (5s).
	h.applyJobs(`jobs:
  - name: slow
    connection: wh
    steps:
      - sql: SELECT pg_sleep(8)
`)

	// A serve process on the store, reaping runs silent for 3s.
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(testenv.FreePort(t)))
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan result, 1)
	go func() {
		served <- h.runCtx(ctx, "", "serve", "--listen", addr, "--lost-after", "3s", "--reap-interval", "200ms")
	}()
	t.Cleanup(func() {
		cancel()
		if r := <-served; r.code != 0 {
			t.Errorf("serve: %s", r)
		}
	})
	// serve starts its queue (and reaper) before it listens.
	url := "http://" + addr
	poll := time.NewTicker(50 * time.Millisecond)
	defer poll.Stop()
	for ready := false; !ready; {
		select {
		case r := <-served:
			served <- r
			t.Fatalf("serve ended before it was ready: %s", r)
		case <-poll.C:
		}
		if resp, err := http.Get(url + "/readyz"); err == nil {
			ready = resp.StatusCode == http.StatusOK
			_ = resp.Body.Close()
		}
	}

	// Left at the default, the local run is declared lost by the server.
	r := h.fail(1, "job", "run", "slow")
	contains(t, "job run with the default --lost-after", r.stderr, "failed", "was lost: no heartbeat since")

	// Given the servers' --lost-after, it heartbeats often enough.
	r = h.ok("job", "run", "slow", "--lost-after", "3s")
	contains(t, "job run --lost-after 3s", r.stdout, "succeeded")

	contains(t, "job run --lost-after 500ms", h.fail(2, "job", "run", "slow", "--lost-after", "500ms").stderr,
		"--lost-after 500ms: accepted is 1s to 1h", "same value in every process sharing a store")
	contains(t, "job run --server --lost-after", h.fail(2, "--server", url, "--token", "pgr_"+strings.Repeat("a", 43), "job", "run", "slow", "--lost-after", "3s").stderr,
		"--lost-after applies to runs in this process", "pgrelay serve --lost-after")
}
