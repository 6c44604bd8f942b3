package bench_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// copyRows is the number of 1000-byte rows (1001 bytes with the newline)
// that one throughput operation copies: 1 GB (10⁹ bytes, less 1001).
const copyRows = 1_000_000_000 / 1001

// copyBytes is the size of one throughput operation's COPY output.
const copyBytes = copyRows * 1001

// BenchmarkRoundTrip measures a `SELECT 1` round trip on one open
// connection over each path.
func BenchmarkRoundTrip(b *testing.B) {
	e := sharedEnv(b)
	for _, p := range e.paths() {
		b.Run(p.name, func(b *testing.B) {
			ctx := context.Background()
			conn := connect(b, p.config())
			var n int
			cpu := e.sampleCPU()
			for b.Loop() {
				if err := conn.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
					b.Fatalf("SELECT 1 over %s: %v", p.name, err)
				}
			}
			reportCPU(b, cpu, e.sampleCPU(), float64(b.N))
			reportPerOp(b, 1e3, "µs/op")
		})
	}
}

// BenchmarkTunnelSetup measures the time from nothing to the first query
// result: a new pgrelay tunnel (SSH handshake in-process) or a newly
// spawned `ssh -N -L`, then a pgx connection through it and `SELECT 1`.
// Closing is not timed, but its CPU is counted. The direct connect is the
// baseline.
func BenchmarkTunnelSetup(b *testing.B) {
	e := sharedEnv(b)
	ctx := context.Background()

	b.Run("direct", func(b *testing.B) {
		cpu := e.sampleCPU()
		for b.Loop() {
			conn := firstQuery(b, e.direct.Copy())
			b.StopTimer()
			_ = conn.Close(ctx)
			b.StartTimer()
		}
		reportCPU(b, cpu, e.sampleCPU(), float64(b.N))
		reportPerOp(b, 1e6, "ms/op")
	})

	b.Run("openssh", func(b *testing.B) {
		cpu := e.sampleCPU()
		for b.Loop() {
			fwd, first, err := e.startSSHForward(ctx, b, 0, nil)
			if err != nil {
				b.Fatal(err)
			}
			// Hand pgx the connection that proved the forward up.
			cfg := e.viaAddr(fwd.addr)
			cfg.DialFunc = func(context.Context, string, string) (net.Conn, error) { return first, nil }
			conn := firstQuery(b, cfg)
			b.StopTimer()
			_ = conn.Close(ctx)
			fwd.stop()
			b.StartTimer()
		}
		reportCPU(b, cpu, e.sampleCPU(), float64(b.N))
		reportPerOp(b, 1e6, "ms/op")
	})

	b.Run("pgrelay", func(b *testing.B) {
		cpu := e.sampleCPU()
		for b.Loop() {
			t, err := tunnel.Dial(ctx, e.tunnelCfg)
			if err != nil {
				b.Fatalf("tunnel.Dial: %v", err)
			}
			conn := firstQuery(b, e.viaTunnel(t))
			b.StopTimer()
			_ = conn.Close(ctx)
			_ = t.Close()
			b.StartTimer()
		}
		reportCPU(b, cpu, e.sampleCPU(), float64(b.N))
		reportPerOp(b, 1e6, "ms/op")
	})
}

// BenchmarkThroughput measures reading 1 GB of COPY output
// (`COPY (SELECT repeat('x', 1000) FROM generate_series(1, N)) TO STDOUT`)
// into io.Discard on one open connection over each path.
func BenchmarkThroughput(b *testing.B) {
	e := sharedEnv(b)
	sql := fmt.Sprintf("COPY (SELECT repeat('x', 1000) FROM generate_series(1, %d)) TO STDOUT", copyRows)
	for _, p := range e.paths() {
		b.Run(p.name, func(b *testing.B) {
			ctx := context.Background()
			conn := connect(b, p.config())
			b.SetBytes(copyBytes)
			cpu := e.sampleCPU()
			for b.Loop() {
				tag, err := conn.PgConn().CopyTo(ctx, io.Discard, sql)
				if err != nil {
					b.Fatalf("COPY over %s: %v", p.name, err)
				}
				if tag.RowsAffected() != copyRows {
					b.Fatalf("COPY over %s: %d rows, want %d", p.name, tag.RowsAffected(), copyRows)
				}
			}
			reportCPU(b, cpu, e.sampleCPU(), float64(b.N))
		})
	}
}

// connect opens a pgx connection that is closed when the benchmark ends.
func connect(b *testing.B, cfg *pgx.ConnConfig) *pgx.Conn {
	b.Helper()
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		b.Fatalf("connect: %v", err)
	}
	b.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// firstQuery connects with cfg and runs `SELECT 1`; the caller closes the
// connection.
func firstQuery(b *testing.B, cfg *pgx.ConnConfig) *pgx.Conn {
	b.Helper()
	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		b.Fatalf("connect: %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
		_ = conn.Close(ctx)
		b.Fatalf("SELECT 1: %v", err)
	}
	return conn
}

// reportPerOp reports the time per operation in another unit, ns/div.
func reportPerOp(b *testing.B, div float64, unit string) {
	if b.N > 0 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/div/float64(b.N), unit)
	}
}
