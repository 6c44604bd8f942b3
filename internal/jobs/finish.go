package jobs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/pgrelay/pgrelay/internal/relay"
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
// pending and retried in the background, its outcome going to
// Hooks.Cleanup; with Runner.WaitCleanup it is retried before finish
// returns, until it is done, CleanupFor passes or the user stops the wait
// (see below).
func (x *run) finish(ctx context.Context, res *Result) {
	if x.conn == nil {
		return // the connection never opened: nothing ran
	}
	// No session starts once the run has ended: the list taken now is
	// final but for sessions still logging in, which Stop takes in turn.
	x.mu.Lock()
	if x.px != nil {
		_ = x.px.StopAccepting()
	}
	backends := slices.Clone(x.backends)
	x.mu.Unlock()
	if res.Status == Succeeded || len(backends) == 0 {
		// The commands have exited: their sessions end as the clients
		// ended them once the relay has read what they sent last.
		// Closing the endpoint first would make a session whose
		// Terminate was still unread look like a client that went away,
		// and cost a cancel request (a round trip or two) for nothing.
		x.drainEndpoint(endpointDrain)
		x.release()
		return
	}
	stopper := &Stopper{Conn: x.conn, Grace: x.stopGrace(), Count: x.r.CountCancels}
	if x.conn.Err() == nil {
		// Not bound to the run's end, but in its trace (and its other
		// values), as the run's own work.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*stopper.grace()+30*time.Second)
		c, err := stopper.Stop(ctx, backends, x.closeClients)
		late := x.backendsAfter(len(backends))
		if err == nil && len(late) > 0 {
			// Sessions that finished logging in while the first were
			// being stopped (their clients are closed now).
			var more Cleanup
			if more, err = stopper.Stop(ctx, late, nil); err == nil {
				c.add(more)
			}
		}
		backends = append(backends, late...)
		cancel()
		if err == nil {
			x.mu.Lock()
			byPgx := slices.Clone(x.cancelledPIDs)
			x.mu.Unlock()
			c.markCancelled(byPgx)
			if x.r.CountCancels != nil && len(byPgx) > 0 {
				x.r.CountCancels(OutcomeCancelled, len(byPgx))
			}
			x.log(-1, StreamSystem, "cleanup: "+c.Message)
			res.Cleanup = &c
			x.release()
			return
		}
	}
	dropped := x.conn.Err() != nil
	x.release()
	c := Cleanup{Status: CleanupPending, Attempts: 1, UpdatedAt: time.Now().UTC()}
	for _, b := range backends {
		c.Remaining = append(c.Remaining, b.PID)
	}
	c.Summarize()
	c.Message += "; pgrelay keeps trying to reach the server to stop them"
	if dropped {
		// The run's reason says why, at length; not again here.
		c.Message += " (the tunnel dropped)"
	}
	res.Cleanup = &c
	x.log(-1, StreamSystem, "cleanup: "+c.Message)
	// Whether the run was stopped (a cancel, its time limit) before its
	// tunnel was found gone, taken before anyone hears of the wait.
	stoppedFirst := ctx.Err() != nil
	if x.hooks.CleanupPending != nil {
		x.hooks.CleanupPending(c)
	}
	if !x.r.WaitCleanup {
		// c goes by value: res.Cleanup, which callers may change, is &c.
		go func(c Cleanup) {
			got := x.retryCleanup(context.WithoutCancel(ctx), backends, c)
			if x.hooks.Cleanup != nil {
				x.hooks.Cleanup(got)
			}
		}(c)
		return
	}
	// The wait is bounded by CleanupFor, not by the run's time limit (a
	// drop just before it must not cut the cleanup short). It ends early
	// when the user stops it: a cancel of the run that comes while it
	// waits, or, when a cancel (or the time limit) is why the run stopped
	// and the cleanup is for just that stop, Control.StopWaiting (the
	// CLI's next Ctrl-C).
	wctx, stop := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stop(nil)
	defer controlOf(ctx).waiting(stop)()
	if !stoppedFirst {
		defer context.AfterFunc(ctx, func() {
			if cause := context.Cause(ctx); !isTimeLimit(cause) {
				stop(cause)
			}
		})()
	}
	got := x.retryCleanup(wctx, backends, c)
	if wctx.Err() != nil && got.Status != CleanupDone {
		// Stopped before the server could be reached: nothing of
		// pgrelay's goes on trying, so say what is left to do by hand.
		got.Status = CleanupFailed
		got.Message = fmt.Sprintf("stopped trying to reach the server again (%v): the run's statements may still be running: "+
			"check pg_stat_activity for pid %s (SELECT pg_cancel_backend(pid))", x.mask(context.Cause(wctx).Error()), pidsText(backends))
	}
	res.Cleanup = &got
	x.log(-1, StreamSystem, "cleanup: "+got.Message)
}

// isTimeLimit reports whether cause is a run's time limit (a
// *TimeoutError, or a deadline without a cause of its own).
func isTimeLimit(cause error) bool {
	var te *TimeoutError
	return errors.As(cause, &te) || errors.Is(cause, context.DeadlineExceeded)
}

