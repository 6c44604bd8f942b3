package jobs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
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
	// starting counts the commands being started (forked, not yet
	// registered); changed is signalled when it goes down.
	starting int
	changed  *sync.Cond
	// killed is set by Kill: no command starts after it, and one being
	// started as it ran is killed as it registers.
	killed bool
}

// NewControl returns a Control that runs can be given with WithControl.
func NewControl() *Control {
	c := &Control{procs: make(map[*os.Process]bool), waits: make(map[*int]context.CancelCauseFunc)}
	c.changed = sync.NewCond(&c.mu)
	return c
}

// ErrKilled is a command not started because the Control it would have
// registered with had killed its runs' commands.
var ErrKilled = errors.New("the run's commands were killed")

// startFor is how long Kill waits for commands being started to register.
const startFor = 5 * time.Second

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
// too), else to the command alone. A command being started as Kill runs
// is waited for (a few seconds at most) and killed as it registers; none
// starts after Kill. It returns what could not be sent.
func (c *Control) Kill() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.killed = true
	var errs []error
	for p, group := range c.procs {
		errs = append(errs, kill(p, group))
	}
	if c.starting > 0 {
		expired := false
		t := time.AfterFunc(startFor, func() {
			c.mu.Lock()
			expired = true
			c.changed.Broadcast()
			c.mu.Unlock()
		})
		defer t.Stop()
		for c.starting > 0 && !expired {
			c.changed.Wait()
		}
		if c.starting > 0 {
			errs = append(errs, fmt.Errorf("%d command(s) still starting after %s", c.starting, startFor))
		}
	}
	return errors.Join(errs...)
}

// kill sends SIGKILL to p, to its process group when group is set; a
// process (group) already gone is not an error.
func kill(p *os.Process, group bool) error {
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
		return fmt.Errorf("kill command %d: %w", p.Pid, err)
	}
	return nil
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

// start starts cmd and registers it, leading a process group of its own
// when cmd.SysProcAttr says so; after Kill it starts nothing (ErrKilled).
// The returned func unregisters it.
func (c *Control) start(cmd *exec.Cmd) (done func(), err error) {
	if c == nil {
		return func() {}, cmd.Start()
	}
	if err := c.begin(); err != nil {
		return nil, err
	}
	return c.end(cmd, cmd.Start())
}

// begin counts a command about to start, for Kill to wait for; after
// Kill it returns ErrKilled.
func (c *Control) begin() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.killed {
		return ErrKilled
	}
	c.starting++
	return nil
}

// end registers cmd once its start (begun with begin) returned err, and
// kills it if Kill ran meanwhile.
func (c *Control) end(cmd *exec.Cmd, err error) (done func(), _ error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.starting--
	c.changed.Broadcast()
	if err != nil {
		return nil, err
	}
	p, group := cmd.Process, cmd.SysProcAttr != nil && cmd.SysProcAttr.Setpgid
	c.procs[p] = group
	if c.killed {
		_ = kill(p, group) // Kill ran as it started, and waits for it
	}
	return func() {
		c.mu.Lock()
		delete(c.procs, p)
		c.mu.Unlock()
	}, nil
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
