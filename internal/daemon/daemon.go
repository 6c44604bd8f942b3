// Package daemon is pgrelay's composition root: the one place that
// assembles the use cases on an opened store and keyring (app.Connector,
// the job queue, app.Service) and, for a server, the faces (REST API, web
// UI) and the HTTP server. `pgrelay serve`, a local `pgrelay job run`,
// `pgrelay exec`, every other local command and the test stacks of the
// API and the web UI all build it, so tests exercise the production
// wiring.
//
// The parts are built in dependency order, so that none is patched in
// afterwards: the Connector (which opens saved connections) first, the
// queue on the Connector's Open, the Service on the Connector and the
// queue, then the faces on the Service.
package daemon

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/pgrelay/pgrelay/internal/api"
	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/egress"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/metrics"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/server"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/postgres"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
	"github.com/pgrelay/pgrelay/internal/web"
)

// Config configures a Daemon. It is plain data: the caller opens the
// store and the keyring (the CLI from its data dir and flags, tests on a
// temporary directory) and says which parts it wants.
type Config struct {
	// Store is the opened store: *sqlite.Store or *postgres.Store (the
	// job queue keeps its own tables in it). Required. The caller closes
	// it after Stop.
	Store store.Store
	// Keyring seals and opens the store's secrets. Required.
	Keyring *secret.Keyring
	// Logger receives every part's log; default discards.
	Logger *slog.Logger
	// Metrics receives tunnel, test, request and run metrics; nil has
	// none, except with HTTP, whose /metrics gets a new set.
	Metrics *metrics.Metrics
	// HostKeyPolicy is --host-key-policy (default tofu).
	HostKeyPolicy app.HostKeyPolicy
	// Network is the policy on the addresses connections may dial; nil is
	// egress's default.
	Network *egress.Policy
	// DialTimeout bounds connecting to a bastion; 0 is app's default.
	DialTimeout time.Duration
	// Credentials configures token credentials (auth kinds command,
	// lakebase and alloydb-iam): the command allowlist among them.
	Credentials app.CredentialConfig
	// SSH configures SSH hops: the server's known_hosts and which
	// programs proxy commands may run. Its zero ProxyCommands runs none:
	// a server gives its command allowlist, a local command AnyProgram.
	SSH app.SSHConfig
	// TracerProvider receives the spans of the use cases, the job queue
	// and the HTTP server; nil is off.
	TracerProvider trace.TracerProvider
	// AuditRetention deletes audit records older than this, at Start and
	// hourly until Stop, keeping the hash chain verifiable; 0 keeps them.
	AuditRetention time.Duration

	// Jobs builds the job queue on the store; nil has none (queuing a run
	// then fails with app.ErrNoQueue). Start starts its workers.
	Jobs *JobsConfig
	// HTTP builds the HTTP server with the REST API (and the web UI);
	// nil has none.
	HTTP *HTTPConfig
}

// JobsConfig configures the job queue. Zero durations and counts are the
// queue's defaults.
type JobsConfig struct {
	// Commands is which programs command steps may run, as which user and
	// where; the zero value runs no program.
	Commands          jobs.CommandPolicy
	MaxRuns           int
	HeartbeatInterval time.Duration
	LostAfter         time.Duration
	ReapInterval      time.Duration
	ScheduleSync      time.Duration
	KillGrace         time.Duration
	ShutdownGrace     time.Duration
	// LogLimit is how many bytes of text a run's log keeps.
	LogLimit int64
	// StopGrace is how long a stopped run's statements have to end after
	// their cancel request before their sessions are terminated, for jobs
	// that set none; 0 is jobs.DefaultStopGrace.
	StopGrace time.Duration
	// RunRetention deletes runs ended longer ago; 0 keeps them.
	RunRetention time.Duration
	// HealthChecks runs the connections' scheduled tests (those with a
	// health_check_interval) in this process's queue: one process of
	// those sharing the store runs them at a time.
	HealthChecks bool
	// HealthCheckPoll is how often due scheduled tests are looked for; 0
	// is the queue's default.
	HealthCheckPoll time.Duration
}

