package app

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgrelay/pgrelay/internal/audit"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// Health bounds.
const (
	// healthHistory is how many entries of a connection's history its
	// health shows (tests, runs and uses together).
	healthHistory = 12
	// healthKeep is how many entries of each kind the store keeps per
	// connection.
	healthKeep = 20
	// healthKept is how many entries the store keeps per connection, of
	// its three kinds (tests, runs, uses): the due check reads them all,
	// since the last test may be older than the newest healthHistory.
	healthKept = 3 * healthKeep
	// healthCheckers is how many scheduled tests run at once.
	healthCheckers = 4
)

// Health statuses.
const (
	HealthOK      = "ok"      // the newest test, run or use succeeded
	HealthFailing = "failing" // the newest test or run failed, and nothing succeeded since
	HealthUnknown = "unknown" // no test, run or use yet
)

// ConnectionHealth is how a connection has been doing: its last test, its
// last successful use, its tunnels now (in this process) and its recent
// tests, runs and uses.
type ConnectionHealth struct {
	// Status is ok, failing or unknown, by the newest test, run or use
	// (only successful uses are recorded: a query that works after a
	// failed test turns the connection ok).
	Status string `json:"status"`
	// LastTest is the newest connection test.
	LastTest *store.ConnectionCheck `json:"last_test,omitempty"`
	// LastSuccessfulUse is when a run, query, grants audit or proxy over
	// the connection last succeeded.
	LastSuccessfulUse *time.Time `json:"last_successful_use,omitempty"`
	// Tunnel is the state of the connection's SSH tunnels open in this
	// process now (nil without a tunnel).
	Tunnel *TunnelState `json:"tunnel,omitempty"`
	// Recent are the newest tests, runs and uses, newest first.
	Recent []store.ConnectionCheck `json:"recent"`
}

// health makes a connection's health from its newest entries.
func (s *Connector) health(c *store.Connection, checks []store.ConnectionCheck) *ConnectionHealth {
	h := &ConnectionHealth{Status: HealthUnknown, Recent: checks}
	if h.Recent == nil {
		h.Recent = []store.ConnectionCheck{}
	}
	for i := range checks {
		ch := &checks[i]
		if ch.Kind == store.CheckTest && h.LastTest == nil {
			h.LastTest = ch
		}
		if h.Status == HealthUnknown {
			h.Status = HealthFailing
			if ch.OK {
				h.Status = HealthOK
			}
		}
		if ch.OK && ch.Kind != store.CheckTest && h.LastSuccessfulUse == nil {
			at := ch.At
			h.LastSuccessfulUse = &at
		}
	}
	if c.Spec.Tunnel != nil {
		st := s.tunnels.state(c.Spec.Name)
		h.Tunnel = &st
	}
	return h
}

// recordCheck adds an entry to a connection's health history. It is best
// effort: a connection deleted meanwhile is no error, others are logged.
func (s *Connector) recordCheck(ctx context.Context, c *store.Connection, ch store.ConnectionCheck) {
	if ch.At.IsZero() {
		ch.At = s.now().UTC()
	}
	err := s.store.AddConnectionCheck(context.WithoutCancel(ctx), c.ID, ch, healthKeep)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		s.logger.WarnContext(ctx, "could not record the connection's health", "connection", c.Spec.Name, "error", err)
	}
}

// recordUse records a use of the named connection that succeeded.
func (s *Connector) recordUse(ctx context.Context, name, use string, start time.Time) {
	c, err := s.store.GetConnection(ctx, name)
	if err != nil {
		return
	}
	s.recordCheck(ctx, c, store.ConnectionCheck{Kind: store.CheckUse, OK: true, Source: use,
		DurationMS: s.now().Sub(start).Milliseconds()})
}

// testCheck is the health entry of a connection test.
func testCheck(rep *diagnose.Report, source string) store.ConnectionCheck {
	ch := store.ConnectionCheck{Kind: store.CheckTest, OK: rep.OK, Source: source, DurationMS: int64(rep.DurationMS)}
	if f := rep.Failed(); f != nil {
		ch.OK, ch.Step = false, string(f.ID)
		ch.Detail = f.Error
		if len(ch.Detail) > 500 {
			ch.Detail = ch.Detail[:500] + "…"
		}
	}
	return ch
}

type checkSourceKey struct{}

// withCheckSource marks ctx as that of a scheduled test.
func withCheckSource(ctx context.Context, source string) context.Context {
	return context.WithValue(ctx, checkSourceKey{}, source)
}

