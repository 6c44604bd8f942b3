package queue

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgrelay/pgrelay/internal/store/postgres"
)

// Bounds of the wait before the cancel listener connects again.
const (
	listenRetryFirst = 250 * time.Millisecond
	listenRetryMax   = 5 * time.Second
)

// cancelListener is a LISTEN on the PostgreSQL store's cancel channel
// (postgres.RunCancelChannel) for as long as it runs.
type cancelListener struct {
	stop context.CancelFunc
	wg   sync.WaitGroup
}

// listenCancels starts, on a PostgreSQL store, a listener for cancel
// requests recorded by any process: each notification makes the run it
// names, when it works in this process, check its record at once (see
// check), which stops it when it was cancelled. Without it a run sees a
// request made through another process at its next heartbeat only, which
// stays the fallback for a lost notification. The listener has a
// connection of its own and opens it again when it drops; as
// notifications sent meanwhile are lost, every run of this process then
// checks its record. It returns nil on SQLite, where a cancel request
// comes through this process's Cancel (one process works a store).
func (q *Queue) listenCancels(ctx context.Context) *cancelListener {
	pool := q.cfg.Backend.Postgres
	if pool == nil {
		return nil
	}
	ctx, stop := context.WithCancel(ctx)
	l := &cancelListener{stop: stop}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		q.listen(ctx, pool)
	}()
	return l
}

// Stop ends the listener and waits until its connection is closed; nil
// is a listener that never ran.
func (l *cancelListener) Stop() {
	if l == nil {
		return
	}
	l.stop()
	l.wg.Wait()
}

// listen listens until ctx ends, connecting again after a wait that grows
// (listenRetryFirst to listenRetryMax) while the store cannot be reached.
func (q *Queue) listen(ctx context.Context, pool *pgxpool.Pool) {
	wait := listenRetryFirst
	for {
		heard, err := q.listenOnce(ctx, pool)
		if ctx.Err() != nil {
			return
		}
		if heard {
			wait = listenRetryFirst
		}
		q.cfg.Logger.WarnContext(ctx, "cancel listener lost its connection to the store; connecting again "+
			"(meanwhile runs see cancel requests made through other processes at their heartbeat)",
			"in", wait, "error", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		wait = min(2*wait, listenRetryMax)
	}
}

// listenOnce opens a connection, listens, and passes notifications on
// until the connection fails or ctx ends; heard reports whether it got
// as far as listening.
func (q *Queue) listenOnce(ctx context.Context, pool *pgxpool.Pool) (heard bool, err error) {
	// A connection of its own rather than one of the pool's: a LISTEN
	// stays with its session, which is never handed to other work.
	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig)
	if err != nil {
		return false, fmt.Errorf("cancel listener: connect: %w", err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{postgres.RunCancelChannel}.Sanitize()); err != nil {
		return false, fmt.Errorf("cancel listener: listen: %w", err)
	}
	// Requests recorded before the LISTEN (while the connection was down)
	// were not heard: every run of this process looks for one.
	q.checkAll()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return true, fmt.Errorf("cancel listener: wait for notification: %w", err)
		}
		q.check(n.Payload)
	}
}

// check makes the run id, when it works in this process, read its record
// now (through a heartbeat), rather than at the next one: a cancel request
// or a run resolved elsewhere stops it.
func (q *Queue) check(id string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, a := range q.active[id] {
		a.poke()
	}
}

// checkAll is check for every run working in this process.
func (q *Queue) checkAll() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, as := range q.active {
		for _, a := range as {
			a.poke()
		}
	}
}

// poke asks the run's heartbeat to come now; one pending request is
// enough.
func (a *activeRun) poke() {
	select {
	case a.check <- struct{}{}:
	default:
	}
}
