package app_test

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/diagnose"
	"github.com/pgrelay/pgrelay/internal/grants"
	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestTransactionPooler: through Debian's PgBouncer in transaction mode
// with one server connection, what pgrelay does with the default setting
// breaks — named prepared statements of one client meet another's
// (42P05), which the connection test recognises and hints at, and two
// concurrent runs' search_path settings land on the one server connection
// in turn, so one run's table goes to the other's schema — and with
// pooler: transaction the connection test, a grants audit, the same two
// runs and a program through a run's endpoint (which logs in itself) work.
func TestTransactionPooler(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	d := pg.NewDatabase(t)
	bouncer := testenv.StartPgBouncer(t, pg, testenv.PgBouncerOptions{PoolMode: "transaction", PoolSize: 1,
		Users: map[string]string{d.User: d.Password}})
	f := newService(t)
	ctx := context.Background()
	for _, p := range []connection.Pooler{"", connection.PoolerTransaction} {
		name := "pooled-" + string(p)
		if p == "" {
			name = "pooled-none"
		}
		s := connection.Spec{Name: name, Host: bouncer.Host, Port: bouncer.Port, Database: d.Name, User: d.User,
			Password: secret.New(d.Password), SSLMode: connection.SSLDisable, Pooler: p}
		if _, err := f.svc.CreateConnection(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	super, err := pgx.Connect(ctx, pg.ConnString(pg.SuperUser, pg.SuperPassword, d.Name))
	if err != nil {
		t.Fatal(err)
	}
	defer super.Close(ctx)
	for _, s := range []string{"a", "b", "c", "d"} {
		if _, err := super.Exec(ctx, "CREATE SCHEMA "+s+" AUTHORIZATION "+d.User); err != nil {
			t.Fatal(err)
		}
	}

	t.Run("connection test", func(t *testing.T) {
		// The first test leaves its named prepared statements on the one
		// server connection; the next client's of the same name fail.
		var last *diagnose.Report
		for range 2 {
			rep, err := f.svc.TestConnection(ctx, "pooled-none", nil)
			if err != nil {
				t.Fatal(err)
			}
			last = rep
			if !rep.OK {
				break
			}
		}
		st := last.Failed()
		if st == nil || st.ID != diagnose.StepQuery || !strings.Contains(st.Error, "42P05") ||
			!strings.Contains(st.Hint, "pgrelay connection update pooled-none --pooler transaction") {
			t.Fatalf("the default through a transaction pooler: %+v; want the query step to fail with 42P05 and the pooler hint", st)
		}
		for range 3 {
			rep, err := f.svc.TestConnection(ctx, "pooled-transaction", nil)
			if err != nil || !rep.OK {
				t.Fatalf("with pooler: transaction: %v %+v", err, rep.Failed())
			}
		}
		for range 2 {
			if _, err := f.svc.Grants(ctx, "pooled-transaction", grants.Request{TargetSchema: "a"}); err != nil {
				t.Fatalf("grants audit with pooler: transaction: %v", err)
			}
		}
		var r rows
		if err := f.svc.Query(ctx, "pooled-transaction", "SELECT current_user", &r); err != nil || len(r.out) != 1 {
			t.Fatalf("query with pooler: transaction: %v %v", err, r.out)
		}
	})

	// Two runs at once, each in its own schema: create a table after a
	// pause, pause, fill it. The second run starts while the first holds
	// the server connection, so its SET search_path is next in line.
	runBoth := func(t *testing.T, conn string, schemas [2]string) [2]jobs.Result {
		t.Helper()
		var wg sync.WaitGroup
		var res [2]jobs.Result
		var logs [2]string
		for i, schema := range schemas {
			wg.Add(1)
			go func() {
				defer wg.Done()
				job := jobs.Job{Name: "j" + strconv.Itoa(i), Connection: conn, TargetSchema: schema, Steps: []jobs.Step{
					{SQL: "SELECT pg_sleep(1)"}, {SQL: "CREATE TABLE items (id int)"}, {SQL: "SELECT pg_sleep(1)"},
					{SQL: "INSERT INTO items VALUES (" + strconv.Itoa(i+1) + ")"}}}
				job.ApplyDefaults()
				rn := &jobs.Runner{Open: func(ctx context.Context, name string) (jobs.Conn, error) { return f.svc.Open(ctx, name) }}
				var log strings.Builder
				res[i] = rn.Run(ctx, job, jobs.Hooks{Log: func(l jobs.LogLine) { log.WriteString(l.Text + "\n") }})
				logs[i] = log.String()
			}()
			if i == 0 {
				// The second run starts once the first holds the server
				// connection: its pg_sleep runs.
				for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
					var n int
					if err := super.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
						AND state = 'active' AND query LIKE '%pg_sleep(1)%' AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
						t.Fatal(err)
					}
					if n > 0 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatal("the first run's statement did not start within 10 s")
					}
				}
			}
		}
		wg.Wait()
		t.Logf("%s: %s %q / %s %q", conn, res[0].Status, res[0].Reason, res[1].Status, res[1].Reason)
		return res
	}
	// rowsIn counts the rows of schema's items (-1: no such table).
	rowsIn := func(t *testing.T, schema string, id int) int {
		t.Helper()
		var n int
		err := super.QueryRow(ctx, "SELECT count(*) FROM "+schema+".items WHERE id = $1", id).Scan(&n)
		if err != nil {
			if strings.Contains(err.Error(), "42P01") {
				return -1
			}
			t.Fatal(err)
		}
		return n
	}

	t.Run("runs default", func(t *testing.T) {
		res := runBoth(t, "pooled-none", [2]string{"a", "b"})
		ok := res[0].Status == jobs.Succeeded && res[1].Status == jobs.Succeeded && rowsIn(t, "a", 1) == 1 && rowsIn(t, "b", 2) == 1
		if ok {
			t.Fatal("two runs through a transaction pooler with the default setting both worked in their own schemas; the test proves nothing")
		}
		if rowsIn(t, "a", 1) == 1 {
			t.Fatalf("run 1's table is in its schema a; want it moved by run 2's search_path")
		}
	})
	t.Run("runs transaction", func(t *testing.T) {
		res := runBoth(t, "pooled-transaction", [2]string{"c", "d"})
		for i, r := range res {
			if r.Status != jobs.Succeeded {
				t.Fatalf("run %d with pooler: transaction: %s %s", i+1, r.Status, r.Reason)
			}
		}
		if rowsIn(t, "c", 1) != 1 || rowsIn(t, "d", 2) != 1 {
			t.Fatalf("with pooler: transaction, each run's row is not in its own schema (c: %d, d: %d)", rowsIn(t, "c", 1), rowsIn(t, "d", 2))
		}
	})
	// A program through the run's endpoint, which logs in to the pooler
	// itself with the stored password.
	t.Run("command", func(t *testing.T) {
		if _, err := exec.LookPath("psql"); err != nil {
			t.Skip("psql not installed")
		}
		var stdout, stderr testenv.LogBuffer
		res, err := f.svc.Exec(ctx, app.ExecRequest{Connection: "pooled-transaction", Command: []string{"psql", "-XAtc", "select current_user"},
			Stdio: &jobs.Stdio{In: strings.NewReader(""), Out: &stdout, Err: &stderr}})
		if err != nil || res.Status != jobs.Succeeded || strings.TrimSpace(stdout.String()) != d.User {
			t.Fatalf("psql through the endpoint with pooler: transaction: %v %s %s\n%s%s", err, res.Status, res.Reason, stdout.String(), stderr.String())
		}
	})
}
