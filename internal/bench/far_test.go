package bench_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/bench"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// farDelays are the one-way delays of the far-bastion benchmarks:
// PGRELAY_BENCH_DELAYS, comma-separated Go durations (default 5ms,25ms).
func farDelays(b *testing.B) []time.Duration {
	s := os.Getenv("PGRELAY_BENCH_DELAYS")
	if s == "" {
		s = "5ms,25ms"
	}
	var out []time.Duration
	for f := range strings.SplitSeq(s, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil || d <= 0 {
			b.Fatalf("PGRELAY_BENCH_DELAYS=%q: want comma-separated positive durations such as 5ms,25ms", s)
		}
		out = append(out, d)
	}
	return out
}

// farPaths are the long-lived paths through latency relays of one delay:
// one in front of the bastion (for every tunnelled path), one in front of
// PostgreSQL (for the direct path: a database as far away as the bastion).
type farPaths struct {
	delay    time.Duration
	name     string // the pgrelay connection through the bastion relay
	sshRelay *bench.LatencyRelay
	pgRelay  *bench.LatencyRelay
	forward  *sshForward
	proxy    *pgrelayProxy
	tun      *tunnel.Tunnel
}

// farEnv returns the paths for delay, starting them the first time.
func (e *env) farEnv(b *testing.B, delay time.Duration) *farPaths {
	e.prepare(b, "far paths "+delay.String(), func(tb *processTB) {
		ctx := context.Background()
		f := &farPaths{delay: delay, name: "far-" + delay.String()}
		var err error
		if f.sshRelay, err = bench.NewLatencyRelay(e.bastion.Addr(), delay); err != nil {
			tb.Fatalf("%v", err)
		}
		tb.Cleanup(func() { _ = f.sshRelay.Close() })
		if f.pgRelay, err = bench.NewLatencyRelay(e.pg.Addr(), delay); err != nil {
			tb.Fatalf("%v", err)
		}
		tb.Cleanup(func() { _ = f.pgRelay.Close() })

		fwd, first, err := e.startSSHForward(ctx, tb, f.sshRelay.Port(), nil)
		if err != nil {
			tb.Fatalf("%v", err)
		}
		_ = first.Close()
		f.forward = fwd
		e.addForward(fwd)
		tb.Cleanup(fwd.stop)

		e.saveConnection(ctx, tb, e.pgrelay, f.name, f.sshRelay.Port())
		f.proxy = e.startProxy(tb, e.pgrelay, f.name)
		tb.Cleanup(f.proxy.stop)

		cfg := e.tunnelCfg
		cfg.Addr = f.sshRelay.Addr()
		if f.tun, err = tunnel.Dial(ctx, cfg); err != nil {
			tb.Fatalf("tunnel through the latency relay: %v", err)
		}
		tb.Cleanup(func() { _ = f.tun.Close() })

		e.farMu.Lock()
		if e.far == nil {
			e.far = map[time.Duration]*farPaths{}
		}
		e.far[delay] = f
		e.farMu.Unlock()
	})
	e.farMu.Lock()
	defer e.farMu.Unlock()
	return e.far[delay]
}

// paths returns the long-lived far paths, as env.paths does.
func (f *farPaths) paths(e *env) []path {
	direct := e.viaAddr(f.pgRelay.Addr())
	return []path{
		{"direct", func() *pgx.ConnConfig { return direct.Copy() }, f.pgRelay.Addr()},
		{"openssh", func() *pgx.ConnConfig { return e.viaAddr(f.forward.addr) }, f.forward.addr},
		{"pgrelay_proxy", func() *pgx.ConnConfig { return e.viaAddr(f.proxy.addr) }, f.proxy.addr},
		{"pgrelay_inprocess", func() *pgx.ConnConfig { return e.viaTunnel(f.tun) }, ""},
	}
}

// farRepeat is how many setups one first-row operation times:
// PGRELAY_BENCH_FAR_REPEAT (default 5).
func farRepeat(b *testing.B) int { return envInt(b, "PGRELAY_BENCH_FAR_REPEAT", 5) }

