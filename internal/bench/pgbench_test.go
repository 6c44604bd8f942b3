package bench_test

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// pgbenchDuration is how long one pgbench run lasts; PGRELAY_BENCH_PGBENCH
// overrides it (a Go duration).
func pgbenchDuration(b *testing.B) time.Duration {
	d := 5 * time.Second
	if v := os.Getenv("PGRELAY_BENCH_PGBENCH"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d < time.Second {
			b.Fatalf("PGRELAY_BENCH_PGBENCH=%q: want a duration of 1s or more", v)
		}
	}
	return d
}

// BenchmarkPgbench runs `pgbench -S` (select-only: one indexed SELECT per
// transaction, simple protocol) against the local endpoint of each path
// that has one, with 1 client and with 8 clients (2 threads) sharing one
// tunnel. The in-process path has no endpoint; BenchmarkRoundTrip covers
// it. ns/op is pgbench's average latency; tps its rate; the CPU metrics
// are per transaction and leave pgbench out, as PostgreSQL.
func BenchmarkPgbench(b *testing.B) {
	e := sharedEnv(b)
	d := pgbenchDuration(b)
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("c%d", clients), func(b *testing.B) {
			for _, p := range e.paths() {
				if p.addr == "" {
					continue
				}
				b.Run(p.name, func(b *testing.B) {
					var tx int64
					var elapsed time.Duration
					cpu := e.sampleCPU()
					for b.Loop() {
						r, err := e.runPgbench(p.addr, clients, d)
						if err != nil {
							b.Fatalf("pgbench over %s: %v", p.name, err)
						}
						tx += r.transactions
						elapsed += time.Duration(float64(r.transactions) / r.tps * float64(time.Second))
					}
					after := e.sampleCPU()
					if tx == 0 || elapsed <= 0 {
						b.Fatalf("pgbench over %s: no transactions", p.name)
					}
					tps := float64(tx) / elapsed.Seconds()
					b.ReportMetric(float64(clients)/tps*1e9, "ns/op")
					b.ReportMetric(tps, "tps")
					reportCPU(b, cpu, after, float64(tx))
				})
			}
		})
	}
}

// pgbenchResult is what one pgbench run printed.
type pgbenchResult struct {
	transactions int64
	tps          float64 // without initial connection time
}

var (
	pgbenchTx  = regexp.MustCompile(`(?m)^number of transactions actually processed: (\d+)`)
	pgbenchTPS = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)
	pgbenchBad = regexp.MustCompile(`(?m)^number of failed transactions: ([1-9]\d*)`)
)

// runPgbench runs pgbench -S against addr for d.
func (e *env) runPgbench(addr string, clients int, d time.Duration) (pgbenchResult, error) {
	threads := min(clients, 2)
	cmd := exec.Command("pgbench", "-n", "-S", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(threads),
		"-T", strconv.Itoa(int(d/time.Second)))
	cmd.Env = e.pgEnv(addr)
	cmd.SysProcAttr = dieWithParent()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return pgbenchResult{}, fmt.Errorf("%v\n%s", err, out)
	}
	if m := pgbenchBad.FindSubmatch(out); m != nil {
		return pgbenchResult{}, fmt.Errorf("%s failed transactions\n%s", m[1], out)
	}
	mtx, mtps := pgbenchTx.FindSubmatch(out), pgbenchTPS.FindSubmatch(out)
	if mtx == nil || mtps == nil {
		return pgbenchResult{}, fmt.Errorf("unexpected output:\n%s", out)
	}
	var r pgbenchResult
	r.transactions, _ = strconv.ParseInt(string(mtx[1]), 10, 64)
	r.tps, _ = strconv.ParseFloat(string(mtps[1]), 64)
	if r.tps <= 0 {
		return pgbenchResult{}, fmt.Errorf("tps %v:\n%s", r.tps, out)
	}
	return r, nil
}
