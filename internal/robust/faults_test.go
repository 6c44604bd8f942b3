package robust_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/client"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/queue"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// Queue timings of the servers in the fault tests: a run is lost after
// lostAfter without heartbeat (heartbeats every third of it, which also
// persists step progress), looked for every reapInterval.
const (
	lostAfter    = 3 * time.Second
	reapInterval = 500 * time.Millisecond
)

// faultRounds is how often a test repeats its fault before it looks for
// leaks: a few goroutines or a descriptor left behind per fault then add
// up beyond the tolerances.
const faultRounds = 3

var faultArgs = []string{"--lost-after", lostAfter.String(), "--reap-interval", reapInterval.String(),
	"--allow-command", "sh", "--allow-command", "psql"}

// TestFaults breaks something under a running job, one fault per subtest,
// each against its own server process. They share one PostgreSQL (with
// TestLoad, which runs before them: it is not parallel; the statements
// are told apart by their markers) except the database restart, which has
// its own.
func TestFaults(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{MaxConnections: 100})

	t.Run("BastionKilled", func(t *testing.T) {
		t.Parallel()
		bastion := startBastion(t)
		r := startRig(t, "sshd-killed", pg, rigOptions{args: faultArgs})
		r.tunnel(t, "wh", bastion, 0, 0)
		r.apply(t, jobs.Job{Name: "tunnelled", Connection: "wh", Steps: []jobs.Step{{SQL: "select 1"}}})
		r.applyRounds(t, "long", "wh", "robust:sshd-killed", func(marker string) []jobs.Step {
			return []jobs.Step{{SQL: "select pg_sleep(30) -- " + marker}}
		})
		r.runOK(t, "tunnelled") // pins the host key; warms up
		saved := r.snapshot(t)
		before := baseline(t, r.srv)

		for round := 1; round <= faultRounds; round++ {
			run := r.start(t, roundName("long", round))
			waitBackend(t, pg, roundName("robust:sshd-killed", round))
			killed := time.Now()
			bastion.Kill(t)
			r.checkReads(t)
			end := r.waitEnded(t, run.ID, 20*time.Second)
			r.requireReason(t, end, "SSH tunnel to bastion "+bastion.Addr(), "dropped", "connection closed")
			t.Logf("round %d: run failed %v after sshd was killed: %s", round, end.EndedAt.Sub(killed).Round(time.Millisecond), end.Reason)

			bastion.Start(t)
			r.runOK(t, "tunnelled")
			// The killed sshd's database session sleeps on: end it.
			terminateBackends(t, pg, roundName("robust:sshd-killed", round))
		}
		r.checkIntact(t, saved)
		r.checkServes(t)
		checkNoLeak(t, r.srv, before)
	})

	t.Run("BastionFrozen", func(t *testing.T) {
		t.Parallel()
		const interval, count = 200 * time.Millisecond, 3
		bastion := startBastion(t)
		r := startRig(t, "sshd-frozen", pg, rigOptions{args: faultArgs})
		r.tunnel(t, "wh", bastion, interval, count)
		r.apply(t, jobs.Job{Name: "tunnelled", Connection: "wh", Steps: []jobs.Step{{SQL: "select 1"}}})
		r.applyRounds(t, "hang", "wh", "robust:sshd-frozen", func(marker string) []jobs.Step {
			return []jobs.Step{{Command: []string{"sh", "-c", `exec psql -X -c "select pg_sleep(30) -- ` + marker + `"`}}}
		})
		r.runOK(t, "tunnelled")
		saved := r.snapshot(t)
		before := baseline(t, r.srv)

		thawed := true
		t.Cleanup(func() {
			if !thawed {
				bastion.Thaw(t)
			}
		})
		for round := 1; round <= faultRounds; round++ {
			run := r.start(t, roundName("hang", round))
			waitBackend(t, pg, roundName("robust:sshd-frozen", round))
			frozen := time.Now()
			bastion.Freeze(t)
			thawed = false
			r.checkReads(t) // not held up by the frozen tunnel
			end := r.waitEnded(t, run.ID, 30*time.Second)
			took := end.EndedAt.Sub(frozen)
			r.requireReason(t, end, "SSH tunnel to bastion "+bastion.Addr(), "dropped", "no keepalive reply")
			// interval × count to notice, the command's kill grace at
			// most (psql exits on SIGTERM at once), and a margin for a
			// loaded machine.
			if bound := interval*count + queue.DefaultKillGrace + 2*time.Second; took > bound {
				t.Fatalf("round %d: run failed %v after the freeze, want within %v", round, took, bound)
			}
			t.Logf("round %d: run failed %v after the freeze (keepalive %v × %d): %s",
				round, took.Round(time.Millisecond), interval, count, end.Reason)

			bastion.Thaw(t)
			thawed = true
			r.runOK(t, "tunnelled")
			terminateBackends(t, pg, roundName("robust:sshd-frozen", round))
		}
		r.checkIntact(t, saved)
		r.checkServes(t)
		checkNoLeak(t, r.srv, before)
	})

	t.Run("BackendTerminated", func(t *testing.T) {
		t.Parallel()
		r := startRig(t, "backend-terminated", pg, rigOptions{args: faultArgs})
		r.applyRounds(t, "long", "db", "robust:terminated", func(marker string) []jobs.Step {
			return []jobs.Step{{SQL: "select 1"}, {SQL: "select pg_sleep(30) -- " + marker}, {SQL: "select 2"}}
		})
		saved := r.snapshot(t)
		before := baseline(t, r.srv)

		for round := 1; round <= faultRounds; round++ {
			run := r.start(t, roundName("long", round))
			pid := waitBackend(t, pg, roundName("robust:terminated", round))
			pg.Exec(t, "select pg_terminate_backend($1)", pid)
			r.checkReads(t)
			end := r.waitEnded(t, run.ID, 20*time.Second)
			r.requireReason(t, end, "terminating connection due to administrator command", "SQLSTATE 57P01")
			if s := end.Steps; s[0].Status != jobs.Succeeded || s[1].Status != jobs.Failed || s[2].Status != jobs.Skipped {
				t.Errorf("steps after the backend was terminated: %+v", s)
			}
			t.Logf("round %d: backend %d terminated: %s", round, pid, end.Reason)
		}

		r.checkIntact(t, saved)
		r.checkServes(t)
		checkNoLeak(t, r.srv, before)
	})

	t.Run("ServerKilled", func(t *testing.T) {
		t.Parallel()
		r := startRig(t, "killed", pg, rigOptions{args: faultArgs})
		r.apply(t, jobs.Job{Name: "long", Connection: "db", Steps: []jobs.Step{
			{SQL: "select 1"}, {SQL: "select pg_sleep(60) -- robust:server-killed"}, {SQL: "select 2"}}})
		saved := r.snapshot(t)
		// The restarted process is compared with this one: same binary,
		// store and flags, both after a run.
		before := baseline(t, r.srv)

		run := r.start(t, "long")
		waitBackend(t, pg, "robust:server-killed")
		first := r.srv
		worker := first.Worker(t)
		first.Kill()
		killed := time.Now()
		t.Cleanup(func() { terminateBackends(t, pg, "robust:server-killed") })
		if _, err := first.Client(t, r.token).GetRun(bg, run.ID); err == nil {
			t.Fatal("the killed server still answers")
		}
		// Restart once the heartbeat is stale: the reap at start resolves
		// the run before the server serves.
		time.Sleep(time.Until(killed.Add(lostAfter + 200*time.Millisecond)))
		r.restart(t, "killed-restarted")
		got, err := r.c.GetRun(bg, run.ID)
		if err != nil {
			t.Fatal(err)
		}
		r.requireReason(t, got, "worker "+worker+" was lost")
		if s := got.Steps; s[0].Status != jobs.Succeeded || s[1].Status != jobs.Failed || s[2].Status != jobs.Skipped {
			t.Errorf("steps after the restart: %+v", s)
		}
		t.Logf("resolved at restart: %s", got.Reason)

		r.checkIntact(t, saved)
		r.checkServes(t)
		checkNoLeak(t, r.srv, before)
	})

	t.Run("DatabaseRestarted", func(t *testing.T) {
		t.Parallel()
		own := testenv.StartPostgres(t, testenv.PostgresOptions{}) // restarted
		r := startRig(t, "db-restarted", own, rigOptions{args: faultArgs})
		r.apply(t,
			jobs.Job{Name: "sql", Connection: "db", Steps: []jobs.Step{{SQL: "select pg_sleep(30) -- robust:restart-sql"}}},
			jobs.Job{Name: "psql", Connection: "db", Steps: []jobs.Step{
				{Command: []string{"psql", "-X", "-c", "select pg_sleep(30) -- robust:restart-psql"}}}})
		saved := r.snapshot(t)
		before := baseline(t, r.srv)

		for round := 1; round <= faultRounds; round++ {
			for _, tc := range []struct {
				job, marker string
				want        []string
			}{
				{"sql", "robust:restart-sql", []string{"step 1", "connection to the database was lost"}},
				{"psql", "robust:restart-psql", []string{"step 1", "psql exited with code 2", "connection to server was lost"}},
			} {
				run := r.start(t, tc.job)
				waitBackend(t, own, tc.marker)
				restarted := time.Now()
				own.Stop(t)
				r.checkReads(t) // while the database is down
				own.Start(t)
				end := r.waitEnded(t, run.ID, 30*time.Second)
				r.requireReason(t, end, tc.want...)
				t.Logf("round %d, %s step: run failed %v after the restart began: %s", round, tc.job,
					end.EndedAt.Sub(restarted).Round(time.Millisecond), end.Reason)
				r.runOK(t, "quick")
			}
		}
		r.checkIntact(t, saved)
		r.checkServes(t)
		checkNoLeak(t, r.srv, before)
	})

	t.Run("DiskFull", func(t *testing.T) {
		t.Parallel()
		testDiskFull(t, pg)
	})
}

