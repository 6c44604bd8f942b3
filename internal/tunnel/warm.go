package tunnel

import (
	"context"
	"fmt"
	"slices"
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
// at a time; a slot keeps up to a number of parked chains (as many as
// runs of one connection may run at once), the newest handed out first.
//
// The fingerprint a chain is parked under must name everything it was
// opened with and verified against (hosts, users, login keys, pinned host
// keys, host CAs): a chain is handed out only for the same fingerprint,
// where a fresh dial would have been accepted the same way.
type Warm struct {
	window  time.Duration
	perSlot int

	mu     sync.Mutex
	idle   map[string][]*warmEntry // by slot, oldest first
	closed bool
}

type warmEntry struct {
	chain       *Chain
	fingerprint string
	since       time.Time
	timer       *time.Timer
}

// NewWarm returns a Warm keeping chains for window after their release,
// at most perSlot of them per slot (at least one). A window of zero keeps
// nothing: Put always declines.
func NewWarm(window time.Duration, perSlot int) *Warm {
	return &Warm{window: window, perSlot: max(perSlot, 1), idle: map[string][]*warmEntry{}}
}

// Window is how long a released chain is kept.
func (w *Warm) Window() time.Duration { return w.window }

// PerSlot is how many chains a slot keeps at most.
func (w *Warm) PerSlot() int { return w.perSlot }

// Put parks c in slot (one per connection) under fingerprint until the
// window passes or Take hands it out, and reports whether it did; when it
// did not (no window, Warm closed, c already down), c stays the caller's
// to close. When the slot is full, its oldest chain is closed.
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
	entries := append(w.idle[slot], e)
	var evicted []*warmEntry
	if n := len(entries) - w.perSlot; n > 0 {
		evicted = slices.Clone(entries[:n])
		entries = slices.Delete(entries, 0, n)
	}
	w.idle[slot] = entries
	e.timer = time.AfterFunc(w.window, func() { w.expire(slot, e) })
	w.mu.Unlock()
	for _, old := range evicted {
		old.timer.Stop()
		_ = old.chain.Close()
	}
	return true
}

// expire closes e if it is still parked in slot.
func (w *Warm) expire(slot string, e *warmEntry) {
	w.mu.Lock()
	entries := w.idle[slot]
	i := slices.Index(entries, e)
	if i >= 0 {
		w.setSlot(slot, slices.Delete(entries, i, i+1))
	}
	w.mu.Unlock()
	if i >= 0 {
		_ = e.chain.Close()
	}
}

// setSlot stores a slot's entries, dropping an empty slot. Called with mu
// held.
func (w *Warm) setSlot(slot string, entries []*warmEntry) {
	if len(entries) == 0 {
		delete(w.idle, slot)
		return
	}
	w.idle[slot] = entries
}

// Take hands out the newest chain parked in slot under fingerprint, with
// how long it was parked, when it is still up, passes check (when not
// nil: say, the host keys it was verified with are still trusted) and
// answers a keepalive within WarmPing (and ctx); a chain that fails any
// of these is closed and the next newest tried. Chains parked under
// another fingerprint (opened for an earlier version of the connection)
// are closed: they are of no use to anyone. Nil when none is left: the
// caller dials.
func (w *Warm) Take(ctx context.Context, slot, fingerprint string, check func(*Chain) error) (*Chain, time.Duration) {
	if w == nil {
		return nil, 0
	}
	for {
		w.mu.Lock()
		entries := w.idle[slot]
		var stale []*warmEntry
		kept := entries[:0]
		for _, e := range entries {
			if e.fingerprint == fingerprint {
				kept = append(kept, e)
			} else {
				stale = append(stale, e)
			}
		}
		var e *warmEntry
		if len(kept) > 0 {
			e = kept[len(kept)-1]
			kept = kept[:len(kept)-1]
		}
		w.setSlot(slot, kept)
		w.mu.Unlock()
		for _, s := range stale {
			s.timer.Stop()
			_ = s.chain.Close()
		}
		if e == nil {
			return nil, 0
		}
		e.timer.Stop()
		if check != nil && check(e.chain) != nil {
			_ = e.chain.Close()
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, WarmPing)
		err := e.chain.Ping(pctx)
		cancel()
		if err != nil {
			_ = e.chain.Close()
			if ctx.Err() != nil {
				return nil, 0
			}
			continue
		}
		return e.chain, time.Since(e.since)
	}
}

// Len is the number of parked chains.
func (w *Warm) Len() int {
	if w == nil {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, entries := range w.idle {
		n += len(entries)
	}
	return n
}

// Close closes every parked chain; Put declines from then on.
func (w *Warm) Close() {
	if w == nil {
		return
	}
	w.mu.Lock()
	w.closed = true
	idle := w.idle
	w.idle = map[string][]*warmEntry{}
	w.mu.Unlock()
	for _, entries := range idle {
		for _, e := range entries {
			e.timer.Stop()
			_ = e.chain.Close()
		}
	}
}
