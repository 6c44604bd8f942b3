package tunnel_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/testenv"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// dialChain opens a one-hop chain with cfg.
func dialChain(t *testing.T, cfg tunnel.Config) *tunnel.Chain {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := tunnel.DialChain(ctx, []tunnel.Config{cfg}, nil)
	if err != nil {
		t.Fatalf("DialChain: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// echoThrough writes through a new channel of c to the echo server at
// addr and checks the answer.
func echoThrough(t *testing.T, c *tunnel.Chain, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := c.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial through the chain: %v", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("ping\n")); err != nil {
		t.Fatalf("write: %v", err)
	}
	buf := make([]byte, 5)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Read(buf); err != nil || string(buf) != "ping\n" {
		t.Fatalf("echo through the chain: %q, %v", buf, err)
	}
}

func TestWarmHandsBackALiveChainOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, testenv.BastionOptions{})
	echo := startEcho(t)
	w := tunnel.NewWarm(time.Minute, 1)
	t.Cleanup(w.Close)

	c := dialChain(t, b.cfg)
	if !w.Put("conn-a", "v1", c) {
		t.Fatal("Put declined a live chain")
	}
	if got, _ := w.Take(context.Background(), "conn-b", "v1", nil); got != nil {
		t.Fatal("Take handed out a chain of another slot")
	}
	got, parked := w.Take(context.Background(), "conn-a", "v1", nil)
	if got != c {
		t.Fatalf("Take = %p, want the parked chain %p", got, c)
	}
	if parked < 0 || parked > time.Minute {
		t.Errorf("parked for %s", parked)
	}
	echoThrough(t, got, echo)
	if again, _ := w.Take(context.Background(), "conn-a", "v1", nil); again != nil {
		t.Fatal("a chain was handed out twice")
	}
}

func TestWarmClosesWhatItDoesNotHandOut(t *testing.T) {
	t.Parallel()
	b := setup(t, testenv.BastionOptions{})

	t.Run("window passes", func(t *testing.T) {
		w := tunnel.NewWarm(200*time.Millisecond, 1)
		t.Cleanup(w.Close)
		c := dialChain(t, b.cfg)
		w.Put("k", "v1", c)
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("a parked chain outlived its window by 10 s")
		}
		if w.Len() != 0 {
			t.Errorf("Len = %d after the window", w.Len())
		}
	})
	t.Run("newer chain under the same key", func(t *testing.T) {
		w := tunnel.NewWarm(time.Minute, 1)
		t.Cleanup(w.Close)
		older, newer := dialChain(t, b.cfg), dialChain(t, b.cfg)
		w.Put("k", "v1", older)
		w.Put("k", "v1", newer)
		select {
		case <-older.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the older chain was not closed")
		}
		if got, _ := w.Take(context.Background(), "k", "v1", nil); got != newer {
			t.Fatal("Take did not hand out the newer chain")
		}
	})
	t.Run("closed warm", func(t *testing.T) {
		w := tunnel.NewWarm(time.Minute, 1)
		c := dialChain(t, b.cfg)
		w.Put("k", "v1", c)
		w.Close()
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("Close left a parked chain open")
		}
		if w.Put("k", "v1", dialChain(t, b.cfg)) {
			t.Fatal("Put accepted a chain after Close")
		}
	})
	t.Run("another fingerprint", func(t *testing.T) {
		w := tunnel.NewWarm(time.Minute, 1)
		t.Cleanup(w.Close)
		c := dialChain(t, b.cfg)
		w.Put("k", "v1", c)
		if got, _ := w.Take(context.Background(), "k", "v2", nil); got != nil {
			t.Fatal("Take handed out a chain parked under another fingerprint")
		}
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("a chain of an earlier version of the connection was left open")
		}
	})
	t.Run("several per slot", func(t *testing.T) {
		w := tunnel.NewWarm(time.Minute, 2)
		t.Cleanup(w.Close)
		a, b2, c := dialChain(t, b.cfg), dialChain(t, b.cfg), dialChain(t, b.cfg)
		w.Put("k", "v1", a)
		w.Put("k", "v1", b2)
		if w.Len() != 2 {
			t.Fatalf("Len = %d, want both kept", w.Len())
		}
		w.Put("k", "v1", c) // the slot is full: the oldest goes
		select {
		case <-a.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the oldest chain of a full slot was not closed")
		}
		if got, _ := w.Take(context.Background(), "k", "v1", nil); got != c {
			t.Fatal("Take did not hand out the newest chain first")
		}
		if got, _ := w.Take(context.Background(), "k", "v1", nil); got != b2 {
			t.Fatal("Take did not hand out the next newest chain")
		}
		if got, _ := w.Take(context.Background(), "k", "v1", nil); got != nil || w.Len() != 0 {
			t.Fatal("Take handed out more than was parked")
		}
	})
	t.Run("check refuses", func(t *testing.T) {
		w := tunnel.NewWarm(time.Minute, 1)
		t.Cleanup(w.Close)
		c := dialChain(t, b.cfg)
		w.Put("k", "v1", c)
		refuse := func(*tunnel.Chain) error { return errors.New("host key no longer pinned") }
		if got, _ := w.Take(context.Background(), "k", "v1", refuse); got != nil {
			t.Fatal("Take handed out a chain its check refused")
		}
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("a refused chain was left open")
		}
	})
	t.Run("no window", func(t *testing.T) {
		w := tunnel.NewWarm(0, 1)
		if w.Put("k", "v1", dialChain(t, b.cfg)) {
			t.Fatal("Put kept a chain without a window")
		}
	})
	t.Run("dropped chain", func(t *testing.T) {
		w := tunnel.NewWarm(time.Minute, 1)
		t.Cleanup(w.Close)
		c := dialChain(t, b.cfg)
		_ = c.Close()
		if w.Put("k", "v1", c) {
			t.Fatal("Put kept a closed chain")
		}
	})
}

// A parked chain whose bastion stopped answering (frozen, connection
// still open) is not handed out: Take's keepalive gets no reply, and the
// chain is closed.
func TestWarmRefusesAFrozenChain(t *testing.T) {
	t.Parallel()
	b := setup(t, testenv.BastionOptions{})
	fp := testenv.StartFaultProxy(t, b.bastion.Addr())
	cfg := b.cfg
	cfg.Addr = fp.Addr()
	w := tunnel.NewWarm(time.Minute, 1)
	t.Cleanup(w.Close)
	c := dialChain(t, cfg)
	w.Put("k", "v1", c)
	fp.Freeze()
	t.Cleanup(fp.Thaw)

	got, _ := w.Take(context.Background(), "k", "v1", nil)
	if got != nil {
		t.Fatal("Take handed out a chain whose bastion does not answer")
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the frozen chain was not closed")
	}
	if err := c.Err(); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("chain error = %v, want closed", err)
	}
}

func TestPingAnswersWhileUp(t *testing.T) {
	t.Parallel()
	b := setup(t, testenv.BastionOptions{})
	c := dialChain(t, b.cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping of a live chain: %v", err)
	}
	_ = c.Close()
	if err := c.Ping(ctx); err == nil {
		t.Fatal("Ping of a closed chain succeeded")
	}
}
