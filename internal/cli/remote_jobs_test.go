package cli_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/api/apitest"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
)

// TestRemoteJobs runs the job and run commands against a real API server
// with a job queue: the same commands as locally, through the API, with
// `--follow` on the server's event stream.
func TestRemoteJobs(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	srv := apitest.Start(t, apitest.Options{Queue: true, AllowCommands: []string{"sh"}})
	h := newHarness(t)
	h.env["PGRELAY_SERVER"] = srv.URL
	h.env["PGRELAY_TOKEN"] = srv.AdminToken
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(createArgs("wh", pg, "--sslmode", "disable")...)

	file := filepath.Join(t.TempDir(), "jobs.yaml")
	if err := os.WriteFile(file, []byte(`jobs:
  - name: hello
    connection: wh
    steps:
      - sql: select 1
      - command: [sh, -c, "echo hello from the server; echo warn >&2"]
  - name: broken
    connection: wh
    steps:
      - command: [sh, -c, "echo oops; exit 3"]
  - name: forbidden
    connection: wh
    steps:
      - command: [rm, -rf, /nothing]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	contains(t, "apply", h.ok("job", "apply", "-f", file).stdout, "job hello created", "job broken created")
	contains(t, "apply again", h.ok("job", "apply", "-f", file).stdout, "job hello unchanged")
	contains(t, "list", h.ok("job", "list").stdout, "hello", "broken", "wh")
	contains(t, "show", h.ok("job", "show", "hello").stdout, "echo hello from the server")

	r := h.ok("job", "run", "hello", "--follow")
	contains(t, "run --follow", r.stdout, "hello from the server", "! warn", "succeeded")
	r = h.fail(1, "job", "run", "broken", "--wait")
	contains(t, "run --wait", r.stderr, "exited with code 3")
	r = h.fail(1, "job", "run", "forbidden", "--follow")
	contains(t, "not allowed", r.stdout+r.stderr, `program "rm" is not allowed`, "--allow-command rm")
	// The server's own flags decide, not the client's.
	r = h.fail(2, "job", "run", "forbidden", "--allow-command", "rm")
	contains(t, "client flags", r.stderr, "apply to local runs")

	var runs []struct {
		ID, Job, Status, Trigger string
	}
	if err := json.Unmarshal([]byte(h.ok("run", "list", "--job", "hello", "-o", "json").stdout), &runs); err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 || runs[0].Status != "succeeded" || runs[0].Trigger != "api" {
		t.Fatalf("runs %+v", runs)
	}
	contains(t, "logs", h.ok("run", "logs", runs[0].ID).stdout, "hello from the server")
	contains(t, "logs --follow", h.ok("run", "logs", runs[0].ID, "--follow").stdout, "hello from the server")
	contains(t, "show", h.ok("run", "show", runs[0].ID).stdout, "succeeded", "Worker:")
	if strings.Contains(h.ok("run", "show", runs[0].ID).stdout, "Cancel:") {
		t.Error("run show of a run never cancelled has a Cancel line")
	}
	// A cancel that came as the run finished is shown, not hidden behind
	// its outcome.
	late, err := srv.Store.GetRun(context.Background(), runs[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	late.CancelRequested = true
	if err := srv.Store.UpdateRun(context.Background(), late); err != nil {
		t.Fatal(err)
	}
	contains(t, "show with a late cancel", h.ok("run", "show", runs[0].ID).stdout, "succeeded", "Cancel: requested too late")
	contains(t, "cancel ended", h.fail(2, "run", "cancel", runs[0].ID).stderr, "already ended")
	h.fail(3, "run", "show", "nosuchrun")

	// A viewer reads runs but neither runs nor cancels them.
	h.env["PGRELAY_TOKEN"] = srv.Token(t, "viewer-cli", auth.Viewer).Token
	contains(t, "viewer logs", h.ok("run", "logs", runs[0].ID, "--follow").stdout, "hello from the server")
	r = h.fail(4, "job", "run", "hello")
	if !strings.Contains(r.stderr, "editor") {
		t.Fatalf("viewer run: %s", r)
	}
}

// TestRemoteFollowThroughProxy follows a run through a reverse proxy that
// cuts the event stream and then, while it cannot reach the server (a
// restart), answers 502 with its own page: the follow resumes after the
// last line seen, and the log arrives complete, in order and once. A
// proxy's 502 used to end the follow at once ("unexpected response").
func TestRemoteFollowThroughProxy(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	srv := apitest.Start(t, apitest.Options{Queue: true, AllowCommands: []string{"sh"}})
	target, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	var streams atomic.Int32
	proxy := httptest.NewServer(http.StripPrefix("/pgrelay", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.URL.Path, "/events") {
			rp.ServeHTTP(w, r)
			return
		}
		switch streams.Add(1) {
		case 1: // cut mid-stream
			ctx, cancel := context.WithTimeout(r.Context(), 700*time.Millisecond)
			defer cancel()
			rp.ServeHTTP(w, r.WithContext(ctx))
		case 2, 3: // the server is restarting
			w.Header().Set("Content-Type", "text/html")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, "<html><body><h1>502 Bad Gateway</h1></body></html>")
		default:
			rp.ServeHTTP(w, r)
		}
	})))
	t.Cleanup(proxy.Close)

	h := newHarness(t)
	h.env["PGRELAY_SERVER"] = proxy.URL + "/pgrelay/"
	h.env["PGRELAY_TOKEN"] = srv.AdminToken
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(createArgs("wh", pg, "--sslmode", "disable")...)
	h.applyJobs(`jobs:
  - name: count
    connection: wh
    steps:
      - command: [sh, -c, "for i in 1 2 3 4 5 6 7 8 9 10; do echo line $i; sleep 0.2; done"]
`)
	r := h.ok("job", "run", "count", "--follow")
	if n := streams.Load(); n < 4 {
		t.Fatalf("the proxy saw %d event streams, want at least 4\n%s", n, r)
	}
	last := -1
	for i := 1; i <= 10; i++ {
		line := fmt.Sprintf("line %d\n", i)
		if c := strings.Count(r.stdout, line); c != 1 {
			t.Fatalf("%q printed %d times\n%s", line, c, r)
		}
		at := strings.Index(r.stdout, line)
		if at < last {
			t.Fatalf("%q out of order\n%s", line, r)
		}
		last = at
	}
	contains(t, "ended", r.stdout, "succeeded")
}

// TestRemoteJobRunInterrupted: Ctrl-C during `job run --wait` against a
// server ends the wait with 130 and says that the run goes on there (and
// how to stop it); the run is not cancelled. pgrelay used to die of the
// signal without a word, leaving the user to think the run stopped, as a
// local run does.
func TestRemoteJobRunInterrupted(t *testing.T) {
	t.Parallel()
	pg := sharedDB(t)
	srv := apitest.Start(t, apitest.Options{Queue: true, AllowCommands: []string{"sh"}})
	h := newHarness(t)
	h.env["PGRELAY_SERVER"] = srv.URL
	h.env["PGRELAY_TOKEN"] = srv.AdminToken
	h.env["DB_PASSWORD"] = pg.Password
	h.ok(createArgs("wh", pg, "--sslmode", "disable")...)
	h.applyJobs(`jobs:
  - name: long
    connection: wh
    steps:
      - command: [sh, -c, "echo ready; sleep 60"]
`)
	cmd, out := h.startPgrelay("job", "run", "long", "--follow")
	waitUntil(t, "the run to start", 15*time.Second, func() bool { return strings.Contains(out.String(), "ready\n") })
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := exitStatus(t, cmd, out); code != 130 {
		t.Fatalf("exit status %d, want 130:\n%s", code, out.String())
	}
	contains(t, "interrupted", out.String(), "goes on on the server", "pgrelay run cancel ")
	runs, err := srv.App.ListRuns(context.Background(), store.RunFilter{Job: "long"})
	if err != nil || len(runs) != 1 {
		t.Fatalf("runs %v, %v", runs, err)
	}
	if runs[0].Status != jobs.Running {
		t.Fatalf("the run is %s after Ctrl-C, want running", runs[0].Status)
	}
	h.ok("run", "cancel", runs[0].ID)
}
