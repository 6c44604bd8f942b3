// Package queue runs pgrelay's job runs on River: a run is a River job
// worked by at most --max-runs workers per process; schedules are River
// periodic jobs; heartbeats and a reaper make sure no run stays "running"
// after its process died. The same code runs on the embedded SQLite store
// (River's SQLite driver) and on a shared PostgreSQL store (River's pgx
// driver), where several processes take runs from one queue and a LISTEN
// brings each the cancel requests made through the others.
package queue

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/riverdriver/riversqlite"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/riverqueue/river/rivertype"
	"github.com/riverqueue/rivercontrib/otelriver"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/postgres"
	"github.com/pgrelay/pgrelay/internal/tracing"
)

// Defaults.
const (
	DefaultMaxRuns           = 4
	DefaultHeartbeatInterval = 5 * time.Second
	DefaultLostAfter         = 30 * time.Second
	DefaultReapInterval      = 10 * time.Second
	DefaultScheduleSync      = 15 * time.Second
	DefaultKillGrace         = 10 * time.Second
	// DefaultShutdownGrace is how long a stopping process lets runs finish
	// before it stops them.
	DefaultShutdownGrace = 10 * time.Second
)

// Backend is where River keeps its queue: exactly one of SQLite or
// Postgres.
type Backend struct {
	// SQLite is a handle on the embedded store's file (one connection).
	// A run's River job is inserted in the store's transaction that
	// saves the run, so it must be the same file.
	SQLite *sql.DB
	// Postgres is the shared store's pool (the store's database, where a
	// run's River job is inserted in the transaction that saves the run).
	Postgres *pgxpool.Pool
}

// Config configures a Queue.
type Config struct {
	Store   store.Store
	Backend Backend
	// Open opens a connection by name for a run.
	Open jobs.Opener
	// Commands is which programs command steps may run, as which user and
	// where (serve's --allow-command, --run-as, --allow-workdir); the zero
	// value runs no program.
	Commands jobs.CommandPolicy
	// MaxRuns is how many runs this process works at once.
	MaxRuns int
	// Worker names this process in runs (default host:pid).
	Worker            string
	HeartbeatInterval time.Duration
	// LostAfter is how long a running run may go without a heartbeat
	// before it is declared lost.
	LostAfter    time.Duration
	ReapInterval time.Duration
	ScheduleSync time.Duration
	KillGrace    time.Duration
	// StopGrace is how long a stopped run's backends have to end after
	// their statements were cancelled before they are terminated; 0 is
	// jobs.DefaultStopGrace.
	StopGrace time.Duration
	// CountCancels, when set, counts what was done to ended runs'
	// backends by outcome (pgrelay_server_cancels_total).
	CountCancels  func(outcome string, n int)
	ShutdownGrace time.Duration
	Logger        *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// LogLimit is how many bytes of text a run's log keeps (see
	// jobs.LogLimit); default jobs.DefaultLogLimit.
	LogLimit int64
	// RunRetention deletes runs that ended longer ago than this, with
	// their logs, at start and every PruneInterval; 0 keeps them forever.
	RunRetention time.Duration
	// PruneInterval is how often runs past RunRetention are deleted;
	// default DefaultPruneInterval.
	PruneInterval time.Duration
	// Scheduled, when set, is told of each run a schedule queued (or
	// failed to): the audit log's record of it.
	Scheduled func(ctx context.Context, job jobs.Job, r *jobs.Run, err error)
	// CaughtUp, when set, is told of each schedule catch-up (at a job
	// queue leader's start): the jobs whose missed firing it queued.
	CaughtUp func(queued []string)
	// RunEnded, when set, is told of each run this process worked, when it
	// ends: how it ended and how long it ran (metrics, connection health).
	RunEnded func(ctx context.Context, job jobs.Job, runID string, trigger jobs.Trigger, res jobs.Result, d time.Duration)
	// HealthChecks, when set, runs the connections' scheduled tests: a
	// periodic job calls it every HealthCheckPoll, on one process of those
	// that set it among those sharing the store (River's leader enqueues
	// the job, whether it sets HealthChecks or not).
	HealthChecks func(ctx context.Context) (int, error)
	// HealthCheckPoll is how often HealthChecks runs; default
	// DefaultHealthCheckPoll.
	HealthCheckPoll time.Duration
	// TracerProvider, when set, traces each run (a span for the run, its
	// steps, statements and commands, under River's work span) and the
	// River jobs (River's OpenTelemetry middleware); nil is off.
	TracerProvider trace.TracerProvider
}

