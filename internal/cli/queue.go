package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
)

// queueFlags are serve's flags for the job queue.
type queueFlags struct {
	maxRuns int
	// lostAfter is how long a running run may go without a heartbeat
	// before another process (or this one, after a restart) fails it.
	lostAfter time.Duration
	// reapInterval is how often this process looks for lost runs.
	reapInterval time.Duration
	// runLogLimit is how many bytes of text a run's log keeps.
	runLogLimit int64
	// runRetention is how long ended runs are kept (0: forever).
	runRetention time.Duration
	// healthChecks runs the connections' scheduled tests in this process
	// (serve --health-checks, on by default).
	healthChecks bool
}

// heartbeatInterval is how often a running run's heartbeat is refreshed:
// a third of lostAfter, at most the queue's default.
func (f queueFlags) heartbeatInterval() time.Duration {
	return min(queue.DefaultHeartbeatInterval, f.lostAfter/3)
}

func (f queueFlags) validate() error {
	switch {
	case f.maxRuns < 1 || f.maxRuns > 1000:
		return usagef("--max-runs %d: accepted is 1 to 1000", f.maxRuns)
	case f.lostAfter < time.Second || f.lostAfter > time.Hour:
		return usagef("--lost-after %s: accepted is 1s to 1h (e.g. 30s); use the same value in every process sharing a store", f.lostAfter)
	case f.reapInterval < 100*time.Millisecond || f.reapInterval > time.Hour:
		return usagef("--reap-interval %s: accepted is 100ms to 1h (e.g. 10s)", f.reapInterval)
	}
	return nil
}

// startQueue starts the job queue on the store's backend; the returned
// function stops it (letting runs finish for a grace period).
func (r *runner) startQueue(ctx context.Context, svc *app.Service, f queueFlags, commands jobs.CommandPolicy) (*queue.Queue, func(), error) {
	if err := f.validate(); err != nil {
		return nil, nil, err
	}
	backend, closeBackend, err := r.queueBackend()
	if err != nil {
		return nil, nil, err
	}
	q, err := queue.New(queue.Config{Store: r.st, Backend: backend, MaxRuns: f.maxRuns, Commands: commands,
		LostAfter: f.lostAfter, ReapInterval: f.reapInterval, HeartbeatInterval: f.heartbeatInterval(),
		Open:     func(ctx context.Context, name string) (jobs.Conn, error) { return svc.Open(ctx, name) },
		Logger:   r.logger,
		LogLimit: f.runLogLimit, RunRetention: f.runRetention, CountCancels: r.countCancels(),
		Scheduled: svc.AuditScheduledRun, RunEnded: svc.RunEnded, HealthChecks: r.healthChecks(svc, f),
		TracerProvider: r.tracesOrNil()})
	if err != nil {
		closeBackend()
		return nil, nil, err
	}
	if err := q.Start(ctx); err != nil {
		closeBackend()
		return nil, nil, fmt.Errorf("start job queue: %w", err)
	}
	stop := func() {
		sctx, cancel := context.WithTimeout(context.Background(), queue.DefaultShutdownGrace+30*time.Second)
		defer cancel()
		if err := q.Stop(sctx); err != nil {
			r.logger.Warn("job queue stop", "error", err)
		}
		closeBackend()
	}
	return q, stop, nil
}

// queueBackend returns where River keeps the queue: the shared store's
// pool, or a second handle on the embedded SQLite file.
func (r *runner) queueBackend() (queue.Backend, func(), error) {
	if r.pg != nil {
		return queue.Backend{Postgres: r.pg.Pool()}, func() {}, nil
	}
	db, err := r.store.OpenQueueDB()
	if err != nil {
		return queue.Backend{}, nil, err
	}
	return queue.Backend{SQLite: db}, func() { _ = db.Close() }, nil
}

// healthChecks is the scheduled tests' function of the queue, unless this
// process does not run them (serve --health-checks=false).
func (r *runner) healthChecks(svc *app.Service, f queueFlags) func(context.Context) (int, error) {
	if !f.healthChecks {
		return nil
	}
	return svc.RunHealthChecks
}

// countCancels counts cleanups of ended runs in the server's metrics, if
// it has any.
func (r *runner) countCancels() func(outcome string, n int) {
	if r.metrics == nil {
		return nil
	}
	return r.metrics.CountCancels
}