// backendsAfter returns the backends the run recorded after the first n.
func (x *run) backendsAfter(n int) []Backend {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Clone(x.backends[n:])
}

// retryCleanup stops backends once the server answers again, trying
// until CleanupFor passes or parent ends, and returns the outcome.
func (x *run) retryCleanup(parent context.Context, backends []Backend, c Cleanup) Cleanup {
	limit := x.r.CleanupFor
	if limit <= 0 {
		limit = DefaultCleanupFor
	}
	ctx, cancel := context.WithTimeout(parent, limit)
	defer cancel()
	tmpl := Stopper{Grace: x.stopGrace(), Count: x.r.CountCancels}
	return StopAfterReconnect(ctx, x.r.Open, x.job.Connection, backends, tmpl, time.Second, c.Attempts, ReachedAgain, x.r.Logger)
}

// What a stop after reconnecting waited for (StopAfterReconnect's why).
const (
	// ReachedAgain: the run's tunnel dropped, and the server was reached
	// again.
	ReachedAgain = "once the server could be reached again"
	// ProcessLost: the process running the run was lost (killed, or out
	// of the store's reach), and another one stopped its sessions.
	ProcessLost = "by another pgrelay process, as the one running the run was lost"
)

// StopAfterReconnect stops backends of a run whose own connection is gone
// (its tunnel dropped, or its process was lost): it opens the connection
// again, first after delay and then with a growing backoff until ctx ends,
// and runs a Stopper like tmpl once the server answers. It returns the
// outcome: done, or failed (with what was tried) when ctx ended first.
// attempts is how many attempts were made already. why starts the
// outcome's message: what the stop waited for, such as ReachedAgain or
// ProcessLost.
func StopAfterReconnect(ctx context.Context, open Opener, name string, backends []Backend, tmpl Stopper,
	delay time.Duration, attempts int, why string, logger *slog.Logger) Cleanup {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	backoff := time.Second
	var lastErr error
	for sleep(ctx, delay) {
		delay, backoff = backoff, min(2*backoff, 30*time.Second)
		attempts++
		conn, err := open(ctx, name)
		if err != nil {
			lastErr = err
			continue
		}
		s := tmpl
		s.Conn = conn
		got, err := s.Stop(ctx, backends, nil)
		_ = conn.Close()
		if err != nil {
			lastErr = err
			continue
		}
		got.Attempts = attempts
		got.Message = why + ": " + got.Message
		logger.Info("run backends stopped after reconnecting", "connection", name, "attempts", attempts,
			"outcome", got.Message)
		return got
	}
	c := Cleanup{Status: CleanupFailed, Attempts: attempts, UpdatedAt: time.Now().UTC()}
	for _, b := range backends {
		c.Remaining = append(c.Remaining, b.PID)
	}
	c.Message = fmt.Sprintf("gave up after %s: the server could not be reached to stop the run's statements (%s); "+
		"they may still be running: check pg_stat_activity for pid %s", time.Since(start).Round(time.Second),
		errText(lastErr), pidsText(backends))
	logger.Warn("gave up stopping a run's backends", "connection", name, "attempts", attempts, "error", lastErr)
	if tmpl.Count != nil {
		tmpl.Count(OutcomeUnreachable, len(backends))
	}
	return c
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

// BackendOpened records a session a command opened through the run's
// endpoint (relay.Observer).
func (x *run) BackendOpened(b relay.Backend) {
	x.mu.Lock()
	step := x.curStep
	x.mu.Unlock()
	x.addBackend(Backend{PID: b.PID, SecretKey: b.SecretKey, Step: step, User: b.User, Database: b.Database,
		OpenedAt: b.OpenedAt.UTC()})
}

// sessionRefused notes a session a command started that the server
// refused for the saved password (of the connection's user): should the
// step fail, its log says what to do (the command printed the server's
// error itself, if anything).
func (x *run) sessionRefused(e *relay.RefusedError) {
	if e.Err.Code != "28P01" || e.User != x.conn.Spec().User { // invalid_password
		return
	}
	x.mu.Lock()
	x.passwordRefused = true
	x.mu.Unlock()
}

// BackendClosed implements relay.Observer; the run keeps every session it
// opened, since one that ended may have left a statement behind only if
// its client vanished, which the relay cancels itself.
func (x *run) BackendClosed(relay.Backend, relay.End) {}

// endpointDrain bounds how long the end of a successful run waits for the
// sessions of its commands to end by themselves before it closes the
// endpoint (a session a command's leftover child holds open is closed
// then).
const endpointDrain = time.Second

// drainEndpoint waits up to limit until the run's endpoint, if any, has no
// session left.
func (x *run) drainEndpoint(limit time.Duration) {
	x.mu.Lock()
	px := x.px
	x.mu.Unlock()
	if px == nil {
		return
	}
	deadline := time.Now().Add(limit)
	for px.Active() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
}

// stopGrace is the run's stop grace: its job's, else the runner's.
func (x *run) stopGrace() time.Duration { return x.job.StopGraceOr(x.r.StopGrace) }
