package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
)

// HopError is the error of one hop of a [Chain] of more than one hop: it
// names the hop ("hop 2 of 3 (bastion-b:22)") and wraps the hop's own
// typed error ([*DialError], [*HostKeyMismatchError], [*AuthError],
// [*DroppedError], ...), which errors.As still finds.
type HopError struct {
	// Hop is the hop's position, from 1.
	Hop int
	// Of is the number of hops of the chain.
	Of int
	// Addr is the hop's host:port.
	Addr string
	// Err is the hop's error.
	Err error
}

// Error prefixes the hop's error with its position.
func (e *HopError) Error() string { return fmt.Sprintf("%s: %v", e.Where(), e.Err) }

// Where is "hop 2 of 3 (bastion-b:22)".
func (e *HopError) Where() string { return fmt.Sprintf("hop %d of %d (%s)", e.Hop, e.Of, e.Addr) }

// Unwrap returns the hop's error.
func (e *HopError) Unwrap() error { return e.Err }

// Chain is a chain of SSH hops: the first dialled directly (or through a
// proxy command), each next one through a direct-tcpip channel of the one
// before it. Every hop is a [Tunnel] with its own host key check,
// authentication and keepalives. Connections from [Chain.DialContext] go
// through the last hop. When any hop drops, the chain is down: Done
// closes, Err names the hop, and the other hops are closed.
//
// A chain of one hop behaves as that hop's Tunnel, and its errors are the
// Tunnel's own (no [HopError]).
type Chain struct {
	hops []*Tunnel

	done      chan struct{}
	mu        sync.Mutex
	err       error // why the chain ended; set once
	closeOnce sync.Once
	watchDone chan struct{}
}

// HopCheck is called before hop i (from 0) is dialled through the hop
// before it, with the address that hop is asked to connect to; an error
// refuses the hop. The network policy checks IP literals there.
type HopCheck func(i int, addr string) error

// DialChain opens every hop of cfgs in order. The first hop uses its own
// Config.Dial; each further hop's Dial is replaced by a channel through
// the hop before it (check, when set, vets the address first). ctx bounds
// the whole of it, and each hop's DialTimeout its own part. On failure
// the hops already up are closed, and the error names the hop (a
// [*HopError] when there is more than one).
func DialChain(ctx context.Context, cfgs []Config, check HopCheck) (*Chain, error) {
	if len(cfgs) == 0 {
		return nil, errors.New("tunnel chain: no hop")
	}
	c := &Chain{done: make(chan struct{}), watchDone: make(chan struct{})}
	for i, cfg := range cfgs {
		if i > 0 {
			prev := c.hops[i-1]
			cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
				if check != nil {
					if err := check(i, addr); err != nil {
						return nil, err
					}
				}
				return prev.DialContext(ctx, network, addr)
			}
		}
		t, err := Dial(ctx, cfg)
		if err != nil {
			c.closeHops()
			return nil, c.wrap(i, len(cfgs), cfg.Addr, err)
		}
		c.hops = append(c.hops, t)
	}
	go c.watch()
	return c, nil
}

// wrap makes err a *HopError when the chain has more than one hop.
func (c *Chain) wrap(i, of int, addr string, err error) error {
	if of <= 1 || err == nil {
		return err
	}
	var he *HopError
	if errors.As(err, &he) {
		return err
	}
	return &HopError{Hop: i + 1, Of: of, Addr: addr, Err: err}
}

// watch waits for the first hop to end, records why (the earliest hop
// that is down: a hop further on fails because its channel went with it),
// and closes the others.
func (c *Chain) watch() {
	defer close(c.watchDone)
	cases := make(chan int, len(c.hops))
	stop := make(chan struct{})
	for i, t := range c.hops {
		go func() {
			select {
			case <-t.Done():
				cases <- i
			case <-stop:
			}
		}()
	}
	first := <-cases
	close(stop)
	c.checkEarlierHops(first)
	c.mu.Lock()
	c.recordLocked()
	c.mu.Unlock()
	close(c.done)
	c.closeHops()
}

