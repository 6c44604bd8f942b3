package cli

import (
	"context"
	"fmt"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
)

// startQueue starts the job queue on the store's backend; the returned
// function stops it (letting runs finish for a grace period).
func (r *runner) startQueue(ctx context.Context, svc *app.Service, maxRuns int, allow func(string) error) (*queue.Queue, func(), error) {
	if maxRuns < 1 || maxRuns > 1000 {
		return nil, nil, usagef("--max-runs %d: accepted is 1 to 1000", maxRuns)
	}
	backend, closeBackend, err := r.queueBackend()
	if err != nil {
		return nil, nil, err
	}
	q, err := queue.New(queue.Config{Store: r.st, Backend: backend, MaxRuns: maxRuns, AllowCommand: allow,
		Open:   func(ctx context.Context, name string) (jobs.Conn, error) { return svc.Open(ctx, name) },
		Logger: r.logger})
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