// farCopyRows is the number of 1000-byte rows of the far copy:
// PGRELAY_BENCH_FAR_COPY_MB (default 100) MB.
func farCopyRows(b *testing.B) int64 {
	return int64(envInt(b, "PGRELAY_BENCH_FAR_COPY_MB", 100)) * 1e6 / 1001
}

// BenchmarkFar puts the bastion (and, for the direct path, PostgreSQL)
// behind a userspace latency relay (bench.LatencyRelay) with each delay
// of PGRELAY_BENCH_DELAYS, one way, and measures:
//
//   - first_row: from nothing to the first row of `SELECT 1` (tunnel,
//     login, query), each operation the median of farRepeat setups:
//     pgrelay's tunnel.Dial + pgx against spawning `ssh -N -L` + pgx, and
//     `pgrelay exec -- psql -c 'select 1'` against spawning `ssh -N -L`
//     and running the same psql through it; pgrelay_warm is a run on a
//     tunnel kept open after an earlier run (serve --ssh-warm);
//     round-trips is the client's flights through the relay per setup;
//   - session: a dbt-like session, 4 connections at once, each opened
//     and then running 50 short statements, each in its own BEGIN/COMMIT
//     (simple protocol, as psycopg2);
//   - copy: a 100 MB COPY TO STDOUT read by pgx on an open connection.
func BenchmarkFar(b *testing.B) {
	e := sharedEnv(b)
	for _, delay := range farDelays(b) {
		b.Run(delay.String(), func(b *testing.B) {
			f := e.farEnv(b, delay)
			b.Run("first_row", func(b *testing.B) { e.benchFirstRow(b, f) })
			b.Run("session", func(b *testing.B) {
				for _, p := range f.paths(e) {
					b.Run(p.name, func(b *testing.B) { benchSession(b, p) })
				}
			})
			b.Run("copy", func(b *testing.B) {
				rows := farCopyRows(b)
				sql := fmt.Sprintf("COPY (SELECT repeat('x', 1000) FROM generate_series(1, %d)) TO STDOUT", rows)
				for _, p := range f.paths(e) {
					b.Run(p.name, func(b *testing.B) {
						conn := connect(b, p.config())
						b.SetBytes(rows * 1001)
						for b.Loop() {
							tag, err := conn.PgConn().CopyTo(context.Background(), io.Discard, sql)
							if err != nil || tag.RowsAffected() != rows {
								b.Fatalf("COPY over %s: %v (%d rows)", p.name, err, tag.RowsAffected())
							}
						}
					})
				}
			})
		})
	}
}

