package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// PgBouncerOptions configures a throwaway PgBouncer.
type PgBouncerOptions struct {
	// PoolMode is session, transaction (the default) or statement.
	PoolMode string
	// PoolSize is default_pool_size: server connections per database and
	// user (default 1, so that every client shares one).
	PoolSize int
	// Users are the roles clients log in as and their passwords (the
	// auth_file, plain text): PgBouncer checks clients with SCRAM and logs
	// in to the server with the same password.
	Users map[string]string
}

// PgBouncer is a running PgBouncer (Debian's package, 1.18: no prepared
// statements in transaction mode) on 127.0.0.1 in front of a Postgres,
// made by StartPgBouncer.
type PgBouncer struct {
	Host string
	Port int
	// LogFile is PgBouncer's log.
	LogFile string
}

// Addr is host:port.
func (b *PgBouncer) Addr() string { return net.JoinHostPort(b.Host, strconv.Itoa(b.Port)) }

// findPgBouncer returns PgBouncer's program.
func findPgBouncer() (string, error) {
	if p, err := exec.LookPath("pgbouncer"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/pgbouncer"); err == nil {
		return "/usr/sbin/pgbouncer", nil
	}
	return "", errors.New("pgbouncer not found; run `make test-deps` to install it (Debian package pgbouncer)")
}

// StartPgBouncer starts PgBouncer in front of pg's databases (plain TCP
// to the server, or TLS when pg has it) and stops it when the test ends.
// Clients connect without TLS. As root it runs as pg's OS user, since
// PgBouncer refuses to run as root.
func StartPgBouncer(tb testing.TB, pg *Postgres, opts PgBouncerOptions) *PgBouncer {
	tb.Helper()
	prog, err := findPgBouncer()
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	if opts.PoolMode == "" {
		opts.PoolMode = "transaction"
	}
	if opts.PoolSize == 0 {
		opts.PoolSize = 1
	}
	dir, err := os.MkdirTemp(shortTempDir(), "pgrelay-bouncer-")
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	if pg.owner != nil {
		if err := os.Chown(dir, pg.owner.uid, pg.owner.gid); err != nil {
			tb.Fatalf("testenv: %v", err)
		}
	}
	var users strings.Builder
	for u, pw := range opts.Users {
		fmt.Fprintf(&users, "%q %q\n", u, pw)
	}
	if err := pg.writeOwned(filepath.Join(dir, "userlist.txt"), []byte(users.String()), 0o600); err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	serverTLS := "disable"
	if pg.opts.TLS {
		serverTLS = "require"
	}
	b := &PgBouncer{Host: "127.0.0.1", LogFile: filepath.Join(dir, "pgbouncer.log")}
	for attempt := 0; ; attempt++ {
		b.Port, err = freePort()
		if err != nil {
			tb.Fatalf("testenv: %v", err)
		}
		ini := fmt.Sprintf(`[databases]
* = host=%s port=%d

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = scram-sha-256
auth_file = %s
pool_mode = %s
default_pool_size = %d
max_client_conn = 200
server_tls_sslmode = %s
client_tls_sslmode = disable
ignore_startup_parameters = extra_float_digits,options,search_path
logfile = %s
pidfile = %s
`, pg.Host, pg.Port, b.Port, filepath.Join(dir, "userlist.txt"), opts.PoolMode, opts.PoolSize, serverTLS,
			b.LogFile, filepath.Join(dir, "pgbouncer.pid"))
		conf := filepath.Join(dir, "pgbouncer.ini")
		_ = os.Remove(conf)
		if err := pg.writeOwned(conf, []byte(ini), 0o600); err != nil {
			tb.Fatalf("testenv: %v", err)
		}
		args := []string{conf}
		if pg.owner != nil {
			args = []string{"-u", pg.owner.name, conf}
		}
		cmd := exec.Command(prog, args...)
		cmd.Env = childEnv()
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			tb.Fatalf("testenv: start pgbouncer: %v", err)
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		stop := func() {
			_ = cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		}
		if waitListening(b.Addr(), exited, 10*time.Second) {
			tb.Cleanup(stop)
			tb.Logf("testenv: PgBouncer (%s mode, pool size %d) ready on %s in front of %s", opts.PoolMode, opts.PoolSize, b.Addr(), pg.Addr())
			return b
		}
		stop()
		if attempt >= 3 {
			tb.Fatalf("testenv: pgbouncer did not start: %s\n%s", out.String(), readFrom(b.LogFile, 0))
		}
	}
}

// waitListening polls addr until it accepts a connection, the process
// exits or within passes.
func waitListening(addr string, exited <-chan struct{}, within time.Duration) bool {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		cancel()
		if err == nil {
			_ = c.Close()
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}