// HTTPConfig configures the HTTP server and its faces.
type HTTPConfig struct {
	// Addr is the listen address; default server's (127.0.0.1:8080).
	Addr string
	// TLSCertFile and TLSKeyFile serve HTTPS when both are set.
	TLSCertFile, TLSKeyFile string
	// PublicURL is the URL people reach the server at through a proxy.
	PublicURL *url.URL
	// WebUI mounts the web UI beside the API.
	WebUI bool
	// MetricsAddr serves /metrics on a listener of its own.
	MetricsAddr string
	// MetricsToken is the bearer token /metrics requires, if any.
	MetricsToken secret.Value
	// MaxConnections bounds each listener's connections; 0 is no limit.
	MaxConnections int
	// WriteTimeout bounds writing a response; 0 is the server's default.
	WriteTimeout time.Duration
	// MaxRows is the API's query row limit; 0 is the API's default.
	MaxRows int
	// MaxStreamsPerToken bounds a token's run event streams; 0 is the
	// API's default.
	MaxStreamsPerToken int
	// StreamPoll, StreamAuthCheck and StreamKeepalive tune the API's run
	// event streams; 0 is the API's default.
	StreamPoll, StreamAuthCheck, StreamKeepalive time.Duration
}

// ConfigError is a Config that cannot be served (a bad address, TLS
// files, limits): bad input rather than a failure.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }

// Unwrap returns the cause.
func (e *ConfigError) Unwrap() error { return e.Err }

// WithDefaults returns a copy of the config with its defaults filled in.
func (c Config) WithDefaults() Config {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.HTTP != nil && c.Metrics == nil {
		c.Metrics = metrics.New()
	}
	if c.SSH.WarmTunnels > 0 && c.SSH.WarmPerConnection == 0 {
		// As many kept tunnels per connection as runs may run at once.
		c.SSH.WarmPerConnection = queue.DefaultMaxRuns
		if c.Jobs != nil && c.Jobs.MaxRuns > 0 {
			c.SSH.WarmPerConnection = c.Jobs.MaxRuns
		}
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Store == nil:
		return errors.New("daemon: a store is required")
	case c.Keyring == nil:
		return errors.New("daemon: a keyring is required")
	}
	if c.Jobs != nil {
		switch c.Store.(type) {
		case *sqlite.Store, *postgres.Store:
		default:
			return fmt.Errorf("daemon: the job queue needs a SQLite or PostgreSQL store, not %T", c.Store)
		}
	}
	return nil
}

// Daemon is pgrelay's assembled parts. Build it with New, start its
// background work with Start, and end it with Stop.
type Daemon struct {
	cfg       Config
	connector *app.Connector
	app       *app.Service
	queue     *queue.Queue
	queueDB   *sql.DB
	sessions  *auth.Sessions
	api       *api.API
	server    *server.Server

	// done ends the API's run event streams: when the context given to
	// New ends, or at Stop.
	done     chan struct{}
	doneOnce sync.Once
	started  bool
	// stopBackground ends the work Start began outside the queue (audit
	// retention); background is done when it has returned.
	stopBackground context.CancelFunc
	background     sync.WaitGroup
	stopOnce       sync.Once
	stopErr        error
}

// New assembles the parts on cfg's store and keyring: it checks that the
// keyring is the store's, builds the Connector, the job queue (not
// started) when cfg.Jobs is set, the Service, and with cfg.HTTP the API,
// the web UI and the HTTP server (not listening). The API's event streams
// end when ctx does (or at Stop), so that a graceful stop does not wait
// for the runs they follow.
func New(ctx context.Context, cfg Config) (*Daemon, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	d := &Daemon{cfg: cfg, done: make(chan struct{})}
	acfg := app.Config{Store: cfg.Store, Keyring: cfg.Keyring, Logger: cfg.Logger, Metrics: cfg.Metrics,
		HostKeyPolicy: cfg.HostKeyPolicy, Network: cfg.Network, DialTimeout: cfg.DialTimeout, Credentials: cfg.Credentials,
		SSH: cfg.SSH, TracerProvider: cfg.TracerProvider}
	var err error
	if d.connector, err = app.NewConnector(acfg); err != nil {
		return nil, err
	}
	if cfg.Jobs != nil {
		if err := d.buildQueue(); err != nil {
			return nil, err
		}
	}
	acfg.Connector = d.connector
	if d.queue != nil {
		acfg.Queue = d.queue
	}
	if d.app, err = app.New(acfg); err != nil {
		d.closeQueueDB()
		return nil, err
	}
	if err := d.app.CheckMasterKey(ctx); err != nil {
		d.closeQueueDB()
		return nil, err
	}
	if cfg.HTTP != nil {
		if err := d.buildHTTP(); err != nil {
			d.closeQueueDB()
			return nil, err
		}
	}
	go func() {
		select {
		case <-ctx.Done():
			d.endStreams()
		case <-d.done:
		}
	}()
	return d, nil
}

