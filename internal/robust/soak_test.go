package robust_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// soakRounds is how often TestSoakMix works its mix of runs and requests.
const soakRounds = 2

// TestSoakMix is a small soak of one server: runs through an SSH bastion
// that succeed, fail (a syntax error, a command's exit code), time out in
// a statement, are cancelled mid-statement (SQL steps, psql, a shell with
// a child in the background) or leave a daemon behind; connection tests
// read to their end and abandoned mid-stream; a query abandoned while its
// statement runs; run event streams abandoned mid-stream. Afterwards
// everything is back where it was: the server's goroutines, descriptors
// and tunnels (checkNoLeak), its child processes, the database sessions of
// the connection's role and the SSH sessions on the bastion.
func TestSoakMix(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{MaxConnections: 100})
	db := pg.NewDatabase(t)
	bastion := startBastion(t)
	r := startRig(t, "soak", pg, rigOptions{args: append(append([]string{}, faultArgs...), "--stop-grace", "1s")})
	v, err := r.c.CreateConnection(bg, connection.Spec{Name: "wh", Host: pg.Host, Port: pg.Port, Database: db.Name,
		User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		Tunnel: &connection.Tunnel{Host: bastion.Host, Port: bastion.Port, User: bastion.User}})
	if err != nil {
		t.Fatal(err)
	}
	bastion.Authorize(t, v.SSHTunnel.PublicKey)

	const marker = "robust-soak"
	// sleep is a statement that runs until stopped, marked with the job's
	// name.
	sleep := func(job string) string { return "select pg_sleep(30) /* " + marker + "-" + job + " */" }
	type kind struct {
		job    jobs.Job
		want   jobs.Status
		cancel bool // cancelled once its statement runs
	}
	step := func(s jobs.Step) []jobs.Step { return []jobs.Step{s} }
	kinds := []kind{
		{jobs.Job{Name: "sql-ok", Steps: step(jobs.Step{SQL: "select 1; create temp table t as select 1 as a"})}, jobs.Succeeded, false},
		{jobs.Job{Name: "sql-fail", Steps: step(jobs.Step{SQL: "selec 1"})}, jobs.Failed, false},
		{jobs.Job{Name: "sql-timeout", Timeout: connection.Duration(time.Second), Steps: step(jobs.Step{SQL: sleep("sql-timeout")})}, jobs.Failed, false},
		{jobs.Job{Name: "sql-cancel", Steps: step(jobs.Step{SQL: sleep("sql-cancel")})}, jobs.Cancelled, true},
		{jobs.Job{Name: "sh-ok", Steps: step(jobs.Step{Command: []string{"sh", "-c", "echo out; echo err >&2"}})}, jobs.Succeeded, false},
		{jobs.Job{Name: "sh-fail", Steps: step(jobs.Step{Command: []string{"sh", "-c", "exit 3"}})}, jobs.Failed, false},
		{jobs.Job{Name: "sh-cancel", Steps: step(jobs.Step{Command: []string{"sh", "-c", "sleep 600 & psql -X -c '" + sleep("sh-cancel") + "'; wait"}})}, jobs.Cancelled, true},
		{jobs.Job{Name: "psql-ok", Steps: step(jobs.Step{Command: []string{"psql", "-X", "-c", "select 1"}})}, jobs.Succeeded, false},
		{jobs.Job{Name: "psql-fail", Steps: step(jobs.Step{Command: []string{"psql", "-X", "-v", "ON_ERROR_STOP=1", "-c", "selec 1"}})}, jobs.Failed, false},
		{jobs.Job{Name: "psql-cancel", Steps: step(jobs.Step{Command: []string{"psql", "-X", "-c", sleep("psql-cancel")}})}, jobs.Cancelled, true},
		{jobs.Job{Name: "daemon", Steps: step(jobs.Step{Command: []string{"sh", "-c", "setsid sh -c 'sleep 600; : " + marker + "' & psql -X -c 'select 1'"}})}, jobs.Succeeded, false},
	}
	t.Cleanup(func() {
		// A daemon the server failed to end would sleep on.
		for range 10 {
			pid := testenv.ProcessRunning("sh", ": "+marker)
			if pid == 0 {
				return
			}
			below, _ := testenv.Descendants(pid)
			for _, p := range append(below, pid) {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		}
	})
	var all []jobs.Job
	for _, k := range kinds {
		k.job.Connection = "wh"
		all = append(all, k.job)
	}
	r.apply(t, all...)
	r.runOK(t, "sql-ok") // pins the bastion's host key
	before := baseline(t, r.srv)
	sessions := func() int { return roleSessions(t, pg, db.User) }
	pollZero(t, "sessions of role "+db.User+" in pg_stat_activity before the soak", sessions)

	start := time.Now()
	for round := 1; round <= soakRounds; round++ {
		// The runs of a round work at once (up to --max-runs); those to
		// cancel are cancelled in turn once their statement runs.
		ids := make([]string, len(kinds))
		for i, k := range kinds {
			ids[i] = r.start(t, k.job.Name).ID
		}
		for i, k := range kinds {
			if !k.cancel {
				continue
			}
			r.waitStepRunning(t, ids[i], 0)
			waitActive(t, pg, db.User, marker+"-"+k.job.Name)
			// A live stream of the run, abandoned mid-stream.
			abandonEvents(t, r, ids[i])
			if _, err := r.c.CancelRun(bg, ids[i], ""); err != nil {
				t.Fatalf("cancel run %s: %v", ids[i], err)
			}
		}
		for i, k := range kinds {
			if end := r.waitEnded(t, ids[i], 60*time.Second); end.Status != k.want {
				t.Errorf("round %d: run of %s %s, want %s: %s", round, k.job.Name, end.Status, k.want, end.Reason)
			}
		}
		// A connection test read to its end, and one abandoned after its
		// first step.
		if rep, err := r.c.TestConnection(bg, "wh", nil); err != nil || !rep.OK {
			t.Fatalf("connection test: %+v, %v", rep, err)
		}
		ctx, cancel := context.WithCancel(bg)
		_, _ = r.c.TestConnection(ctx, "wh", func(diagnose.Step) { cancel() })
		cancel()
		abandonQuery(t, r, pg, db.User, marker)
		t.Logf("round %d: %d runs, 2 connection tests and a query in %v", round, len(kinds), time.Since(start).Round(time.Millisecond))
		start = time.Now()
	}
	if t.Failed() {
		t.FailNow()
	}

	checkNoLeak(t, r.srv, before)
	pollZero(t, "sessions of role "+db.User+" in pg_stat_activity after the soak", sessions)
	pollZero(t, "processes below the server after the soak", func() int {
		pids, err := testenv.Descendants(r.srv.Pid())
		if err != nil {
			t.Fatal(err)
		}
		return len(pids)
	})
	pollZero(t, "daemons a command step left running after the soak", func() int {
		if testenv.ProcessRunning("sh", ": "+marker) != 0 {
			return 1
		}
		return 0
	})
	pollZero(t, "SSH sessions on the bastion after the soak", func() int { return establishedTo(t, bastion.Port) })
}

