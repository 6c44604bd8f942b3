package robust_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/remote"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// Load test size: loadClients API clients for loadDuration, while
// loadRuns runs are kept going at once (every loadTunnelEvery-th runner
// through the bastion, each run with its own SSH connection).
const (
	loadClients     = 100
	loadRuns        = 20
	loadDuration    = 10 * time.Second
	loadTunnelEvery = 4
)

// TestLoad runs loadClients concurrent API clients doing a mix of reads
// and writes against one server while loadRuns runs execute at once,
// directly and through a real bastion. Every request must succeed, every
// run must succeed, and nothing may leak; API latency percentiles are
// logged, never asserted.
//
// It is not parallel: the fault tests wait until it is done, so that it
// has the machine's CPUs to itself.
func TestLoad(t *testing.T) {
	started := time.Now()
	var pg *testenv.Postgres
	var wg sync.WaitGroup
	wg.Go(func() { pg = testenv.SharedPostgres(t, testenv.PostgresOptions{MaxConnections: 100}) })
	// Each tunnelled run opens its own SSH connection: let sshd accept
	// them all at once.
	bastion := testenv.StartBastion(t, testenv.BastionOptions{MaxStartups: "100:30:200"})
	wg.Wait()
	if pg == nil || t.Failed() {
		t.FailNow()
	}
	r := startRig(t, "load", pg, rigOptions{args: []string{"--max-runs", fmt.Sprint(loadRuns), "--allow-command", "sh"}})
	r.tunnel(t, "wh", bastion, 0, 0)
	work := func(name, conn string) jobs.Job {
		return jobs.Job{Name: name, Connection: conn, Steps: []jobs.Step{
			{SQL: "select count(*) from pg_class"},
			{Command: []string{"sh", "-c", "sleep 0.5; echo x"}},
		}}
	}
	r.apply(t, work("work-direct", "db"), work("work-tunnel", "wh"))
	r.runOK(t, "work-direct")
	r.runOK(t, "work-tunnel") // pins the host key
	saved := r.snapshot(t)
	before := baseline(t, r.srv)

	ctx, cancel := context.WithTimeout(bg, loadDuration)
	defer cancel()
	var stats latencies
	var fails failures
	var runIDs recentIDs
	var runsOK, runsBad atomic.Int64

	var load sync.WaitGroup
	for i := range loadRuns {
		job := "work-direct"
		if i%loadTunnelEvery == 0 {
			job = "work-tunnel"
		}
		c := r.srv.Client(t, r.token)
		load.Go(func() { runner(ctx, c, job, &runIDs, &runsOK, &runsBad, &fails) })
	}
	for i := range loadClients {
		c := r.srv.Client(t, r.token)
		load.Go(func() { apiClient(ctx, c, i, &runIDs, &stats, &fails) })
	}
	load.Wait()
	elapsed := time.Since(started)

	n := stats.count()
	t.Logf("%d API requests by %d clients in %v (%.0f/s) while %d runs ran at once: %d runs succeeded, %d did not",
		n, loadClients, loadDuration, float64(n)/loadDuration.Seconds(), loadRuns, runsOK.Load(), runsBad.Load())
	t.Logf("API latency: %s", stats.summary(""))
	for _, op := range stats.ops() {
		t.Logf("  %-24s %s", op, stats.summary(op))
	}
	if msgs := fails.list(); len(msgs) > 0 {
		t.Fatalf("%d failures under load (first ones):\n%s", fails.n.Load(), strings.Join(msgs, "\n"))
	}
	if runsOK.Load() < loadRuns {
		t.Fatalf("only %d runs succeeded under load", runsOK.Load())
	}
	r.checkIntact(t, saved)
	r.checkServes(t)
	checkNoLeak(t, r.srv, before)
	t.Logf("load test took %v in all (%v of it setup and load)", time.Since(started).Round(time.Millisecond), elapsed.Round(time.Millisecond))
}

// runner starts runs of job one after another until ctx ends, waiting
// for each to end (polling, as the CLI does), and counts the outcomes.
// A run started before the end is waited for to its end.
func runner(ctx context.Context, c *remote.Client, job string, ids *recentIDs, ok, bad *atomic.Int64, fails *failures) {
	for ctx.Err() == nil {
		run, err := c.RunJob(bg, job, jobs.API)
		if err != nil {
			fails.add("run job %s: %v", job, err)
			return
		}
		ids.add(run.ID)
		for !run.Status.Terminal() {
			time.Sleep(100 * time.Millisecond)
			cur, err := c.GetRun(bg, run.ID)
			if err != nil {
				fails.add("get run %s: %v", run.ID, err)
				return
			}
			run = cur
		}
		if run.Status != jobs.Succeeded {
			bad.Add(1)
			fails.add("run %s of %s %s: %s", run.ID, job, run.Status, run.Reason)
			continue
		}
		ok.Add(1)
	}
}

