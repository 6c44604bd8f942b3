package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5"
)

// sharedState holds what a test binary shares between its tests: the
// shared clusters and bastions by options, and the pipe to the process
// that removes them when the binary exits. Test helpers need this one
// piece of process state: Go runs no code when a test binary ends.
var sharedState struct {
	mu       sync.Mutex
	clusters map[string]*Postgres
	bastions map[string]*Bastion
	reaper   io.Writer // write end of the reaper's stdin; nil before the first
}

// reaperScript reads "pg DATADIR BASEDIR" and "sshd PID DIR" lines until
// its standard input closes (the test binary exited, however it exited),
// then stops those PostgreSQL servers in immediate mode (SIGQUIT to the
// postmaster) and those sshd listeners (SIGTERM; their per-connection
// processes end with their connections, whose client was the test binary),
// and removes their directories. A process counts as gone once it is a
// zombie: nothing may reap the orphans.
const reaperScript = `pgs=""; sshds=""; dirs=""
while read -r kind a b; do
	case "$kind" in
	pg) pgs="$pgs $a"; dirs="$dirs $b" ;;
	sshd) sshds="$sshds $a"; dirs="$dirs $b" ;;
	esac
done
alive() { kill -0 "$1" 2>/dev/null && [ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]; }
pids=""
for d in $pgs; do
	pid=$(head -n 1 "$d/postmaster.pid" 2>/dev/null)
	[ -n "$pid" ] && kill -QUIT "$pid" 2>/dev/null && pids="$pids $pid"
done
for pid in $sshds; do
	kill -TERM "$pid" 2>/dev/null && pids="$pids $pid"
done
for pid in $pids; do
	i=0
	while alive "$pid" && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
done
rm -rf $dirs`

// reap has the process and directory named by line ("pg DATADIR BASEDIR"
// or "sshd PID DIR") stopped and removed when the test binary exits.
// sharedState.mu must be held.
func reap(kind string, args ...string) error {
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
	for _, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n") {
			return fmt.Errorf("reaper: empty path or path with spaces: %q", a)
		}
	}
	_, err := fmt.Fprintf(sharedState.reaper, "%s %s\n", kind, strings.Join(args, " "))
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
	if err := reap("pg", p.DataDir, p.baseDir); err != nil {
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

// SetPassword gives the database's owner role password instead (stored as
// a SCRAM verifier), for tests whose passwords must have a form of their
// own, such as canaries.
func (d *Database) SetPassword(tb testing.TB, password string) {
	tb.Helper()
	if strings.ContainsRune(password, 0) {
		tb.Fatalf("testenv: set password of role %q: password contains a NUL byte", d.User)
	}
	sql := "ALTER ROLE " + pgx.Identifier{d.User}.Sanitize() +
		" PASSWORD '" + strings.ReplaceAll(password, "'", "''") + "'"
	if err := d.pg.exec(sql); err != nil {
		// The statement holds the password: say what failed without it.
		tb.Fatalf("testenv: set password of role %q on PostgreSQL %s: %v", d.User, d.pg.Addr(), err)
	}
	d.Password = password
}

// ConnString returns a postgres:// URL of the database as its owner.
func (d *Database) ConnString() string { return d.pg.ConnString(d.User, d.Password, d.Name) }

// sharedMaxStartups is the MaxStartups of a shared bastion whose options
// leave it unset: the tests that share it may open more unauthenticated
// connections at once than sshd's default (10:30:100) lets through.
const sharedMaxStartups = "100:30:200"

// SharedBastion returns a bastion that the tests of this test binary
// asking for the same options share: the first starts it, and its sshd is
// stopped and its directory removed when the test binary exits. Each test
// authorizes its own keys with Authorize (safe for concurrent use), which
// other tests' keys do not disturb. Options without MaxStartups get
// "100:30:200". Tests that stop, kill, freeze, restart or reconfigure the
// bastion, or replace its keys or host key, use StartBastion instead:
// Kill, Start, Freeze, Thaw, RotateHostKey, CertifyHostKey and
// SetAuthorizedKeys fail on a shared bastion. SystemUser is not allowed.
// Log holds the logins of every test that shares it.
func SharedBastion(tb testing.TB, opts BastionOptions) *Bastion {
	tb.Helper()
	if opts.SystemUser != "" {
		tb.Fatalf("testenv: shared bastion: SystemUser %q is not allowed; use StartBastion", opts.SystemUser)
	}
	key := fmt.Sprintf("%+v", opts)
	sharedState.mu.Lock()
	defer sharedState.mu.Unlock()
	if b := sharedState.bastions[key]; b != nil {
		return b
	}
	if opts.MaxStartups == "" {
		opts.MaxStartups = sharedMaxStartups
	}
	opts.PermitOpen = slices.Clone(opts.PermitOpen)
	opts.ExtraConfig = slices.Clone(opts.ExtraConfig)
	b := startBastion(tb, opts)
	if err := reap("sshd", strconv.Itoa(b.cmd.Process.Pid), b.dir); err != nil {
		tb.Fatalf("testenv: shared bastion: %v", err) // the test's cleanup removes it
	}
	b.shared = true
	if sharedState.bastions == nil {
		sharedState.bastions = map[string]*Bastion{}
	}
	sharedState.bastions[key] = b
	return b
}