// DefaultHealthCheckPoll is how often the connections' scheduled tests are
// looked for.
const DefaultHealthCheckPoll = 30 * time.Second

// HealthArgs is the periodic River job that runs the connections'
// scheduled tests.
type HealthArgs struct{}

// Kind implements river.JobArgs.
func (HealthArgs) Kind() string { return "pgrelay_health_checks" }

// healthQueue is the River queue of health check jobs: one at a time, apart
// from the runs'.
const healthQueue = "pgrelay_health"

type healthWorker struct {
	river.WorkerDefaults[HealthArgs]
	q *Queue
}

// Work runs the scheduled tests that are due.
func (w *healthWorker) Work(ctx context.Context, _ *river.Job[HealthArgs]) error {
	if w.q.cfg.HealthChecks == nil {
		return nil // not worked here: this process has no health checks queue
	}
	n, err := w.q.cfg.HealthChecks(ctx)
	if err != nil {
		w.q.cfg.Logger.WarnContext(ctx, "health checks", "error", err)
		return nil
	}
	if n > 0 {
		w.q.cfg.Logger.DebugContext(ctx, "health checks ran", "connections", n)
	}
	return nil
}

type riverClient interface {
	Insert(ctx context.Context, args river.JobArgs, opts *river.InsertOpts) (*rivertype.JobInsertResult, error)
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
	StopAndCancel(ctx context.Context) error
	PeriodicJobs() *river.PeriodicJobBundle
}

// scheduleReg is a job's schedule as a process registered it: its spec,
// and when the job was saved (an @every interval counts from then).
type scheduleReg struct {
	spec  string
	saved time.Time
}

// Queue enqueues and works runs.
type Queue struct {
	cfg     Config
	client  riverClient
	migrate func(ctx context.Context) error
	runner  *jobs.Runner
	// localRunner is runner for RunLocal: it waits for a cleanup that
	// had to wait for the server, as the process exits with the run.
	localRunner *jobs.Runner

	tracer trace.Tracer

	// orphanDB reads River's jobs for the sweep of orphaned runs; orphans
	// are the runs the last sweep found queued with no job waiting (only
	// reap uses it).
	orphanDB orphanBackend
	orphans  map[string]string
	// insertRunTx inserts a run's River job in tx, the store's
	// transaction that saves the run (see Submit).
	insertRunTx func(ctx context.Context, tx any, runID string) error

	mu sync.Mutex
	// active are the runs working in this process: usually one execution
	// of a run, but a retry of a run that another process's reaper queued
	// again may be taken here while the lost attempt is still ending.
	active    map[string][]*activeRun
	schedules map[string]scheduleReg // by job name: the schedule registered
	// pending are the runs of this process whose cleanup is retried in
	// the background (their tunnel dropped), with the pending record
	// saved (the backends it waits to stop, the attempt they are of).
	pending map[string]jobs.Cleanup

	// storeTroubleAt is when this process last failed to read or write
	// the store (a reaper pass, a heartbeat, a run's outcome); reapedAt
	// when the reaper last listed the running runs, and reapHoldUntil
	// until when it leaves lost runs be after the store came back within
	// its reach (see Queue.holdReap). Guarded by mu.
	storeTroubleAt, reapedAt, reapHoldUntil time.Time

	stop chan struct{}
	// listener hears cancel requests made through other processes sharing
	// a PostgreSQL store, from Start until Stop has ended the runs (nil on
	// SQLite).
	listener *cancelListener
	// afterTake, when set (tests), is called by a worker right after it
	// took a run (saved it as running), before the run starts.
	afterTake func(id string)
	// afterReap, when set (tests), is called by the reaper right after it
	// resolved a lost run (failed it or queued it again), before it stops
	// the run's sessions.
	afterReap func(id string)
	// beforeOutcome, when set (tests), is called by a worker once its run
	// has ended, before it records the run's outcome.
	beforeOutcome func(id string)
	// stopped makes Stop's work happen once; a second Stop returns nil.
	stopped sync.Once
	wg      sync.WaitGroup
}

