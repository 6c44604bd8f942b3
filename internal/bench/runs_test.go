package bench_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/remote"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
)

// runsBatch is the number of runs submitted at once: PGRELAY_BENCH_RUNS
// (default 200).
func runsBatch(b *testing.B) int { return envInt(b, "PGRELAY_BENCH_RUNS", 200) }

// runsDirect reports whether the runs' connection goes straight to
// PostgreSQL (PGRELAY_BENCH_RUNS_DIRECT=1) rather than through the
// bastion.
func runsDirect() bool { return os.Getenv("PGRELAY_BENCH_RUNS_DIRECT") == "1" }

// BenchmarkRuns submits a batch of short runs (one SQL step, `select 1`,
// over a connection through the bastion) in bulk to 1, 2 and 4 `pgrelay
// serve` processes sharing one PostgreSQL store (a fresh store database
// each), and measures from the first run queued to the last ended:
// runs-per-min, and the queue latency (queued → started) p50 and p99.
// Each process has the default --max-runs. What limits the rate shows in
// the CPU per run of the serve processes, PostgreSQL (store and
// database) and the bastion's sshd, and in the machine's CPU use over
// the batch (machine-cpu-%, of all cores). The p1_warm, p2_warm and
// p4_warm cases run the same batches on processes with --ssh-warm 60s,
// where a run takes a tunnel an earlier run of the connection left open.
func BenchmarkRuns(b *testing.B) {
	e := sharedEnv(b)
	n := runsBatch(b)
	for i, c := range []struct {
		procs int
		warm  bool
	}{{1, false}, {2, false}, {4, false}, {1, true}, {2, true}, {4, true}} {
		name := "p" + strconv.Itoa(c.procs)
		var args []string
		if c.warm {
			name += "_warm"
			args = []string{"--ssh-warm", "60s"}
		}
		b.Run(name, func(b *testing.B) {
			r := e.startRunServers(b, c.procs, fmt.Sprintf("runs_store_%d_%d", c.procs, i), args...)
			var res runsResult
			for b.Loop() {
				res = r.batch(b, n)
			}
			res.report(b)
		})
	}
}

// runServers are serve processes sharing a store, with an API client of
// each and the job they run.
type runServers struct {
	e       *env
	servers []*e2etest.Server
	clients []*remote.Client
	job     string
	batches int
}

// startRunServers starts procs serve processes on a new store database,
// saves the connection (its key authorized at the bastion, its host key
// pinned by a first run) and the job.
func (e *env) startRunServers(b *testing.B, procs int, storeDB string, args ...string) *runServers {
	ctx := context.Background()
	e.pg.CreateDatabase(b, storeDB, e.pg.SuperUser)
	b.Cleanup(func() { e.pg.Exec(b, "DROP DATABASE IF EXISTS "+storeDB+" WITH (FORCE)") })
	storeURL := e.pg.ConnString(e.pg.SuperUser, e.pg.SuperPassword, storeDB)
	key := e2etest.NewMasterKey()
	envs := make([][]string, procs)
	for i := range envs {
		// The store URL holds a password: it goes in the environment.
		envs[i] = e2etest.ProcessEnv("PGRELAY_DATA_DIR="+b.TempDir(), secret.MasterKeyEnv+"="+key, "PGRELAY_STORE="+storeURL)
	}
	token := e2etest.CreateToken(b, e.pgrelayBin, envs[0], "bench", auth.Admin)
	r := &runServers{e: e, servers: make([]*e2etest.Server, procs), job: "short"}
	var wg sync.WaitGroup
	for i := range procs {
		wg.Go(func() {
			r.servers[i] = e2etest.StartServer(b, e.pgrelayBin, "serve-"+strconv.Itoa(i), e2etest.Options{Env: envs[i], Args: args})
		})
	}
	wg.Wait()
	for _, s := range r.servers {
		if s == nil {
			b.FailNow()
		}
		r.clients = append(r.clients, s.Client(b, token))
	}
	c := r.clients[0]
	spec := connection.Spec{Name: "bench", Host: e.pg.Host, Port: e.pg.Port, Database: "bench", User: "bench",
		Password: secret.New(e.password), SSLMode: connection.SSLDisable}
	if !runsDirect() {
		spec.Tunnel = &connection.Tunnel{Host: e.bastion.Host, Port: e.bastion.Port, User: e.bastion.User}
	}
	v, err := c.CreateConnection(ctx, spec)
	if err != nil {
		b.Fatal(err)
	}
	if v.SSHTunnel != nil {
		e.bastion.Authorize(b, v.SSHTunnel.PublicKey)
	}
	if _, err := c.ApplyJobs(ctx, []jobs.Job{{Name: r.job, Connection: "bench", Steps: []jobs.Step{{SQL: "select 1"}}}}); err != nil {
		b.Fatal(err)
	}
	// A first run pins the host key, so that the batch measures runs
	// against a known bastion.
	run, err := c.RunJob(ctx, r.job, jobs.API)
	if err != nil {
		b.Fatal(err)
	}
	if got := e2etest.WaitRun(b, c, run.ID, time.Minute, e2etest.Ended); got.Status != jobs.Succeeded {
		b.Fatalf("first run: %s: %s", got.Status, got.Reason)
	}
	return r
}

// runsResult is what one batch measured.
type runsResult struct {
	runs                 int
	span                 time.Duration // first queued to last ended
	queueP50, queueP99   time.Duration
	workers              int // processes that worked runs
	cpuServe, cpuPG      time.Duration
	cpuSSHD, machineBusy time.Duration
	machineTotal         time.Duration
}