// apiClient sends requests until ctx ends, in a mix like a UI and a few
// scripts would: mostly reads, some writes, a short pause between them.
func apiClient(ctx context.Context, c *remote.Client, i int, ids *recentIDs, stats *latencies, fails *failures) {
	rnd := rand.New(rand.NewPCG(uint64(i), 42))
	for n := 0; ctx.Err() == nil; n++ {
		var op string
		var err error
		start := time.Now()
		switch p := rnd.IntN(100); {
		case p < 25:
			op = "list connections"
			_, err = c.ListConnections(bg)
		case p < 40:
			op = "get connection"
			name := "db"
			if p%2 == 1 {
				name = "wh"
			}
			_, err = c.GetConnection(bg, name)
		case p < 60:
			op = "list runs"
			_, err = c.ListRuns(bg, store.RunFilter{Limit: 50})
		case p < 80:
			op = "get run"
			id := ids.pick(rnd)
			if id == "" {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			_, err = c.GetRun(bg, id)
		case p < 90:
			op = "whoami"
			_, err = c.WhoAmI(bg)
		default:
			op = "create+delete connection"
			name := fmt.Sprintf("load-%d-%d", i, n)
			spec := connection.Spec{Name: name, Host: "db.example.internal", Port: 5432, Database: "analytics",
				User: "loader", Password: secret.New("load-pw"), SSLMode: connection.SSLRequire}
			if n%3 == 0 {
				spec.Tunnel = &connection.Tunnel{Host: "bastion.example.internal", Port: 22, User: "relay"}
			}
			if _, err = c.CreateConnection(bg, spec); err == nil {
				err = c.DeleteConnection(bg, name)
			}
		}
		stats.add(op, time.Since(start))
		if err != nil {
			fails.add("client %d: %s: %v", i, op, err)
		}
		time.Sleep(time.Duration(rnd.IntN(20)) * time.Millisecond)
	}
}

// latencies collects request durations by operation; safe for concurrent
// use.
type latencies struct {
	mu  sync.Mutex
	all []time.Duration
	by  map[string][]time.Duration
}

func (l *latencies) add(op string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.by == nil {
		l.by = map[string][]time.Duration{}
	}
	l.all = append(l.all, d)
	l.by[op] = append(l.by[op], d)
}

func (l *latencies) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.all)
}

func (l *latencies) ops() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for op := range l.by {
		out = append(out, op)
	}
	sort.Strings(out)
	return out
}

// summary formats count, p50, p95, p99 and max of op ("" for all).
func (l *latencies) summary(op string) string {
	l.mu.Lock()
	ds := slices.Clone(l.all)
	if op != "" {
		ds = slices.Clone(l.by[op])
	}
	l.mu.Unlock()
	if len(ds) == 0 {
		return "no requests"
	}
	slices.Sort(ds)
	q := func(p float64) time.Duration {
		return ds[min(len(ds)-1, int(p*float64(len(ds))))].Round(10 * time.Microsecond)
	}
	return fmt.Sprintf("n=%d p50=%v p95=%v p99=%v max=%v", len(ds), q(0.50), q(0.95), q(0.99), ds[len(ds)-1].Round(10*time.Microsecond))
}

// failures keeps the first failures' messages and counts all.
type failures struct {
	n    atomic.Int64
	mu   sync.Mutex
	msgs []string
}

func (f *failures) add(format string, args ...any) {
	f.n.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.msgs) < 10 {
		f.msgs = append(f.msgs, fmt.Sprintf(format, args...))
	}
}

func (f *failures) list() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.msgs)
}

// recentIDs holds the IDs of the latest runs; safe for concurrent use.
type recentIDs struct {
	mu  sync.Mutex
	ids []string
}

func (r *recentIDs) add(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = append(r.ids, id)
	if len(r.ids) > 200 {
		r.ids = r.ids[len(r.ids)-200:]
	}
}

func (r *recentIDs) pick(rnd *rand.Rand) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.ids) == 0 {
		return ""
	}
	return r.ids[rnd.IntN(len(r.ids))]
}