// activeRun is one execution of a run working in this process.
type activeRun struct {
	cancel context.CancelCauseFunc
	// check asks the run's heartbeat to come now (see Queue.check).
	check chan struct{}
	// stopTime is how long the run may take to end once cancelled
	// (jobs.Runner.StopTime).
	stopTime time.Duration
}

// RunArgs is the River job that works one run.
type RunArgs struct {
	RunID string `json:"run_id"`
}

// Kind implements river.JobArgs.
func (RunArgs) Kind() string { return "pgrelay_run" }

// ScheduleArgs is the periodic River job that queues a scheduled run.
type ScheduleArgs struct {
	Job string `json:"job"`
	// Schedule is the spec that fired: a process registered it when the
	// job had it, and queues no run when the job no longer has it (changed
	// or removed through another process since; empty in jobs queued
	// before this field existed).
	Schedule string `json:"schedule,omitempty"`
	// At is the instant of the firing (cron or @every): a firing is
	// queued once (a unique insert by these arguments), whether by the
	// leader's periodic job or by the catch-up of a new leader (see
	// catchUp). Zero for schedules of firings less than a minute apart.
	At time.Time `json:"at,omitzero"`
}

// Kind implements river.JobArgs.
func (ScheduleArgs) Kind() string { return "pgrelay_schedule" }

