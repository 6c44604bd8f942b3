package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgSuperUser is the name of the cluster's superuser. It is "postgres"
// whichever OS user runs the cluster, as on most real servers.
const pgSuperUser = "postgres"

// pgStartAttempts bounds how often StartPostgres picks a new port when the
// chosen one was taken before the server could bind it.
const pgStartAttempts = 5

// PostgresOptions configures a throwaway PostgreSQL cluster.
type PostgresOptions struct {
	// TLS makes a CA (ECDSA P-256) and a server certificate for TLSHosts
	// (by default 127.0.0.1, ::1 and "localhost"), and turns ssl on. Clients may still
	// connect without TLS unless SSLOnly is set.
	TLS bool
	// TLSHosts are the names and IP addresses the server certificate is
	// for, with TLS; nil means 127.0.0.1, ::1 and "localhost".
	TLSHosts []string
	// ExpiredCA makes the CA certificate (CAFile, CAPEM) one that expired
	// an hour ago; the server certificate it signed is still valid. It
	// implies TLS.
	ExpiredCA bool
	// SSLOnly makes pg_hba.conf accept only hostssl connections and
	// reject hostnossl ones, as AlloyDB and Lakebase do. It implies TLS.
	SSLOnly bool
	// MaxConnections is max_connections; 0 means 50. Three of them are
	// reserved for the superuser (superuser_reserved_connections).
	MaxConnections int
	// HBA holds extra pg_hba.conf lines, placed before the default host
	// lines so that they take precedence (the first matching line wins),
	// e.g. "host all blocked 127.0.0.1/32 reject".
	HBA []string
}

// Postgres is a running throwaway PostgreSQL cluster on loopback, made by
// StartPostgres. Its data lives in a private temporary directory that is
// removed, with the server stopped, when the test ends.
//
// Host connections use SCRAM-SHA-256 passwords; passwords are stored as
// SCRAM verifiers (password_encryption = scram-sha-256). The superuser may
// also connect without a password over the Unix socket in the cluster's
// private socket directory.
type Postgres struct {
	// Host is the address the server listens on: "127.0.0.1". It also
	// listens on ::1 when the machine has IPv6 loopback.
	Host string
	// Port is the TCP port, chosen free at start and kept by Restart and
	// Start.
	Port int
	// SuperUser is the superuser's role name, "postgres".
	SuperUser string
	// SuperPassword is the superuser's password, random per cluster.
	SuperPassword string
	// CAFile is the path of a PEM file holding the CA that signed the
	// server certificate, readable by the test process; empty without TLS.
	CAFile string
	// CAPEM is the content of CAFile; nil without TLS.
	CAPEM []byte
	// DataDir is the cluster's data directory.
	DataDir string

	opts      PostgresOptions
	binDir    string
	owner     *osAccount // nil: the server runs as the current user
	baseDir   string
	socketDir string
	logFile   string
	running   bool
	// shared is set on a SharedPostgres cluster, which no test may stop.
	shared bool
}

// osAccount is an OS user that server processes run as.
type osAccount struct {
	name     string
	uid, gid int
}

// StartPostgres initialises and starts a throwaway PostgreSQL cluster on
// 127.0.0.1 and a free port, using the newest server found under
// /usr/lib/postgresql/*/bin (or initdb on PATH). It fails the test, with
// the server log's tail when the server would not start, if it cannot. The
// server is stopped (immediate mode) and its files removed in tb.Cleanup.
//
// As root the cluster runs as the "postgres" OS user, since initdb refuses
// to run as root.
func StartPostgres(tb testing.TB, opts PostgresOptions) *Postgres {
	tb.Helper()
	return startPostgres(tb, opts, true)
}

