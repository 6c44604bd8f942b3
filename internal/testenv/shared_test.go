package testenv_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestSharedPostgres: tests asking for the same options share one
// cluster; each gets a database and role of its own, which its owner can
// use and which are gone when the test ends.
func TestSharedPostgres(t *testing.T) {
	t.Parallel()
	p := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	if q := testenv.SharedPostgres(t, testenv.PostgresOptions{}); q != p {
		t.Fatal("the same options gave another cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var name, user string
	t.Run("db", func(t *testing.T) {
		d := p.NewDatabase(t)
		name, user = d.Name, d.User
		conn, err := pgx.Connect(ctx, d.ConnString())
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close(ctx) }()
		if _, err := conn.Exec(ctx, "CREATE TABLE t (n int)"); err != nil {
			t.Fatalf("the owner cannot create a table: %v", err)
		}
		old := d.ConnString()
		d.SetPassword(t, "it's a +/@:% password")
		if c, err := pgx.Connect(ctx, old); err == nil {
			_ = c.Close(ctx)
			t.Error("the old password still works after SetPassword")
		}
		c, err := pgx.Connect(ctx, d.ConnString())
		if err != nil {
			t.Fatalf("the new password: %v", err)
		}
		_ = c.Close(ctx)
		var cur, db string
		if err := conn.QueryRow(ctx, "SELECT current_user, current_database()").Scan(&cur, &db); err != nil || cur != d.User || db != d.Name {
			t.Fatalf("connected as %s to %s (%v)", cur, db, err)
		}
	})
	admin, err := pgx.Connect(ctx, p.ConnString(p.SuperUser, p.SuperPassword, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = admin.Close(ctx) }()
	var dbs, roles int
	if err := admin.QueryRow(ctx, "SELECT (SELECT count(*) FROM pg_database WHERE datname = $1), (SELECT count(*) FROM pg_roles WHERE rolname = $2)",
		name, user).Scan(&dbs, &roles); err != nil {
		t.Fatal(err)
	}
	if dbs != 0 || roles != 0 {
		t.Fatalf("after the test: %d databases %s, %d roles %s", dbs, name, roles, user)
	}
}

// TestSharedBastion: tests asking for the same options share one sshd;
// each authorizes keys of its own, concurrently, and logs in with them,
// while keys authorized by nobody stay refused.
func TestSharedBastion(t *testing.T) {
	t.Parallel()
	b := testenv.SharedBastion(t, testenv.BastionOptions{})
	if c := testenv.SharedBastion(t, testenv.BastionOptions{}); c != b {
		t.Fatal("the same options gave another bastion")
	}
	if c := testenv.SharedBastion(t, testenv.BastionOptions{ClientAliveInterval: time.Second}); c == b {
		t.Fatal("other options gave the same bastion")
	}
	t.Run("group", func(t *testing.T) {
		for i := range 4 {
			t.Run("test"+strconv.Itoa(i), func(t *testing.T) {
				t.Parallel()
				signer, line := clientKey(t)
				b.Authorize(t, line)
				c, err := sshDial(b, signer, b.HostKey)
				if err != nil {
					t.Fatalf("login with the test's own key: %v\n%s", err, b.LogTail())
				}
				_ = c.Close()
			})
		}
	})
	stranger, _ := clientKey(t)
	if c, err := sshDial(b, stranger, b.HostKey); err == nil {
		_ = c.Close()
		t.Fatal("a key that no test authorized logged in")
	}
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, so that a test can check that a helper fails loudly.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// mustFail runs f with a fatalRecorder in a goroutine of its own and
// returns what it failed with.
func mustFail(t *testing.T, f func(tb testing.TB)) string {
	t.Helper()
	r := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	if r.msg == "" {
		t.Fatal("no failure")
	}
	return r.msg
}

// TestSharedBastionRefusesChanges: what would disturb the other tests of a
// shared bastion fails the test, and leaves sshd serving.
func TestSharedBastionRefusesChanges(t *testing.T) {
	t.Parallel()
	b := testenv.SharedBastion(t, testenv.BastionOptions{})
	ca, _ := clientKey(t)
	for name, f := range map[string]func(tb testing.TB){
		"Kill":              func(tb testing.TB) { b.Kill(tb) },
		"Start":             func(tb testing.TB) { b.Start(tb) },
		"Freeze":            func(tb testing.TB) { b.Freeze(tb) },
		"Thaw":              func(tb testing.TB) { b.Thaw(tb) },
		"RotateHostKey":     func(tb testing.TB) { b.RotateHostKey(tb) },
		"SetAuthorizedKeys": func(tb testing.TB) { b.SetAuthorizedKeys(tb) },
		"CertifyHostKey": func(tb testing.TB) {
			b.CertifyHostKey(tb, ca, []string{"127.0.0.1"}, time.Now(), time.Now().Add(time.Hour))
		},
		"SystemUser": func(tb testing.TB) { testenv.SharedBastion(tb, testenv.BastionOptions{SystemUser: "root"}) },
	} {
		if msg := mustFail(t, f); !strings.Contains(msg, "shared") && !strings.Contains(msg, "SystemUser") {
			t.Errorf("%s: failed with %q, which does not say why", name, msg)
		}
	}
	signer, line := clientKey(t)
	b.Authorize(t, line)
	c, err := sshDial(b, signer, b.HostKey)
	if err != nil {
		t.Fatalf("sshd no longer serves: %v", err)
	}
	_ = c.Close()
}

// TestSharedBastionReapedAtExit runs a test binary that starts a shared
// bastion and exits; sshd must then stop and its directory go.
func TestSharedBastionReapedAtExit(t *testing.T) {
	t.Parallel()
	if os.Getenv("TESTENV_SHARED_CHILD") != "" {
		t.Skip("the child's own run")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSharedBastionChild$", "-test.v")
	cmd.Env = append(os.Environ(), "TESTENV_SHARED_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child test binary: %v\n%s", err, out)
	}
	var pid int
	var dir string
	for l := range strings.Lines(string(out)) {
		if _, after, ok := strings.Cut(l, "SHARED-SSHD "); ok {
			if _, err := fmt.Sscan(after, &pid, &dir); err != nil {
				t.Fatalf("parse %q: %v", l, err)
			}
		}
	}
	if pid == 0 || dir == "" {
		t.Fatalf("the child printed no sshd:\n%s", out)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, statErr := os.Stat(dir)
		gone := !processAlive(pid) && errors.Is(statErr, os.ErrNotExist)
		if gone {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("20s after the test binary exited: sshd %d alive=%v, %s stat: %v", pid, processAlive(pid), dir, statErr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSharedBastionChild is the child of TestSharedBastionReapedAtExit.
func TestSharedBastionChild(t *testing.T) {
	if os.Getenv("TESTENV_SHARED_CHILD") == "" {
		t.Skip("run by TestSharedBastionReapedAtExit")
	}
	b := testenv.SharedBastion(t, testenv.BastionOptions{})
	pid, err := os.ReadFile(b.File("sshd.pid"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("SHARED-SSHD %s %s\n", strings.TrimSpace(string(pid)), filepath.Dir(b.File("sshd.pid")))
}

// processAlive reports whether pid runs (a zombie does not).
func processAlive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	_, after, _ := strings.Cut(string(stat), ") ")
	return !strings.HasPrefix(after, "Z")
}