// New builds a queue (not started).
func New(cfg Config) (*Queue, error) {
	if cfg.Store == nil || cfg.Open == nil {
		return nil, errors.New("queue: store and opener are required")
	}
	if (cfg.Backend.SQLite == nil) == (cfg.Backend.Postgres == nil) {
		return nil, errors.New("queue: give exactly one backend (SQLite or Postgres)")
	}
	if cfg.MaxRuns <= 0 {
		cfg.MaxRuns = DefaultMaxRuns
	}
	if cfg.Worker == "" {
		host, _ := os.Hostname()
		cfg.Worker = host + ":" + strconv.Itoa(os.Getpid())
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.LostAfter <= 0 {
		cfg.LostAfter = DefaultLostAfter
	}
	if cfg.ReapInterval <= 0 {
		cfg.ReapInterval = DefaultReapInterval
	}
	if cfg.ScheduleSync <= 0 {
		cfg.ScheduleSync = DefaultScheduleSync
	}
	if cfg.KillGrace <= 0 {
		cfg.KillGrace = DefaultKillGrace
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.LogLimit <= 0 {
		cfg.LogLimit = jobs.DefaultLogLimit
	}
	if cfg.PruneInterval <= 0 {
		cfg.PruneInterval = DefaultPruneInterval
	}
	q := &Queue{cfg: cfg, active: map[string][]*activeRun{}, schedules: map[string]scheduleReg{},
		pending: map[string]jobs.Cleanup{}, stop: make(chan struct{})}
	// Every field Run would default is set here: runs of this runner start
	// concurrently, and Stop reads them (StopTime).
	q.runner = &jobs.Runner{Open: cfg.Open, Commands: cfg.Commands, InterruptGrace: jobs.DefaultInterruptGrace,
		KillGrace: cfg.KillGrace, Logger: cfg.Logger,
		StopGrace: cfg.StopGrace, CountCancels: cfg.CountCancels}
	q.tracer = tracing.Tracer(cfg.TracerProvider)
	var middleware []rivertype.Middleware
	if cfg.TracerProvider != nil {
		q.runner.Tracer = q.tracer
		middleware = append(middleware, otelriver.NewMiddleware(&otelriver.MiddlewareConfig{
			TracerProvider: cfg.TracerProvider, MeterProvider: noopmetric.NewMeterProvider(),
			EnableTracePropagation: true, EnableWorkSpanJobKindSuffix: true}))
	}

	local := *q.runner
	local.WaitCleanup = true
	q.localRunner = &local
	workers := river.NewWorkers()
	river.AddWorker(workers, &runWorker{q: q})
	river.AddWorker(workers, &scheduleWorker{q: q})
	queues := map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: cfg.MaxRuns}}
	if cfg.HealthCheckPoll <= 0 {
		cfg.HealthCheckPoll = DefaultHealthCheckPoll
		q.cfg.HealthCheckPoll = cfg.HealthCheckPoll
	}
	// Every process queues the periodic health job (only River's leader
	// does, and the leader may be a process without health checks); only
	// those with HealthChecks work its queue.
	river.AddWorker(workers, &healthWorker{q: q})
	river.AddWorker(workers, &catchUpWorker{q: q})
	if cfg.HealthChecks != nil {
		queues[healthQueue] = river.QueueConfig{MaxWorkers: 1}
	}
	periodic := []*river.PeriodicJob{river.NewPeriodicJob(river.PeriodicInterval(cfg.HealthCheckPoll),
		func() (river.JobArgs, *river.InsertOpts) {
			return HealthArgs{}, &river.InsertOpts{Queue: healthQueue, UniqueOpts: river.UniqueOpts{ByQueue: true,
				ByState: []rivertype.JobState{rivertype.JobStateAvailable, rivertype.JobStatePending,
					rivertype.JobStateRunning, rivertype.JobStateScheduled, rivertype.JobStateRetryable}}}
		}, &river.PeriodicJobOpts{RunOnStart: true, ID: "health-checks"}), catchUpJob()}
	rc := &river.Config{
		Queues:               queues,
		PeriodicJobs:         periodic,
		Middleware:           middleware,
		Workers:              workers,
		JobTimeout:           -1, // runs have their own time limit
		RescueStuckJobsAfter: jobs.MaxTimeout + time.Hour,
		MaxAttempts:          1, // a run is retried only when its worker is lost (see reap)
		Logger:               riverLogger(cfg.Logger),
		FetchPollInterval:    500 * time.Millisecond,
		ID:                   sanitizeID(cfg.Worker),
	}
	var err error
	if db := cfg.Backend.SQLite; db != nil {
		drv := riversqlite.New(db)
		var c *river.Client[*sql.Tx]
		c, err = river.NewClient(drv, rc)
		q.client, q.orphanDB = c, sqliteOrphans(db, c)
		q.insertRunTx = func(ctx context.Context, tx any, runID string) error {
			// The store's own handle on the same file: River's tables
			// are beside the runs'.
			stx, ok := tx.(*sql.Tx)
			if !ok {
				return fmt.Errorf("the store's transaction is a %T, not the *sql.Tx of River's SQLite driver", tx)
			}
			_, err := c.InsertTx(ctx, stx, RunArgs{RunID: runID}, nil)
			return err
		}
		q.migrate = func(ctx context.Context) error {
			m, err := rivermigrate.New(drv, nil)
			if err != nil {
				return err
			}
			_, err = m.Migrate(ctx, rivermigrate.DirectionUp, nil)
			return err
		}
	} else {
		pool := cfg.Backend.Postgres
		drv := riverpgxv5.New(pool)
		var c *river.Client[pgx.Tx]
		c, err = river.NewClient(drv, rc)
		q.client, q.orphanDB = c, pgOrphans(pool, c)
		q.insertRunTx = func(ctx context.Context, tx any, runID string) error {
			ptx, ok := tx.(pgx.Tx)
			if !ok {
				return fmt.Errorf("the store's transaction is a %T, not the pgx.Tx of River's PostgreSQL driver", tx)
			}
			_, err := c.InsertTx(ctx, ptx, RunArgs{RunID: runID}, nil)
			return err
		}
		q.migrate = func(ctx context.Context) error {
			return postgres.WithAdvisoryLock(ctx, pool, MigrationLockKey, func(*pgxpool.Conn) error {
				m, err := rivermigrate.New(drv, nil)
				if err != nil {
					return err
				}
				_, err = m.Migrate(ctx, rivermigrate.DirectionUp, nil)
				return err
			})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("queue: %w", err)
	}
	return q, nil
}

// MigrationLockKey is the key of the session-level advisory lock held
// while River's tables are migrated on a shared PostgreSQL store: processes
// that start together would otherwise apply the same migration at once and
// fail. It is the bytes of "pgriver".
const MigrationLockKey int64 = 0x70677269766572

func sanitizeID(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s) && len(out) < 100; i++ {
		c := s[i]
		if c == ':' || c == '.' || c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
			out = append(out, c)
		} else {
			out = append(out, '_')
		}
	}
	return string(out)
}

