package bench_test

import (
	"context"
	"math/rand/v2"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/testenv"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// Keepalive settings of the drop-detection benchmark, the same for
// pgrelay (KeepaliveInterval, KeepaliveCountMax) and OpenSSH
// (ServerAliveInterval, ServerAliveCountMax).
const (
	dropInterval = time.Second
	dropCount    = 3
)

// dropGuard bounds the wait for a drop to be noticed; far above
// dropInterval × dropCount, it only turns a hang into a failure.
const dropGuard = 30 * time.Second

// BenchmarkDropDetection measures the time from the moment the path to
// the bastion goes silent (testenv.FaultProxy.Freeze: sockets stay open,
// no byte passes) to the moment the tunnel reports the drop: pgrelay's
// Tunnel.Done (which every connection through it sees at once), and the
// exit of `ssh -N -L`. Each has an open PostgreSQL connection through it
// and keepalives every second, three missed allowed; the freeze comes a
// random time after a keepalive. ns/op is the detection time; limit-ns
// is interval × count.
func BenchmarkDropDetection(b *testing.B) {
	e := sharedEnv(b)
	ctx := context.Background()
	report := func(b *testing.B, total time.Duration, n int) {
		b.ReportMetric(float64(total.Nanoseconds())/float64(n), "ns/op")
		b.ReportMetric(float64((dropInterval * dropCount).Nanoseconds()), "limit-ns")
	}

	b.Run("pgrelay", func(b *testing.B) {
		var total time.Duration
		n := 0
		for b.Loop() {
			fp := testenv.StartFaultProxy(b, e.bastion.Addr())
			cfg := e.tunnelCfg
			cfg.Addr = fp.Addr()
			cfg.KeepaliveInterval, cfg.KeepaliveCountMax = dropInterval, dropCount
			t, err := tunnel.Dial(ctx, cfg)
			if err != nil {
				b.Fatalf("tunnel.Dial: %v", err)
			}
			conn := firstQuery(b, e.viaTunnel(t))
			// Wait for a keepalive reply, then for a random part of an
			// interval.
			for t.Stats().LastKeepaliveReply.IsZero() {
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(rand.N(dropInterval))
			start := time.Now()
			fp.Freeze()
			select {
			case <-t.Done():
			case <-time.After(dropGuard):
				b.Fatalf("tunnel still up %v after the freeze", dropGuard)
			}
			total += time.Since(start)
			n++
			b.StopTimer()
			fp.Thaw()
			_ = conn.Close(ctx)
			_ = t.Close()
			b.StartTimer()
		}
		report(b, total, n)
	})

	b.Run("openssh", func(b *testing.B) {
		var total time.Duration
		n := 0
		for b.Loop() {
			fp := testenv.StartFaultProxy(b, e.bastion.Addr())
			fwd, first, err := e.startSSHForward(ctx, b, fp.Port(), []string{
				"-o", "ServerAliveInterval=" + strconv.Itoa(int(dropInterval/time.Second)),
				"-o", "ServerAliveCountMax=" + strconv.Itoa(dropCount),
			})
			if err != nil {
				b.Fatal(err)
			}
			cfg := e.viaAddr(fwd.addr)
			cfg.DialFunc = func(context.Context, string, string) (net.Conn, error) { return first, nil }
			conn := firstQuery(b, cfg)
			// ssh sends its first keepalive after an interval of silence:
			// wait for it, then for a random part of an interval.
			time.Sleep(dropInterval + rand.N(dropInterval))
			start := time.Now()
			fp.Freeze()
			select {
			case <-fwd.exited:
			case <-time.After(dropGuard):
				fwd.stop()
				b.Fatalf("ssh still running %v after the freeze", dropGuard)
			}
			total += time.Since(start)
			n++
			b.StopTimer()
			fp.Thaw()
			_ = conn.Close(ctx)
			b.StartTimer()
		}
		report(b, total, n)
	})
}
