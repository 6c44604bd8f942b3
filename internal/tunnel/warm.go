package tunnel

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Ping sends a keepalive to the hop and waits for its reply, ctx or the
// end of the tunnel, whichever comes first. Any reply (success or failure)
// shows the hop answers. A Ping that fails leaves the tunnel as it is: the
// caller decides whether to close it.
func (t *Tunnel) Ping(ctx context.Context) error {
	select {
	case <-t.done:
		return t.Err()
	default:
	}
	reply := make(chan error, 1)
	go func() {
		// Returns at the reply, or with an error when the tunnel closes.
		_, _, err := t.client.SendRequest(keepaliveRequest, true, nil)
		reply <- err
	}()
	select {
	case err := <-reply:
		if err != nil {
			return fmt.Errorf("keepalive to SSH bastion %s: %w", t.cfg.Addr, err)
		}
		t.lastReply.Store(time.Now().UnixNano())
		return nil
	case <-t.done:
		return t.Err()
	case <-ctx.Done():
		return fmt.Errorf("keepalive to SSH bastion %s: no reply: %w", t.cfg.Addr, context.Cause(ctx))
	}
}

// Ping checks the whole chain with one keepalive to its last hop, whose
// SSH connection runs through every hop before it.
func (c *Chain) Ping(ctx context.Context) error {
	if err := c.Last().Ping(ctx); err != nil {
		if cerr := c.Err(); cerr != nil {
			return cerr
		}
		return c.wrap(len(c.hops)-1, len(c.hops), c.Last().cfg.Addr, err)
	}
	return nil
}

// WarmPing is how long [Warm.Take] waits for a parked chain to answer its
// keepalive before it closes the chain and reports none: a run then opens
// a chain of its own rather than start on a tunnel that may be frozen.
const WarmPing = 2 * time.Second

// Warm keeps chains open for a while after their user is done with them,
// so that the next user of the same slot (the next run of a connection)
// skips the SSH handshakes of every hop. A parked chain keeps its
// keepalives; one that drops, or does not answer a keepalive when it is
// taken, is closed and never handed out. Each chain is handed to one user
// at a time, and a slot holds at most one parked chain.
//
// The fingerprint a chain is parked under must name everything it was
// opened with and verified against (hosts, users, login keys, pinned host
// keys, host CAs): a chain is handed out only for the same fingerprint,
// where a fresh dial would have been accepted the same way.
type Warm struct {
	window time.Duration

	mu     sync.Mutex
	idle   map[string]*warmEntry
	closed bool
}

type warmEntry struct {
	chain       *Chain
	fingerprint string
	since       time.Time
	timer       *time.Timer
}

// NewWarm returns a Warm keeping chains for window after their release.
// A window of zero keeps nothing: Put always declines.
func NewWarm(window time.Duration) *Warm {
	return &Warm{window: window, idle: map[string]*warmEntry{}}
}

// Window is how long a released chain is kept.
func (w *Warm) Window() time.Duration { return w.window }

// Put parks c in slot (one per connection) under fingerprint until the
// window passes or Take hands it out, and reports whether it did; when it
// did not (no window, Warm closed, c already down), c stays the caller's
// to close. A chain parked earlier in the slot is closed: the newest is
// kept.
func (w *Warm) Put(slot, fingerprint string, c *Chain) bool {
	if w == nil || w.window <= 0 || c == nil || c.Err() != nil || fingerprint == "" {
		return false
	}
	e := &warmEntry{chain: c, fingerprint: fingerprint, since: time.Now()}
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return false
	}
	old := w.idle[slot]
	w.idle[slot] = e
	e.timer = time.AfterFunc(w.window, func() { w.expire(slot, e) })
	w.mu.Unlock()
	if old != nil {
		old.timer.Stop()
		_ = old.chain.Close()
	}
	return true
}

// expire closes e if it is still parked in slot.
func (w *Warm) expire(slot string, e *warmEntry) {
	w.mu.Lock()
	cur := w.idle[slot]
	if cur == e {
		delete(w.idle, slot)
	}
	w.mu.Unlock()
	if cur == e {
		_ = e.chain.Close()
	}
}

// Take hands out the chain parked in slot, with how long it was parked,
// when it was parked under fingerprint, is still up and answers a
// keepalive within WarmPing (and ctx). Otherwise it closes what was
// parked there (a chain opened for an earlier version of the connection
// is of no use to anyone) and returns nil: the caller dials.
//
// check, when not nil, is asked first whether the chain may still be used
// (say, the host keys it was verified with are still trusted); an error
// closes it.
func (w *Warm) Take(ctx context.Context, slot, fingerprint string, check func(*Chain) error) (*Chain, time.Duration) {
	if w == nil {
		return nil, 0
	}
	w.mu.Lock()
	e := w.idle[slot]
	delete(w.idle, slot)
	w.mu.Unlock()
	if e == nil {
		return nil, 0
	}
	e.timer.Stop()
	if e.fingerprint != fingerprint || (check != nil && check(e.chain) != nil) {
		_ = e.chain.Close()
		return nil, 0
	}
	pctx, cancel := context.WithTimeout(ctx, WarmPing)
	defer cancel()
	if err := e.chain.Ping(pctx); err != nil {
		_ = e.chain.Close()
		return nil, 0
	}
	return e.chain, time.Since(e.since)
}

// Len is the number of parked chains.
func (w *Warm) Len() int {
	if w == nil {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.idle)
}

// Close closes every parked chain; Put declines from then on.
func (w *Warm) Close() {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.closed = true
	idle := w.idle
	w.idle = map[string]*warmEntry{}
	w.mu.Unlock()
	for _, e := range idle {
		e.timer.Stop()
		_ = e.chain.Close()
	}
}
