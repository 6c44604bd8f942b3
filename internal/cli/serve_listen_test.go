package cli_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/cli"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// served is a `pgrelay serve` running in-process.
type served struct {
	url            string
	stdout, stderr *testenv.LogBuffer
	cancel         context.CancelFunc
	done           chan int
}

// startServe runs `pgrelay ARGS` (a serve command) in-process with the
// environment vars (and its own data dir), and waits until it announces
// its URL.
func startServe(t *testing.T, vars map[string]string, args ...string) *served {
	t.Helper()
	dataDir := t.TempDir()
	s := &served{stdout: &testenv.LogBuffer{}, stderr: &testenv.LogBuffer{}, done: make(chan int, 1)}
	env := cli.Env{Stdin: strings.NewReader(""), Stdout: s.stdout, Stderr: s.stderr,
		Getenv: func(k string) string {
			if k == "PGRELAY_DATA_DIR" {
				return dataDir
			}
			return vars[k]
		},
		StdinIsTerminal: func() bool { return false }}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- cli.Execute(ctx, env, args) }()
	t.Cleanup(func() { s.stop(t) })
	deadline := time.Now().Add(30 * time.Second)
	for s.url == "" {
		select {
		case code := <-s.done:
			s.done <- code
			t.Fatalf("pgrelay %s exited %d before serving\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code,
				s.stdout.String(), s.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve printed no URL within 30s\nstdout:\n%s\nstderr:\n%s", s.stdout.String(), s.stderr.String())
		}
		if m := servingRE.FindStringSubmatch(s.stdout.String()); m != nil {
			s.url = m[1]
		}
	}
	return s
}

// stop ends the server and returns its exit code.
func (s *served) stop(t *testing.T) int {
	t.Helper()
	s.cancel()
	select {
	case code := <-s.done:
		s.done <- code
		return code
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not stop within 30s\nstderr:\n%s", s.stderr.String())
	}
	return -1
}

func (s *served) healthy(t *testing.T) {
	t.Helper()
	resp, err := http.Get(s.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz: %d", resp.StatusCode)
	}
}

// TestServeAddressAndEnvironment: serve listens on --listen, on --addr
// (its former name) and on PGRELAY_ADDR; it serves the local data dir
// even when PGRELAY_SERVER is set in the shell; a bad address names where
// it came from.
func TestServeAddressAndEnvironment(t *testing.T) {
	t.Parallel()
	t.Run("EnvAddrAndServerIgnored", func(t *testing.T) {
		t.Parallel()
		s := startServe(t, map[string]string{"PGRELAY_ADDR": "127.0.0.1:0", "PGRELAY_SERVER": "http://127.0.0.1:1",
			"PGRELAY_TOKEN": "pgr_x"}, "serve")
		if !strings.HasPrefix(s.url, "http://127.0.0.1:") || strings.HasSuffix(s.url, ":8080") {
			t.Fatalf("serve announces %s, want the free port PGRELAY_ADDR asked for", s.url)
		}
		s.healthy(t)
		if code := s.stop(t); code != 0 {
			t.Fatalf("serve exited %d\nstderr:\n%s", code, s.stderr.String())
		}
	})
	t.Run("Listen", func(t *testing.T) {
		t.Parallel()
		s := startServe(t, map[string]string{"PGRELAY_ADDR": "bad"}, "serve", "--listen", "127.0.0.1:0")
		s.healthy(t)
	})
	t.Run("AddrStillWorks", func(t *testing.T) {
		t.Parallel()
		s := startServe(t, nil, "serve", "--addr", "127.0.0.1:0")
		s.healthy(t)
	})
	t.Run("BadAddress", func(t *testing.T) {
		t.Parallel()
		h := newHarness(t)
		contains(t, "bad --listen", h.fail(2, "serve", "--listen", "8080").stderr, `--listen "8080"`, "host:port")
		h.env["PGRELAY_ADDR"] = "localhost"
		contains(t, "bad PGRELAY_ADDR", h.fail(2, "serve").stderr, `PGRELAY_ADDR "localhost"`, "host:port")
		contains(t, "both names", h.fail(2, "serve", "--listen", "127.0.0.1:0", "--addr", "127.0.0.1:0").stderr, "only --listen")
		// An explicit --server is still refused: serve has no remote mode.
		contains(t, "serve --server", h.fail(2, "--server", "http://127.0.0.1:1", "serve").stderr, "serve does not take --server")
		if h := h.run("serve", "--help"); !strings.Contains(h.stdout, "--listen") || strings.Contains(h.stdout, "--addr") {
			t.Errorf("serve --help shows --addr or lacks --listen:\n%s", h.stdout)
		}
	})
}

// TestServeLogLevel: serve honours --log-level, whose default is warn:
// no info lines unless asked for, and River's own routine lines only at
// debug.
func TestServeLogLevel(t *testing.T) {
	t.Parallel()
	const riverStarted = "River client started"
	t.Run("Default", func(t *testing.T) {
		t.Parallel()
		s := startServe(t, nil, "serve", "--listen", "127.0.0.1:0")
		s.healthy(t)
		s.stop(t)
		if err := s.stderr.String(); strings.Contains(err, "level=INFO") {
			t.Fatalf("info lines at the default level warn:\n%s", err)
		}
	})
	t.Run("Info", func(t *testing.T) {
		t.Parallel()
		s := startServe(t, nil, "--log-level", "info", "serve", "--listen", "127.0.0.1:0")
		s.healthy(t)
		s.stop(t)
		err := s.stderr.String()
		contains(t, "info log", err, "level=INFO", `msg=serving`, `msg="http request"`)
		if strings.Contains(err, riverStarted) || strings.Contains(err, "component=river") {
			t.Fatalf("River's info lines at --log-level info:\n%s", err)
		}
	})
	t.Run("Debug", func(t *testing.T) {
		t.Parallel()
		s := startServe(t, nil, "--log-level", "debug", "serve", "--listen", "127.0.0.1:0")
		s.healthy(t)
		s.stop(t)
		contains(t, "debug log", s.stderr.String(), riverStarted, "component=river")
	})
}

// TestServeSuggestsServerURLTheCLIAccepts: the first start's "use the CLI
// against this server with export PGRELAY_SERVER=..." names a URL the CLI
// takes. On a wildcard address it said http://0.0.0.0:PORT, which the CLI
// refuses as plain http to a host that is not loopback (exit 2).
func TestServeSuggestsServerURLTheCLIAccepts(t *testing.T) {
	t.Parallel()
	s := startServe(t, nil, "serve", "--listen", "0.0.0.0:0")
	// Once it answers, the token's lines, printed before it serves, are out.
	s.healthy(t)
	m := regexp.MustCompile(`export PGRELAY_SERVER=(\S+) PGRELAY_TOKEN=`).FindStringSubmatch(s.stdout.String())
	if m == nil {
		t.Fatalf("serve printed no PGRELAY_SERVER line:\n%s", s.stdout.String())
	}
	if !strings.HasPrefix(m[1], "http://127.0.0.1:") {
		t.Errorf("serve on 0.0.0.0 suggests PGRELAY_SERVER=%s, want this machine's loopback", m[1])
	}
	h := newHarness(t)
	h.env["PGRELAY_SERVER"] = m[1]
	h.env["PGRELAY_TOKEN"] = "pgr_" + strings.Repeat("x", 43)
	// The token is unknown there (exit 4): the URL itself was taken.
	if r := h.run("connection", "list"); r.code != 4 {
		t.Errorf("PGRELAY_SERVER=%s as serve suggests it: %s", m[1], r)
	}
}
