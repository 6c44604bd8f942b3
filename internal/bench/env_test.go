package bench_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/sshkey"
	"github.com/pgrelay/pgrelay/internal/testenv"
	"github.com/pgrelay/pgrelay/internal/tunnel"
)

// The servers are shared by every benchmark of the process: TestMain cannot
// hand values to benchmarks, so they live in these variables, written once
// under sharedOnce and torn down by TestMain.
var (
	sharedOnce sync.Once
	shared     *env
	sharedErr  error
	sharedTB   *processTB
)

// TestMain runs the tests and benchmarks, then stops the servers the
// benchmarks started, if any.
func TestMain(m *testing.M) {
	code := m.Run()
	if sharedTB != nil {
		sharedTB.runCleanups()
		if sharedTB.Failed() {
			fmt.Fprintf(os.Stderr, "bench: stopping the servers failed:\n%s\n", sharedTB.report())
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// sharedEnv returns the process's servers and paths, starting them the
// first time it is called.
func sharedEnv(b *testing.B) *env {
	b.Helper()
	sharedOnce.Do(func() {
		sharedTB = &processTB{name: "bench-env"}
		shared, sharedErr = startEnv(sharedTB)
		if sharedErr == nil {
			shared.printConfig()
		}
	})
	if sharedErr != nil {
		b.Fatal(sharedErr)
	}
	return shared
}

// bastionOptions configures the benchmarks' bastion so that sshd is not
// the limit of the scale benchmark: 500 logins in a burst and many
// channels per connection.
var bastionOptions = testenv.BastionOptions{
	MaxStartups: "1000:30:2000",
	MaxSessions: 1000,
}

// env is a PostgreSQL server and an OpenSSH bastion on loopback, with the
// long-lived paths to the server that the round-trip, pgbench and
// throughput benchmarks use.
type env struct {
	pg      *testenv.Postgres
	bastion *testenv.Bastion
	dir     string // private files: keys, binaries, the pgrelay data dir

	// direct connects straight to PostgreSQL over TCP.
	direct *pgx.ConnConfig
	// password is the bench role's password (for pgbench and pgrelay).
	password string
	// tunnelCfg logs in to the bastion with the benchmark's client key and
	// the bastion's pinned host key.
	tunnelCfg tunnel.Config
	// keyFile holds the client key for ssh and holdtunnels; hostKeyFile
	// the bastion's public host key; authorizedKey is the client key's
	// authorized_keys line.
	keyFile, hostKeyFile, authorizedKey string

	// tun is the tunnel of the in-process path.
	tun *tunnel.Tunnel
	// proxy is the `pgrelay proxy` process.
	proxy *pgrelayProxy
	// baseProxy is the `pgrelay proxy` process of the baseline build
	// (PGRELAY_BENCH_PGRELAY_BASE), or nil.
	baseProxy *pgrelayProxy
	// forward is the long-lived `ssh -N -L`.
	forward *sshForward
	// forwards are other long-lived `ssh -N -L` whose CPU is counted
	// with the ssh client's (see addForward).
	fwdMu    sync.Mutex
	forwards []*sshForward
	// cipher holds the paths of the cipher comparison, once made.
	cipher *cipherPaths
	// holdTunnels is the helper binary of the scale benchmark; pgrelayBin
	// the pgrelay command; baseBin the baseline build of it, or "".
	holdTunnels, pgrelayBin, baseBin string
	// pgrelay is the pgrelay command on its data dir, with connection
	// "bench" through the bastion; base the baseline build on its own
	// (a release refuses a newer store).
	pgrelay, base install

	// reapedSSH is the CPU time of ssh processes that have exited, in
	// nanoseconds (see sampleCPU); reapedPgrelay that of `pgrelay exec`
	// processes, without the programs they ran.
	reapedSSH, reapedPgrelay atomic.Int64

	// dumpBytes is the COPY text of the pg_dump benchmark's database.
	dumpBytes atomic.Int64

	// prep holds what was prepared once per process (see prepare).
	prepMu sync.Mutex
	prep   map[string]*prepared

	// far holds the paths through a latency relay, per one-way delay
	// (see farEnv).
	farMu sync.Mutex
	far   map[time.Duration]*farPaths

	// Versions and negotiated algorithms, printed as configuration lines.
	pgVersion, sshVersion     string
	pgrelayCipher, pgrelayKex string
	opensshCipher, opensshKex string
}

// path is one way of reaching PostgreSQL.
type path struct {
	name   string
	config func() *pgx.ConnConfig
	// addr is the local TCP address a client such as pgbench connects to;
	// empty for the in-process path, which has none.
	addr string
}

// paths returns the long-lived paths in the order the report shows them.
func (e *env) paths() []path {
	ps := []path{
		{"direct", func() *pgx.ConnConfig { return e.direct.Copy() }, e.pg.Addr()},
		{"openssh", func() *pgx.ConnConfig { return e.viaAddr(e.forward.addr) }, e.forward.addr},
		{"pgrelay_proxy", func() *pgx.ConnConfig { return e.viaAddr(e.proxy.addr) }, e.proxy.addr},
		{"pgrelay_inprocess", func() *pgx.ConnConfig { return e.viaTunnel(e.tun) }, ""},
	}
	if e.baseProxy != nil {
		ps = append(ps, path{"pgrelay_proxy_base", func() *pgx.ConnConfig { return e.viaAddr(e.baseProxy.addr) }, e.baseProxy.addr})
	}
	return ps
}

// viaAddr returns the direct configuration pointed at a local forward.
func (e *env) viaAddr(addr string) *pgx.ConnConfig {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		panic(fmt.Sprintf("bench: bad forward address %q: %v", addr, err))
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		panic(fmt.Sprintf("bench: bad forward port %q: %v", addr, err))
	}
	cfg := e.direct.Copy()
	cfg.Host, cfg.Port = host, uint16(n)
	cfg.Fallbacks = nil
	return cfg
}

// viaTunnel returns the direct configuration dialling through t: the
// address is resolved and dialled by the bastion.
func (e *env) viaTunnel(t *tunnel.Tunnel) *pgx.ConnConfig {
	cfg := e.direct.Copy()
	cfg.DialFunc = t.DialContext
	return cfg
}

// viaChain is viaTunnel for a chain of hops.
func (e *env) viaChain(c *tunnel.Chain) *pgx.ConnConfig {
	cfg := e.direct.Copy()
	cfg.DialFunc = c.DialContext
	return cfg
}

// startEnv starts everything under tb, whose cleanups stop it again. It
// runs the helpers in goroutines of its own, since testenv reports fatal
// problems with tb.Fatalf, which ends the calling goroutine.
func startEnv(tb *processTB) (*env, error) {
	e := &env{}
	ok := tb.run(func() {
		var wg sync.WaitGroup
		wg.Go(func() { tb.run(func() { e.pg = testenv.StartPostgres(tb, testenv.PostgresOptions{}) }) })
		wg.Go(func() { tb.run(func() { e.bastion = testenv.StartBastion(tb, bastionOptions) }) })
		wg.Go(func() { tb.run(func() { e.buildBinaries(tb) }) })
		wg.Wait()
		if tb.Failed() {
			tb.FailNow()
		}
		e.setup(tb)
	})
	if !ok {
		tb.runCleanups()
		return nil, fmt.Errorf("bench: start PostgreSQL and OpenSSH bastion:\n%s", tb.report())
	}
	return e, nil
}

// buildBinaries builds the pgrelay command and the holdtunnels helper
// into e.dir.
func (e *env) buildBinaries(tb *processTB) {
	dir, err := os.MkdirTemp("", "pgrelay-bench-")
	if err != nil {
		tb.Fatalf("make directory: %v", err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	e.dir = dir
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	for _, pkg := range []string{"cmd/pgrelay", "internal/bench/cmd/holdtunnels"} {
		out := filepath.Join(dir, filepath.Base(pkg))
		cmd := exec.Command(goCmd, "build", "-trimpath", "-o", out, "github.com/pgrelay/pgrelay/"+pkg)
		if b, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("go build %s: %v\n%s", pkg, err, b)
		}
	}
	e.holdTunnels = filepath.Join(dir, "holdtunnels")
	e.pgrelayBin = filepath.Join(dir, "pgrelay")
	if other := os.Getenv("PGRELAY_BENCH_PGRELAY"); other != "" {
		// Another build of the command, to compare with (before/after).
		e.pgrelayBin = other
	}
	e.pgrelay = install{bin: e.pgrelayBin, dataDir: filepath.Join(dir, "data")}
	if base := os.Getenv("PGRELAY_BENCH_PGRELAY_BASE"); base != "" {
		// A baseline build (scripts/bench.sh: the previous release),
		// whose proxy runs beside the current one in the same rounds.
		if _, err := os.Stat(base); err != nil {
			tb.Fatalf("PGRELAY_BENCH_PGRELAY_BASE=%q: %v", base, err)
		}
		e.baseBin = base
		e.base = install{bin: base, dataDir: filepath.Join(dir, "data-base")}
	}
}

// setup makes the role, the client key and the long-lived paths.
func (e *env) setup(tb *processTB) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var pw [16]byte
	if _, err := rand.Read(pw[:]); err != nil {
		tb.Fatalf("generate password: %v", err)
	}
	e.password = hex.EncodeToString(pw[:])
	e.pg.CreateRole(tb, "bench", e.password)
	e.pg.CreateDatabase(tb, "bench", "bench")
	cfg, err := pgx.ParseConfig(e.pg.ConnString("bench", e.password, "bench"))
	if err != nil {
		tb.Fatalf("parse connection string: %v", err) // pgx redacts the password
	}
	e.direct = cfg

	conn, err := pgx.ConnectConfig(ctx, e.direct.Copy())
	if err != nil {
		tb.Fatalf("connect to PostgreSQL %s: %v", e.pg.Addr(), err)
	}
	err = conn.QueryRow(ctx, "SHOW server_version").Scan(&e.pgVersion)
	_ = conn.Close(ctx)
	if err != nil {
		tb.Fatalf("query server_version: %v", err)
	}
	e.initPgbench(ctx, tb)

	key, err := sshkey.Generate(sshkey.Ed25519, "pgrelay-bench")
	if err != nil {
		tb.Fatalf("generate client key: %v", err)
	}
	signer, err := sshkey.Signer(key.PrivatePEM)
	if err != nil {
		tb.Fatalf("client key signer: %v", err)
	}
	e.keyFile = filepath.Join(e.dir, "id_ed25519")
	if err := os.WriteFile(e.keyFile, key.PrivatePEM, 0o600); err != nil {
		tb.Fatalf("write client key: %v", err)
	}
	e.hostKeyFile = filepath.Join(e.dir, "host_key.pub")
	if err := os.WriteFile(e.hostKeyFile, ssh.MarshalAuthorizedKey(e.bastion.HostKey), 0o600); err != nil {
		tb.Fatalf("write host key: %v", err)
	}
	e.authorizedKey = sshkey.AuthorizedKey(key.Public, "pgrelay-bench")
	e.bastion.Authorize(tb, e.authorizedKey)
	e.tunnelCfg = tunnel.Config{
		Addr:     e.bastion.Addr(),
		User:     e.bastion.User,
		Signer:   signer,
		HostKeys: []ssh.PublicKey{e.bastion.HostKey},
	}

	// The in-process tunnel, logged so that the negotiated algorithms can
	// be reported (the log holds no secret; only cipher and kex are kept).
	var logBuf bytes.Buffer
	tcfg := e.tunnelCfg
	tcfg.Logger = slog.New(slog.NewJSONHandler(&logBuf, nil))
	e.tun, err = tunnel.Dial(ctx, tcfg)
	if err != nil {
		tb.Fatalf("open shared tunnel: %v", err)
	}
	tb.Cleanup(func() { _ = e.tun.Close() })
	e.pgrelayCipher, e.pgrelayKex = tunnelAlgorithms(logBuf.Bytes())

	e.saveConnection(ctx, tb, e.pgrelay, "bench", e.bastion.Port)
	e.proxy = e.startProxy(tb, e.pgrelay, "bench")
	tb.Cleanup(e.proxy.stop)
	if e.baseBin != "" {
		e.saveConnection(ctx, tb, e.base, "bench", e.bastion.Port)
		e.baseProxy = e.startProxy(tb, e.base, "bench")
		tb.Cleanup(e.baseProxy.stop)
	}

	fwd, first, err := e.startSSHForward(ctx, tb, 0, nil)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	_ = first.Close()
	e.forward = fwd
	tb.Cleanup(fwd.stop)

	e.sshVersion = sshVersion()
	e.opensshCipher, e.opensshKex = e.opensshAlgorithms(ctx)
}

// initPgbench creates pgbench's tables (scale 1: 100 000 accounts).
func (e *env) initPgbench(ctx context.Context, tb *processTB) {
	cmd := exec.CommandContext(ctx, "pgbench", "-i", "-s", "1", "-q")
	cmd.Env = e.pgEnv(e.pg.Addr())
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("pgbench -i: %v\n%s", err, out)
	}
}

// pgEnv returns the environment for libpq clients (pgbench) connecting
// as the bench role to addr.
func (e *env) pgEnv(addr string) []string {
	host, port, _ := net.SplitHostPort(addr)
	return append(os.Environ(),
		"PGHOST="+host, "PGPORT="+port, "PGUSER=bench", "PGDATABASE=bench",
		"PGPASSWORD="+e.password, "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=10")
}

// pgrelayProxy is a running `pgrelay proxy` process.
type pgrelayProxy struct {
	cmd    *exec.Cmd
	addr   string // where it listens, 127.0.0.1:PORT
	exited chan struct{}
	stderr *testenv.LogBuffer
}

// install is a pgrelay binary and the data dir it runs on.
type install struct {
	bin, dataDir string
}

// command returns the command running the binary on the data dir with
// args; BENCH_DB_PASSWORD holds the bench role's password.
func (in install) command(ctx context.Context, e *env, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, in.bin, append([]string{"--data-dir", in.dataDir}, args...)...)
	cmd.Env = append(os.Environ(), "BENCH_DB_PASSWORD="+e.password)
	return cmd
}

