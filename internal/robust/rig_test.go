package robust_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/remote"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// binary is the pgrelay binary built by TestMain; set before any test runs.
var binary string

// parallel is how many tests (subtests of TestFaults) run at once unless
// -parallel is given: they spend most of their time waiting (for a warm
// server, a keepalive bound, a stale heartbeat), not on the CPUs, so the
// default of GOMAXPROCS would only make the package slower.
const parallel = 6

func TestMain(m *testing.M) {
	flag.Parse()
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if !given {
		_ = flag.Set("test.parallel", strconv.Itoa(parallel))
	}
	os.Exit(e2etest.MainSlow(m, "robust", &binary))
}

var bg = context.Background()

// Leak tolerances: how far the server's counts may stay above the
// baseline once things have settled.
//
// The baseline is taken once the server is warm (see warmUp and baseline)
// and after a run of the same kind as the one under test, with the test's
// own keep-alive connections closed, so that steady-state pools are in it:
// River's producer and maintenance services, the HTTP listener. What may
// still differ is small: River starts a goroutine or two on its own
// schedule (one about 15 s after the start here) and may be caught between
// poll loops, and an HTTP connection of ours may still be closing in the
// server (a socket and its goroutine). The embedded store's pool of SQLite
// connections grows with concurrent requests up to its bound, so its files
// are counted apart (from /proc) and checked against that bound
// (maxStoreFDs) instead. A leaked run is larger: its SSH connection (an
// fd, the tunnel gauge, and a mux reader, keepalive and channel
// goroutines), its local endpoint (an fd and an accept goroutine) or its
// database session (an fd); and every fault is repeated faultRounds times.
// No run is in flight when the counts are read, so pgrelay_tunnels_open
// must be 0, before and after.
const (
	goroutineTolerance = 4
	fdTolerance        = 2
	// maxStoreFDs bounds the descriptors of the store's files: the pool
	// (database and WAL per connection), the queue's own connection, and
	// the WAL index.
	maxStoreFDs = 2*sqlite.MaxOpenConns + 2 + 1
	// settleWithin bounds how long the counts may take to settle after a
	// fault (keepalive goroutines end, closing connections finish).
	settleWithin = 15 * time.Second
)

// usage is what a server holds at one moment.
type usage struct {
	// Resources are the counts read from /metrics.
	e2etest.Resources
	// files lists the targets of its open file descriptors, from /proc.
	files []string
	// storeFDs is how many of files are the embedded store's.
	storeFDs int
}

// otherFDs is the number of open descriptors that are not the store's.
func (u usage) otherFDs() int { return u.OpenFDs - u.storeFDs }

// String formats the counts for messages.
func (u usage) String() string {
	return fmt.Sprintf("%d goroutines, %d open fds (%d of the store), %d tunnels", u.Goroutines, u.OpenFDs, u.storeFDs, u.Tunnels)
}

// measure reads the server's counts from /metrics and its open files from
// /proc.
func measure(t *testing.T, s *e2etest.Server) usage {
	t.Helper()
	r, err := s.Resources(bg)
	if err != nil {
		t.Fatal(err)
	}
	files, err := s.OpenFiles()
	if err != nil {
		t.Fatal(err)
	}
	u := usage{Resources: r, files: files}
	for _, f := range files {
		if _, target, _ := strings.Cut(f, " -> "); strings.HasPrefix(filepath.Base(target), sqlite.FileName) {
			u.storeFDs++
		}
	}
	return u
}

// warmUp is how long after its start a server's goroutine count keeps
// growing by itself: River elects the process leader of its queue and then
// starts its maintenance services, each after a random delay of up to a
// second (about 12 goroutines, all there 3.5 s after the start here).
const warmUp = 5 * time.Second

// baseline returns the server's usage once it is past warmUp and its
// counts have stayed the same for two seconds.
func baseline(t *testing.T, s *e2etest.Server) usage {
	t.Helper()
	time.Sleep(warmUp - s.Uptime())
	const stable = 2 * time.Second
	deadline := time.Now().Add(settleWithin)
	u := measure(t, s)
	since := time.Now()
	for time.Since(since) < stable && time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
		if cur := measure(t, s); cur.Resources != u.Resources {
			u, since = cur, time.Now()
		}
	}
	t.Logf("baseline of server %s: %s", s.Name(), u)
	if u.Tunnels != 0 {
		t.Errorf("server %s has %d SSH tunnels open with no run in flight: a finished run left its tunnel open", s.Name(), u.Tunnels)
	}
	return u
}

