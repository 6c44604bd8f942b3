package bench_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// rowShape is one table that the psql copies read: rows of one text
// column, each line of COPY output (the text and its newline) exactly
// bytes long.
type rowShape struct {
	name, table string
	bytes       int
}

// rowShapes are the small (100 B), medium (1 kB) and large (1 MB) rows.
var rowShapes = []rowShape{
	{"small", "rows_small", 100},
	{"medium", "rows_medium", 1000},
	{"large", "rows_large", 1_000_000},
}

// clientPath is a way for a client program (psql, pg_dump, pg_restore)
// to reach PostgreSQL: a local address, or `pgrelay exec`, which runs the
// program with its own per-run endpoint.
type clientPath struct {
	name string
	addr string // the address the program connects to; "" with exec
	exec bool
}

// clientPaths returns the paths of the client benchmarks: direct, the
// long-lived ssh -L, the pgrelay proxy (and the baseline build's, when
// withBase and there is one) and `pgrelay exec`.
func (e *env) clientPaths(withBase bool) []clientPath {
	ps := []clientPath{
		{name: "direct", addr: e.pg.Addr()},
		{name: "openssh", addr: e.forward.addr},
		{name: "pgrelay_proxy", addr: e.proxy.addr},
	}
	if withBase && e.baseProxy != nil {
		ps = append(ps, clientPath{name: "pgrelay_proxy_base", addr: e.baseProxy.addr})
	}
	return append(ps, clientPath{name: "pgrelay_exec", exec: true})
}

// copyBytesPerShape is how much one psql copy reads, in bytes:
// PGRELAY_BENCH_COPY_MB (10⁶ bytes, default 256).
func copyBytesPerShape(b *testing.B) int64 {
	return int64(envInt(b, "PGRELAY_BENCH_COPY_MB", 256)) * 1e6
}

// dumpScale is the pgbench scale of the database that pg_dump and
// pg_restore move: PGRELAY_BENCH_DUMP_SCALE (default 50, about 750 MB).
func dumpScale(b *testing.B) int {
	return envInt(b, "PGRELAY_BENCH_DUMP_SCALE", 50)
}