// batch submits n runs through the servers in turn (8 at a time) and
// waits until all have ended.
func (r *runServers) batch(b *testing.B, n int) runsResult {
	ctx := context.Background()
	r.batches++
	before := r.cpu()
	busy0, total0 := machineCPU()
	ids := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for w := range 8 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				run, err := r.clients[i%len(r.clients)].RunJob(ctx, r.job, jobs.API)
				if err != nil {
					errs[w] = err
					return
				}
				ids[i] = run.ID
			}
		})
	}
	wg.Wait()
	if err := firstError(errs); err != nil {
		b.Fatalf("submit runs: %v", err)
	}
	want := map[string]bool{}
	for _, id := range ids {
		want[id] = true
	}
	// Until the batch has ended, ask only whether any run of the job has
	// not (one row): listing the whole batch ten times a second would add
	// to the CPU per run of the serve processes and PostgreSQL that the
	// batch measures. The runs' times come from one listing at the end.
	deadline := time.Now().Add(30 * time.Minute)
	for {
		open, err := r.clients[0].ListRuns(ctx, store.RunFilter{Job: r.job, Limit: 1,
			Statuses: []jobs.Status{jobs.Queued, jobs.Running}})
		if err != nil {
			b.Fatal(err)
		}
		if len(open) == 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("runs of the batch still not ended after 30 minutes (%s: %s)", open[0].ID, open[0].Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.StopTimer()
	after := r.cpu()
	busy1, total1 := machineCPU()
	all, err := r.clients[0].ListRuns(ctx, store.RunFilter{Job: r.job, Limit: n + 10*r.batches + 10})
	if err != nil {
		b.Fatal(err)
	}
	var runs []*jobs.Run
	for _, run := range all {
		if want[run.ID] {
			runs = append(runs, run)
		}
	}
	if len(runs) != n {
		b.Fatalf("listed %d of the batch's %d runs", len(runs), n)
	}
	res := runsResult{runs: n, cpuServe: after.serve - before.serve, cpuPG: after.pg - before.pg,
		cpuSSHD: after.sshd - before.sshd, machineBusy: busy1 - busy0, machineTotal: total1 - total0}
	var first, last time.Time
	var waits []time.Duration
	workers := map[string]bool{}
	for _, run := range runs {
		if run.Status != jobs.Succeeded {
			b.Fatalf("run %s: %s: %s", run.ID, run.Status, run.Reason)
		}
		if first.IsZero() || run.QueuedAt.Before(first) {
			first = run.QueuedAt
		}
		if run.EndedAt != nil && run.EndedAt.After(last) {
			last = *run.EndedAt
		}
		if run.StartedAt != nil {
			waits = append(waits, run.StartedAt.Sub(run.QueuedAt))
		}
		workers[run.Worker] = true
	}
	res.span = last.Sub(first)
	res.queueP50, res.queueP99 = percentile(waits, 50), percentile(waits, 99)
	res.workers = len(workers)
	b.StartTimer()
	return res
}

// report reports a batch's measurements.
func (r runsResult) report(b *testing.B) {
	if r.runs == 0 || r.span <= 0 {
		return
	}
	per := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 / float64(r.runs) }
	b.ReportMetric(float64(r.runs)/r.span.Minutes(), "runs/min")
	b.ReportMetric(float64(r.queueP50.Nanoseconds())/1e6, "queue-p50-ms")
	b.ReportMetric(float64(r.queueP99.Nanoseconds())/1e6, "queue-p99-ms")
	b.ReportMetric(float64(r.workers), "workers")
	b.ReportMetric(per(r.cpuServe), "cpu-serve-ms/run")
	b.ReportMetric(per(r.cpuPG), "cpu-postgres-ms/run")
	b.ReportMetric(per(r.cpuSSHD), "cpu-sshd-ms/run")
	if r.machineTotal > 0 {
		b.ReportMetric(100*float64(r.machineBusy)/float64(r.machineTotal), "machine-cpu-%")
	}
}

// runsCPU is the CPU time used so far by the serve processes, PostgreSQL
// and the bastion's sshd.
type runsCPU struct{ serve, pg, sshd time.Duration }

func (r *runServers) cpu() runsCPU {
	var c runsCPU
	procs := readAllStats()
	for _, s := range r.servers {
		c.serve += treeCPU(procs, s.Pid())
	}
	for _, p := range procs {
		if p.ppid == os.Getpid() && p.comm == "sshd" {
			c.sshd += treeCPU(procs, p.pid)
		}
	}
	// pg_ctl starts the postmaster in the background: find it by its
	// PID file.
	if data, err := os.ReadFile(filepath.Join(r.e.pg.DataDir, "postmaster.pid")); err == nil {
		line, _, _ := strings.Cut(string(data), "\n")
		if pid, err := strconv.Atoi(strings.TrimSpace(line)); err == nil {
			c.pg = treeCPU(procs, pid)
		}
	}
	return c
}

// machineCPU returns the busy and total CPU time of all cores so far,
// from /proc/stat.
func machineCPU() (busy, total time.Duration) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, 0
	}
	var ticks []int64
	for _, s := range f[1:] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, 0
		}
		ticks = append(ticks, v)
	}
	var sum int64
	for i, v := range ticks {
		if i >= 8 { // guest times are counted in user already
			break
		}
		sum += v
	}
	idle := ticks[3]
	if len(ticks) > 4 {
		idle += ticks[4] // iowait
	}
	return time.Duration(sum-idle) * clockTick, time.Duration(sum) * clockTick
}
