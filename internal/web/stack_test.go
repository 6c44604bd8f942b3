package web_test

import (
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/daemon"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// stack is the real server (app service on a temporary SQLite store, the
// HTTP server with the REST API and the web UI) on 127.0.0.1, with a token
// per role.
type stack struct {
	URL    string
	App    *app.Service
	Tokens map[auth.Role]*app.NewToken
	// Queue works runs when the stack was made with one.
	Queue *queue.Queue
	srv   *httptest.Server
	// handler is the HTTP server's handler that srv serves.
	handler http.Handler
	store   *sqlite.Store
	// keyring is the master key the stack seals secrets with.
	keyring *secret.Keyring
}

// stackOptions adds parts to a stack.
type stackOptions struct {
	// Queue starts a job queue on the stack's store, as `pgrelay serve`
	// does, that may run the programs in Allow.
	Queue bool
	Allow []string
	// PublicURL is `pgrelay serve --public-url`: the URL people reach the
	// server at through a proxy.
	PublicURL *url.URL
	// CredentialCommands are the programs token credentials (auth kind
	// command) may run, as `--allow-command` allows them on a server.
	CredentialCommands []string
}

// closeStore closes the store, so that every use case fails.
func (s *stack) closeStore(t testing.TB) {
	t.Helper()
	if err := s.store.Close(); err != nil {
		t.Fatal(err)
	}
}

func newStack(t testing.TB) *stack {
	t.Helper()
	return newStackWith(t, stackOptions{})
}

func newStackWith(t testing.TB, opts stackOptions) *stack {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), sqlite.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	key := make([]byte, secret.KeySize)
	_, _ = rand.Read(key)
	kr, err := secret.NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	tw := &testWriter{t: t}
	t.Cleanup(func() { tw.done.Store(true) }) // runs last: later lines are dropped
	logger := slog.New(slog.NewTextHandler(tw, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var jc *daemon.JobsConfig
	if opts.Queue {
		// The timings of the queue's own tests.
		allowlist, err := jobs.NewAllowlist(opts.Allow)
		if err != nil {
			t.Fatal(err)
		}
		jc = &daemon.JobsConfig{Commands: jobs.CommandPolicy{Allow: allowlist},
			HeartbeatInterval: 200 * time.Millisecond, LostAfter: 5 * time.Second, ReapInterval: 500 * time.Millisecond,
			ScheduleSync: time.Second, KillGrace: time.Second, ShutdownGrace: time.Second}
	}
	// Both faces, as `pgrelay serve` mounts them: their routes must not
	// conflict, and unknown /api/v1 paths stay the API's.
	var creds app.CredentialConfig
	if len(opts.CredentialCommands) > 0 {
		allowlist, err := jobs.NewAllowlist(opts.CredentialCommands)
		if err != nil {
			t.Fatal(err)
		}
		creds.AllowCommand = allowlist.Path
	}
	d, err := daemon.New(ctx, daemon.Config{Store: st, Keyring: kr, Logger: logger, DialTimeout: 5 * time.Second, Jobs: jc,
		Credentials: creds, HTTP: &daemon.HTTPConfig{WebUI: true, PublicURL: opts.PublicURL, StreamPoll: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(d.Handler())
	t.Cleanup(ts.Close)
	t.Cleanup(func() { _ = d.Stop(context.Background()) }) // before Close: end the event streams
	svc, q := d.App(), d.Queue()
	s := &stack{URL: ts.URL, App: svc, Tokens: map[auth.Role]*app.NewToken{}, Queue: q, srv: ts, handler: d.Handler(), store: st, keyring: kr}
	for _, r := range auth.Roles() {
		nt, err := svc.CreateToken(ctx, "alice-"+string(r), r)
		if err != nil {
			t.Fatal(err)
		}
		s.Tokens[r] = nt
	}
	return s
}

// testWriter sends log lines to the test log until the test is over (a
// goroutine that logs later must not panic the test binary).
type testWriter struct {
	t    testing.TB
	done atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if !w.done.Load() {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// pinThenChangeHostKey saves spec (a connection through b), lets its
// first connection pin b's host key, and has b present another one, so
// that the connection's next use finds it changed and waiting for
// approval. It returns the pinned and the presented fingerprints.
func pinThenChangeHostKey(t *testing.T, s *stack, b *testenv.Bastion, spec connection.Spec) (pinned, presented string) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.App.CreateConnection(ctx, spec); err != nil {
		t.Fatal(err)
	}
	line, err := s.App.PublicKey(ctx, spec.Name, false)
	if err != nil {
		t.Fatal(err)
	}
	b.Authorize(t, line)
	sess, err := s.App.Open(ctx, spec.Name)
	if err != nil {
		t.Fatalf("first connection to the bastion: %v", err)
	}
	_ = sess.Close()
	pinned = sshkey.Fingerprint(b.HostKey)
	b.RotateHostKey(t)
	var changed *app.HostKeyChangedError
	if _, err := s.App.Open(ctx, spec.Name); !errors.As(err, &changed) {
		t.Fatalf("after the host key rotation: %v, want a HostKeyChangedError", err)
	}
	return pinned, sshkey.Fingerprint(b.HostKey)
}