// startPostgres starts a cluster; with cleanup it is stopped and removed
// when tb ends (else the caller sees to it).
func startPostgres(tb testing.TB, opts PostgresOptions, cleanup bool) *Postgres {
	tb.Helper()
	if opts.SSLOnly || opts.ExpiredCA {
		opts.TLS = true
	}
	if opts.MaxConnections == 0 {
		opts.MaxConnections = 50
	}
	if opts.MaxConnections < 0 {
		tb.Fatalf("testenv: PostgresOptions.MaxConnections is %d; want 0 (default 50) or more", opts.MaxConnections)
	}
	binDir, err := findPostgresBin()
	if err != nil {
		tb.Fatalf("testenv: %v; run `make test-deps` to install the PostgreSQL server", err)
	}
	owner, err := postgresAccount()
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}

	p := &Postgres{
		Host:      "127.0.0.1",
		SuperUser: pgSuperUser,
		opts:      opts,
		binDir:    binDir,
		owner:     owner,
	}
	start := time.Now()
	if err := p.setup(tb); err != nil {
		tb.Fatalf("testenv: set up PostgreSQL: %v", err)
	}
	if cleanup {
		tb.Cleanup(func() { p.cleanup(tb) })
	}
	p.start(tb, true)
	tb.Logf("testenv: PostgreSQL (%s) ready on %s in %v (tls=%v ssl_only=%v)",
		filepath.Base(filepath.Dir(binDir)), p.Addr(), time.Since(start).Round(time.Millisecond), opts.TLS, opts.SSLOnly)
	return p
}

// setup makes the directories, runs initdb and writes the configuration.
// On error it removes what it made.
func (p *Postgres) setup(tb testing.TB) (err error) {
	base, err := os.MkdirTemp(shortTempDir(), "pgrelay-pg-")
	if err != nil {
		return fmt.Errorf("make base directory: %w", err)
	}
	p.baseDir = base
	defer func() {
		if err != nil {
			_ = os.RemoveAll(base)
		}
	}()
	// 0711: the server user may pass through to its own directories but
	// not list the base directory.
	if err := os.Chmod(base, 0o711); err != nil {
		return fmt.Errorf("chmod base directory: %w", err)
	}
	p.DataDir = filepath.Join(base, "data")
	p.socketDir = filepath.Join(base, "run")
	p.logFile = filepath.Join(p.socketDir, "postgres.log")
	if n := len(filepath.Join(p.socketDir, ".s.PGSQL.65535")); n >= 100 {
		return fmt.Errorf("unix socket path in %s would be %d bytes, over the 100 byte limit; set TMPDIR to a shorter directory", p.socketDir, n)
	}
	for _, dir := range []string{p.DataDir, p.socketDir} {
		if err := p.mkdirOwned(dir); err != nil {
			return err
		}
	}

	var pw [16]byte
	if _, err := rand.Read(pw[:]); err != nil {
		return fmt.Errorf("generate superuser password: %w", err)
	}
	p.SuperPassword = hex.EncodeToString(pw[:])
	pwFile := filepath.Join(p.socketDir, "pwfile")
	if err := p.writeOwned(pwFile, []byte(p.SuperPassword+"\n"), 0o600); err != nil {
		return err
	}
	out, err := p.run(context.Background(), "initdb",
		"-D", p.DataDir,
		"-U", pgSuperUser,
		"--auth-local=trust",
		"--auth-host=scram-sha-256",
		"--pwfile="+pwFile,
		"--encoding=UTF8",
		"--no-locale",
		"--no-sync",
		"--no-instructions",
	)
	_ = os.Remove(pwFile)
	if err != nil {
		return fmt.Errorf("initdb in %s: %w\n%s", p.DataDir, err, out)
	}

	conf := []string{
		"",
		"# pgrelay testenv",
		"listen_addresses = '" + listenAddresses() + "'",
		"unix_socket_directories = '" + p.socketDir + "'",
		"max_connections = " + strconv.Itoa(p.opts.MaxConnections),
		"shared_buffers = 16MB",
		"huge_pages = off",
		"fsync = off",
		"full_page_writes = off",
		"password_encryption = 'scram-sha-256'",
		"logging_collector = off",
		"log_line_prefix = '%m [%p] %q%u@%d '",
	}
	if p.opts.TLS {
		certs, err := newServerTLS(p.opts.TLSHosts, p.opts.ExpiredCA)
		if err != nil {
			return err
		}
		p.CAPEM = certs.caPEM
		p.CAFile = filepath.Join(base, "ca.pem")
		if err := os.WriteFile(p.CAFile, certs.caPEM, 0o644); err != nil {
			return fmt.Errorf("write CA file: %w", err)
		}
		certFile := filepath.Join(p.socketDir, "server.crt")
		keyFile := filepath.Join(p.socketDir, "server.key")
		if err := p.writeOwned(certFile, certs.certPEM, 0o644); err != nil {
			return err
		}
		// PostgreSQL refuses a key that others may read.
		if err := p.writeOwned(keyFile, certs.keyPEM, 0o600); err != nil {
			return err
		}
		conf = append(conf,
			"ssl = on",
			"ssl_cert_file = '"+certFile+"'",
			"ssl_key_file = '"+keyFile+"'",
		)
	}
	if err := appendFile(filepath.Join(p.DataDir, "postgresql.conf"), []byte(strings.Join(conf, "\n")+"\n")); err != nil {
		return err
	}

	hba := []string{
		"# pgrelay testenv",
		"local all " + pgSuperUser + " trust",
	}
	hba = append(hba, p.opts.HBA...)
	if p.opts.SSLOnly {
		hba = append(hba,
			"hostnossl all all 0.0.0.0/0 reject",
			"hostnossl all all ::/0 reject",
			"hostssl all all 127.0.0.1/32 scram-sha-256",
			"hostssl all all ::1/128 scram-sha-256",
		)
	} else {
		hba = append(hba,
			"host all all 127.0.0.1/32 scram-sha-256",
			"host all all ::1/128 scram-sha-256",
		)
	}
	// The file keeps its owner (the server user) since it already exists.
	if err := os.WriteFile(filepath.Join(p.DataDir, "pg_hba.conf"), []byte(strings.Join(hba, "\n")+"\n"), 0o600); err != nil {
		return fmt.Errorf("write pg_hba.conf: %w", err)
	}
	return nil
}

