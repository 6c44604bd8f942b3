package jobs

import (
	"context"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/pg"
)

// Defaults of a Stopper.
const (
	// DefaultStopGrace is how long backends have, after their statements
	// were cancelled and their clients closed, before they are terminated.
	DefaultStopGrace = 10 * time.Second
	// MaxStopGrace is the longest stop grace a job or server may set.
	MaxStopGrace = 10 * time.Minute
	// clockSkew bounds the difference between pgrelay's clock and the
	// server's when matching a recorded backend to a server process, so
	// that a process ID reused by a later session is never touched.
	clockSkew = 2 * time.Minute
)

// Cancel outcomes, as counted by Stopper.Count.
const (
	OutcomeCancelled   = "cancelled"
	OutcomeTerminated  = "terminated"
	OutcomeFailed      = "failed"
	OutcomeUnreachable = "unreachable"
)

// Stopper makes sure that a run's backends stop working once the run has
// ended: it sends a CancelRequest for each that is running a statement,
// lets the run's clients close, waits for the backends to end, and
// terminates (pg_terminate_backend, on a fresh session as the same user,
// whatever role a role setting would start it as) those still there after
// the grace period. It only ever touches the recorded backends that belong
// to the connection's user and started when they were recorded.
type Stopper struct {
	// Conn reaches the server: a live connection of the run, or one opened
	// again after the tunnel dropped.
	Conn Conn
	// Grace is how long backends have to end before they are terminated;
	// default DefaultStopGrace.
	Grace time.Duration
	// Poll is how often the server is asked; default 100ms.
	Poll time.Duration
	// Count, when set, counts outcomes (OutcomeCancelled, ...).
	Count func(outcome string, n int)
}

func (s *Stopper) grace() time.Duration {
	if s.Grace <= 0 {
		return DefaultStopGrace
	}
	return s.Grace
}

// backendState is one backend as pg_stat_activity shows it.
type backendState struct {
	active bool
}

// Stop stops backends. closeClients, when not nil, closes the run's own
// client sessions after the cancels were sent (their backends then end as
// soon as they read the closed socket). The error means the server could
// not be reached: the returned Cleanup is then pending, with every backend
// remaining, and the caller may try again later.
func (s *Stopper) Stop(ctx context.Context, backends []Backend, closeClients func()) (Cleanup, error) {
	grace, poll := s.grace(), s.Poll
	if poll <= 0 {
		poll = 100 * time.Millisecond
	}
	c := Cleanup{Status: CleanupDone, UpdatedAt: time.Now().UTC()}
	if len(backends) == 0 {
		if closeClients != nil {
			closeClients()
		}
		c.Summarize()
		return c, nil
	}
	if s.Conn.Spec().EffectivePooler() != connection.PoolerNone {
		return s.stopPooled(ctx, backends, closeClients), nil
	}
	mon, err := s.Conn.Connect(ctx)
	if err != nil {
		if closeClients != nil {
			closeClients()
		}
		return s.unreachable(backends, err), err
	}
	defer mon.Close(context.WithoutCancel(ctx))
	// A role setting (ALTER ROLE … SET role) makes every session of the
	// user start as another role, which may neither see the run's
	// backends nor signal them: back to the user that logged in.
	if _, err := mon.Exec(ctx, "SET ROLE NONE"); err != nil && mon.IsClosed() {
		if closeClients != nil {
			closeClients()
		}
		return s.unreachable(backends, err), err
	}
	// A server that refuses it (a PostgreSQL-compatible one) goes on as
	// the session started.

	states, err := s.states(ctx, mon, backends)
	if err != nil {
		if closeClients != nil {
			closeClients()
		}
		return s.unreachable(backends, err), err
	}
	initial := states
	spec := s.Conn.Spec()
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) { return s.Conn.DialDatabase(ctx) }
	var sent []uint32
	for _, b := range backends {
		st, ok := states[b.PID]
		if !ok || !st.active {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := pg.Cancel(cctx, spec, dial, b.PID, b.SecretKey)
		cancel()
		if err == nil {
			sent = append(sent, b.PID)
		}
	}
	if closeClients != nil {
		closeClients()
	}

	deadline := time.Now().Add(grace)
	for {
		states, err = s.states(ctx, mon, backends)
		if err != nil || len(states) == 0 || !time.Now().Before(deadline) || !sleep(ctx, poll) {
			break
		}
	}
	if err != nil {
		return s.unreachable(backends, err), err
	}
	var terminated []uint32
	if len(states) > 0 {
		pids := mapKeys(states)
		// The run's backends are picked in a subquery that OFFSET 0
		// keeps apart, terminated only then: in one WHERE, the planner
		// evaluates the cheapest filter first, and pg_terminate_backend
		// is cheaper than pid = ANY($1) of three or more, so it ran on
		// every backend of the server it saw: failing on the first of a
		// superuser or a background process (with the user's other
		// sessions before it possibly ended), or, for a superuser, ending
		// them all.
		rows, qerr := mon.Query(ctx, `SELECT pid FROM (SELECT pid FROM pg_stat_activity
			WHERE pid = ANY($1) AND usename = session_user AND pid <> pg_backend_pid() OFFSET 0) AS run
			WHERE pg_terminate_backend(pid)`, pids)
		if qerr == nil {
			terminated, qerr = pgx.CollectRows(rows, pgx.RowTo[uint32])
		}
		// pg_terminate_backend only signals: wait until they are gone.
		for end := time.Now().Add(5 * time.Second); qerr == nil; {
			states, qerr = s.states(ctx, mon, backends)
			if qerr != nil || len(states) == 0 || !time.Now().Before(end) || !sleep(ctx, poll) {
				break
			}
		}
		if qerr != nil {
			return s.unreachable(backends, qerr), qerr
		}
	}
	for _, b := range backends {
		switch {
		case hasKey(states, b.PID):
			c.Remaining = append(c.Remaining, b.PID)
		case slices.Contains(terminated, b.PID):
			c.Terminated = append(c.Terminated, b.PID)
		case slices.Contains(sent, b.PID):
			c.Cancelled = append(c.Cancelled, b.PID)
		case hasKey(initial, b.PID):
			c.Idle = append(c.Idle, b.PID)
		}
	}
	if len(c.Remaining) > 0 {
		c.Status = CleanupFailed
	}
	s.count(OutcomeCancelled, len(c.Cancelled))
	s.count(OutcomeTerminated, len(c.Terminated))
	s.count(OutcomeFailed, len(c.Remaining))
	c.Summarize()
	return c, nil
}

