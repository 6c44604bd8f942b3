// Package apitest starts a real pgrelay API server on loopback for tests:
// an app.Service on a SQLite store in a temporary directory, the API mounted
// by server.New as `pgrelay serve` mounts it (without the web UI), served on
// a loopback listener by httptest. It also captures the server's log so
// that tests can check what was (and was not) logged. With Options.Queue it
// also works job runs, with a job queue on the same store as `pgrelay serve`
// starts one.
package apitest

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/pgrelay/pgrelay/client"
	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/metrics"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/requestid"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/server"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
)

// Options configures Start.
type Options struct {
	// MaxRows is the API's query row limit; 0 is the API's default.
	MaxRows int
	// DialTimeout bounds connecting to a bastion; default 5s.
	DialTimeout time.Duration
	// Queue starts a job queue (River on the SQLite store) that works
	// runs; without it, queuing a run fails with app.ErrNoQueue.
	Queue bool
	// AllowCommands are the programs command steps may run (with Queue),
	// as `pgrelay serve --allow-command`.
	AllowCommands []string
	// StreamPoll is the API's run event stream poll interval; 0 is the
	// API's default.
	StreamPoll time.Duration
	// StreamAuthCheck is how often a run event stream checks its
	// credentials; 0 is the API's default.
	StreamAuthCheck time.Duration
	// MaxStreamsPerToken bounds a token's open run event streams; 0 is
	// the API's default.
	MaxStreamsPerToken int
	// StreamKeepalive is how often a quiet event stream sends a comment;
	// 0 is the API's default.
	StreamKeepalive time.Duration
	// WriteTimeout is the server's response write timeout; 0 is the
	// server's default.
	WriteTimeout time.Duration
	// HealthCheckPoll, with Queue, runs the connections' scheduled tests
	// this often (as `pgrelay serve` does every 30 s); 0 runs none.
	HealthCheckPoll time.Duration
	// TracerProvider traces the requests, use cases and runs, as
	// OTEL_EXPORTER_OTLP_ENDPOINT makes `pgrelay serve` do; nil is off.
	TracerProvider trace.TracerProvider
}

// Server is a running API server.
type Server struct {
	// URL is the server's base URL, e.g. http://127.0.0.1:34567.
	URL      string
	App      *app.Service
	API      *api.API
	Sessions *auth.Sessions
	Store    *sqlite.Store
	// Queue is the job queue, with Options.Queue.
	Queue *queue.Queue
	// AdminToken is the token of the admin created at start.
	AdminToken string

	logs *syncBuffer
}

