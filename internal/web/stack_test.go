package web_test

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/server"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
	"github.com/pgrelay/pgrelay/internal/web"
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
	store *sqlite.Store
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
	svc, err := app.New(app.Config{Store: st, Keyring: kr, Logger: logger, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	sessions, err := auth.NewSessions(kr.DeriveKey("web sessions"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ui, err := web.New(web.Config{App: svc, Sessions: sessions, Logger: logger, PublicURL: opts.PublicURL})
	if err != nil {
		t.Fatal(err)
	}
	var q *queue.Queue
	if opts.Queue {
		q = startQueue(t, svc, st, logger, opts.Allow)
	}
	// Both faces, as `pgrelay serve` mounts them: their routes must not
	// conflict, and unknown /api/v1 paths stay the API's.
	done := make(chan struct{})
	cop, err := auth.OriginProtection(opts.PublicURL)
	if err != nil {
		t.Fatal(err)
	}
	apiH := api.New(api.Config{App: svc, Sessions: sessions, Logger: logger, Done: done, StreamPoll: 100 * time.Millisecond,
		OriginProtection: cop})
	srv, err := server.New(server.Config{Faces: []server.Registrar{apiH, ui}, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	t.Cleanup(func() { close(done) }) // before Close: end the event streams
	s := &stack{URL: ts.URL, App: svc, Tokens: map[auth.Role]*app.NewToken{}, Queue: q, srv: ts, store: st}
	for _, r := range auth.Roles() {
		nt, err := svc.CreateToken(ctx, "alice-"+string(r), r)
		if err != nil {
			t.Fatal(err)
		}
		s.Tokens[r] = nt
	}
	return s
}

// startQueue starts a job queue on the store, as `pgrelay serve
// --allow-command ...` does, with the timings of the queue's own tests.
func startQueue(t testing.TB, svc *app.Service, st *sqlite.Store, logger *slog.Logger, allow []string) *queue.Queue {
	t.Helper()
	qdb, err := st.OpenQueueDB()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = qdb.Close() })
	allowlist, err := jobs.NewAllowlist(allow)
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.New(queue.Config{
		Store: st, Backend: queue.Backend{SQLite: qdb}, Logger: logger,
		Open:              func(ctx context.Context, name string) (jobs.Conn, error) { return svc.Open(ctx, name) },
		Commands:          jobs.CommandPolicy{Allow: allowlist},
		HeartbeatInterval: 200 * time.Millisecond, LostAfter: 5 * time.Second, ReapInterval: 500 * time.Millisecond,
		ScheduleSync: time.Second, KillGrace: time.Second, ShutdownGrace: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	svc.SetQueue(q)
	if err := q.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = q.Stop(context.Background()) })
	return q
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