// buildQueue builds the job queue on the store's backend: the shared
// store's pool, or a second handle on the embedded SQLite file.
func (d *Daemon) buildQueue() error {
	jc := d.cfg.Jobs
	var backend queue.Backend
	switch st := d.cfg.Store.(type) {
	case *postgres.Store:
		backend.Postgres = st.Pool()
	case *sqlite.Store:
		db, err := st.OpenQueueDB()
		if err != nil {
			return err
		}
		d.queueDB = db
		backend.SQLite = db
	}
	var healthChecks func(context.Context) (int, error)
	if jc.HealthChecks {
		// The tests are the Service's, built after the queue; the queue
		// runs them only once started, when the Service is there.
		healthChecks = func(ctx context.Context) (int, error) { return d.app.RunHealthChecks(ctx) }
	}
	var countCancels func(string, int)
	if d.cfg.Metrics != nil {
		countCancels = d.cfg.Metrics.CountCancels
	}
	q, err := queue.New(queue.Config{Store: d.cfg.Store, Backend: backend, Open: d.connector.OpenConn,
		Commands: jc.Commands, MaxRuns: jc.MaxRuns,
		HeartbeatInterval: jc.HeartbeatInterval, LostAfter: jc.LostAfter, ReapInterval: jc.ReapInterval,
		ScheduleSync: jc.ScheduleSync, KillGrace: jc.KillGrace, ShutdownGrace: jc.ShutdownGrace,
		LogLimit: jc.LogLimit, RunRetention: jc.RunRetention, CountCancels: countCancels, StopGrace: jc.StopGrace,
		Scheduled: d.connector.AuditScheduledRun, RunEnded: d.connector.RunEnded, HealthChecks: healthChecks,
		HealthCheckPoll: jc.HealthCheckPoll, TracerProvider: d.cfg.TracerProvider, Logger: d.cfg.Logger})
	if err != nil {
		d.closeQueueDB()
		return err
	}
	d.queue = q
	return nil
}

// buildHTTP builds the faces and the HTTP server.
func (d *Daemon) buildHTTP() error {
	hc := d.cfg.HTTP
	sessions, err := auth.NewSessions(d.cfg.Keyring.DeriveKey("web sessions"), nil)
	if err != nil {
		return err
	}
	d.sessions = sessions
	faces := []server.Registrar{}
	cop, err := auth.OriginProtection(hc.PublicURL)
	if err != nil {
		return &ConfigError{err}
	}
	d.api = api.New(api.Config{App: d.app, Sessions: sessions, Metrics: d.cfg.Metrics, Logger: d.cfg.Logger, Done: d.done,
		OriginProtection: cop, MaxStreamsPerToken: hc.MaxStreamsPerToken, MaxRows: hc.MaxRows,
		StreamPoll: hc.StreamPoll, StreamAuthCheck: hc.StreamAuthCheck, StreamKeepalive: hc.StreamKeepalive})
	faces = append(faces, d.api)
	if hc.WebUI {
		ui, err := web.New(web.Config{App: d.app, Sessions: sessions, Logger: d.cfg.Logger,
			SecureCookies: hc.TLSCertFile != "", PublicURL: hc.PublicURL})
		if err != nil {
			return err
		}
		faces = append(faces, ui)
	}
	srv, err := server.New(server.Config{Addr: hc.Addr, TLSCertFile: hc.TLSCertFile, TLSKeyFile: hc.TLSKeyFile,
		Faces: faces, Ready: d.app.Ready, Metrics: d.cfg.Metrics, Logger: d.cfg.Logger,
		MetricsAddr: hc.MetricsAddr, MetricsToken: hc.MetricsToken, MaxConnections: hc.MaxConnections,
		WriteTimeout: hc.WriteTimeout, HSTS: hc.PublicURL != nil && hc.PublicURL.Scheme == "https",
		TracerProvider: d.cfg.TracerProvider})
	if err != nil {
		return &ConfigError{err}
	}
	d.server = srv
	return nil
}