// start runs pg_ctl start. With newPort it picks another free port when the
// current one turns out to be taken; Port 0 means none was chosen yet.
func (p *Postgres) start(tb testing.TB, newPort bool) {
	tb.Helper()
	for attempt := 1; ; attempt++ {
		if p.Port == 0 {
			port, err := freePort()
			if err != nil {
				tb.Fatalf("testenv: start PostgreSQL: %v", err)
			}
			p.Port = port
		}
		offset := fileSize(p.logFile)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		out, err := p.run(ctx, "pg_ctl", "start", "-w", "-t", "50", "-s",
			"-D", p.DataDir, "-l", p.logFile, "-o", "-p "+strconv.Itoa(p.Port))
		cancel()
		fresh := readFrom(p.logFile, offset)
		// PostgreSQL only warns when one of several listen addresses
		// cannot be bound; 127.0.0.1 must be ours, though.
		ipv4Taken := strings.Contains(fresh, `could not bind IPv4 address "127.0.0.1"`)
		if err == nil && !ipv4Taken {
			p.running = true
			return
		}
		if err == nil {
			p.running = true
			p.stop(tb)
		}
		if newPort && attempt < pgStartAttempts && (ipv4Taken || strings.Contains(fresh, "Address already in use")) {
			tb.Logf("testenv: PostgreSQL port %d was taken, trying another", p.Port)
			p.Port = 0
			continue
		}
		if err == nil {
			err = errors.New("127.0.0.1 port was taken by another process")
		}
		tb.Fatalf("testenv: start PostgreSQL on port %d: %v\n%s\n--- tail of %s ---\n%s",
			p.Port, err, out, p.logFile, tailFile(p.logFile, 30))
	}
}

// Addr returns the server's TCP address, "127.0.0.1:PORT".
func (p *Postgres) Addr() string {
	return net.JoinHostPort(p.Host, strconv.Itoa(p.Port))
}

// ConnString returns a URL connection string for user and password to
// database over TCP. With TLS it uses sslmode=verify-full against CAFile
// (verify-ca when TLSHosts does not name Host); without, sslmode=disable.
func (p *Postgres) ConnString(user, password, database string) string {
	q := url.Values{}
	q.Set("connect_timeout", "10")
	if p.opts.TLS {
		mode := "verify-full"
		if p.opts.TLSHosts != nil && !slices.Contains(p.opts.TLSHosts, p.Host) {
			mode = "verify-ca"
		}
		q.Set("sslmode", mode)
		q.Set("sslrootcert", p.CAFile)
	} else {
		q.Set("sslmode", "disable")
	}
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(user, password),
		Host:     p.Addr(),
		Path:     "/" + database,
		RawQuery: q.Encode(),
	}
	return u.String()
}

