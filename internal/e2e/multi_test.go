package e2e_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/app"
	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestHealthChecksLeaderOptedOut runs two server processes on one
// PostgreSQL store, the first (River's leader) with --health-checks=false:
// the other process still runs the connections' scheduled tests. (The
// leader queues the periodic health job; one that had no health checks of
// its own queued none, so no process ran any.)
func TestHealthChecksLeaderOptedOut(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	storeDB := pg.NewDatabase(t)
	db := pg.NewDatabase(t)
	key := e2etest.NewMasterKey()
	newEnv := func() []string {
		return e2etest.ProcessEnv("PGRELAY_DATA_DIR="+t.TempDir(), secret.MasterKeyEnv+"="+key, "PGRELAY_STORE="+storeDB.ConnString())
	}
	envA, envB := newEnv(), newEnv()
	token := e2etest.CreateToken(t, binary, envA, "e2e-admin", auth.Admin)

	a := e2etest.StartServer(t, binary, "A", e2etest.Options{Env: envA, Args: []string{"--health-checks=false"}})
	store := pg.Connect(t, storeDB.Name)
	// A is River's leader before B starts (it stays leader while it runs).
	waitUntil(t, "server A to be River's leader", 30*time.Second, func() bool {
		var leader string
		err := store.QueryRow(bg, `SELECT leader_id FROM river_leader`).Scan(&leader)
		return err == nil && strings.HasSuffix(leader, ":"+strconv.Itoa(a.Pid()))
	})
	if _, err := a.Client(t, token).CreateConnection(bg, connection.Spec{Name: "db", Host: pg.Host, Port: pg.Port,
		Database: db.Name, User: db.User, Password: secret.New(db.Password), SSLMode: connection.SSLDisable,
		HealthCheckInterval: connection.Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	b := e2etest.StartServer(t, binary, "B", e2etest.Options{Env: envB})

	waitUntil(t, "a scheduled test of the connection", 45*time.Second, func() bool {
		var n int
		if err := store.QueryRow(bg, `SELECT count(*) FROM pgrelay_connection_checks
			WHERE kind = 'test' AND source = 'scheduled'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
	var leader string
	if err := store.QueryRow(bg, `SELECT leader_id FROM river_leader`).Scan(&leader); err != nil ||
		!strings.HasSuffix(leader, ":"+strconv.Itoa(a.Pid())) {
		t.Fatalf("leader %q (%v); want server A (pid %d), server B is pid %d", leader, err, a.Pid(), b.Pid())
	}
}

// TestHealthCheckIntervalBusyConnection runs two server processes on one
// PostgreSQL store with a connection tested every hour and used often
// through both: its uses do not make it tested again before the hour.
// (The due check looked for the last test among the connection's newest
// dozen entries of any kind, so a connection used a dozen times since its
// last test was tested at every look, every 30 s.)
func TestHealthCheckIntervalBusyConnection(t *testing.T) {
	t.Parallel()
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	storeDB := pg.NewDatabase(t)
	db := pg.NewDatabase(t)
	key := e2etest.NewMasterKey()
	newEnv := func() []string {
		return e2etest.ProcessEnv("PGRELAY_DATA_DIR="+t.TempDir(), secret.MasterKeyEnv+"="+key,
			"PGRELAY_STORE="+storeDB.ConnString(), "DB_PW="+db.Password)
	}
	envA, envB := newEnv(), newEnv()
	token := e2etest.CreateToken(t, binary, envA, "e2e-admin", auth.Admin)
	// Saved before any server starts, so that the health job queued at
	// the first start tests it.
	e2etest.Command(t, binary, envA, "connection", "create", "db", "--host", pg.Host, "--port", strconv.Itoa(pg.Port),
		"--database", db.Name, "--user", db.User, "--password-env", "DB_PW", "--sslmode", "disable",
		"--health-check-interval", "1h")
	a := e2etest.StartServer(t, binary, "A", e2etest.Options{Env: envA})
	b := e2etest.StartServer(t, binary, "B", e2etest.Options{Env: envB})
	store := pg.Connect(t, storeDB.Name)
	scheduled := func() int {
		var n int
		if err := store.QueryRow(bg, `SELECT count(*) FROM pgrelay_connection_checks
			WHERE kind = 'test' AND source = 'scheduled'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	waitUntil(t, "the connection's first scheduled test", 45*time.Second, func() bool { return scheduled() > 0 })

	// More uses than the dozen entries the due check looked at.
	ca, cb := a.Client(t, token), b.Client(t, token)
	for i := range 15 {
		c := ca
		if i%2 == 1 {
			c = cb
		}
		if err := c.Query(bg, "db", "select 1", discardRows{}); err != nil {
			t.Fatal(err)
		}
	}
	var since time.Time
	if err := store.QueryRow(bg, `SELECT now()`).Scan(&since); err != nil {
		t.Fatal(err)
	}
	// The health job looks again (every 30 s) after the uses.
	waitUntil(t, "the health job to look for due tests again", 60*time.Second, func() bool {
		var n int
		if err := store.QueryRow(bg, `SELECT count(*) FROM river_job WHERE kind = 'pgrelay_health_checks'
			AND state = 'completed' AND attempted_at > $1`, since).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n > 0
	})
	if n := scheduled(); n != 1 {
		t.Fatalf("%d scheduled tests of a connection tested every hour, want 1", n)
	}
}

// discardRows is a query's result sink that keeps nothing.
type discardRows struct{}

func (discardRows) Begin([]app.Column) error { return nil }
func (discardRows) Row([][]byte) error       { return nil }
func (discardRows) End(string) error         { return nil }