// testDiskFull puts the store on a 2 MiB tmpfs, fills it while the server
// runs, and checks that writes fail with a clear error while reads go on,
// and that writes work again once there is space.
func testDiskFull(t *testing.T, pg *testenv.Postgres) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs for the store needs root (CI runs as root)")
	}
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a 2 MiB tmpfs on %s for the store (as root): %v\n%s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", dir, err, out)
		}
	})
	r := startRig(t, "disk-full", pg, rigOptions{dataDir: dir, args: faultArgs})
	saved := r.snapshot(t)
	before := baseline(t, r.srv)

	filler := filepath.Join(dir, "filler")
	fill(t, filler)
	// Small writes may still fit in the last, partly used page of the
	// WAL: write until one fails, a few at most.
	var werr error
	var created int
	for i := 0; i < 50 && werr == nil; i++ {
		_, werr = r.c.CreateConnection(bg, connection.Spec{Name: fmt.Sprintf("full-%d", i),
			Host: pg.Host, Port: pg.Port, Database: "postgres", User: pg.SuperUser,
			Password: secret.New(pg.SuperPassword), SSLMode: connection.SSLDisable,
			Tunnel: &connection.Tunnel{Host: "127.0.0.1", Port: 22, User: "nobody"}})
		if werr == nil {
			created++
		}
	}
	if werr == nil {
		t.Fatalf("50 connections were created on a full disk")
	}
	t.Logf("create connection on a full disk (after %d that fit): %v", created, werr)
	var ae *client.Error
	if !errors.As(werr, &ae) || ae.Status != http.StatusServiceUnavailable || ae.RequestID == "" ||
		!strings.Contains(ae.Message, "the store could not be written") || !strings.Contains(ae.Message, "disk") {
		t.Fatalf("create connection on a full disk: %T %v, want a 503 API error with a request ID saying that the store could not be written for lack of disk space", werr, werr)
	}
	_, rerr := r.c.RunJob(bg, "quick", jobs.API)
	if rerr == nil {
		t.Fatal("a run was queued on a full disk")
	}
	t.Logf("run job on a full disk: %v", rerr)
	if !errors.As(rerr, &ae) || ae.Status < 500 {
		t.Fatalf("run job on a full disk: %T %v, want a 5xx API error", rerr, rerr)
	}
	checkFullMessage(t, r, ae)

	// Reads go on.
	r.checkReads(t)
	r.checkIntact(t, saved)

	// Space again: writes work.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if _, err := r.c.CreateConnection(bg, connection.Spec{Name: "after", Host: pg.Host, Port: pg.Port,
		Database: "postgres", User: pg.SuperUser, Password: secret.New(pg.SuperPassword),
		SSLMode: connection.SSLDisable}); err != nil {
		t.Fatalf("create connection once there is space again: %v", err)
	}
	r.checkIntact(t, saved)
	r.checkServes(t)
	checkNoLeak(t, r.srv, before)
}