// benchFirstRow times setups through f's relays.
func (e *env) benchFirstRow(b *testing.B, f *farPaths) {
	ctx := context.Background()
	repeat := farRepeat(b)
	// measure runs setup repeat times per operation and reports the
	// median time and the client's mean flights through relay.
	measure := func(b *testing.B, relay *bench.LatencyRelay, setup func(b *testing.B) (done func())) {
		var times []float64
		var flights int64
		for b.Loop() {
			for range repeat {
				before := relay.Stats().Flights
				start := time.Now()
				done := setup(b)
				times = append(times, float64(time.Since(start).Nanoseconds()))
				flights += relay.Stats().Flights - before
				b.StopTimer()
				done()
				b.StartTimer()
			}
		}
		b.ReportMetric(median(times)/1e6, "first-row-ms")
		b.ReportMetric(float64(flights)/float64(len(times)), "round-trips")
	}
	direct := e.viaAddr(f.pgRelay.Addr())
	b.Run("direct", func(b *testing.B) {
		measure(b, f.pgRelay, func(b *testing.B) func() {
			conn := firstQuery(b, direct.Copy())
			return func() { _ = conn.Close(ctx) }
		})
	})
	b.Run("openssh", func(b *testing.B) {
		measure(b, f.sshRelay, func(b *testing.B) func() {
			fwd, first, err := e.startSSHForward(ctx, b, f.sshRelay.Port(), nil)
			if err != nil {
				b.Fatal(err)
			}
			cfg := e.viaAddr(fwd.addr)
			cfg.DialFunc = func(context.Context, string, string) (net.Conn, error) { return first, nil }
			conn := firstQuery(b, cfg)
			return func() {
				_ = conn.Close(ctx)
				fwd.stop()
			}
		})
	})
	b.Run("pgrelay", func(b *testing.B) {
		measure(b, f.sshRelay, func(b *testing.B) func() {
			cfg := e.tunnelCfg
			cfg.Addr = f.sshRelay.Addr()
			t, err := tunnel.Dial(ctx, cfg)
			if err != nil {
				b.Fatalf("tunnel.Dial: %v", err)
			}
			conn := firstQuery(b, e.viaTunnel(t))
			return func() {
				_ = conn.Close(ctx)
				_ = t.Close()
			}
		})
	})
	// pgrelay_warm: a run of `pgrelay serve --ssh-warm` after an earlier
	// run of the same connection: the tunnel kept open is taken (one
	// keepalive round trip to check it answers) instead of dialled.
	b.Run("pgrelay_warm", func(b *testing.B) {
		cfg := e.tunnelCfg
		cfg.Addr = f.sshRelay.Addr()
		first, err := tunnel.DialChain(ctx, []tunnel.Config{cfg}, nil)
		if err != nil {
			b.Fatalf("tunnel.DialChain: %v", err)
		}
		w := tunnel.NewWarm(time.Hour, 1)
		defer w.Close()
		w.Put("bench", "v1", first)
		measure(b, f.sshRelay, func(b *testing.B) func() {
			c, _ := w.Take(ctx, "bench", "v1", nil)
			if c == nil {
				b.Fatal("the kept tunnel was not handed out")
			}
			conn := firstQuery(b, e.viaChain(c))
			return func() {
				_ = conn.Close(ctx)
				w.Put("bench", "v1", c)
			}
		})
	})
	psql := []string{"psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", "select 1"}
	b.Run("openssh_psql", func(b *testing.B) {
		measure(b, f.sshRelay, func(b *testing.B) func() {
			fwd, first, err := e.startSSHForward(ctx, b, f.sshRelay.Port(), nil)
			if err != nil {
				b.Fatal(err)
			}
			_ = first.Close()
			if _, err := e.runClient(clientPath{name: "openssh_psql", addr: fwd.addr}, psql); err != nil {
				fwd.stop()
				b.Fatalf("psql through ssh -L: %v", err)
			}
			return fwd.stop
		})
	})
	b.Run("pgrelay_exec", func(b *testing.B) {
		measure(b, f.sshRelay, func(b *testing.B) func() {
			out, err := e.pgrelay.run(ctx, e, append([]string{"exec", f.name, "--"}, psql...)...)
			if err != nil || strings.TrimSpace(out) != "1" {
				b.Fatalf("pgrelay exec psql: %q, %v", out, err)
			}
			return func() {}
		})
	})
}

// Shape of the dbt-like session.
const (
	sessionConns      = 4
	sessionStatements = 50
)

// benchSession runs the dbt-like session over p: sessionConns
// connections at once, each connecting and running sessionStatements
// statements, each in its own transaction, with the simple protocol.
func benchSession(b *testing.B, p path) {
	ctx := context.Background()
	for b.Loop() {
		var wg sync.WaitGroup
		errs := make([]error, sessionConns)
		for i := range sessionConns {
			wg.Go(func() {
				cfg := p.config()
				cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
				conn, err := pgx.ConnectConfig(ctx, cfg)
				if err != nil {
					errs[i] = fmt.Errorf("connect: %w", err)
					return
				}
				defer conn.Close(ctx)
				for j := range sessionStatements {
					for _, sql := range []string{"BEGIN", fmt.Sprintf("SELECT %d AS model_%d", j, i), "COMMIT"} {
						if _, err := conn.Exec(ctx, sql); err != nil {
							errs[i] = fmt.Errorf("%s: %w", sql, err)
							return
						}
					}
				}
			})
		}
		wg.Wait()
		if err := firstError(errs); err != nil {
			b.Fatalf("session over %s: %v", p.name, err)
		}
	}
	reportPerOp(b, 1e6, "ms/op")
}

func firstError(errs []error) error {
	i := slices.IndexFunc(errs, func(err error) bool { return err != nil })
	if i < 0 {
		return nil
	}
	return errs[i]
}

// median returns the median of xs (0 for none).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