// run runs the binary on its data dir to its end and returns its output.
func (in install) run(ctx context.Context, e *env, args ...string) (string, error) {
	cmd := in.command(ctx, e, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("pgrelay %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// saveConnection saves the database as connection name of in, through the
// bastion's sshd listening on bastionPort (its own, or a relay's in front
// of it), authorizes its key and pins the host key with a first query.
func (e *env) saveConnection(ctx context.Context, tb testing.TB, in install, name string, bastionPort int) {
	if _, err := in.run(ctx, e, "connection", "create", name,
		"--host", e.pg.Host, "--port", strconv.Itoa(e.pg.Port), "--database", "bench", "--user", "bench",
		"--password-env", "BENCH_DB_PASSWORD", "--sslmode", "disable",
		"--ssh-host", e.bastion.Host, "--ssh-port", strconv.Itoa(bastionPort), "--ssh-user", e.bastion.User); err != nil {
		tb.Fatalf("%v", err)
	}
	pub, err := in.run(ctx, e, "connection", "public-key", name)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	e.bastion.Authorize(tb, strings.TrimSpace(pub))
	if _, err := in.run(ctx, e, "query", name, "select 1"); err != nil {
		tb.Fatalf("%v", err)
	}
	show, err := in.run(ctx, e, "connection", "show", name, "-o", "json")
	if err != nil {
		tb.Fatalf("%v", err)
	}
	var v struct {
		SSHTunnel struct {
			HostKeyFingerprint string `json:"host_key_fingerprint"`
		} `json:"ssh_tunnel"`
	}
	if err := json.Unmarshal([]byte(show), &v); err != nil || v.SSHTunnel.HostKeyFingerprint != ssh.FingerprintSHA256(e.bastion.HostKey) {
		tb.Fatalf("pgrelay pinned host key %q (%v), want the bastion's %s", v.SSHTunnel.HostKeyFingerprint, err,
			ssh.FingerprintSHA256(e.bastion.HostKey))
	}
}

// startProxy starts `pgrelay proxy NAME` of in on a free port.
func (e *env) startProxy(tb testing.TB, in install, name string) *pgrelayProxy {
	cmd := exec.Command(in.bin, "--data-dir", in.dataDir, "proxy", name, "--listen", "127.0.0.1:0")
	// Experiments: PGRELAY_BENCH_PROXY_ENV adds environment variables
	// (space-separated KEY=VALUE, such as GOGC=100 or GOMAXPROCS=1) to the
	// proxy's, without changing the benchmark process's own.
	cmd.Env = append(os.Environ(), strings.Fields(os.Getenv("PGRELAY_BENCH_PROXY_ENV"))...)
	p := &pgrelayProxy{cmd: cmd, exited: make(chan struct{}), stderr: &testenv.LogBuffer{}}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatalf("pgrelay proxy: %v", err)
	}
	cmd.Stderr = p.stderr
	cmd.SysProcAttr = dieWithParent()
	if err := cmd.Start(); err != nil {
		tb.Fatalf("run pgrelay proxy: %v", err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "Listening on "); ok {
				addr, _, _ := strings.Cut(rest, ",")
				lines <- addr
			}
		}
		_ = cmd.Wait()
		close(p.exited)
	}()
	select {
	case p.addr = <-lines:
	case <-p.exited:
		tb.Fatalf("pgrelay proxy exited: %s", p.stderr.String())
	case <-time.After(30 * time.Second):
		p.stop()
		tb.Fatalf("pgrelay proxy did not start listening: %s", p.stderr.String())
	}
	return p
}

// stop ends the proxy (SIGTERM, then SIGKILL) and waits for it.
func (p *pgrelayProxy) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// printConfig prints what the run used as benchmark configuration lines
// ("key: value"), which the report and benchstat read. It is called from
// a parent benchmark before its sub-benchmarks, when no result line is
// half printed.
func (e *env) printConfig() {
	fmt.Printf("go: %s\n", runtime.Version())
	fmt.Printf("postgresql: %s\n", e.pgVersion)
	fmt.Printf("openssh: %s\n", e.sshVersion)
	fmt.Printf("openssh-cipher: %s\n", e.opensshCipher)
	fmt.Printf("openssh-kex: %s\n", e.opensshKex)
	fmt.Printf("pgrelay-cipher: %s\n", e.pgrelayCipher)
	fmt.Printf("pgrelay-kex: %s\n", e.pgrelayKex)
	if out, err := exec.Command("pgbench", "--version").Output(); err == nil {
		fmt.Printf("pgbench: %s\n", strings.TrimSpace(string(out)))
	}
	if e.baseBin != "" {
		name := os.Getenv("PGRELAY_BENCH_PGRELAY_BASE_NAME")
		if name == "" {
			name = e.baseBin
		}
		fmt.Printf("pgrelay-base: %s\n", name)
	}
}

// tunnelAlgorithms picks the cipher and key exchange from the tunnel's
// "ssh tunnel up" log record.
func tunnelAlgorithms(log []byte) (cipher, kex string) {
	sc := bufio.NewScanner(bytes.NewReader(log))
	for sc.Scan() {
		var rec struct {
			Msg    string `json:"msg"`
			Cipher string `json:"cipher"`
			Kex    string `json:"kex"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "ssh tunnel up" {
			return orUnknown(rec.Cipher), orUnknown(rec.Kex)
		}
	}
	return "unknown", "unknown"
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// sshVersion returns the first line of `ssh -V`.
func sshVersion() string {
	out, err := exec.Command("ssh", "-V").CombinedOutput()
	if err != nil {
		return "unknown"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return line
}

// sshArgs returns the options every ssh command of the benchmarks uses,
// for a bastion on port.
func (e *env) sshArgs(port int) []string {
	return []string{
		"-p", strconv.Itoa(port),
		"-i", e.keyFile,
		"-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null",
		"-o", "ExitOnForwardFailure=yes",
		"-o", "BatchMode=yes",
	}
}

// opensshAlgorithms logs in once with `ssh -v` and reads the negotiated
// cipher and key exchange from its debug output.
func (e *env) opensshAlgorithms(ctx context.Context) (cipher, kex string) {
	args := append([]string{"-v", "-N"}, e.sshArgs(e.bastion.Port)...)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", append(args, e.bastion.User+"@127.0.0.1")...)
	var stderr testenv.LogBuffer
	cmd.Stderr = &stderr
	cmd.SysProcAttr = dieWithParent()
	if err := cmd.Start(); err != nil {
		return "unknown", "unknown"
	}
	// -N waits forever: stop once authentication is through.
	for ctx.Err() == nil && !strings.Contains(stderr.String(), "Authenticated to") {
		time.Sleep(10 * time.Millisecond)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	cipher, kex = "unknown", "unknown"
	for line := range strings.Lines(stderr.String()) {
		line = strings.TrimSpace(line)
		if _, after, ok := strings.Cut(line, "kex: server->client cipher: "); ok {
			cipher, _, _ = strings.Cut(after, " ")
		}
		if _, after, ok := strings.Cut(line, "kex: algorithm: "); ok {
			kex = after
		}
	}
	return cipher, kex
}

// addForward counts f's CPU with the ssh client's while it runs.
func (e *env) addForward(f *sshForward) {
	e.fwdMu.Lock()
	defer e.fwdMu.Unlock()
	e.forwards = append(e.forwards, f)
}

// sshForward is a running `ssh -N -L`.
type sshForward struct {
	cmd    *exec.Cmd
	addr   string // the local end, 127.0.0.1:PORT
	exited chan struct{}
	stderr *testenv.LogBuffer
}

// forwardAttempts bounds the retries when the chosen local port was taken
// before ssh could bind it.
const forwardAttempts = 3

// startSSHForward spawns `ssh -N -L 127.0.0.1:PORT:PGADDR [extra options]`
// to the bastion on bastionPort (0: the bastion's own port) on a free
// local port and waits until the forward accepts a connection, which it
// returns (the caller uses it or closes it).
func (e *env) startSSHForward(ctx context.Context, tb testing.TB, bastionPort int, extra []string) (*sshForward, net.Conn, error) {
	if bastionPort == 0 {
		bastionPort = e.bastion.Port
	}
	var lastErr error
	for range forwardAttempts {
		port := testenv.FreePort(tb)
		f, conn, err := e.trySSHForward(ctx, port, bastionPort, extra)
		if err == nil {
			return f, conn, nil
		}
		lastErr = err
		if !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	return nil, nil, lastErr
}

func (e *env) trySSHForward(ctx context.Context, port, bastionPort int, extra []string) (*sshForward, net.Conn, error) {
	local := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	spec := local + ":" + e.pg.Addr()
	args := append([]string{"-N", "-L", spec}, e.sshArgs(bastionPort)...)
	args = append(args, extra...)
	f := e.spawnSSH(append(args, e.bastion.User+"@127.0.0.1"))
	if f.err != nil {
		return nil, nil, f.err
	}
	f.addr = local

	deadline := time.Now().Add(10 * time.Second)
	var d net.Dialer
	for {
		select {
		case <-f.exited:
			return nil, nil, fmt.Errorf("ssh -L %s exited (%v): %s", spec, f.cmd.ProcessState, strings.TrimSpace(f.stderr.String()))
		default:
		}
		conn, err := d.DialContext(ctx, "tcp", local)
		if err == nil {
			return f.sshForward, conn, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			f.stop()
			return nil, nil, fmt.Errorf("ssh -L %s: forward not accepting: %w; ssh said: %s", spec, err, strings.TrimSpace(f.stderr.String()))
		}
		time.Sleep(time.Millisecond)
	}
}

// spawned is an ssh process just started, or the error starting it.
type spawned struct {
	*sshForward
	err error
}

// spawnSSH starts ssh with args. When it exits, its CPU time is added to
// e.reapedSSH.
func (e *env) spawnSSH(args []string) spawned {
	cmd := exec.Command("ssh", args...)
	f := &sshForward{cmd: cmd, exited: make(chan struct{}), stderr: &testenv.LogBuffer{}}
	cmd.Stderr = f.stderr
	cmd.SysProcAttr = dieWithParent()
	if err := cmd.Start(); err != nil {
		return spawned{err: fmt.Errorf("run ssh: %w", err)}
	}
	go func() {
		_ = cmd.Wait()
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			e.reapedSSH.Add(int64(rusageTime(ru)))
		}
		close(f.exited)
	}()
	return spawned{sshForward: f}
}

// dieWithParent makes a child get SIGTERM when this process dies, so that
// a benchmark binary killed by its time-out leaves no ssh behind.
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

// stop ends ssh (SIGTERM, then SIGKILL) and waits for it.
func (f *sshForward) stop() {
	_ = f.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-f.exited:
	case <-time.After(5 * time.Second):
		_ = f.cmd.Process.Kill()
		<-f.exited
	}
}

// processTB is a testing.TB whose cleanups run when the test process ends
// (see TestMain) rather than after one benchmark round: the testenv
// helpers take a TB for logging, failures and cleanup, and a benchmark's
// own B runs its cleanups after every b.N round.
//
// Only the methods testenv uses are implemented; the embedded nil TB makes
// any other call panic. Fatalf and FailNow end the calling goroutine, so
// the helpers must run under [processTB.run].
type processTB struct {
	testing.TB
	name string

	mu       sync.Mutex
	failed   bool
	cleanups []func()
	messages []string
}

// run calls f in a new goroutine and reports whether it returned normally
// without failing.
func (p *processTB) run(f func()) bool {
	done := make(chan struct{})
	returned := false
	go func() {
		defer close(done)
		f()
		returned = true
	}()
	<-done
	return returned && !p.Failed()
}

// TempDir makes a directory that is removed with the other cleanups.
func (p *processTB) TempDir() string {
	dir, err := os.MkdirTemp("", "pgrelay-bench-")
	if err != nil {
		p.Fatalf("make temporary directory: %v", err)
	}
	p.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// Context returns a context that is never cancelled: the servers live
// until the process ends.
func (p *processTB) Context() context.Context { return context.Background() }

// Helper does nothing.
func (p *processTB) Helper() {}

// Name names the environment.
func (p *processTB) Name() string { return p.name }

// Logf keeps the message for a failure report.
func (p *processTB) Logf(format string, args ...any) { p.add(false, fmt.Sprintf(format, args...)) }

// Log keeps the message for a failure report.
func (p *processTB) Log(args ...any) { p.add(false, fmt.Sprint(args...)) }

// Errorf records a failure.
func (p *processTB) Errorf(format string, args ...any) { p.add(true, fmt.Sprintf(format, args...)) }

// Error records a failure.
func (p *processTB) Error(args ...any) { p.add(true, fmt.Sprint(args...)) }

// Fatalf records a failure and ends the goroutine.
func (p *processTB) Fatalf(format string, args ...any) {
	p.add(true, fmt.Sprintf(format, args...))
	runtime.Goexit()
}

// Fatal records a failure and ends the goroutine.
func (p *processTB) Fatal(args ...any) {
	p.add(true, fmt.Sprint(args...))
	runtime.Goexit()
}

// Fail records a failure.
func (p *processTB) Fail() { p.add(true, "") }

// FailNow records a failure and ends the goroutine.
func (p *processTB) FailNow() {
	p.add(true, "")
	runtime.Goexit()
}

// Failed reports whether a failure was recorded.
func (p *processTB) Failed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

// Cleanup registers f to run at the end of the process.
func (p *processTB) Cleanup(f func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cleanups = append(p.cleanups, f)
}

// runCleanups runs the registered cleanups, last first, each once.
func (p *processTB) runCleanups() {
	for {
		p.mu.Lock()
		n := len(p.cleanups)
		if n == 0 {
			p.mu.Unlock()
			return
		}
		f := p.cleanups[n-1]
		p.cleanups = p.cleanups[:n-1]
		p.mu.Unlock()
		p.run(f)
	}
}

func (p *processTB) add(failure bool, msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if failure {
		p.failed = true
	}
	if msg != "" {
		p.messages = append(p.messages, msg)
	}
}

// report returns the messages logged so far.
func (p *processTB) report() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.messages, "\n")
}