// checkFullMessage fails the test unless the user is told that the store
// could not be written, or at least (when a write other than the store's
// own failed first, such as the queue's) is given a request ID under which
// the server logged that the disk is full.
func checkFullMessage(t *testing.T, r *rig, ae *client.Error) {
	t.Helper()
	if strings.Contains(ae.Message, "the store could not be written") {
		return
	}
	// The log reaches us through a pipe: give it a moment.
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, line := range strings.Split(r.srv.Stderr(), "\n") {
			if strings.Contains(line, ae.RequestID) && strings.Contains(line, "disk is full") {
				t.Logf("generic message %q; the log says: %s", ae.Message, line)
				return
			}
		}
	}
	t.Fatalf("on a full disk the user sees %q (status %d, request %s) and the log does not say the disk is full:\n%s",
		ae.Message, ae.Status, ae.RequestID, r.srv.StderrTail(20))
}

// fill writes to path until the file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	buf := make([]byte, 64<<10)
	var n int64
	for {
		m, err := f.Write(buf)
		n += int64(m)
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatalf("fill %s: %v", path, err)
		}
	}
	t.Logf("filled the store's file system with %d KiB", n>>10)
}

// tunnel saves a connection name to the rig's PostgreSQL through bastion,
// with the given keepalive (0: defaults), and authorizes its key.
func (r *rig) tunnel(t *testing.T, name string, bastion *testenv.Bastion, interval time.Duration, count int) {
	t.Helper()
	v, err := r.c.CreateConnection(bg, connection.Spec{Name: name, Host: r.pg.Host, Port: r.pg.Port,
		Database: "postgres", User: r.pg.SuperUser, Password: secret.New(r.pg.SuperPassword),
		SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: bastion.Host, Port: bastion.Port, User: bastion.User,
			KeepaliveInterval: connection.Duration(interval), KeepaliveCountMax: count}})
	if err != nil {
		t.Fatal(err)
	}
	bastion.Authorize(t, v.SSHTunnel.PublicKey)
}

