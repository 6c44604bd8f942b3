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
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/ssh"

	"github.com/pgrelay/pgrelay/internal/proxy"
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

// env is a PostgreSQL server and an OpenSSH bastion on loopback, with the
// long-lived paths to the server that the round-trip and throughput
// benchmarks use.
type env struct {
	pg      *testenv.Postgres
	bastion *testenv.Bastion

	// direct connects straight to PostgreSQL over TCP.
	direct *pgx.ConnConfig
	// tunnelCfg logs in to the bastion with the benchmark's client key and
	// the bastion's pinned host key.
	tunnelCfg tunnel.Config
	// keyFile holds the client key for the ssh command.
	keyFile string

	// tun is the tunnel shared by the pgrelay paths.
	tun *tunnel.Tunnel
	// proxyAddr is where the pgrelay proxy listens.
	proxyAddr string
	// forward is the long-lived `ssh -N -L`.
	forward *sshForward

	// Versions and negotiated algorithms, printed as configuration lines.
	pgVersion, sshVersion     string
	pgrelayCipher, pgrelayKex string
	opensshCipher, opensshKex string
}

// path is one way of reaching PostgreSQL.
type path struct {
	name   string
	config func() *pgx.ConnConfig
}

// paths returns the long-lived paths in the order the report shows them.
func (e *env) paths() []path {
	return []path{
		{"direct", func() *pgx.ConnConfig { return e.direct.Copy() }},
		{"openssh", func() *pgx.ConnConfig { return e.viaAddr(e.forward.addr) }},
		{"pgrelay_proxy", func() *pgx.ConnConfig { return e.viaAddr(e.proxyAddr) }},
		{"pgrelay_inprocess", func() *pgx.ConnConfig { return e.viaTunnel(e.tun) }},
	}
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

// startEnv starts everything under tb, whose cleanups stop it again. It
// runs the helpers in goroutines of its own, since testenv reports fatal
// problems with tb.Fatalf, which ends the calling goroutine.
func startEnv(tb *processTB) (*env, error) {
	e := &env{}
	ok := tb.run(func() {
		var wg sync.WaitGroup
		wg.Go(func() { tb.run(func() { e.pg = testenv.StartPostgres(tb, testenv.PostgresOptions{}) }) })
		wg.Go(func() { tb.run(func() { e.bastion = testenv.StartBastion(tb, testenv.BastionOptions{}) }) })
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

// setup makes the role, the client key and the long-lived paths.
func (e *env) setup(tb *processTB) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	var pw [16]byte
	if _, err := rand.Read(pw[:]); err != nil {
		tb.Fatalf("generate password: %v", err)
	}
	password := hex.EncodeToString(pw[:])
	e.pg.CreateRole(tb, "bench", password)
	e.pg.CreateDatabase(tb, "bench", "bench")
	cfg, err := pgx.ParseConfig(e.pg.ConnString("bench", password, "bench"))
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

	key, err := sshkey.Generate(sshkey.Ed25519, "pgrelay-bench")
	if err != nil {
		tb.Fatalf("generate client key: %v", err)
	}
	signer, err := sshkey.Signer(key.PrivatePEM)
	if err != nil {
		tb.Fatalf("client key signer: %v", err)
	}
	dir, err := os.MkdirTemp("", "pgrelay-bench-")
	if err != nil {
		tb.Fatalf("make key directory: %v", err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(dir) })
	e.keyFile = filepath.Join(dir, "id_ed25519")
	if err := os.WriteFile(e.keyFile, key.PrivatePEM, 0o600); err != nil {
		tb.Fatalf("write client key: %v", err)
	}
	e.bastion.Authorize(tb, sshkey.AuthorizedKey(key.Public, "pgrelay-bench"))
	e.tunnelCfg = tunnel.Config{
		Addr:     e.bastion.Addr(),
		User:     e.bastion.User,
		Signer:   signer,
		HostKeys: []ssh.PublicKey{e.bastion.HostKey},
	}

	// The shared tunnel, logged so that the negotiated algorithms can be
	// reported (the log holds no secret; only cipher and kex are kept).
	var logBuf bytes.Buffer
	tcfg := e.tunnelCfg
	tcfg.Logger = slog.New(slog.NewJSONHandler(&logBuf, nil))
	e.tun, err = tunnel.Dial(ctx, tcfg)
	if err != nil {
		tb.Fatalf("open shared tunnel: %v", err)
	}
	tb.Cleanup(func() { _ = e.tun.Close() })
	e.pgrelayCipher, e.pgrelayKex = tunnelAlgorithms(logBuf.Bytes())

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen for the pgrelay proxy: %v", err)
	}
	pgAddr := e.pg.Addr()
	px := proxy.New(ln, func(ctx context.Context) (net.Conn, error) {
		return e.tun.DialContext(ctx, "tcp", pgAddr)
	}, nil)
	e.proxyAddr = px.Addr().String()
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = px.Serve(context.Background())
	}()
	tb.Cleanup(func() {
		_ = px.Close()
		<-served
	})

	fwd, first, err := e.startSSHForward(ctx, tb)
	if err != nil {
		tb.Fatalf("%v", err)
	}
	_ = first.Close()
	e.forward = fwd
	tb.Cleanup(fwd.stop)

	e.sshVersion = sshVersion()
	e.opensshCipher, e.opensshKex = e.opensshAlgorithms(ctx)
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

// sshArgs returns the options every ssh command of the benchmarks uses.
func (e *env) sshArgs() []string {
	return []string{
		"-p", strconv.Itoa(e.bastion.Port),
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
	args := append([]string{"-v", "-N"}, e.sshArgs()...)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", append(args, e.bastion.User+"@127.0.0.1")...)
	var stderr lockedBuffer
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

// sshForward is a running `ssh -N -L` process.
type sshForward struct {
	cmd    *exec.Cmd
	addr   string // the local end, 127.0.0.1:PORT
	exited chan struct{}
	stderr *lockedBuffer
}

// forwardAttempts bounds the retries when the chosen local port was taken
// before ssh could bind it.
const forwardAttempts = 3

// startSSHForward spawns `ssh -N -L 127.0.0.1:PORT:PGADDR` on a free port
// and waits until the forward accepts a connection, which it returns (the
// caller uses it or closes it).
func (e *env) startSSHForward(ctx context.Context, tb testing.TB) (*sshForward, net.Conn, error) {
	var lastErr error
	for range forwardAttempts {
		port := testenv.FreePort(tb)
		f, conn, err := e.trySSHForward(ctx, port)
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

func (e *env) trySSHForward(ctx context.Context, port int) (*sshForward, net.Conn, error) {
	local := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	spec := local + ":" + e.pg.Addr()
	args := append([]string{"-N", "-L", spec}, e.sshArgs()...)
	cmd := exec.Command("ssh", append(args, e.bastion.User+"@127.0.0.1")...)
	f := &sshForward{cmd: cmd, addr: local, exited: make(chan struct{}), stderr: &lockedBuffer{}}
	cmd.Stderr = f.stderr
	cmd.SysProcAttr = dieWithParent()
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("run ssh: %w", err)
	}
	go func() {
		_ = cmd.Wait()
		close(f.exited)
	}()

	deadline := time.Now().Add(10 * time.Second)
	var d net.Dialer
	for {
		select {
		case <-f.exited:
			return nil, nil, fmt.Errorf("ssh -L %s exited (%v): %s", spec, cmd.ProcessState, strings.TrimSpace(f.stderr.String()))
		default:
		}
		conn, err := d.DialContext(ctx, "tcp", local)
		if err == nil {
			return f, conn, nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			f.stop()
			return nil, nil, fmt.Errorf("ssh -L %s: forward not accepting: %w; ssh said: %s", spec, err, strings.TrimSpace(f.stderr.String()))
		}
		time.Sleep(time.Millisecond)
	}
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

// lockedBuffer is a bytes.Buffer safe for a writing process and a reader.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
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
