package web_test

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
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
	srv    *httptest.Server
	store  *sqlite.Store
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
	ui, err := web.New(web.Config{App: svc, Sessions: sessions, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	// Both faces, as `pgrelay serve` mounts them: their routes must not
	// conflict, and unknown /api/v1 paths stay the API's.
	apiH := api.New(api.Config{App: svc, Sessions: sessions, Logger: logger})
	srv, err := server.New(server.Config{Faces: []server.Registrar{apiH, ui}, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	s := &stack{URL: ts.URL, App: svc, Tokens: map[auth.Role]*app.NewToken{}, srv: ts, store: st}
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