// checkEarlierHops runs when hop j went silent (no keepalive reply within
// its bound) before the hops in front of it: a hop's traffic passes
// through every hop before it, so a frozen earlier hop silences it too,
// and it may run out of time first (its last reply can be older than the
// frozen hop's). Each earlier hop still up is sent a keepalive: one that
// answers is not the cause; one that does not is dropped by its own
// silence bound (or here, at that bound), so that the chain's error names
// the hop that stopped answering.
func (c *Chain) checkEarlierHops(j int) {
	if j == 0 || !errors.Is(c.hops[j].Err(), ErrKeepaliveTimeout) {
		return
	}
	var wg sync.WaitGroup
	for _, t := range c.hops[:j] {
		wg.Go(func() {
			limit := t.cfg.silenceLimit()
			ctx, cancel := context.WithTimeout(context.Background(), limit)
			defer cancel()
			if err := t.Ping(ctx); err != nil && t.Err() == nil {
				t.fail(&DroppedError{Addr: t.cfg.Addr, Silence: t.silentFor(), Err: ErrKeepaliveTimeout})
			}
		})
	}
	wg.Wait()
}

// recordLocked records why the chain ended, once: the earliest hop that is
// down. Called with mu held.
func (c *Chain) recordLocked() {
	if c.err != nil {
		return
	}
	for i, t := range c.hops {
		if err := t.Err(); err != nil {
			c.err = c.wrap(i, len(c.hops), t.cfg.Addr, err)
			return
		}
	}
}

// closeHops closes the hops, the last first.
func (c *Chain) closeHops() {
	for i := len(c.hops) - 1; i >= 0; i-- {
		_ = c.hops[i].Close()
	}
}

// DialContext opens a connection to addr through the last hop (the host
// is resolved by that hop). It has the shape of a pgx DialFunc.
func (c *Chain) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	last := len(c.hops) - 1
	conn, err := c.hops[last].DialContext(ctx, network, addr)
	if err != nil {
		if cerr := c.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, c.wrap(last, len(c.hops), c.hops[last].cfg.Addr, err)
	}
	return conn, nil
}

// Done is closed when any hop has dropped or the chain was closed.
func (c *Chain) Done() <-chan struct{} { return c.done }

// Err is nil while every hop is up; afterwards the error of the hop that
// went down first (a [*HopError] for chains of several hops, wrapping a
// [*DroppedError]), or one wrapping [ErrClosed] after [Chain.Close].
//
// When a hop is down and the chain has not yet decided which hop to name
// (it waits for the hops before a silent hop to answer a keepalive or
// reach their own keepalive bound), Err waits for that decision.
func (c *Chain) Err() error {
	c.mu.Lock()
	if c.err != nil {
		defer c.mu.Unlock()
		return c.err
	}
	down := false
	for _, t := range c.hops {
		if t.Err() != nil {
			down = true
			break
		}
	}
	c.mu.Unlock()
	if !down {
		return nil
	}
	// A hop may be down a moment before watch notices: its connections
	// already fail with its error, which Err must explain, once watch has
	// found the hop to blame.
	<-c.done
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes every hop, the last first, and waits for them.
func (c *Chain) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.recordLocked()
		if c.err == nil {
			c.err = fmt.Errorf("SSH tunnel to %s: %w", c.hops[len(c.hops)-1].cfg.Addr, ErrClosed)
		}
		c.mu.Unlock()
		c.closeHops()
		<-c.watchDone
	})
	return nil
}

// Len is the number of hops.
func (c *Chain) Len() int { return len(c.hops) }

// Hop returns hop i (from 0).
func (c *Chain) Hop(i int) *Tunnel { return c.hops[i] }

// Last returns the last hop, which forwards to the database.
func (c *Chain) Last() *Tunnel { return c.hops[len(c.hops)-1] }