// Worker names this process.
func (q *Queue) Worker() string { return q.cfg.Worker }

// Start migrates River's tables, starts working runs, the reaper and the
// schedule sync.
func (q *Queue) Start(ctx context.Context) error {
	if err := q.migrate(ctx); err != nil {
		return fmt.Errorf("queue: migrate: %w", err)
	}
	if err := q.SyncSchedules(ctx); err != nil {
		return err
	}
	// River runs every job with a context inheriting from the one it is
	// started with, and cancelling it cancels them all at once. The
	// caller's ends when the process is told to stop (serve's is the one
	// SIGINT and SIGTERM cancel): runs then get the shutdown grace of Stop,
	// which stops River itself, so they must not inherit it.
	if err := q.client.Start(context.WithoutCancel(ctx)); err != nil {
		return fmt.Errorf("queue: start: %w", err)
	}
	q.listener = q.listenCancels(context.WithoutCancel(ctx))
	// Resolve runs a previous process left behind, at once.
	q.reap(ctx)
	q.wg.Add(1)
	go q.loop(context.WithoutCancel(ctx))
	q.startPruning(context.WithoutCancel(ctx))
	return nil
}

// Stop stops taking runs, lets running ones finish for the shutdown grace
// period, then stops them (they fail with a reason naming the shutdown)
// and waits, up to their stop time (jobs.Runner.StopTime), until they
// have ended their commands and their statements on the server. Only the
// first call does so; later ones return nil.
func (q *Queue) Stop(ctx context.Context) (err error) {
	q.stopped.Do(func() { err = q.stop1(ctx) })
	return err
}

// stop1 is Stop's work.
func (q *Queue) stop1(ctx context.Context) error {
	close(q.stop)
	q.wg.Wait()
	defer q.abandonCleanups(context.WithoutCancel(ctx))
	// Cancel requests reach the runs until they have ended.
	defer q.listener.Stop()
	sctx, cancel := context.WithTimeout(ctx, q.cfg.ShutdownGrace)
	defer cancel()
	err := q.client.Stop(sctx)
	if err == nil {
		return nil
	}
	// The runs stopped now end their commands and their statements on the
	// server before they return, which takes up to their stop time: the
	// process must not exit before (it would leave both running, and the
	// runs recorded as running).
	var within time.Duration
	q.mu.Lock()
	for _, as := range q.active {
		for _, a := range as {
			a.cancel(errShutdown)
			within = max(within, a.stopTime)
		}
	}
	q.mu.Unlock()
	cctx, cancel2 := context.WithTimeout(context.WithoutCancel(ctx), within+5*time.Second)
	defer cancel2()
	if err := q.client.StopAndCancel(cctx); err != nil {
		return fmt.Errorf("queue: stop: %w", err)
	}
	return nil
}

// errShutdown stops the runs still going when the process stops: they
// fail, and say nothing of their connections' health.
var errShutdown = &jobs.InterruptedError{Reason: "the pgrelay process running it shut down"}

// abandonCleanups records, for each run whose cleanup this process was
// still retrying, that it stopped trying: the retries end with the
// process, and a record left pending would promise what nobody does.
func (q *Queue) abandonCleanups(ctx context.Context) {
	q.mu.Lock()
	pending := q.pending
	q.pending = map[string]jobs.Cleanup{}
	q.mu.Unlock()
	for id, p := range pending {
		c := jobs.Cleanup{Status: jobs.CleanupFailed, Remaining: p.Remaining, UpdatedAt: q.cfg.Now().UTC(),
			RunAttempt: p.RunAttempt}
		c.Summarize()
		c.Message = "pgrelay shut down before it could reach the server again to stop the run's statements: " + c.Message +
			": check pg_stat_activity (SELECT pg_cancel_backend(pid))"
		q.recordCleanup(ctx, id, c)
	}
}