// BenchmarkClients runs the programs users move data with, against each
// path: `psql -c '\copy TABLE to /dev/null'` of small, medium and large
// rows, `pg_dump -Fc` of a pgbench database and `pg_restore` of its dump
// into an empty database. Each operation is one run of the program (for
// `pgrelay exec`, of pgrelay exec running it, tunnel setup included).
// MB/s is of the table data moved (COPY text); the CPU metrics are per
// GB of it: cpu-tool is the program's own, which is the same on every
// path and left out of the total.
func BenchmarkClients(b *testing.B) {
	e := sharedEnv(b)
	b.Run("copy", func(b *testing.B) {
		size := copyBytesPerShape(b)
		e.prepareCopyTables(b, size)
		for _, shape := range rowShapes {
			rows := size / int64(shape.bytes)
			sql := fmt.Sprintf(`\copy %s to '/dev/null'`, shape.table)
			b.Run(shape.name, func(b *testing.B) {
				for _, p := range e.clientPaths(true) {
					b.Run(p.name, func(b *testing.B) {
						e.benchClient(b, p, rows*int64(shape.bytes), nil,
							"psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql)
					})
				}
			})
		}
	})
	b.Run("pg_dump", func(b *testing.B) {
		src := e.prepareDumpSource(b)
		out := filepath.Join(e.dir, "dump-out.pgdump")
		for _, p := range e.clientPaths(false) {
			b.Run(p.name, func(b *testing.B) {
				e.benchClient(b, p, src.bytes, nil, "pg_dump", "-Fc", "-d", "dumpsrc", "-f", out)
			})
		}
		_ = os.Remove(out)
	})
	b.Run("pg_restore", func(b *testing.B) {
		src := e.prepareDumpSource(b)
		for _, p := range e.clientPaths(false) {
			b.Run(p.name, func(b *testing.B) {
				fresh := func() {
					e.pg.Exec(b, "DROP DATABASE IF EXISTS restoredst WITH (FORCE)")
					e.pg.CreateDatabase(b, "restoredst", "bench")
				}
				e.benchClient(b, p, src.bytes, fresh,
					"pg_restore", "--no-owner", "--exit-on-error", "-d", "restoredst", src.file)
			})
		}
	})
}

// benchClient runs argv over path p once per operation (before, when
// set, with the timer stopped before each) and reports the rate of
// bytesPerOp and the CPU per GB.
func (e *env) benchClient(b *testing.B, p clientPath, bytesPerOp int64, before func(), argv ...string) {
	b.SetBytes(bytesPerOp)
	var tool time.Duration
	n := 0
	cpu := e.sampleCPU()
	for b.Loop() {
		if before != nil {
			b.StopTimer()
			before()
			b.StartTimer()
		}
		t, err := e.runClient(p, argv)
		if err != nil {
			b.Fatalf("%s over %s: %v", argv[0], p.name, err)
		}
		tool += t
		n++
	}
	gb := float64(bytesPerOp) * float64(n) / 1e9
	after := e.sampleCPU()
	// This process is not on the path of a program: leave it out.
	cpu.client, after.client = 0, 0
	reportCPUPer(b, cpu, after, gb, "GB")
	b.ReportMetric(float64(tool.Nanoseconds())/gb, "cpu-tool-ns/GB")
}

// timesLine matches a time of the shell's `times`: "0m1.230s" (bash),
// "0m1.230000s" (dash).
var timesLine = regexp.MustCompile(`(\d+)m(\d+(?:\.\d+)?)s`)

// runClient runs argv over p and returns the program's CPU time. Over
// exec, the program runs under `bash -c '"$@"; times'`, so that the shell
// reports the program's CPU and what `pgrelay exec` itself used is the
// rest of what it and its children used (added to e.reapedPgrelay). bash,
// not sh: dash's `times` counts in 10 ms ticks, each of its four figures
// rounded down, which put up to 40 ms of the shell's and the program's
// CPU per run on pgrelay's side; bash's counts in milliseconds.
func (e *env) runClient(p clientPath, argv []string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	var cmd *exec.Cmd
	if p.exec {
		sh := append([]string{"exec", "bench", "--", "bash", "-c", `"$@"; s=$?; times; exit $s`, "bash"}, argv...)
		cmd = e.pgrelay.command(ctx, e, sh...)
	} else {
		cmd = exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.Env = e.pgEnv(p.addr)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = dieWithParent()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("%v\n%s", err, tail(stderr.String(), 2000))
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0, nil
	}
	total := rusageTime(ru)
	if !p.exec {
		return total, nil
	}
	m := timesLine.FindAllStringSubmatch(stdout.String(), -1)
	if len(m) < 4 {
		return 0, fmt.Errorf("no `times` output from the shell under pgrelay exec: %q", stdout.String())
	}
	var shell, program time.Duration
	for i, mm := range m[len(m)-4:] {
		min, _ := strconv.Atoi(mm[1])
		sec, _ := strconv.ParseFloat(mm[2], 64)
		d := time.Duration(min)*time.Minute + time.Duration(sec*float64(time.Second))
		if i < 2 {
			shell += d
		} else {
			program += d
		}
	}
	if own := total - shell - program; own > 0 {
		e.reapedPgrelay.Add(int64(own))
	}
	return program, nil
}

// tail returns the last n bytes of s.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// prepareCopyTables makes the tables of the psql copies in the bench
// database, each size bytes of COPY output, and freezes them so that
// the first copy sets no hint bits. The column is stored uncompressed:
// the large rows would otherwise be decompressed by the server.
func (e *env) prepareCopyTables(b *testing.B, size int64) {
	e.prepare(b, fmt.Sprintf("copy tables of %d MB", size/1e6), func(tb *processTB) {
		ctx := context.Background()
		conn, err := pgx.ConnectConfig(ctx, e.direct.Copy())
		if err != nil {
			tb.Fatalf("connect: %v", err)
		}
		defer conn.Close(ctx)
		for _, s := range rowShapes {
			text := s.bytes - 1 // the newline makes up the line
			repeat := (text + 31) / 32
			rows := size / int64(s.bytes)
			for _, sql := range []string{
				"DROP TABLE IF EXISTS " + s.table,
				"CREATE TABLE " + s.table + " (v text)",
				"ALTER TABLE " + s.table + " ALTER COLUMN v SET STORAGE EXTERNAL",
				fmt.Sprintf("INSERT INTO %s SELECT left(repeat(md5(g::text), %d), %d) FROM generate_series(1, %d) g",
					s.table, repeat, text, rows),
				"VACUUM (FREEZE, ANALYZE) " + s.table,
			} {
				if _, err := conn.Exec(ctx, sql); err != nil {
					tb.Fatalf("%s: %v", sql, err)
				}
			}
		}
	})
}

// dumpSource is the database pg_dump reads and the dump pg_restore
// writes back.
type dumpSource struct {
	bytes int64  // COPY text of its tables
	file  string // a custom-format dump of it, made directly
}

// prepareDumpSource makes database dumpsrc with `pgbench -i` at
// dumpScale (data generated by the server), measures its tables' COPY
// text and dumps it once directly, for pg_restore.
func (e *env) prepareDumpSource(b *testing.B) dumpSource {
	scale := dumpScale(b)
	var src dumpSource
	src.file = filepath.Join(e.dir, fmt.Sprintf("dumpsrc-%d.pgdump", scale))
	e.prepare(b, fmt.Sprintf("pgbench database of scale %d", scale), func(tb *processTB) {
		ctx := context.Background()
		e.pg.CreateDatabase(tb, "dumpsrc", "bench")
		env := e.pgEnv(e.pg.Addr())
		env = append(env, "PGDATABASE=dumpsrc")
		cmd := exec.CommandContext(ctx, "pgbench", "-i", "-s", strconv.Itoa(scale), "-q", "-I", "dtGvp")
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("pgbench -i -s %d: %v\n%s", scale, err, out)
		}
		cmd = exec.CommandContext(ctx, "pg_dump", "-Fc", "-d", "dumpsrc", "-f", src.file)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("pg_dump: %v\n%s", err, out)
		}
		cfg := e.direct.Copy()
		cfg.Database = "dumpsrc"
		conn, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			tb.Fatalf("connect to dumpsrc: %v", err)
		}
		defer conn.Close(ctx)
		var n int64
		for _, t := range []string{"pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"} {
			var w countingWriter
			if _, err := conn.PgConn().CopyTo(ctx, &w, "COPY "+t+" TO STDOUT"); err != nil {
				tb.Fatalf("COPY %s: %v", t, err)
			}
			n += int64(w)
		}
		e.dumpBytes.Store(n)
	})
	src.bytes = e.dumpBytes.Load()
	return src
}

// countingWriter counts and drops what is written.
type countingWriter int64

func (w *countingWriter) Write(p []byte) (int, error) {
	*w += countingWriter(len(p))
	return len(p), nil
}
