package jobs

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// DefaultCleanupFor bounds how long pgrelay keeps trying to reach the
// server, after a run's tunnel dropped, to stop the run's statements.
const DefaultCleanupFor = 10 * time.Minute

// addBackend records a database session the run opened.
func (x *run) addBackend(b Backend) {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.backends = append(x.backends, b)
	if x.hooks.Backend != nil {
		x.hooks.Backend(b)
	}
}

// finish ends the run's work on the server, then releases what the run
// holds. A run that did not succeed may have left statements running (a
// cancel, a timeout, a dropped tunnel, a client that crashed): each
// backend it opened gets a CancelRequest and, after a grace period,
// pg_terminate_backend; the outcome goes into res.Cleanup and the log.
// When the server cannot be reached (the tunnel dropped), the cleanup is
// pending and retried in the background; its outcome goes to
// Hooks.Cleanup.
func (x *run) finish(res *Result) {
	if x.conn == nil {
		return // the connection never opened: nothing ran
	}
	x.mu.Lock()
	backends := slices.Clone(x.backends)
	x.mu.Unlock()
	if res.Status == Succeeded || len(backends) == 0 {
		x.release()
		return
	}
	stopper := &Stopper{Conn: x.conn, Grace: x.r.StopGrace, Count: x.r.CountCancels}
	if x.conn.Err() == nil {
		ctx, cancel := context.WithTimeout(context.Background(), stopper.grace()+30*time.Second)
		c, err := stopper.Stop(ctx, backends, x.closeClients)
		cancel()
		if err == nil {
			x.mu.Lock()
			byPgx := slices.Clone(x.cancelledPIDs)
			x.mu.Unlock()
			c.markCancelled(byPgx)
			if x.r.CountCancels != nil && len(byPgx) > 0 {
				x.r.CountCancels(OutcomeCancelled, len(byPgx))
			}
			x.log(-1, "system", "cleanup: "+c.Message)
			res.Cleanup = &c
			x.release()
			return
		}
	}
	reason := x.conn.Err()
	x.release()
	c := Cleanup{Status: CleanupPending, Attempts: 1, UpdatedAt: time.Now().UTC()}
	for _, b := range backends {
		c.Remaining = append(c.Remaining, b.PID)
	}
	c.Summarize()
	c.Message += "; pgrelay keeps trying to reach the server to stop them"
	if reason != nil {
		c.Message += fmt.Sprintf(" (the tunnel dropped: %v)", reason)
	}
	res.Cleanup = &c
	x.log(-1, "system", "cleanup: "+c.Message)
	go x.retryCleanup(backends, c)
}

// retryCleanup reopens the connection with backoff, for at most
// CleanupFor, and stops backends once the server answers.
func (x *run) retryCleanup(backends []Backend, c Cleanup) {
	limit := x.r.CleanupFor
	if limit <= 0 {
		limit = DefaultCleanupFor
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	report := func(c Cleanup) {
		if x.hooks.Cleanup != nil {
			x.hooks.Cleanup(c)
		}
	}
	backoff := time.Second
	var lastErr error
	for {
		if !sleep(ctx, backoff) {
			break
		}
		backoff = min(2*backoff, 30*time.Second)
		c.Attempts++
		conn, err := x.r.Open(ctx, x.job.Connection)
		if err != nil {
			lastErr = err
			continue
		}
		s := &Stopper{Conn: conn, Grace: x.r.StopGrace, Count: x.r.CountCancels}
		got, err := s.Stop(ctx, backends, nil)
		_ = conn.Close()
		if err != nil {
			lastErr = err
			continue
		}
		got.Attempts = c.Attempts
		got.Message = "after the tunnel came back: " + got.Message
		x.r.Logger.Info("run cleanup done after reconnecting", "job", x.job.Name, "attempts", got.Attempts,
			"outcome", got.Message)
		report(got)
		return
	}
	c.Status = CleanupFailed
	c.UpdatedAt = time.Now().UTC()
	c.Message = fmt.Sprintf("gave up after %s: the server could not be reached to stop the run's statements (%s); "+
		"they may still be running: check pg_stat_activity for pid %s", limit, errText(lastErr), pidsText(backends))
	x.r.Logger.Warn("run cleanup gave up", "job", x.job.Name, "error", lastErr)
	if x.r.CountCancels != nil {
		x.r.CountCancels(OutcomeUnreachable, len(backends))
	}
	report(c)
}

func errText(err error) string {
	if err == nil {
		return "no attempt finished"
	}
	return err.Error()
}

func pidsText(bs []Backend) string {
	pids := make([]uint32, len(bs))
	for i, b := range bs {
		pids[i] = b.PID
	}
	return pidList(pids)[len("pid "):]
}
