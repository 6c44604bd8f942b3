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

// chainOf3 starts three bastions, the second behind a fault proxy, and
// returns configs for a chain through them (keepalives interval × count).
func chainOf3(t *testing.T, interval time.Duration, count int) ([]tunnel.Config, *testenv.FaultProxy) {
	t.Helper()
	var cfgs []tunnel.Config
	var fp *testenv.FaultProxy
	for i := range 3 {
		b := setupOwn(t, testenv.BastionOptions{})
		cfg := b.cfg
		if i == 1 {
			fp = testenv.StartFaultProxy(t, b.bastion.Addr())
			cfg.Addr = fp.Addr()
		}
		cfg.KeepaliveInterval, cfg.KeepaliveCountMax = interval, count
		cfgs = append(cfgs, cfg)
	}
	return cfgs, fp
}

// TestChainMiddleHopFrozen: hop 2 stops answering without closing; the
// chain ends within hop 2's keepalive bound, and its error names hop 2,
// although hop 3, whose traffic passes through hop 2, goes silent too and
// may run out of time first: always when its bound is shorter, and
// sometimes with the same bound (its last reply may be older than hop 2's).
func TestChainMiddleHopFrozen(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		hop3  time.Duration // hop 3's keepalive interval
		count int
	}{{"hop 3 quicker", 50 * time.Millisecond, 3}, {"same bound", 200 * time.Millisecond, 3}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			const interval, count = 200 * time.Millisecond, 3
			cfgs, fp := chainOf3(t, interval, count)
			cfgs[2].KeepaliveInterval, cfgs[2].KeepaliveCountMax = c.hop3, c.count
			echo := startEcho(t)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			ch, err := tunnel.DialChain(ctx, cfgs, nil)
			if err != nil {
				t.Fatalf("DialChain: %v", err)
			}
			defer ch.Close()
			conn, err := ch.DialContext(ctx, "tcp", echo)
			if err != nil {
				t.Fatalf("DialContext: %v", err)
			}
			defer conn.Close()
			start := time.Now()
			fp.Freeze()
			defer fp.Thaw()
			// What a run sees first: its connection through hop 3 fails.
			readErr := make(chan error, 1)
			go func() {
				_, err := conn.Read(make([]byte, 1))
				readErr <- err
			}()
			select {
			case <-readErr:
			case <-time.After(10 * time.Second):
				t.Fatal("connection through the chain still open 10s after hop 2 froze")
			}
			err = ch.Err() // asked as soon as the connection failed
			took := time.Since(start)
			if bound := interval*count + interval + time.Second; took > bound {
				t.Errorf("chain ended %v after hop 2 froze, want within %v", took, bound)
			}
			var he *tunnel.HopError
			if !errors.As(err, &he) || he.Hop != 2 || !strings.Contains(err.Error(), "hop 2 of 3 ("+cfgs[1].Addr+")") ||
				!errors.Is(err, tunnel.ErrKeepaliveTimeout) {
				t.Fatalf("chain error %v, want hop 2's keepalive time-out", err)
			}
			select {
			case <-ch.Done():
			default:
				t.Fatal("Err answered but Done is not closed")
			}
		})
	}
}