// checkNoLeak reads the server's usage until it is back within the
// tolerances of before, and fails the test if it does not get there
// within settleWithin. Open files that differ from the baseline are
// logged either way; on failure, every goroutine's stack too.
func checkNoLeak(t *testing.T, s *e2etest.Server, before usage) {
	t.Helper()
	deadline := time.Now().Add(settleWithin)
	for {
		u := measure(t, s)
		ok := u.Goroutines <= before.Goroutines+goroutineTolerance && u.otherFDs() <= before.otherFDs()+fdTolerance &&
			u.storeFDs <= maxStoreFDs && u.Tunnels == 0
		if ok || time.Now().After(deadline) {
			if d := fileDiff(before.files, u.files); d != "" {
				t.Logf("open files of server %s that differ from the baseline:\n%s", s.Name(), d)
			}
		}
		if ok {
			t.Logf("server %s after: %s (baseline %s)", s.Name(), u, before)
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("server %s leaks: %s %v after the fault, baseline %s (tolerance: %d goroutines, %d fds besides "+
				"the store's, at most %d of the store's, no tunnel)",
				s.Name(), u, settleWithin, before, goroutineTolerance, fdTolerance, maxStoreFDs)
			t.Fatalf("goroutines of server %s (SIGQUIT):\n%s", s.Name(), s.QuitAndDump())
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// fileDiff describes the open files (by target, whatever their number) in
// after but not before ("+") and the other way round ("-").
func fileDiff(before, after []string) string {
	count := map[string]int{}
	target := func(f string) string {
		_, t, _ := strings.Cut(f, " -> ")
		if strings.HasPrefix(t, "socket:") {
			return "socket"
		}
		return t
	}
	for _, f := range after {
		count[target(f)]++
	}
	for _, f := range before {
		count[target(f)]--
	}
	var lines []string
	for t, n := range count {
		switch {
		case n > 0:
			lines = append(lines, fmt.Sprintf("  +%d %s", n, t))
		case n < 0:
			lines = append(lines, fmt.Sprintf("  %d %s", n, t))
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// rig is one `pgrelay serve` process on an embedded store with a direct
// connection "db" to a PostgreSQL and a job "quick" over it.
type rig struct {
	pg    *testenv.Postgres
	env   []string
	args  []string
	srv   *e2etest.Server
	token string
	c     *remote.Client
}

// rigOptions configures startRig.
type rigOptions struct {
	// dataDir is the server's data directory; default a new t.TempDir().
	dataDir string
	// args are extra `serve` flags.
	args []string
}

// startRig starts a server on a fresh store against pg, saves the direct
// connection "db" and the job "quick" (one SQL step), and works one run of
// it, so that every test has an earlier run to find intact afterwards.
func startRig(t *testing.T, name string, pg *testenv.Postgres, opts rigOptions) *rig {
	t.Helper()
	if opts.dataDir == "" {
		opts.dataDir = t.TempDir()
	}
	r := &rig{pg: pg, args: opts.args,
		env: e2etest.ProcessEnv("PGRELAY_DATA_DIR="+opts.dataDir, secret.MasterKeyEnv+"="+e2etest.NewMasterKey())}
	r.srv = e2etest.StartServer(t, binary, name, e2etest.Options{Env: r.env, Args: r.args})
	if r.srv.AdminToken == "" {
		t.Fatalf("server %s printed no admin token on its first start", name)
	}
	r.token = r.srv.AdminToken
	r.c = r.srv.Client(t, r.token)
	if _, err := r.c.CreateConnection(bg, connection.Spec{Name: "db", Host: pg.Host, Port: pg.Port,
		Database: "postgres", User: pg.SuperUser, Password: secret.New(pg.SuperPassword),
		SSLMode: connection.SSLDisable}); err != nil {
		t.Fatal(err)
	}
	r.apply(t, jobs.Job{Name: "quick", Connection: "db", Steps: []jobs.Step{{SQL: "select 1"}}})
	r.runOK(t, "quick")
	return r
}

// restart starts the server again on the same data dir and flags, after
// it was killed or stopped.
func (r *rig) restart(t *testing.T, name string) {
	t.Helper()
	r.srv = e2etest.StartServer(t, binary, name, e2etest.Options{Env: r.env, Args: r.args})
	r.c = r.srv.Client(t, r.token)
}

// apply saves jobs.
func (r *rig) apply(t *testing.T, js ...jobs.Job) {
	t.Helper()
	if _, err := r.c.ApplyJobs(bg, js); err != nil {
		t.Fatal(err)
	}
}

// start queues a run of job.
func (r *rig) start(t *testing.T, job string) *jobs.Run {
	t.Helper()
	run, err := r.c.RunJob(bg, job, jobs.API)
	if err != nil {
		t.Fatalf("run job %s: %v", job, err)
	}
	return run
}

// runOK works a run of job to its end and fails the test unless it
// succeeded.
func (r *rig) runOK(t *testing.T, job string) *jobs.Run {
	t.Helper()
	run := r.start(t, job)
	run = e2etest.WaitRun(t, r.c, run.ID, 60*time.Second, e2etest.Ended)
	if run.Status != jobs.Succeeded {
		t.Fatalf("run of %s %s: %s\n%s", job, run.Status, run.Reason, r.log(t, run.ID))
	}
	return run
}

// log returns a run's log as text.
func (r *rig) log(t *testing.T, id string) string {
	t.Helper()
	lines, err := r.c.RunLog(bg, id, 0, 0)
	if err != nil {
		return fmt.Sprintf("(log of run %s: %v)", id, err)
	}
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "%s step=%d %s: %s\n", l.Time.Format("15:04:05.000"), l.Step, l.Stream, l.Text)
	}
	return b.String()
}

// waitStepRunning waits until step i of the run is running.
func (r *rig) waitStepRunning(t *testing.T, id string, i int) *jobs.Run {
	t.Helper()
	return e2etest.WaitRun(t, r.c, id, 30*time.Second, func(run *jobs.Run) bool {
		if run.Status.Terminal() {
			t.Fatalf("run %s ended before step %d ran: %s: %s\n%s", id, i+1, run.Status, run.Reason, r.log(t, id))
		}
		return run.Status == jobs.Running && len(run.Steps) > i && run.Steps[i].Status == jobs.Running
	})
}

// waitEnded waits until the run ended, and fails the test if it did not
// within d.
func (r *rig) waitEnded(t *testing.T, id string, d time.Duration) *jobs.Run {
	t.Helper()
	return e2etest.WaitRun(t, r.c, id, d, e2etest.Ended)
}

// saved is what a server had stored before a fault.
type saved struct {
	connections []*app.ConnectionView
	jobs        []*app.JobView
	runs        map[string]*jobs.Run
	logs        map[string][]jobs.LogLine
}

// snapshot reads every connection, job and ended run (with its log).
func (r *rig) snapshot(t *testing.T) *saved {
	t.Helper()
	s := &saved{runs: map[string]*jobs.Run{}, logs: map[string][]jobs.LogLine{}}
	var err error
	if s.connections, err = r.c.ListConnections(bg); err != nil {
		t.Fatal(err)
	}
	if s.jobs, err = r.c.ListJobs(bg); err != nil {
		t.Fatal(err)
	}
	for _, j := range s.jobs {
		j.LastRun, j.NextRunAt = nil, nil // they move on with new runs
	}
	runs, err := r.c.ListRuns(bg, store.RunFilter{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, run := range runs {
		if !run.Status.Terminal() {
			continue
		}
		s.runs[run.ID] = run
		if s.logs[run.ID], err = r.c.RunLog(bg, run.ID, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.connections) == 0 || len(s.jobs) == 0 || len(s.runs) == 0 {
		t.Fatalf("snapshot before the fault is missing records: %d connections, %d jobs, %d ended runs",
			len(s.connections), len(s.jobs), len(s.runs))
	}
	return s
}

// checkIntact fails the test unless everything in before reads back the
// same now.
func (r *rig) checkIntact(t *testing.T, before *saved) {
	t.Helper()
	now := r.snapshot(t)
	same := func(what string, a, b any) {
		t.Helper()
		ja, _ := json.Marshal(a)
		jb, _ := json.Marshal(b)
		if string(ja) != string(jb) {
			t.Errorf("%s changed after the fault:\nbefore: %s\nafter:  %s", what, ja, jb)
		}
	}
	byName := map[string]*app.ConnectionView{}
	for _, c := range now.connections {
		byName[c.Name] = c
	}
	for _, c := range before.connections {
		// A connection's health changes with every run over it.
		cb, cn := *c, byName[c.Name]
		cb.Health = nil
		if cn != nil {
			cc := *cn
			cc.Health = nil
			cn = &cc
		}
		same("connection "+c.Name, &cb, cn)
	}
	jobsByName := map[string]*app.JobView{}
	for _, j := range now.jobs {
		jobsByName[j.Name] = j
	}
	for _, j := range before.jobs {
		same("job "+j.Name, j, jobsByName[j.Name])
	}
	for id, run := range before.runs {
		same("run "+id, run, now.runs[id])
		same("log of run "+id, before.logs[id], now.logs[id])
	}
	t.Logf("intact after the fault: %d connections, %d jobs, %d earlier runs with their logs",
		len(before.connections), len(before.jobs), len(before.runs))
}

// checkServes fails the test unless the server answers /readyz, lists its
// connections and runs, and works a new run of "quick" on the direct
// connection to success.
func (r *rig) checkServes(t *testing.T) {
	t.Helper()
	r.checkReads(t)
	r.runOK(t, "quick")
}

// checkReads fails the test unless the server answers /readyz and lists
// its connections and runs.
func (r *rig) checkReads(t *testing.T) {
	t.Helper()
	resp, err := r.srv.HTTPClient().Get(r.srv.URL + "/readyz")
	if err != nil {
		t.Fatalf("readyz: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("readyz: %s", resp.Status)
	}
	if _, err := r.c.ListConnections(bg); err != nil {
		t.Fatalf("list connections: %v", err)
	}
	if _, err := r.c.ListRuns(bg, store.RunFilter{Limit: 10}); err != nil {
		t.Fatalf("list runs: %v", err)
	}
}

// requireReason fails the test unless the run failed with a reason that
// contains every one of want.
func (r *rig) requireReason(t *testing.T, run *jobs.Run, want ...string) {
	t.Helper()
	if run.Status != jobs.Failed {
		t.Fatalf("run %s ended %s (%q), want failed\n%s", run.ID, run.Status, run.Reason, r.log(t, run.ID))
	}
	for _, w := range want {
		if !strings.Contains(run.Reason, w) {
			t.Fatalf("run %s failed with reason %q, which does not name %q\n%s", run.ID, run.Reason, w, r.log(t, run.ID))
		}
	}
}
