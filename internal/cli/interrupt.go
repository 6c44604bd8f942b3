package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/pgrelay/pgrelay/internal/jobs"
)

// interrupts handles the signals that stop a run in this process (exec,
// a local job run), for as long as the run lasts:
//   - the first stops the run: its context is cancelled with a
//     *jobs.CancelledError naming the signal;
//   - the next one, while the run waits for the server to stop its
//     statements (its tunnel dropped), ends that wait, which records the
//     cleanup as not confirmed (the first does, when something else,
//     such as the job's time limit, had stopped the run already);
//   - any other ends pgrelay at once (exit status 128 + the signal's
//     number, as the signal's default action would), after it sent
//     SIGKILL to the run's commands and what they started in their process
//     groups: they would otherwise keep running, orphaned.
type interrupts struct {
	sigs    chan os.Signal
	cancel  context.CancelCauseFunc
	control *jobs.Control
	stderr  io.Writer
	// notice, when set, is printed at the first signal.
	notice string
	done   chan struct{}

	mu    sync.Mutex
	first os.Signal // the signal that stopped the run
}

// handleInterrupts starts handling sigs (see interrupts) for the run that
// ctx, cancelled by cancel, carries control of: the caller registers the
// signals with signal.Notify(in.sigs, ...) (at any time: they are read
// until stop). stop ends the handling and signal.Notify's registration.
func handleInterrupts(cancel context.CancelCauseFunc, control *jobs.Control, stderr io.Writer, notice string) *interrupts {
	in := &interrupts{sigs: make(chan os.Signal, 4), cancel: cancel, control: control, stderr: stderr, notice: notice,
		done: make(chan struct{})}
	go in.loop()
	return in
}

func (in *interrupts) loop() {
	for {
		select {
		case <-in.done:
			return
		case s := <-in.sigs:
			in.mu.Lock()
			first := in.first
			if first == nil {
				in.first = s
			}
			in.mu.Unlock()
			stopped := &jobs.CancelledError{By: "signal " + s.String()}
			switch {
			case first == nil:
				if in.notice != "" {
					fmt.Fprintln(in.stderr, in.notice)
				}
				in.cancel(stopped)
				// A run something else stopped first (its time limit)
				// may already wait for the server: the user's first
				// signal ends that wait too.
				if in.control.StopWaiting(stopped) {
					fmt.Fprintln(in.stderr, stoppedWaiting)
				}
			case in.control.StopWaiting(stopped):
				fmt.Fprintln(in.stderr, stoppedWaiting)
			default:
				if err := in.control.Kill(); err != nil {
					fmt.Fprintf(in.stderr, "pgrelay: could not end the run's commands: %v\n", err)
				}
				os.Exit(exitStatusFor(s))
			}
		}
	}
}

// stoppedWaiting is said when a signal ended a run's wait for the server.
const stoppedWaiting = "Stopped waiting for the server: the run's statements may still be running (see the cleanup's message). " +
	"Press Ctrl-C again to leave at once."

// stop ends the handling: signals are no longer caught.
func (in *interrupts) stop() {
	signal.Stop(in.sigs)
	close(in.done)
}

// stoppedBy returns the signal that stopped the run, or nil.
func (in *interrupts) stoppedBy() os.Signal {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.first
}

// exitStatusFor is the exit status of a process ended by s, as shells
// report it: 128 + the signal's number (130 for SIGINT).
func exitStatusFor(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return 128 + int(n)
	}
	return exitFailure
}

// caughtSignal is the cause of a context that stopOnSignal cancelled.
type caughtSignal struct{ os.Signal }

func (s caughtSignal) Error() string { return "stopped by signal " + s.String() }

// stopOnSignal returns ctx cancelled, with a caughtSignal as its cause, at
// the first SIGINT, SIGTERM or SIGHUP: for a wait that only follows work
// done elsewhere (a server's run), which the signal ends without stopping
// the work. stop ends the handling.
func stopOnSignal(ctx context.Context) (_ context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		select {
		case s := <-sigs:
			cancel(caughtSignal{s})
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel(nil)
	}
}
