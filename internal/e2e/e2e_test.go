package e2e_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/remote"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// Queue timings of the servers in these tests: runs are declared lost
// after lostAfter without heartbeat, looked for every reapInterval.
const (
	lostAfter    = 3 * time.Second
	reapInterval = 500 * time.Millisecond
)

var reaperFlags = []string{"--lost-after", lostAfter.String(), "--reap-interval", reapInterval.String()}

// directConnection saves a direct connection "db" to database d on pg, as
// its owner.
func directConnection(t *testing.T, c *remote.Client, pg *testenv.Postgres, d *testenv.Database) {
	t.Helper()
	if _, err := c.CreateConnection(bg, connection.Spec{Name: "db", Host: pg.Host, Port: pg.Port, Database: d.Name,
		User: d.User, Password: secret.New(d.Password), SSLMode: connection.SSLDisable}); err != nil {
		t.Fatal(err)
	}
}

// TestSharedStore runs two server processes on one PostgreSQL store: both
// take runs from its queue, and when one is killed in the middle of a run,
// the other fails that run as lost.
func TestSharedStore(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	storeURL := pg.NewDatabase(t).ConnString()
	db := pg.NewDatabase(t)
	key := e2etest.NewMasterKey() // the same in every process sharing the store
	newEnv := func() []string {
		// The store URL holds a password: pass it in the environment,
		// not as a flag that `ps` shows.
		return e2etest.ProcessEnv("PGRELAY_DATA_DIR="+t.TempDir(), secret.MasterKeyEnv+"="+key, "PGRELAY_STORE="+storeURL)
	}
	envA, envB := newEnv(), newEnv()
	token := e2etest.CreateToken(t, binary, envA, "e2e-admin", auth.Admin)

	args := append([]string{"--max-runs", "2"}, reaperFlags...)
	var a, b *e2etest.Server
	var wg sync.WaitGroup
	wg.Go(func() { a = e2etest.StartServer(t, binary, "A", e2etest.Options{Env: envA, Args: args}) })
	b = e2etest.StartServer(t, binary, "B", e2etest.Options{Env: envB, Args: args})
	wg.Wait()
	if a == nil || b == nil || t.Failed() {
		t.FailNow()
	}
	ca, cb := a.Client(t, token), b.Client(t, token)
	directConnection(t, ca, pg, db)
	// Jobs saved through A are seen by B: one store.
	if _, err := ca.ApplyJobs(bg, []jobs.Job{
		{Name: "work", Connection: "db", Steps: []jobs.Step{{SQL: "select pg_sleep(1)"}}},
		{Name: "long", Connection: "db", Steps: []jobs.Step{{SQL: "select pg_sleep(60)"}}},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := cb.GetJob(bg, "work"); err != nil {
		t.Fatalf("server B does not see the job saved through A: %v", err)
	}

	t.Run("BothExecuteRuns", func(t *testing.T) {
		start := time.Now()
		var ids []string
		for i := range 8 {
			c := ca
			if i%2 == 1 {
				c = cb
			}
			r, err := c.RunJob(bg, "work", jobs.API)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, r.ID)
		}
		workers := map[string]int{}
		for _, id := range ids {
			r := e2etest.WaitRun(t, ca, id, 30*time.Second, e2etest.Ended)
			if r.Status != jobs.Succeeded {
				t.Fatalf("run %+v", r)
			}
			workers[r.Worker]++
		}
		t.Logf("8 runs of 1 s on 2 × 2 workers in %v: %v", time.Since(start), workers)
		for _, s := range []*e2etest.Server{a, b} {
			if n := workers[s.Worker(t)]; n == 0 {
				t.Errorf("server %s (%s) worked no run: %v", s.Name(), s.Worker(t), workers)
			} else if n > 6 {
				t.Errorf("server %s worked %d of 8 runs with --max-runs 2: %v", s.Name(), n, workers)
			}
		}
	})

	admin := pg.Connect(t, db.Name)
	sleeping := func() int {
		var n int
		if err := admin.QueryRow(bg, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND query = 'select pg_sleep(60)' AND state = 'active'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	t.Run("KilledServersRunIsResolved", func(t *testing.T) {
		r, err := ca.RunJob(bg, "long", jobs.API)
		if err != nil {
			t.Fatal(err)
		}
		r = e2etest.WaitRun(t, ca, r.ID, 20*time.Second, e2etest.Running)
		victim, survivor, sc := a, b, cb
		if r.Worker == b.Worker(t) {
			victim, survivor, sc = b, a, ca
		}
		waitUntil(t, "the run's statement to be active", 15*time.Second, func() bool { return sleeping() == 1 })
		// Let a heartbeat or two pass, then kill the worker's process (a
		// wait of the scenario: the run is lost by its last heartbeat,
		// not by its start).
		time.Sleep(time.Second)
		killed := time.Now()
		victim.Kill()
		t.Logf("killed server %s (%s) running run %s", victim.Name(), r.Worker, r.ID)
		bound := lostAfter + reapInterval + 3*time.Second
		r = e2etest.WaitRun(t, sc, r.ID, 60*time.Second, e2etest.Ended)
		took := time.Since(killed)
		if r.Status != jobs.Failed || !strings.Contains(r.Reason, "worker") || !strings.Contains(r.Reason, "lost") ||
			!strings.Contains(r.Reason, victim.Worker(t)) {
			t.Fatalf("run resolved as %s: %q", r.Status, r.Reason)
		}
		if took > bound {
			t.Errorf("run resolved %v after the kill, want within %v (lost-after %v + reap interval %v + margin)",
				took, bound, lostAfter, reapInterval)
		}
		t.Logf("server %s resolved the run %v after the kill: %s", survivor.Name(), took, r.Reason)
		lines, err := sc.RunLog(bg, r.ID, 0, 0)
		if err != nil || !slices.ContainsFunc(lines, func(l jobs.LogLine) bool { return strings.Contains(l.Text, "was lost") }) {
			t.Fatalf("log of the lost run: %v, %v", lines, err)
		}
		// The dead process's statement does not run on: the survivor
		// cancels it on the server.
		waitUntil(t, "the lost run's statement to stop on the server", 15*time.Second, func() bool { return sleeping() == 0 })
		for end := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			got, err := sc.GetRun(bg, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			if c := got.Cleanup; c != nil && c.Status == jobs.CleanupDone {
				// Said as what happened: the server was never out of
				// reach, its process was lost.
				if len(c.Cancelled) != 1 || !strings.Contains(c.Message, "cancelled 1 statement on the server") ||
					!strings.HasPrefix(c.Message, jobs.ProcessLost+": ") {
					t.Fatalf("cleanup of the lost run: %+v", c)
				}
				break
			}
			if time.Now().After(end) {
				t.Fatalf("cleanup of the lost run not done: %+v", got.Cleanup)
			}
		}
		// The survivor still works runs.
		r, err = sc.RunJob(bg, "work", jobs.API)
		if err != nil {
			t.Fatal(err)
		}
		if r = e2etest.WaitRun(t, sc, r.ID, 20*time.Second, e2etest.Ended); r.Status != jobs.Succeeded || r.Worker != survivor.Worker(t) {
			t.Fatalf("run after the kill: %+v", r)
		}
	})
}

// TestEmbeddedRestart kills the single embedded (SQLite) server in the
// middle of a run and restarts it: the restarted process resolves the run
// at start, before it serves.
func TestEmbeddedRestart(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	env := e2etest.ProcessEnv("PGRELAY_DATA_DIR="+t.TempDir(), secret.MasterKeyEnv+"="+e2etest.NewMasterKey())
	first := e2etest.StartServer(t, binary, "first", e2etest.Options{Env: env, Args: reaperFlags})
	if first.AdminToken == "" {
		t.Fatalf("the first start printed no admin token:\n%s", first.Stdout())
	}
	c := first.Client(t, first.AdminToken)
	directConnection(t, c, pg, pg.NewDatabase(t))
	if _, err := c.ApplyJobs(bg, []jobs.Job{{Name: "long", Connection: "db",
		Steps: []jobs.Step{{SQL: "select 1"}, {SQL: "select pg_sleep(60)"}, {SQL: "select 2"}}}}); err != nil {
		t.Fatal(err)
	}
	r, err := c.RunJob(bg, "long", jobs.API)
	if err != nil {
		t.Fatal(err)
	}
	e2etest.WaitRun(t, c, r.ID, 20*time.Second, func(r *jobs.Run) bool { return r.Status == jobs.Running && r.Steps[1].Status == jobs.Running })
	first.Kill()
	killed := time.Now()
	if got, _ := first.Client(t, first.AdminToken).GetRun(bg, r.ID); got != nil {
		t.Fatal("the killed server still answers")
	}
	// Restart once the heartbeat is stale, with a reaper that would not
	// run for an hour: only the reap at start can resolve the run.
	time.Sleep(time.Until(killed.Add(lostAfter + 200*time.Millisecond)))
	second := e2etest.StartServer(t, binary, "second", e2etest.Options{Env: env, Args: []string{"--lost-after", lostAfter.String(), "--reap-interval", "1h"}})
	if second.AdminToken != "" {
		t.Fatal("the restart printed a new admin token")
	}
	c = second.Client(t, first.AdminToken)
	got, err := c.GetRun(bg, r.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != jobs.Failed || !strings.Contains(got.Reason, "worker "+first.Worker(t)+" was lost") {
		t.Fatalf("after the restart the run is %s: %q", got.Status, got.Reason)
	}
	if got.Steps[0].Status != jobs.Succeeded || got.Steps[1].Status != jobs.Failed || got.Steps[2].Status != jobs.Skipped {
		t.Fatalf("steps after the restart: %+v", got.Steps)
	}
	if stuck, err := c.ListRuns(bg, store.RunFilter{Statuses: []jobs.Status{jobs.Queued, jobs.Running}}); err != nil || len(stuck) != 0 {
		t.Fatalf("runs left queued or running: %v, %v", stuck, err)
	}
	// And the restarted server works runs.
	if _, err := c.ApplyJobs(bg, []jobs.Job{{Name: "quick", Connection: "db", Steps: []jobs.Step{{SQL: "select 1"}}}}); err != nil {
		t.Fatal(err)
	}
	q, err := c.RunJob(bg, "quick", jobs.API)
	if err != nil {
		t.Fatal(err)
	}
	if q, err = c.FollowRun(bg, q.ID, nil); err != nil || q.Status != jobs.Succeeded {
		t.Fatalf("run after the restart: %+v, %v", q, err)
	}
}

// TestScheduleFires applies a job with a per-second schedule through the
// API and waits for a scheduled run.
func TestScheduleFires(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	s := e2etest.StartServer(t, binary, "sched", e2etest.Options{Env: e2etest.ProcessEnv("PGRELAY_DATA_DIR="+t.TempDir(), secret.MasterKeyEnv+"="+e2etest.NewMasterKey())})
	c := s.Client(t, s.AdminToken)
	directConnection(t, c, pg, pg.NewDatabase(t))
	applied := time.Now()
	res, err := c.ApplyJobsFile(bg, []byte(`jobs:
  - name: tick
    connection: db
    schedule: "* * * * * *"
    steps:
      - sql: select 1
`))
	if err != nil || len(res) != 1 || res[0].Action != "created" {
		t.Fatalf("apply: %v, %v", res, err)
	}
	var fired *jobs.Run
	for deadline := time.Now().Add(20 * time.Second); fired == nil; {
		runs, err := c.ListRuns(bg, store.RunFilter{Job: "tick"})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range runs {
			if r.Trigger == jobs.Schedule {
				fired = r
			}
		}
		if fired == nil && time.Now().After(deadline) {
			t.Fatal("the schedule did not fire within 20 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("first scheduled run queued %v after the apply", fired.QueuedAt.Sub(applied).Round(time.Millisecond))
	if r, err := c.FollowRun(bg, fired.ID, nil); err != nil || r.Status != jobs.Succeeded {
		t.Fatalf("scheduled run: %+v, %v", r, err)
	}
	if err := c.DeleteJob(bg, "tick"); err != nil {
		t.Fatal(err)
	}
}

// TestBastionJobs runs real programs as command steps through a real
// OpenSSH bastion, refuses programs off the allowlist, and fails a run
// whose bastion freezes.
func TestBastionJobs(t *testing.T) {
	t.Parallel()
	const interval, count = 200 * time.Millisecond, 3
	var pg *testenv.Postgres
	var wg sync.WaitGroup
	wg.Go(func() { pg = testenv.SharedPostgres(t, testenv.PostgresOptions{}) })
	bastion := testenv.SharedBastion(t, testenv.BastionOptions{})
	wg.Wait()
	if pg == nil || t.Failed() {
		t.FailNow()
	}
	d := pg.NewDatabase(t)
	fp := testenv.StartFaultProxy(t, bastion.Addr())
	s := e2etest.StartServer(t, binary, "bastion", e2etest.Options{
		Env:  e2etest.ProcessEnv("PGRELAY_DATA_DIR="+t.TempDir(), secret.MasterKeyEnv+"="+e2etest.NewMasterKey()),
		Args: []string{"--allow-command", "psql", "--allow-command", "pgbench", "--allow-command", "sh"},
	})
	c := s.Client(t, s.AdminToken)
	// "wh" reaches the bastion directly; "frozen" through the fault
	// proxy, with keepalives every 200 ms, 3 unanswered ones drop it.
	for _, conn := range []struct {
		name, host string
		port       int
		keepalive  time.Duration
		count      int
	}{
		{"wh", bastion.Host, bastion.Port, 0, 0},
		{"frozen", fp.Host(), fp.Port(), interval, count},
	} {
		v, err := c.CreateConnection(bg, connection.Spec{Name: conn.name, Host: pg.Host, Port: pg.Port,
			Database: d.Name, User: d.User, Password: secret.New(d.Password), SSLMode: connection.SSLDisable,
			Tunnel: &connection.Tunnel{Host: conn.host, Port: conn.port, User: bastion.User,
				KeepaliveInterval: connection.Duration(conn.keepalive), KeepaliveCountMax: conn.count}})
		if err != nil {
			t.Fatal(err)
		}
		bastion.Authorize(t, v.SSHTunnel.PublicKey)
	}
	if _, err := c.ApplyJobs(bg, []jobs.Job{
		{Name: "bench", Connection: "wh", Steps: []jobs.Step{
			{Command: []string{"psql", "-X", "-At", "-c", "select 'psql says ' || current_user || ' on ' || current_database()"}},
			{Command: []string{"pgbench", "-i", "-s", "1", "-q"}},
			{Command: []string{"pgbench", "-n", "-S", "-t", "50", "-c", "2"}},
		}},
		{Name: "dbt", Connection: "wh", Steps: []jobs.Step{{Command: []string{"dbt", "--version"}}}},
		{Name: "hang", Connection: "frozen", Steps: []jobs.Step{
			{Command: []string{"sh", "-c", `echo started; exec psql -X -c "select pg_sleep(60)"`}},
		}},
	}); err != nil {
		t.Fatal(err)
	}

	t.Run("PsqlAndPgbench", func(t *testing.T) {
		t.Parallel()
		r, err := c.RunJob(bg, "bench", jobs.API)
		if err != nil {
			t.Fatal(err)
		}
		var log strings.Builder
		r, err = c.FollowRun(bg, r.ID, func(l jobs.LogLine) { log.WriteString(l.Text + "\n") })
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != jobs.Succeeded {
			t.Fatalf("run %s: %s\n%s", r.Status, r.Reason, log.String())
		}
		for _, want := range []string{"psql says " + d.User + " on " + d.Name, "number of transactions actually processed: 100"} {
			if !strings.Contains(log.String(), want) {
				t.Errorf("log lacks %q:\n%s", want, log.String())
			}
		}
		if strings.Contains(log.String(), d.Password) {
			t.Fatal("the password is in the run log")
		}
		for _, st := range r.Steps {
			if st.ExitCode == nil || *st.ExitCode != 0 {
				t.Errorf("step %d (%s): %+v", st.Index, st.Label, st)
			}
		}
	})

	t.Run("ProgramNotAllowed", func(t *testing.T) {
		t.Parallel()
		r, err := c.RunJob(bg, "dbt", jobs.API)
		if err != nil {
			t.Fatal(err)
		}
		if r, err = c.FollowRun(bg, r.ID, nil); err != nil {
			t.Fatal(err)
		}
		if r.Status != jobs.Failed || !strings.Contains(r.Reason, `program "dbt" is not allowed`) ||
			!strings.Contains(r.Reason, "--allow-command dbt") {
			t.Fatalf("run %s: %q", r.Status, r.Reason)
		}
	})

	t.Run("FrozenBastionFailsRun", func(t *testing.T) {
		t.Parallel()
		t.Cleanup(fp.Thaw)
		r, err := c.RunJob(bg, "hang", jobs.API)
		if err != nil {
			t.Fatal(err)
		}
		admin := pg.Connect(t, d.Name) // used by FollowRun's callback alone
		var frozenAt time.Time
		var activeErr error
		var once sync.Once
		done := make(chan struct{})
		var end *jobs.Run
		var followErr error
		go func() {
			defer close(done)
			end, followErr = c.FollowRun(bg, r.ID, func(l jobs.LogLine) {
				if l.Text == "started" {
					// psql starts its query right after: freeze once
					// the server runs it.
					once.Do(func() {
						activeErr = pollActive(admin, "select pg_sleep(60)", 20*time.Second)
						frozenAt = time.Now()
						fp.Freeze()
					})
				}
			})
		}()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Fatal("the run did not end within 60 s of its start")
		}
		if followErr != nil {
			t.Fatal(followErr)
		}
		if frozenAt.IsZero() {
			t.Fatalf("the command never started: %+v", end)
		}
		if activeErr != nil {
			t.Fatalf("before the freeze: %v", activeErr)
		}
		took := end.EndedAt.Sub(frozenAt)
		if end.Status != jobs.Failed || !strings.Contains(end.Reason, "SSH tunnel") {
			t.Fatalf("run %s: %q", end.Status, end.Reason)
		}
		// interval × count to notice, the kill grace of the command at
		// most (psql exits on SIGTERM), and a margin.
		if bound := interval*count + queue.DefaultKillGrace + 2*time.Second; took > bound {
			t.Fatalf("run failed %v after the freeze, want within %v", took, bound)
		}
		t.Logf("run failed %v after the freeze: %s", took.Round(time.Millisecond), end.Reason)
	})
}

// pollActive polls until a session of admin's database runs query (no
// t.Fatal: it may run on a goroutine of its own).
func pollActive(admin *pgx.Conn, query string, within time.Duration) error {
	end := time.Now().Add(within)
	for {
		var n int
		err := admin.QueryRow(bg, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
			AND query = $1 AND state = 'active'`, query).Scan(&n)
		if err == nil && n > 0 {
			return nil
		}
		if time.Now().After(end) {
			return fmt.Errorf("no session ran %q within %v (%v)", query, within, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitUntil polls cond until it holds, failing the test after within.
func waitUntil(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(within); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
	}
}