func (q *Queue) loop(ctx context.Context) {
	defer q.wg.Done()
	reap := time.NewTicker(q.cfg.ReapInterval)
	defer reap.Stop()
	sync := time.NewTicker(q.cfg.ScheduleSync)
	defer sync.Stop()
	for {
		select {
		case <-q.stop:
			return
		case <-reap.C:
			q.reap(ctx)
		case <-sync.C:
			if err := q.SyncSchedules(ctx); err != nil {
				q.cfg.Logger.WarnContext(ctx, "schedule sync failed", "error", err)
			}
		}
	}
}

// Enqueue queues a run (already saved as queued) for a worker.
func (q *Queue) Enqueue(ctx context.Context, runID string) error {
	if _, err := q.client.Insert(ctx, RunArgs{RunID: runID}, nil); err != nil {
		return fmt.Errorf("enqueue run %s: %w", runID, err)
	}
	return nil
}

// Cancel stops a run at once when it works in this process. On a PostgreSQL
// store the process working the run hears of the request recorded in the
// store at once (listenCancels); its next heartbeat reads it in any case.
func (q *Queue) Cancel(runID string, cause error) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, a := range q.active[runID] {
		a.cancel(cause)
	}
	return len(q.active[runID]) > 0
}

// addActive enters a among the executions of run id in this process.
func (q *Queue) addActive(id string, a *activeRun) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.active[id] = append(q.active[id], a)
}

// removeActive removes a, and only a, from the executions of run id in
// this process: another one (the retry of an attempt still ending) stays.
func (q *Queue) removeActive(id string, a *activeRun) {
	q.mu.Lock()
	defer q.mu.Unlock()
	as := slices.DeleteFunc(q.active[id], func(b *activeRun) bool { return b == a })
	if len(as) == 0 {
		delete(q.active, id)
		return
	}
	q.active[id] = as
}

// SyncSchedules makes River's periodic jobs match the jobs' schedules.
func (q *Queue) SyncSchedules(ctx context.Context) error {
	recs, err := q.cfg.Store.ListJobs(ctx)
	if err != nil {
		return fmt.Errorf("sync schedules: %w", err)
	}
	// A job's schedule is registered again when its spec changes, and
	// when the job is saved again: an @every interval counts from then.
	want := map[string]scheduleReg{}
	for _, r := range recs {
		if r.Job.Schedule != "" {
			want[r.Job.Name] = scheduleReg{spec: r.Job.Schedule, saved: r.UpdatedAt}
		}
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	pj := q.client.PeriodicJobs()
	for name, reg := range q.schedules {
		if w, ok := want[name]; !ok || w.spec != reg.spec || !w.saved.Equal(reg.saved) {
			pj.RemoveByID("schedule:" + name)
			delete(q.schedules, name)
		}
	}
	for name, reg := range want {
		if _, ok := q.schedules[name]; ok {
			continue
		}
		spec := reg.spec
		sched, err := jobs.ScheduleFor(spec, reg.saved)
		if err != nil {
			q.cfg.Logger.WarnContext(ctx, "job has an invalid schedule", "job", name, "error", err)
			continue
		}
		jobName, jobSpec := name, spec
		if _, err := pj.AddSafely(river.NewPeriodicJob(sched, func() (river.JobArgs, *river.InsertOpts) {
			args := ScheduleArgs{Job: jobName, Schedule: jobSpec}
			// The instant this firing is for (the enqueuer calls this
			// as it passes), so that a new leader's catch-up does not
			// queue it again.
			if at, ok := firingInstant(sched, time.Now()); ok {
				args.At = at.UTC()
			}
			return args, scheduleInsertOpts(args)
		}, &river.PeriodicJobOpts{ID: "schedule:" + name})); err != nil {
			return fmt.Errorf("sync schedules: add %s: %w", name, err)
		}
		q.schedules[name] = reg
	}
	return nil
}
