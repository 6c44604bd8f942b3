package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/jobs"
	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/postgres"
	"github.com/pgrelay/pgrelay/internal/store/storetest"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// owner is the (non-superuser) role that owns the test databases and that
// the stores connect as.
const owner = "pgrelay"

// server is one throwaway PostgreSQL shared by all subtests of a test;
// each store gets a database of its own.
type server struct {
	pg       *testenv.Postgres
	password string

	mu sync.Mutex // serialises calls into pg, which is not safe for concurrent use
	n  int
}

func startServer(t *testing.T) *server {
	t.Helper()
	pg := testenv.StartPostgres(t, testenv.PostgresOptions{})
	var b [12]byte
	_, _ = rand.Read(b[:])
	srv := &server{pg: pg, password: hex.EncodeToString(b[:])}
	pg.CreateRole(t, owner, srv.password)
	return srv
}

// database creates a new empty database owned by owner and returns its
// connection string. Its default collation is ICU's en-US, as on typical
// servers, rather than the cluster's "C": sorting by name must not depend on
// it (en-US puts "a_b" before "a-b" before "a0"; bytewise order is a-b, a0,
// a_b).
func (srv *server) database(t *testing.T) string {
	t.Helper()
	srv.mu.Lock()
	defer srv.mu.Unlock()
	srv.n++
	name := fmt.Sprintf("store_%d", srv.n)
	srv.pg.Exec(t, "CREATE DATABASE "+name+" OWNER "+owner+
		" TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'")
	return srv.pg.ConnString(owner, srv.password, name)
}

// open opens a store on a new database, closed when the test ends.
func (srv *server) open(t *testing.T) *postgres.Store {
	t.Helper()
	return openAt(t, srv.database(t))
}

func openAt(t *testing.T, connString string) *postgres.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := postgres.Open(ctx, connString)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// appliedMigrations returns the versions recorded in the store's database.
func appliedMigrations(t *testing.T, s *postgres.Store) []int64 {
	t.Helper()
	rows, err := s.Pool().Query(context.Background(), `SELECT version FROM pgrelay_schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	vs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	srv := startServer(t)

	t.Run("Store", func(t *testing.T) {
		t.Parallel()
		storetest.Exercise(t, func(t *testing.T) store.Store { return srv.open(t) })
	})

	t.Run("ConcurrentMigrate", func(t *testing.T) {
		t.Parallel()
		cs := srv.database(t)
		const n = 6
		stores := make([]*postgres.Store, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				<-start
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				stores[i], errs[i] = postgres.Open(ctx, cs)
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("store %d: %v", i, err)
				continue
			}
			t.Cleanup(func() { _ = stores[i].Close() })
		}
		if t.Failed() {
			t.FailNow()
		}
		files, err := os.ReadDir("migrations")
		if err != nil {
			t.Fatal(err)
		}
		got := appliedMigrations(t, stores[0])
		if len(got) != len(files) {
			t.Fatalf("applied migrations = %v, want each of the %d once", got, len(files))
		}
		for i, v := range got {
			if v != int64(i+1) {
				t.Fatalf("applied migrations = %v, want 1..%d once each", got, len(files))
			}
		}
		// The stores share one database.
		ctx := context.Background()
		if err := stores[1].CreateToken(ctx, &store.Token{ID: "t", Name: "n", Role: "admin", Hash: "h", CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if _, err := stores[n-1].GetToken(ctx, "t"); err != nil {
			t.Fatalf("token written by one store, read by another: %v", err)
		}
	})

	t.Run("Reopen", func(t *testing.T) {
		t.Parallel()
		ctx := context.Background()
		cs := srv.database(t)
		s, err := postgres.Open(ctx, cs)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.PutJob(ctx, sampleJob(), time.Now()); err != nil {
			t.Fatal(err)
		}
		first := appliedMigrations(t, s)
		_ = s.Close()
		s2 := openAt(t, cs)
		if got := appliedMigrations(t, s2); fmt.Sprint(got) != fmt.Sprint(first) {
			t.Fatalf("migrations after reopen = %v, want %v", got, first)
		}
		if _, err := s2.GetJob(ctx, "nightly"); err != nil {
			t.Fatalf("job lost on reopen: %v", err)
		}
	})

	t.Run("ConcurrentAppendRunLog", func(t *testing.T) {
		t.Parallel()
		// Appenders in separate stores (separate pools, as in separate
		// processes) get distinct, gapless Seqs.
		ctx := context.Background()
		cs := srv.database(t)
		a, b := openAt(t, cs), openAt(t, cs)
		run := &jobs.Run{ID: "r", JobName: "nightly", Job: *sampleJob(), Trigger: jobs.Manual, Status: jobs.Running, QueuedAt: time.Now()}
		if err := a.CreateRun(ctx, run); err != nil {
			t.Fatal(err)
		}
		const writers, batches, perBatch = 6, 20, 3
		var wg sync.WaitGroup
		for w := range writers {
			s := a
			if w%2 == 1 {
				s = b
			}
			wg.Go(func() {
				for i := range batches {
					lines := make([]jobs.LogLine, perBatch)
					for k := range lines {
						lines[k] = jobs.LogLine{Time: time.Now(), Stream: "stdout", Step: w, Text: fmt.Sprint(i, "/", k)}
					}
					if err := s.AppendRunLog(ctx, "r", lines); err != nil {
						t.Error(err)
						return
					}
					for k := 1; k < perBatch; k++ {
						if lines[k].Seq != lines[k-1].Seq+1 {
							t.Errorf("batch seqs not consecutive: %d then %d", lines[k-1].Seq, lines[k].Seq)
						}
					}
				}
			})
		}
		wg.Wait()
		log, err := a.RunLog(ctx, "r", 0, 10_000)
		if err != nil {
			t.Fatal(err)
		}
		if len(log) != writers*batches*perBatch {
			t.Fatalf("%d lines, want %d", len(log), writers*batches*perBatch)
		}
		for i, l := range log {
			if l.Seq != int64(i+1) {
				t.Fatalf("line %d has seq %d", i, l.Seq)
			}
		}
		// Updating the run does not disturb the log counter.
		got, err := b.GetRun(ctx, "r")
		if err != nil {
			t.Fatal(err)
		}
		got.Status = jobs.Succeeded
		if err := b.UpdateRun(ctx, got); err != nil {
			t.Fatal(err)
		}
		more := []jobs.LogLine{{Time: time.Now(), Stream: "system", Step: -1, Text: "done"}}
		if err := a.AppendRunLog(ctx, "r", more); err != nil {
			t.Fatal(err)
		}
		if want := int64(writers*batches*perBatch + 1); more[0].Seq != want {
			t.Fatalf("seq after update = %d, want %d", more[0].Seq, want)
		}
		if err := a.AppendRunLog(ctx, "nope", more); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("append to missing run: %v, want ErrNotFound", err)
		}
	})

	t.Run("SharedDatabase", func(t *testing.T) {
		t.Parallel()
		// The store's tables are all named pgrelay_*, leaving room for
		// River's river_* tables, and sit in the default schema.
		s := srv.open(t)
		rows, err := s.Pool().Query(context.Background(), `SELECT table_schema || '.' || table_name
			FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
			ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		want := "public.pgrelay_audit public.pgrelay_audit_chain public.pgrelay_connection_checks public.pgrelay_connections public.pgrelay_jobs public.pgrelay_meta public.pgrelay_run_backends " +
			"public.pgrelay_run_cleanups public.pgrelay_run_logs public.pgrelay_runs " +
			"public.pgrelay_schema_migrations public.pgrelay_sessions public.pgrelay_tokens"
		if got := strings.Join(tables, " "); got != want {
			t.Fatalf("tables = %s\nwant %s", got, want)
		}
	})

	t.Run("ConnectErrorHidesPassword", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		const canary = "Canary-pw-7f3a"
		cs := srv.pg.ConnString(owner, canary, "postgres")
		_, err := postgres.Open(ctx, cs)
		if err == nil {
			t.Fatal("open with a wrong password succeeded")
		}
		if strings.Contains(err.Error(), canary) {
			t.Fatalf("error shows the password: %v", err)
		}
		t.Logf("wrong password: %v", err)
	})
}