// roundName is name for round: "name-round".
func roundName(name string, round int) string { return fmt.Sprintf("%s-%d", name, round) }

// applyRounds saves one job per fault round, named roundName(name, round),
// whose steps carry the marker roundName(marker, round): each round's
// backend can be told from a stale one of an earlier round (a session
// whose sshd was killed or frozen sleeps on in the database).
func (r *rig) applyRounds(t *testing.T, name, conn, marker string, steps func(marker string) []jobs.Step) {
	t.Helper()
	var js []jobs.Job
	for round := 1; round <= faultRounds; round++ {
		js = append(js, jobs.Job{Name: roundName(name, round), Connection: conn, Steps: steps(roundName(marker, round))})
	}
	r.apply(t, js...)
}

// startBastion starts an OpenSSH bastion whose log tail is printed when
// the test fails.
func startBastion(t *testing.T) *testenv.Bastion {
	t.Helper()
	b := testenv.StartBastion(t, testenv.BastionOptions{})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- bastion %s sshd log, last lines ---\n%s", b.Addr(), b.LogTail())
		}
	})
	return b
}

// waitBackend waits until a backend of pgrelay (application_name
// pgrelay...) runs a query containing marker, and returns its pid.
func waitBackend(t *testing.T, pg *testenv.Postgres, marker string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pg.ConnString(pg.SuperUser, pg.SuperPassword, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(bg) }()
	for {
		var pid int
		err := conn.QueryRow(ctx, `select pid from pg_stat_activity
			where application_name like 'pgrelay%' and state = 'active' and query like '%' || $1 || '%'
			  and pid <> pg_backend_pid()`, marker).Scan(&pid)
		if err == nil {
			return pid
		}
		if !errors.Is(err, pgx.ErrNoRows) || ctx.Err() != nil {
			t.Fatalf("wait for the backend running %q: %v", marker, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// terminateBackends ends the backends running a query containing marker
// (left behind by a killed server).
func terminateBackends(t *testing.T, pg *testenv.Postgres, marker string) {
	t.Helper()
	pg.Exec(t, `select pg_terminate_backend(pid) from pg_stat_activity
		where query like '%' || $1 || '%' and pid <> pg_backend_pid()`, marker)
}
