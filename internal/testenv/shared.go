package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
)

// sharedState holds what a test binary shares between its tests: the
// shared clusters by options, and the pipe to the process that removes
// them when the binary exits. Test helpers need this one piece of process
// state: Go runs no code when a test binary ends.
var sharedState struct {
	mu       sync.Mutex
	clusters map[string]*Postgres
	reaper   io.Writer // write end of the reaper's stdin; nil before the first
}

// reaperScript reads "pg DATADIR BASEDIR" lines until its standard input
// closes (the test binary exited, however it exited), then stops those
// servers in immediate mode (SIGQUIT to the postmaster) and removes their
// directories.
const reaperScript = `pgs=""; dirs=""
while read -r kind data base; do
	if [ "$kind" = pg ]; then pgs="$pgs $data"; dirs="$dirs $base"; fi
done
for d in $pgs; do
	pid=$(head -n 1 "$d/postmaster.pid" 2>/dev/null)
	[ -n "$pid" ] && kill -QUIT "$pid" 2>/dev/null
	i=0
	while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
done
rm -rf $dirs`

// reapAtExit has p stopped and removed when the test binary exits.
func reapAtExit(p *Postgres) error {
	if sharedState.reaper == nil {
		r, w, err := os.Pipe()
		if err != nil {
			return fmt.Errorf("reaper pipe: %w", err)
		}
		cmd := exec.Command("/bin/sh", "-c", reaperScript)
		cmd.Stdin = r
		// A process group of its own: an interrupt of the test binary's
		// group must not take it along before it cleaned up.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			_ = r.Close()
			_ = w.Close()
			return fmt.Errorf("start reaper: %w", err)
		}
		_ = r.Close()
		go func() { _ = cmd.Wait() }()
		sharedState.reaper = w // closed by the exit of the test binary
	}
	if strings.ContainsAny(p.DataDir+p.baseDir, " \t\n") {
		return fmt.Errorf("reaper: paths with spaces: %s", p.baseDir)
	}
	_, err := fmt.Fprintf(sharedState.reaper, "pg %s %s\n", p.DataDir, p.baseDir)
	return err
}

// SharedPostgres returns a cluster that the tests of this test binary
// asking for the same options share: the first starts it, and it is
// stopped and removed when the test binary exits. Each test takes a
// database and role of its own with NewDatabase. Tests that stop,
// restart, freeze or reconfigure their server, or that need cluster-wide
// state of their own (roles of fixed names, pg_hba rules), use
// StartPostgres instead; Stop, Start and Restart fail on a shared cluster.
func SharedPostgres(tb testing.TB, opts PostgresOptions) *Postgres {
	tb.Helper()
	key := fmt.Sprintf("%+v", opts)
	sharedState.mu.Lock()
	defer sharedState.mu.Unlock()
	if p := sharedState.clusters[key]; p != nil {
		return p
	}
	p := startPostgres(tb, opts, false)
	if err := reapAtExit(p); err != nil {
		p.cleanup(tb)
		tb.Fatalf("testenv: shared PostgreSQL: %v", err)
	}
	p.shared = true
	if sharedState.clusters == nil {
		sharedState.clusters = map[string]*Postgres{}
	}
	sharedState.clusters[key] = p
	return p
}

// Database is a database of one test, owned by a LOGIN role of its own
// (SCRAM password), on a cluster that other tests may share. It and its
// role are dropped when the test ends.
type Database struct {
	// Name is the database's name, User its owner role's, Password the
	// role's password.
	Name, User, Password string
	pg                   *Postgres
}

// NewDatabase creates a database and its owner role with unique names for
// the test.
func (p *Postgres) NewDatabase(tb testing.TB) *Database {
	tb.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	id := hex.EncodeToString(b[:])
	var pw [16]byte
	if _, err := rand.Read(pw[:]); err != nil {
		tb.Fatal(err)
	}
	d := &Database{Name: "db_" + id, User: "role_" + id, Password: hex.EncodeToString(pw[:]), pg: p}
	p.CreateRole(tb, d.User, d.Password)
	p.CreateDatabase(tb, d.Name, d.User)
	tb.Cleanup(func() {
		if err := p.exec("DROP DATABASE IF EXISTS " + pgx.Identifier{d.Name}.Sanitize() + " WITH (FORCE)"); err != nil {
			tb.Logf("testenv: drop database %s: %v", d.Name, err)
		}
		if err := p.exec("DROP ROLE IF EXISTS " + pgx.Identifier{d.User}.Sanitize()); err != nil {
			tb.Logf("testenv: drop role %s: %v", d.User, err)
		}
	})
	return d
}

// ConnString returns a postgres:// URL of the database as its owner.
func (d *Database) ConnString() string { return d.pg.ConnString(d.User, d.Password, d.Name) }