// Start starts a server that stops when the test ends.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	ctx := context.Background()
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 5 * time.Second
	}
	logs := &syncBuffer{}
	logger := slog.New(requestid.NewHandler(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	key := make([]byte, secret.KeySize)
	_, _ = rand.Read(key)
	kr, err := secret.NewKeyring(key)
	if err != nil {
		tb.Fatalf("apitest: keyring: %v", err)
	}
	st, err := sqlite.Open(ctx, filepath.Join(tb.TempDir(), sqlite.FileName))
	if err != nil {
		tb.Fatalf("apitest: open store: %v", err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	m := metrics.New()
	svc, err := app.New(app.Config{Store: st, Keyring: kr, Logger: logger, Metrics: m, DialTimeout: opts.DialTimeout,
		TracerProvider: opts.TracerProvider})
	if err != nil {
		tb.Fatalf("apitest: app: %v", err)
	}
	sessions, err := auth.NewSessions(kr.DeriveKey("web sessions"), nil)
	if err != nil {
		tb.Fatalf("apitest: sessions: %v", err)
	}
	var q *queue.Queue
	if opts.Queue {
		q = startQueue(tb, st, svc, logger, opts.AllowCommands, opts.HealthCheckPoll, opts.TracerProvider)
	}
	done := make(chan struct{})
	a := api.New(api.Config{App: svc, Sessions: sessions, Metrics: m, Logger: logger, MaxRows: opts.MaxRows,
		Done: done, StreamPoll: opts.StreamPoll, StreamAuthCheck: opts.StreamAuthCheck, MaxStreamsPerToken: opts.MaxStreamsPerToken,
		StreamKeepalive: opts.StreamKeepalive})
	srv, err := server.New(server.Config{Addr: "127.0.0.1:0", Faces: []server.Registrar{a}, Ready: svc.Ready,
		Metrics: m, Logger: logger, WriteTimeout: opts.WriteTimeout, TracerProvider: opts.TracerProvider})
	if err != nil {
		tb.Fatalf("apitest: server: %v", err)
	}
	hs := httptest.NewServer(srv.Handler())
	tb.Cleanup(hs.Close)
	// Cleanups run last-in first-out: event streams end before Close
	// waits for requests in flight.
	tb.Cleanup(func() { close(done) })
	admin, err := svc.BootstrapAdmin(ctx)
	if err != nil || admin == nil {
		tb.Fatalf("apitest: bootstrap admin: %v", err)
	}
	return &Server{URL: hs.URL, App: svc, API: a, Sessions: sessions, Store: st, Queue: q, AdminToken: admin.Token, logs: logs}
}

// startQueue starts a job queue on the store, with short heartbeats, and
// connects it to svc. It stops when the test ends.
func startQueue(tb testing.TB, st *sqlite.Store, svc *app.Service, logger *slog.Logger, allowed []string, healthPoll time.Duration,
	tp trace.TracerProvider) *queue.Queue {
	tb.Helper()
	qdb, err := st.OpenQueueDB()
	if err != nil {
		tb.Fatalf("apitest: queue database: %v", err)
	}
	var healthChecks func(context.Context) (int, error)
	if healthPoll > 0 {
		healthChecks = svc.RunHealthChecks
	}
	allow, err := jobs.NewAllowlist(allowed)
	if err != nil {
		_ = qdb.Close()
		tb.Fatalf("apitest: allowed commands: %v", err)
	}
	q, err := queue.New(queue.Config{Store: st, Backend: queue.Backend{SQLite: qdb}, Commands: jobs.CommandPolicy{Allow: allow},
		Open:              func(ctx context.Context, name string) (jobs.Conn, error) { return svc.Open(ctx, name) },
		HeartbeatInterval: 500 * time.Millisecond, LostAfter: 3 * time.Second, ReapInterval: time.Second,
		ScheduleSync: time.Second, KillGrace: 2 * time.Second, ShutdownGrace: time.Second,
		Logger: logger.With("component", "queue"), RunEnded: svc.RunEnded, Scheduled: svc.AuditScheduledRun,
		HealthChecks: healthChecks, HealthCheckPoll: healthPoll, TracerProvider: tp})
	if err != nil {
		_ = qdb.Close()
		tb.Fatalf("apitest: queue: %v", err)
	}
	if err := q.Start(context.Background()); err != nil {
		_ = qdb.Close()
		tb.Fatalf("apitest: start queue: %v", err)
	}
	tb.Cleanup(func() {
		if err := q.Stop(context.Background()); err != nil {
			tb.Logf("apitest: stop queue: %v", err)
		}
		_ = qdb.Close()
	})
	svc.SetQueue(q)
	return q
}

// Token creates a token with a role and returns it.
func (s *Server) Token(tb testing.TB, name string, role auth.Role) *app.NewToken {
	tb.Helper()
	nt, err := s.App.CreateToken(context.Background(), name, role)
	if err != nil {
		tb.Fatalf("apitest: create token %s: %v", name, err)
	}
	return nt
}

// Client returns an API client authenticated with token.
func (s *Server) Client(tb testing.TB, token string, opts ...client.Option) *client.Client {
	tb.Helper()
	c, err := client.New(s.URL, token, opts...)
	if err != nil {
		tb.Fatalf("apitest: client: %v", err)
	}
	return c
}

// Session starts a web session (as signing in does) for the token ID and
// returns its cookie value and CSRF token.
func (s *Server) Session(tb testing.TB, tokenID string) (cookie, csrf string) {
	tb.Helper()
	id, err := s.App.StartSession(context.Background(), tokenID, time.Hour)
	if err != nil {
		tb.Fatalf("apitest: start session: %v", err)
	}
	cookie = s.Sessions.Issue(id, time.Hour)
	return cookie, s.Sessions.CSRFToken(cookie)
}

// Logs returns everything the server logged so far (JSON lines).
func (s *Server) Logs() string { return s.logs.String() }

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