func TestOpenBadConnStringHidesPassword(t *testing.T) {
	t.Parallel()
	const canary = "Sec-ret-9b1d"
	for _, cs := range []string{
		"postgres://u:" + canary + "@localhost:5432/db?sslmode=bogus",
		"postgres://u:" + canary + "@localhost:notaport/db",
		"postgres://u:" + canary + ":more@localhost/db",
		"postgres://u:" + canary + "@[::1/db",
		"postgres://u:" + canary + "@localhost/db?connect_timeout=soon",
		"postgres://u:" + canary + "@localhost/db?pool_max_conns=many",
		"postgres://u@localhost/db?password=" + canary + "&sslmode=bogus",
		"host=localhost password=" + canary + " sslmode=bogus",
		"host=localhost password=" + strings.Replace(canary, "-", " ", 1) + " sslmode=require",
		"host=localhost password='" + canary + " sslmode=require",
		"host=localhost sslpassword=" + canary + " sslmode=bogus",
	} {
		_, err := postgres.Open(context.Background(), cs)
		if err == nil {
			t.Errorf("%q: no error", cs)
			continue
		}
		for _, part := range []string{canary, "ret-9b1d", "9b1d"} {
			if strings.Contains(err.Error(), part) || strings.Contains(fmt.Sprintf("%+v", err), part) {
				t.Errorf("error shows (part of) the password: %v", err)
			}
		}
		// Nor can the connection string be reached through the chain.
		for e := err; e != nil; e = errors.Unwrap(e) {
			if strings.Contains(fmt.Sprintf("%#v", e), "9b1d") {
				t.Errorf("error chain holds the password: %#v", e)
			}
		}
	}
	// Without a password pgx's reason is kept.
	_, err := postgres.Open(context.Background(), "postgres://u@localhost/db?sslmode=bogus")
	if err == nil || !strings.Contains(err.Error(), "sslmode is invalid") {
		t.Errorf("error without a password should give the reason: %v", err)
	}
}

func sampleJob() *jobs.Job {
	j := &jobs.Job{Name: "nightly", Connection: "wh", Steps: []jobs.Step{{SQL: "select 1"}}}
	j.ApplyDefaults()
	return j
}