// Exec runs sql with args as the superuser in database "postgres" over TCP
// with pgx, and fails the test on error.
func (p *Postgres) Exec(tb testing.TB, sql string, args ...any) {
	tb.Helper()
	if err := p.exec(sql, args...); err != nil {
		tb.Fatalf("testenv: exec %q on PostgreSQL %s: %v", sql, p.Addr(), err)
	}
}

func (p *Postgres) exec(sql string, args ...any) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.ConnString(p.SuperUser, p.SuperPassword, "postgres"))
	if err != nil {
		return fmt.Errorf("connect as %s: %w", p.SuperUser, err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return err
	}
	return nil
}

// CreateRole creates a LOGIN role with password, which the server stores
// as a SCRAM-SHA-256 verifier.
func (p *Postgres) CreateRole(tb testing.TB, name, password string) {
	tb.Helper()
	if strings.ContainsRune(password, 0) {
		tb.Fatalf("testenv: create role %q: password contains a NUL byte", name)
	}
	// CREATE ROLE takes no bind parameters, so the password is quoted as a
	// literal (standard_conforming_strings is on: only ' needs doubling).
	sql := "CREATE ROLE " + pgx.Identifier{name}.Sanitize() +
		" LOGIN PASSWORD '" + strings.ReplaceAll(password, "'", "''") + "'"
	if err := p.exec(sql); err != nil {
		// The statement holds the password: say what failed without it.
		tb.Fatalf("testenv: create role %q on PostgreSQL %s: %v", name, p.Addr(), err)
	}
}

// CreateDatabase creates database name owned by role owner.
func (p *Postgres) CreateDatabase(tb testing.TB, name, owner string) {
	tb.Helper()
	p.Exec(tb, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" OWNER "+pgx.Identifier{owner}.Sanitize())
}

// Restart stops the server (immediate mode, so like a crash: open
// connections drop) and starts it again on the same port with the same
// data. Committed data survives.
func (p *Postgres) Restart(tb testing.TB) {
	tb.Helper()
	p.Stop(tb)
	p.Start(tb)
}

// Stop stops the server in immediate mode: connections drop at once and
// new ones are refused until Start.
func (p *Postgres) Stop(tb testing.TB) {
	tb.Helper()
	p.notShared(tb, "stop")
	if !p.running {
		tb.Fatalf("testenv: stop PostgreSQL %s: not running", p.Addr())
	}
	p.stop(tb)
}

// Start starts the server again after Stop, on the same port.
func (p *Postgres) Start(tb testing.TB) {
	tb.Helper()
	p.notShared(tb, "start")
	if p.running {
		tb.Fatalf("testenv: start PostgreSQL %s: already running", p.Addr())
	}
	p.start(tb, false)
}

// notShared fails the test that would change a shared cluster.
func (p *Postgres) notShared(tb testing.TB, what string) {
	tb.Helper()
	if p.shared {
		tb.Fatalf("testenv: %s PostgreSQL %s: it is shared by the package's tests (SharedPostgres); use StartPostgres for a server of the test's own", what, p.Addr())
	}
}

func (p *Postgres) stop(tb testing.TB) {
	tb.Helper()
	if err := p.stopServer(); err != nil {
		tb.Fatalf("testenv: %v", err)
	}
}

func (p *Postgres) stopServer() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := p.run(ctx, "pg_ctl", "stop", "-w", "-t", "50", "-s", "-m", "immediate", "-D", p.DataDir)
	if err != nil {
		return fmt.Errorf("stop PostgreSQL %s: %w\n%s", p.Addr(), err, out)
	}
	p.running = false
	return nil
}

func (p *Postgres) cleanup(tb testing.TB) {
	if p.running {
		if err := p.stopServer(); err != nil {
			tb.Errorf("testenv: cleanup: %v", err)
		}
	}
	if err := os.RemoveAll(p.baseDir); err != nil {
		tb.Errorf("testenv: cleanup: remove %s: %v", p.baseDir, err)
	}
}

