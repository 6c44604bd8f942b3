// Package apitest starts a real pgrelay API server on loopback for tests:
// the parts assembled by daemon.New, as `pgrelay serve` assembles them
// (without the web UI), on a SQLite store in a temporary directory, served
// on a loopback listener by httptest. It also captures the server's log so
// that tests can check what was (and was not) logged. With Options.Queue it
// also works job runs, with a job queue on the same store as `pgrelay serve`
// starts one.
package apitest

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/pgrelay/pgrelay/client"
	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/daemon"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/metrics"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/remote"
	"github.com/pgrelay/pgrelay/internal/requestid"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
	"github.com/pgrelay/pgrelay/internal/testenv"
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
	// Keyring holds the master key the server seals secrets with.
	Keyring *secret.Keyring

	logs *testenv.LogBuffer
}

// Start starts a server that stops when the test ends.
func Start(tb testing.TB, opts Options) *Server {
	tb.Helper()
	ctx := context.Background()
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 5 * time.Second
	}
	logs := &testenv.LogBuffer{}
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
	var jc *daemon.JobsConfig
	if opts.Queue {
		allow, err := jobs.NewAllowlist(opts.AllowCommands)
		if err != nil {
			tb.Fatalf("apitest: allowed commands: %v", err)
		}
		jc = &daemon.JobsConfig{Commands: jobs.CommandPolicy{Allow: allow},
			HeartbeatInterval: 500 * time.Millisecond, LostAfter: 3 * time.Second, ReapInterval: time.Second,
			ScheduleSync: time.Second, KillGrace: 2 * time.Second, ShutdownGrace: time.Second,
			HealthChecks: opts.HealthCheckPoll > 0, HealthCheckPoll: opts.HealthCheckPoll}
	}
	d, err := daemon.New(ctx, daemon.Config{Store: st, Keyring: kr, Logger: logger, Metrics: metrics.New(), DialTimeout: opts.DialTimeout,
		TracerProvider: opts.TracerProvider, Jobs: jc,
		HTTP: &daemon.HTTPConfig{Addr: "127.0.0.1:0", MaxRows: opts.MaxRows, StreamPoll: opts.StreamPoll, StreamAuthCheck: opts.StreamAuthCheck,
			MaxStreamsPerToken: opts.MaxStreamsPerToken, StreamKeepalive: opts.StreamKeepalive, WriteTimeout: opts.WriteTimeout}})
	if err != nil {
		tb.Fatalf("apitest: daemon: %v", err)
	}
	if err := d.Start(ctx); err != nil {
		tb.Fatalf("apitest: start: %v", err)
	}
	hs := httptest.NewServer(d.Handler())
	tb.Cleanup(hs.Close)
	// Cleanups run last-in first-out: event streams end and the queue
	// stops before Close waits for requests in flight.
	tb.Cleanup(func() {
		if err := d.Stop(context.Background()); err != nil {
			tb.Logf("apitest: stop: %v", err)
		}
	})
	svc := d.App()
	admin, err := svc.BootstrapAdmin(ctx)
	if err != nil || admin == nil {
		tb.Fatalf("apitest: bootstrap admin: %v", err)
	}
	return &Server{URL: hs.URL, App: svc, API: d.API(), Sessions: d.Sessions(), Store: st, Queue: d.Queue(), AdminToken: admin.Token, Keyring: kr, logs: logs}
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
func (s *Server) Client(tb testing.TB, token string, opts ...client.Option) *remote.Client {
	tb.Helper()
	c, err := remote.Dial(s.URL, token, opts...)
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
