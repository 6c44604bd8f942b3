package jobs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
)

// Control reaches a process's runs from outside them: the commands they
// are running and their waits for the server to stop their statements
// (Runner.WaitCleanup). The CLI's exec and local job run give it to their
// runs (WithControl) so that a second Ctrl-C can end the commands before
// pgrelay exits, and a Ctrl-C during such a wait can end it.
type Control struct {
	mu sync.Mutex
	// procs are the commands running now: each one's process, and
	// whether it leads a process group of its own.
	procs map[*os.Process]bool
	// waits end the waits for the server going on now.
	waits map[*int]context.CancelCauseFunc
}

// NewControl returns a Control that runs can be given with WithControl.
func NewControl() *Control {
	return &Control{procs: make(map[*os.Process]bool), waits: make(map[*int]context.CancelCauseFunc)}
}

type controlKey struct{}

// WithControl returns ctx carrying c: the runs started with it (Runner.Run)
// register their commands and their waits for the server with c.
func WithControl(ctx context.Context, c *Control) context.Context {
	return context.WithValue(ctx, controlKey{}, c)
}

// controlOf returns the Control ctx carries, or nil.
func controlOf(ctx context.Context) *Control {
	c, _ := ctx.Value(controlKey{}).(*Control)
	return c
}

// Kill sends SIGKILL at once to every command the runs are running: to its
// whole process group when it has one of its own (what it started goes
// too), else to the command alone. It returns what could not be sent.
func (c *Control) Kill() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for p, group := range c.procs {
		var err error
		if group {
			err = syscall.Kill(-p.Pid, syscall.SIGKILL)
			if errors.Is(err, syscall.ESRCH) {
				err = nil
			}
		} else if err = p.Signal(syscall.SIGKILL); errors.Is(err, os.ErrProcessDone) {
			err = nil
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("kill command %d: %w", p.Pid, err))
		}
	}
	return errors.Join(errs...)
}

// Commands returns how many commands Kill would reach now.
func (c *Control) Commands() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.procs)
}

// StopWaiting ends the waits for the server going on now, cause saying why
// (e.g. a *CancelledError): each records the run's cleanup as not
// confirmed, with what is left to do by hand. It reports whether a wait
// was going on.
func (c *Control) StopWaiting(cause error) bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, stop := range c.waits {
		stop(cause)
	}
	return len(c.waits) > 0
}

// started registers a command that has started; group says it leads a
// process group of its own. The returned func unregisters it.
func (c *Control) started(p *os.Process, group bool) (done func()) {
	if c == nil {
		return func() {}
	}
	c.mu.Lock()
	c.procs[p] = group
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		delete(c.procs, p)
		c.mu.Unlock()
	}
}

// waiting registers a wait for the server that stop ends. The returned
// func unregisters it.
func (c *Control) waiting(stop context.CancelCauseFunc) (done func()) {
	if c == nil {
		return func() {}
	}
	key := new(int)
	c.mu.Lock()
	c.waits[key] = stop
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		delete(c.waits, key)
		c.mu.Unlock()
	}
}