// checkSource is what started a test: scheduled, else manual.
func checkSource(ctx context.Context) string {
	if s, ok := ctx.Value(checkSourceKey{}).(string); ok {
		return s
	}
	return "manual"
}

// RunEnded records a run that this process worked: in the metrics
// (pgrelay_runs_total and its duration), and in the connection's health
// when the run says something of the connection: it succeeded, or it
// failed because the connection could not be opened or dropped. A run
// cancelled, timed out or failed by a step of its own (a SQL error, a
// command's exit code) says nothing of it and is not recorded there,
// unless its tunnel dropped as well. A superseded attempt (res.Superseded:
// another process resolved the run first) is not the run's outcome: its
// success is not recorded, only its connection failing (a real drop, a
// connection that could not be opened), which is what the connection did
// whatever became of the run. The job queue calls it
// (queue.Config.RunEnded).
func (s *Connector) RunEnded(ctx context.Context, job jobs.Job, runID string, trigger jobs.Trigger, res jobs.Result, d time.Duration) {
	if s.metrics != nil {
		s.metrics.RunEnded(string(res.Status), d)
	}
	if !connectionFailed(res.Err) && (res.Status != jobs.Succeeded || res.Superseded) {
		return
	}
	c, err := s.store.GetConnection(ctx, job.Connection)
	if err != nil {
		return
	}
	s.recordCheck(ctx, c, store.ConnectionCheck{Kind: store.CheckRun, OK: res.Status == jobs.Succeeded, Source: string(trigger),
		Step: string(res.Status), Detail: runID, DurationMS: d.Milliseconds()})
}

// connectionFailed reports whether a run's error is its connection's: it
// could not be opened (or a SQL step could not connect), or its tunnel
// dropped, also when a time limit or a cancel stopped the run first; not
// a step of the job's own, a cancel, a time limit or the process working
// the run shutting down alone.
func connectionFailed(err error) bool {
	var dropped *tunnel.DroppedError
	if errors.As(err, &dropped) {
		return true
	}
	var step *jobs.StepError
	var cancelled *jobs.CancelledError
	var timeout *jobs.TimeoutError
	var interrupted *jobs.InterruptedError
	var connect *pgconn.ConnectError
	switch {
	case err == nil, errors.As(err, &cancelled), errors.As(err, &timeout), errors.As(err, &interrupted):
		return false
	case errors.As(err, &step):
		return !step.Refused && errors.As(step.Err, &connect)
	}
	return true
}

// dueTolerance is how much before its interval has passed a connection's
// next scheduled test counts as due: the polls that look for due tests
// come at intervals of their own, a little late or early, and a test due
// a few milliseconds after a poll would wait a whole poll more (a 1m
// interval tested every 90 s). A tenth of the interval, at most 5 s.
func dueTolerance(every time.Duration) time.Duration { return min(every/10, 5*time.Second) }

// RunHealthChecks tests, one after the other (a few at once), every
// connection whose health_check_interval has passed since its last test,
// as the health-check part of the system: each test is recorded in the
// connection's health and in the audit log. The job queue's periodic
// health job calls it on one process of those sharing the store. It
// returns how many connections it tested.
func (s *Service) RunHealthChecks(ctx context.Context) (int, error) {
	cs, err := s.store.ListConnections(ctx)
	if err != nil {
		return 0, fmt.Errorf("health checks: %w", err)
	}
	recent, err := s.store.RecentChecks(ctx, healthKept)
	if err != nil {
		return 0, fmt.Errorf("health checks: %w", err)
	}
	now := s.now()
	var due []string
	for _, c := range cs {
		every := c.Spec.HealthCheckInterval.Duration()
		if every <= 0 {
			continue
		}
		var last time.Time
		for _, ch := range recent[c.ID] {
			if ch.Kind == store.CheckTest {
				// Recorded as it ended: it was due when it started.
				last = ch.At.Add(-time.Duration(ch.DurationMS) * time.Millisecond)
				break
			}
		}
		if last.IsZero() || now.Sub(last) >= every-dueTolerance(every) {
			due = append(due, c.Spec.Name)
		}
	}
	ctx = withCheckSource(audit.WithActor(ctx, audit.System("health-check")), "scheduled")
	sem := make(chan struct{}, healthCheckers)
	var wg sync.WaitGroup
	for _, name := range due {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, err := s.TestConnection(ctx, name, nil); err != nil && !errors.Is(err, store.ErrNotFound) {
				s.logger.WarnContext(ctx, "scheduled connection test could not run", "connection", name, "error", err)
			}
		}()
	}
	wg.Wait()
	return len(due), nil
}