// states returns the recorded backends that still exist on the server as
// the same user's processes started when they were recorded.
func (s *Stopper) states(ctx context.Context, mon *pgx.Conn, backends []Backend) (map[uint32]backendState, error) {
	pids := make([]int64, 0, len(backends))
	for _, b := range backends {
		pids = append(pids, int64(b.PID))
	}
	rows, err := mon.Query(ctx, `SELECT pid, state = 'active', backend_start FROM pg_stat_activity
		WHERE pid = ANY($1) AND usename = session_user AND pid <> pg_backend_pid()`, pids)
	if err != nil {
		return nil, fmt.Errorf("list the run's backends on the server: %w", err)
	}
	defer rows.Close()
	out := map[uint32]backendState{}
	for rows.Next() {
		var pid int64
		var active *bool
		var started time.Time
		if err := rows.Scan(&pid, &active, &started); err != nil {
			return nil, fmt.Errorf("list the run's backends on the server: %w", err)
		}
		for _, b := range backends {
			if b.PID == uint32(pid) && started.Sub(b.OpenedAt).Abs() <= clockSkew {
				out[b.PID] = backendState{active: active != nil && *active}
			}
		}
	}
	return out, rows.Err()
}

// unreachable is the cleanup when the server could not be asked.
func (s *Stopper) unreachable(backends []Backend, err error) Cleanup {
	c := Cleanup{Status: CleanupPending, UpdatedAt: time.Now().UTC()}
	for _, b := range backends {
		c.Remaining = append(c.Remaining, b.PID)
	}
	s.count(OutcomeUnreachable, len(backends))
	c.Summarize()
	c.Message += fmt.Sprintf(": the server could not be reached to stop them (%v)", err)
	return c
}

func (s *Stopper) count(outcome string, n int) {
	if s.Count != nil && n > 0 {
		s.Count(outcome, n)
	}
}

func mapKeys(m map[uint32]backendState) []int64 {
	out := make([]int64, 0, len(m))
	for k := range m {
		out = append(out, int64(k))
	}
	return out
}

// sleep waits for d, or reports false when ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func hasKey(m map[uint32]backendState, k uint32) bool {
	_, ok := m[k]
	return ok
}