// run runs one of the server's programs as the server user and returns its
// combined output.
func (p *Postgres) run(ctx context.Context, program string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(p.binDir, program), args...)
	cmd.Dir = p.baseDir
	cmd.Env = childEnv()
	cmd.WaitDelay = 5 * time.Second
	if p.owner != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
			Uid:    uint32(p.owner.uid),
			Gid:    uint32(p.owner.gid),
			Groups: []uint32{},
		}}
	}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s: %w", program, err)
	}
	return out.Bytes(), err
}

// mkdirOwned makes dir with mode 0700, owned by the server user.
func (p *Postgres) mkdirOwned(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("make directory: %w", err)
	}
	if p.owner != nil {
		if err := os.Chown(dir, p.owner.uid, p.owner.gid); err != nil {
			return fmt.Errorf("give %s to OS user %s: %w", dir, p.owner.name, err)
		}
	}
	return nil
}

// writeOwned writes a new file with mode perm, owned by the server user.
func (p *Postgres) writeOwned(path string, data []byte, perm os.FileMode) error {
	if err := os.WriteFile(path, data, perm); err != nil {
		return fmt.Errorf("write file: %w", err)
	}
	if p.owner != nil {
		if err := os.Chown(path, p.owner.uid, p.owner.gid); err != nil {
			return fmt.Errorf("give %s to OS user %s: %w", path, p.owner.name, err)
		}
	}
	return nil
}

// findPostgresBin returns the directory of the newest PostgreSQL server
// binaries: /usr/lib/postgresql/N/bin (Debian's layout) with the highest N,
// else the directory of initdb on PATH.
func findPostgresBin() (string, error) {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	type candidate struct {
		version float64
		dir     string
	}
	var found []candidate
	for _, m := range matches {
		dir := filepath.Dir(m)
		v, err := strconv.ParseFloat(filepath.Base(filepath.Dir(dir)), 64)
		if err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "postgres")); err != nil {
			continue
		}
		found = append(found, candidate{v, dir})
	}
	if len(found) > 0 {
		sort.Slice(found, func(i, j int) bool { return found[i].version > found[j].version })
		return found[0].dir, nil
	}
	if path, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(path), nil
	}
	return "", errors.New("PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb and no initdb on PATH)")
}

// postgresAccount returns the OS account to run the cluster as: nil (the
// current user) unless running as root, then "postgres".
func postgresAccount() (*osAccount, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, PostgreSQL must run as OS user \"postgres\" (initdb refuses root): %w; run `make test-deps`", err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return nil, fmt.Errorf("uid %q of OS user postgres: %w", u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return nil, fmt.Errorf("gid %q of OS user postgres: %w", u.Gid, err)
	}
	return &osAccount{name: u.Username, uid: uid, gid: gid}, nil
}

// listenAddresses is 127.0.0.1, plus ::1 where IPv6 loopback works.
func listenAddresses() string {
	if ipv6LoopbackAvailable() {
		return "127.0.0.1, ::1"
	}
	return "127.0.0.1"
}

// shortTempDir is the directory for base directories: os.TempDir, unless
// its path is so long that Unix socket paths below it would not fit.
func shortTempDir() string {
	dir := os.TempDir()
	if len(dir) > 60 {
		return "/tmp"
	}
	return dir
}

func appendFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return fmt.Errorf("append to %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readFrom returns the content of path from offset on, or "" if unreadable.
func readFrom(path string, offset int64) string {
	data, err := os.ReadFile(path)
	if err != nil || int64(len(data)) < offset {
		return ""
	}
	return string(data[offset:])
}

// WaitActive waits until a session other than its own runs a statement
// containing substr (pg_stat_activity: state active), and fails the test
// after within. Tests use it to know that a query has reached the server
// before they break its path.
func (p *Postgres) WaitActive(tb testing.TB, substr string, within time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.ConnString(p.SuperUser, p.SuperPassword, "postgres"))
	if err != nil {
		tb.Fatalf("testenv: wait for %q on PostgreSQL %s: %v", substr, p.Addr(), err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	for {
		var n int
		err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE state = 'active' AND pid <> pg_backend_pid() AND strpos(query, $1) > 0`, substr).Scan(&n)
		if err == nil && n > 0 {
			return
		}
		if ctx.Err() != nil {
			tb.Fatalf("testenv: no session ran %q on PostgreSQL %s within %v (last error: %v)", substr, p.Addr(), within, err)
		}
		time.Sleep(10 * time.Millisecond) // polling pg_stat_activity
	}
}