// Start starts the background work: the job queue's workers, reaper,
// schedules and scheduled tests, and the audit log's retention. The HTTP
// server is started by its owner (Server().Listen and Serve), which
// prints where it listens.
func (d *Daemon) Start(ctx context.Context) error {
	if d.started {
		return nil
	}
	if d.queue != nil {
		// Run directories a killed process of this machine left behind
		// (its runs are resolved by the queue's reaper).
		jobs.SweepRunDirs(d.cfg.Logger)
		if err := d.queue.Start(ctx); err != nil {
			return fmt.Errorf("start job queue: %w", err)
		}
	}
	d.started = true
	if d.cfg.AuditRetention > 0 {
		bctx, cancel := context.WithCancel(ctx)
		d.stopBackground = cancel
		d.background.Add(1)
		go func() {
			defer d.background.Done()
			d.pruneAudit(bctx)
		}()
	}
	return nil
}

// auditPruneInterval is how often audit records past the retention are
// deleted.
const auditPruneInterval = time.Hour

// pruneAudit deletes audit records past the retention, now and hourly,
// until ctx ends.
func (d *Daemon) pruneAudit(ctx context.Context) {
	prune := func() {
		n, err := d.app.PruneAudit(ctx, d.cfg.AuditRetention)
		if err != nil {
			if ctx.Err() == nil {
				d.cfg.Logger.WarnContext(ctx, "audit retention", "error", err)
			}
		} else if n > 0 {
			d.cfg.Logger.InfoContext(ctx, "audit records deleted by retention", "count", n,
				"older_than", d.cfg.AuditRetention.String())
		}
	}
	prune()
	t := time.NewTicker(auditPruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			prune()
		}
	}
}

// Stop ends the event streams and stops the job queue, letting runs
// finish for its shutdown grace within ctx, then closes what New opened.
// It does not close the store. Calling it again returns the first
// result.
func (d *Daemon) Stop(ctx context.Context) error {
	d.stopOnce.Do(func() {
		d.endStreams()
		if d.stopBackground != nil {
			d.stopBackground()
			d.background.Wait()
		}
		if d.queue != nil && d.started {
			if err := d.queue.Stop(ctx); err != nil {
				d.stopErr = fmt.Errorf("stop job queue: %w", err)
			}
		}
		d.closeQueueDB()
		d.connector.Close()
	})
	return d.stopErr
}

func (d *Daemon) endStreams() { d.doneOnce.Do(func() { close(d.done) }) }

func (d *Daemon) closeQueueDB() {
	if d.queueDB != nil {
		_ = d.queueDB.Close()
		d.queueDB = nil
	}
}

// App returns the use cases.
func (d *Daemon) App() *app.Service { return d.app }

// Connector returns what opens saved connections.
func (d *Daemon) Connector() *app.Connector { return d.connector }

// Store returns the store.
func (d *Daemon) Store() store.Store { return d.cfg.Store }

// Queue returns the job queue, or nil without Config.Jobs.
func (d *Daemon) Queue() *queue.Queue { return d.queue }

// Server returns the HTTP server, or nil without Config.HTTP.
func (d *Daemon) Server() *server.Server { return d.server }

// Handler returns the HTTP server's handler (for httptest), or nil
// without Config.HTTP.
func (d *Daemon) Handler() http.Handler {
	if d.server == nil {
		return nil
	}
	return d.server.Handler()
}

// API returns the REST API, or nil without Config.HTTP.
func (d *Daemon) API() *api.API { return d.api }

// Sessions returns what signs the web sessions, or nil without
// Config.HTTP.
func (d *Daemon) Sessions() *auth.Sessions { return d.sessions }

// Metrics returns the metrics, or nil.
func (d *Daemon) Metrics() *metrics.Metrics { return d.cfg.Metrics }

// Logger returns the logger.
func (d *Daemon) Logger() *slog.Logger { return d.cfg.Logger }