// pollZero polls count until it is 0, and fails the test when it is not
// within settleWithin; what names what count counts.
func pollZero(t *testing.T, what string, count func() int) {
	t.Helper()
	deadline := time.Now().Add(settleWithin)
	for {
		n := count()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d %s, still after %v", n, what, settleWithin)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// roleSessions counts the sessions of role in pg_stat_activity.
func roleSessions(t *testing.T, pg *testenv.Postgres, role string) int {
	t.Helper()
	conn := pg.Connect(t, "postgres")
	defer func() { _ = conn.Close(bg) }()
	var n int
	if err := conn.QueryRow(bg, `select count(*) from pg_stat_activity where usename = $1`, role).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitActive waits until a session of role runs a statement holding
// marker.
func waitActive(t *testing.T, pg *testenv.Postgres, role, marker string) {
	t.Helper()
	conn := pg.Connect(t, "postgres")
	defer func() { _ = conn.Close(bg) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n int
		if err := conn.QueryRow(bg, `select count(*) from pg_stat_activity where usename = $1 and state = 'active'
			and query like '%' || $2 || '%'`, role, marker).Scan(&n); err != nil {
			t.Error(err)
			return
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("no statement holding %q ran within 30 s", marker)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// abandonEvents opens the run's event stream, reads its first event and
// closes the connection.
func abandonEvents(t *testing.T, r *rig, id string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, r.srv.URL+"/api/v1/runs/"+id+"/events", nil)
	if err != nil {
		t.Error(err)
		return
	}
	req.Header.Set("Authorization", "Bearer "+r.token)
	req.Header.Set("Accept", "text/event-stream")
	req.Close = true
	resp, err := r.srv.HTTPClient().Do(req)
	if err != nil {
		t.Errorf("run events: %v", err)
		return
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("run events: %s", resp.Status)
		return
	}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() && sc.Text() != "" {
	}
}

// abandonQuery posts a query that sleeps and goes away once its statement
// runs on the server.
func abandonQuery(t *testing.T, r *rig, pg *testenv.Postgres, role, marker string) {
	t.Helper()
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	body := strings.NewReader(`{"sql": "select pg_sleep(30) /* ` + marker + ` */"}`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.srv.URL+"/api/v1/connections/wh/query", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+r.token)
	req.Header.Set("Content-Type", "application/json")
	req.Close = true
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := r.srv.HTTPClient().Do(req); err == nil {
			_ = resp.Body.Close()
			t.Errorf("query answered %s before it was abandoned", resp.Status)
		}
	}()
	waitActive(t, pg, role, marker)
	cancel()
	<-done
}

// establishedTo counts the established TCP connections to port on this
// machine (the SSH sessions of a bastion listening there), from
// /proc/net/tcp and tcp6.
func establishedTo(t *testing.T, port int) int {
	t.Helper()
	hexPort := fmt.Sprintf(":%04X", port)
	n := 0
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			if f == "/proc/net/tcp6" {
				continue
			}
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			// local_address rem_address st: the server's side of an
			// established connection.
			if len(fields) > 3 && strings.HasSuffix(fields[1], hexPort) && fields[3] == "01" {
				n++
			}
		}
	}
	return n
}
