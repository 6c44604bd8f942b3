package testenv

import (
	"bufio"
	"cmp"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// sshdStartAttempts bounds how often StartBastion picks a new port when the
// chosen one was taken before sshd could bind it.
const sshdStartAttempts = 5

// BastionOptions configures a throwaway OpenSSH bastion.
type BastionOptions struct {
	// PermitOpen lists the "host:port" destinations that TCP forwarding
	// may reach; empty permits any.
	PermitOpen []string
	// DisableForwarding sets AllowTcpForwarding no.
	DisableForwarding bool
	// ClientAliveInterval sets sshd's ClientAliveInterval, rounded up to
	// whole seconds; 0 leaves it unset (off).
	ClientAliveInterval time.Duration
	// ClientAliveCountMax sets sshd's ClientAliveCountMax; 0 leaves it
	// unset (sshd's default, 3).
	ClientAliveCountMax int
	// MaxStartups sets sshd's MaxStartups, such as "1000:30:1000"; ""
	// leaves sshd's default (10:30:100).
	MaxStartups string
	// MaxSessions sets sshd's MaxSessions; 0 leaves sshd's default (10).
	MaxSessions int
	// SystemUser, when set, makes the bastion behave like a production one
	// for that existing OS account: User is SystemUser, keys are read from
	// its ~/.ssh/authorized_keys with StrictModes yes, and a locked account
	// is refused by sshd rather than reported up front. Authorize must not
	// be used. Needs root.
	SystemUser string
	// ExtraConfig lines are appended to sshd_config, such as
	// "KexAlgorithms diffie-hellman-group14-sha1" to offer only that.
	ExtraConfig []string
	// TZ, when set, is sshd's TZ environment variable (such as
	// "Asia/Kolkata" or the POSIX "XST-5:30"): the zone in which it reads
	// an authorized_keys expiry-time written without a trailing Z. Unset,
	// sshd runs in the test process's zone.
	TZ string
}

// Bastion is a real OpenSSH server (sshd) on loopback, made by
// StartBastion, that accepts public key logins for User from the keys
// given to Authorize and forwards TCP as BastionOptions allow. It is
// stopped and its files removed when the test ends.
type Bastion struct {
	// Host is the address sshd listens on: "127.0.0.1".
	Host string
	// Port is sshd's TCP port, kept by RotateHostKey and Start.
	Port int
	// User is the OS user that tests log in as: the current user. Root
	// may log in (PermitRootLogin prohibit-password).
	User string
	// HostKey is sshd's current ed25519 host key. RotateHostKey replaces
	// it.
	HostKey ssh.PublicKey

	opts         BastionOptions
	sshd         string
	dir          string
	configFile   string
	hostKeyFile  string
	authKeysFile string
	logFile      string

	authMu sync.Mutex // serialises appends to authKeysFile

	// shared is set on a SharedBastion, which no test may stop, restart,
	// freeze or reconfigure.
	shared bool

	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has been waited for; nil when not started
}

// StartBastion starts sshd on 127.0.0.1 and a free port with a fresh
// ed25519 host key and an empty authorized_keys file, and waits until it
// completes an SSH key exchange. It fails the test if sshd is missing or
// will not start, with the tail of sshd's log.
//
// As root sshd runs with privilege separation and needs /run/sshd, which
// is created when missing. With UsePAM no, sshd refuses accounts locked
// with "!" in /etc/shadow (as useradd leaves them); as root this is checked
// up front and reported with the fix (usermod -p '*' USER).
func StartBastion(tb testing.TB, opts BastionOptions) *Bastion {
	tb.Helper()
	return startBastion(tb, opts)
}

// startBastion starts sshd; it is stopped and removed when tb ends unless
// it was made shared by then (SharedBastion hands it to the reaper).
func startBastion(tb testing.TB, opts BastionOptions) *Bastion {
	tb.Helper()
	sshd, err := findSSHD()
	if err != nil {
		tb.Fatalf("testenv: %v; run `make test-deps` to install openssh-server", err)
	}
	me, err := user.Current()
	if err != nil {
		tb.Fatalf("testenv: start bastion: look up current OS user: %v", err)
	}
	if os.Geteuid() == 0 {
		if err := ensurePrivsepDir(); err != nil {
			tb.Fatalf("testenv: start bastion: %v", err)
		}
		if opts.SystemUser == "" {
			if err := checkAccountUnlocked(me.Username); err != nil {
				tb.Fatalf("testenv: start bastion: %v", err)
			}
		}
	} else if opts.SystemUser != "" {
		tb.Fatalf("testenv: start bastion: SystemUser needs root")
	}

	dir, err := os.MkdirTemp(shortTempDir(), "pgrelay-sshd-")
	if err != nil {
		tb.Fatalf("testenv: start bastion: make directory: %v", err)
	}
	b := &Bastion{
		Host:         "127.0.0.1",
		User:         cmp.Or(opts.SystemUser, me.Username),
		opts:         opts,
		sshd:         sshd,
		dir:          dir,
		configFile:   filepath.Join(dir, "sshd_config"),
		hostKeyFile:  filepath.Join(dir, "ssh_host_ed25519_key"),
		authKeysFile: filepath.Join(dir, "authorized_keys"),
		logFile:      filepath.Join(dir, "sshd.log"),
	}
	tb.Cleanup(func() {
		if !b.shared {
			b.cleanup(tb)
		}
	})
	if err := os.WriteFile(b.authKeysFile, nil, 0o600); err != nil {
		tb.Fatalf("testenv: start bastion: write authorized_keys: %v", err)
	}
	if err := b.newHostKey(); err != nil {
		tb.Fatalf("testenv: start bastion: %v", err)
	}

	start := time.Now()
	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			tb.Fatalf("testenv: start bastion: %v", err)
		}
		b.Port = port
		taken, err := b.startSSHD()
		if err == nil {
			break
		}
		if taken && attempt < sshdStartAttempts {
			tb.Logf("testenv: bastion port %d was taken, trying another", port)
			continue
		}
		tb.Fatalf("testenv: start bastion: %v\n--- tail of %s ---\n%s", err, b.logFile, b.LogTail())
	}
	tb.Logf("testenv: OpenSSH bastion ready on %s for user %s in %v",
		b.Addr(), b.User, time.Since(start).Round(time.Millisecond))
	return b
}

// Addr returns sshd's address, "127.0.0.1:PORT".
func (b *Bastion) Addr() string {
	return net.JoinHostPort(b.Host, strconv.Itoa(b.Port))
}

// Authorize appends authorizedKeysLine (an authorized_keys line, options
// allowed) to the authorized_keys file that sshd reads on each login, so
// it takes effect for the next login. It is safe for concurrent use.
func (b *Bastion) Authorize(tb testing.TB, authorizedKeysLine string) {
	tb.Helper()
	line := strings.TrimRight(authorizedKeysLine, "\r\n")
	if strings.ContainsAny(line, "\r\n") {
		tb.Fatalf("testenv: authorize key on bastion %s: line contains a line break", b.Addr())
	}
	b.authMu.Lock()
	defer b.authMu.Unlock()
	if err := appendFile(b.authKeysFile, []byte(line+"\n")); err != nil {
		tb.Fatalf("testenv: authorize key on bastion %s: %v", b.Addr(), err)
	}
}

// RotateHostKey gives sshd a new ed25519 host key and restarts it on the
// same port (SIGHUP: sshd re-executes itself and rereads its
// configuration; established connections stay up). It returns once sshd
// presents the new key, which is then in b.HostKey.
func (b *Bastion) RotateHostKey(tb testing.TB) {
	tb.Helper()
	b.notShared(tb, "rotate host key of")
	if !b.running() {
		tb.Fatalf("testenv: rotate host key of bastion %s: sshd is not running", b.Addr())
	}
	if err := b.newHostKey(); err != nil {
		tb.Fatalf("testenv: rotate host key of bastion %s: %v", b.Addr(), err)
	}
	offset := fileSize(b.logFile)
	if err := b.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		tb.Fatalf("testenv: rotate host key of bastion %s: signal sshd: %v", b.Addr(), err)
	}
	// Per-connection processes read the host key file themselves, so the
	// old listener may already serve the new key; wait for the restarted
	// listener before probing.
	if err := b.waitRestarted(offset, 10*time.Second); err != nil {
		tb.Fatalf("testenv: rotate host key of bastion %s: %v\n--- tail of %s ---\n%s", b.Addr(), err, b.logFile, b.LogTail())
	}
	if err := b.waitReady(10 * time.Second); err != nil {
		tb.Fatalf("testenv: rotate host key of bastion %s: %v\n--- tail of %s ---\n%s", b.Addr(), err, b.logFile, b.LogTail())
	}
}

// Freeze sends SIGSTOP to every per-connection sshd process (all
// descendants of the listening sshd): their sockets stay open but nothing
// answers. The listener itself keeps running, so connections made after
// Freeze are served normally. Undo with Thaw.
func (b *Bastion) Freeze(tb testing.TB) {
	tb.Helper()
	b.notShared(tb, "freeze")
	if !b.running() {
		tb.Fatalf("testenv: freeze bastion %s: sshd is not running", b.Addr())
	}
	pids, err := signalDescendants(b.cmd.Process.Pid, syscall.SIGSTOP)
	if err != nil {
		tb.Fatalf("testenv: freeze bastion %s: %v", b.Addr(), err)
	}
	tb.Logf("testenv: froze %d sshd processes of bastion %s", len(pids), b.Addr())
}

// Thaw sends SIGCONT to every per-connection sshd process, undoing Freeze.
func (b *Bastion) Thaw(tb testing.TB) {
	tb.Helper()
	b.notShared(tb, "thaw")
	if !b.running() {
		tb.Fatalf("testenv: thaw bastion %s: sshd is not running", b.Addr())
	}
	if _, err := signalDescendants(b.cmd.Process.Pid, syscall.SIGCONT); err != nil {
		tb.Fatalf("testenv: thaw bastion %s: %v", b.Addr(), err)
	}
}

// Kill sends SIGKILL to the listening sshd and all its per-connection
// processes: every connection drops and new ones are refused until Start.
func (b *Bastion) Kill(tb testing.TB) {
	tb.Helper()
	b.notShared(tb, "kill")
	if !b.running() {
		tb.Fatalf("testenv: kill bastion %s: sshd is not running", b.Addr())
	}
	if err := b.kill(); err != nil {
		tb.Fatalf("testenv: kill bastion %s: %v", b.Addr(), err)
	}
}

// Start starts sshd again on the same port, with the same host key and
// authorized keys, after Kill.
func (b *Bastion) Start(tb testing.TB) {
	tb.Helper()
	b.notShared(tb, "start")
	if b.running() {
		tb.Fatalf("testenv: start bastion %s: sshd is already running", b.Addr())
	}
	if _, err := b.startSSHD(); err != nil {
		tb.Fatalf("testenv: start bastion %s again: %v\n--- tail of %s ---\n%s", b.Addr(), err, b.logFile, b.LogTail())
	}
}

// LogTail returns the last lines of sshd's log (LogLevel VERBOSE), for
// failure messages. It is safe for concurrent use.
func (b *Bastion) LogTail() string {
	return tailFile(b.logFile, 40)
}

// notShared fails the test that would change a shared bastion.
func (b *Bastion) notShared(tb testing.TB, what string) {
	tb.Helper()
	if b.shared {
		tb.Fatalf("testenv: %s bastion %s: it is shared by the package's tests (SharedBastion); use StartBastion for a bastion of the test's own", what, b.Addr())
	}
}

func (b *Bastion) running() bool {
	if b.exited == nil {
		return false
	}
	select {
	case <-b.exited:
		return false
	default:
		return true
	}
}

// startSSHD writes the configuration for b.Port, starts sshd and waits
// until it serves. taken reports that it failed because the port was in
// use.
func (b *Bastion) startSSHD() (taken bool, err error) {
	if err := os.WriteFile(b.configFile, []byte(b.config()), 0o600); err != nil {
		return false, fmt.Errorf("write sshd_config: %w", err)
	}
	logf, err := os.OpenFile(b.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return false, fmt.Errorf("open sshd log: %w", err)
	}
	offset := fileSize(b.logFile)
	// sshd re-executes itself for each connection, which needs an
	// absolute path. Errors before -E takes effect go to stderr: the same
	// file.
	cmd := exec.Command(b.sshd, "-D", "-f", b.configFile, "-E", b.logFile)
	cmd.Dir = b.dir
	if b.opts.TZ != "" {
		cmd.Env = append(os.Environ(), "TZ="+b.opts.TZ)
	}
	cmd.Stdout = logf
	cmd.Stderr = logf
	err = cmd.Start()
	_ = logf.Close()
	if err != nil {
		return false, fmt.Errorf("run %s: %w", b.sshd, err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	b.cmd, b.exited = cmd, exited

	if err := b.waitReady(10 * time.Second); err != nil {
		if b.running() {
			_ = b.kill()
		}
		fresh := readFrom(b.logFile, offset)
		taken = strings.Contains(fresh, "Address already in use") || strings.Contains(fresh, "Cannot bind any address")
		return taken, err
	}
	return false, nil
}

// waitReady waits until sshd on b.Addr() completes a key exchange
// presenting b.HostKey.
func (b *Bastion) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	want := b.HostKey.Marshal()
	var lastErr error
	for time.Now().Before(deadline) {
		if !b.running() {
			return fmt.Errorf("sshd exited (%v)", b.cmd.ProcessState)
		}
		key, err := probeHostKey(b.Addr(), b.HostKey.Type())
		if c, ok := key.(*ssh.Certificate); ok {
			key = c.Key // with a HostCertificate, the certified key
		}
		if err == nil {
			if string(key.Marshal()) == string(want) {
				return nil
			}
			err = fmt.Errorf("sshd presents host key %s, not yet the new %s",
				ssh.FingerprintSHA256(key), ssh.FingerprintSHA256(b.HostKey))
		}
		lastErr = err
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("sshd on %s not ready after %v: %w", b.Addr(), timeout, lastErr)
}

// waitRestarted waits until the log written after offset shows that sshd
// restarted on SIGHUP and listens again.
func (b *Bastion) waitRestarted(offset int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !b.running() {
			return fmt.Errorf("sshd exited (%v)", b.cmd.ProcessState)
		}
		fresh := readFrom(b.logFile, offset)
		if _, after, ok := strings.Cut(fresh, "Received SIGHUP"); ok && strings.Contains(after, "Server listening on") {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("sshd did not log its restart within %v", timeout)
}

// probeHostKey does an SSH key exchange with addr and returns the host key
// it presents, without logging in. It asks for a key of type want first,
// so that a bastion given further host keys (HostKey in ExtraConfig)
// presents the one of that type.
func probeHostKey(addr, want string) (ssh.PublicKey, error) {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, fmt.Errorf("dial sshd: %w", err)
	}
	defer func() { _ = conn.Close() }()
	if err := conn.SetDeadline(time.Now().Add(3 * time.Second)); err != nil {
		return nil, fmt.Errorf("set deadline: %w", err)
	}
	// The callback's error ends the handshake once the key is seen.
	errProbeDone := errors.New("host key seen")
	var key ssh.PublicKey
	cfg := &ssh.ClientConfig{
		User:              "testenv-probe",
		HostKeyAlgorithms: append([]string{want}, ssh.SupportedAlgorithms().HostKeys...),
		HostKeyCallback: func(_ string, _ net.Addr, k ssh.PublicKey) error {
			key = k
			return errProbeDone
		},
	}
	_, _, _, err = ssh.NewClientConn(conn, addr, cfg)
	if key != nil {
		return key, nil
	}
	return nil, fmt.Errorf("ssh handshake with sshd: %w", err)
}

// kill stops the listener, then SIGKILLs its whole process tree (stopped
// first, so that nothing forks meanwhile), and waits for the listener.
func (b *Bastion) kill() error {
	pid := b.cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop sshd listener: %w", err)
	}
	tree, err := signalDescendants(pid, syscall.SIGSTOP)
	if err != nil {
		return err
	}
	for _, p := range tree {
		_ = syscall.Kill(p, syscall.SIGKILL)
	}
	if _, err := signalDescendants(pid, syscall.SIGKILL); err != nil {
		return err
	}
	if err := b.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill sshd listener: %w", err)
	}
	select {
	case <-b.exited:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("sshd listener did not exit after SIGKILL")
	}
}

func (b *Bastion) cleanup(tb testing.TB) {
	if b.running() {
		if err := b.kill(); err != nil {
			tb.Errorf("testenv: cleanup: kill bastion %s: %v", b.Addr(), err)
		}
	}
	if err := os.RemoveAll(b.dir); err != nil {
		tb.Errorf("testenv: cleanup: remove %s: %v", b.dir, err)
	}
}

// newHostKey writes a new ed25519 host key (OpenSSH format, mode 0600) and
// sets b.HostKey.
func (b *Bastion) newHostKey() error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("generate host key: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "pgrelay testenv host key")
	if err != nil {
		return fmt.Errorf("marshal host key: %w", err)
	}
	sshPub, err := ssh.NewPublicKey(pub)
	if err != nil {
		return fmt.Errorf("host public key: %w", err)
	}
	// Write beside and rename, so that sshd never reads half a key.
	tmp := b.hostKeyFile + ".new"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(block), 0o600); err != nil {
		return fmt.Errorf("write host key: %w", err)
	}
	if err := os.Rename(tmp, b.hostKeyFile); err != nil {
		return fmt.Errorf("install host key: %w", err)
	}
	b.HostKey = sshPub
	return nil
}

// config renders sshd_config for b.Port.
func (b *Bastion) config() string {
	var c strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&c, format+"\n", args...) }
	line("# pgrelay testenv bastion")
	line("ListenAddress %s", b.Addr())
	line("AddressFamily inet")
	line("HostKey %s", b.hostKeyFile)
	line("PidFile %s", filepath.Join(b.dir, "sshd.pid"))
	if b.opts.SystemUser != "" {
		line("AuthorizedKeysFile .ssh/authorized_keys")
		line("StrictModes yes")
		line("AllowUsers %s", b.opts.SystemUser)
	} else {
		line("AuthorizedKeysFile %s", b.authKeysFile)
		line("StrictModes no")
	}
	line("UsePAM no")
	line("PasswordAuthentication no")
	line("KbdInteractiveAuthentication no")
	line("PubkeyAuthentication yes")
	line("PermitRootLogin prohibit-password")
	line("UseDNS no")
	line("PrintMotd no")
	line("X11Forwarding no")
	line("AllowAgentForwarding no")
	line("LoginGraceTime 30")
	if b.opts.DisableForwarding {
		line("AllowTcpForwarding no")
	} else {
		line("AllowTcpForwarding yes")
	}
	if len(b.opts.PermitOpen) == 0 {
		line("PermitOpen any")
	} else {
		line("PermitOpen %s", strings.Join(b.opts.PermitOpen, " "))
	}
	if d := b.opts.ClientAliveInterval; d > 0 {
		line("ClientAliveInterval %d", int((d+time.Second-1)/time.Second))
	}
	if n := b.opts.ClientAliveCountMax; n > 0 {
		line("ClientAliveCountMax %d", n)
	}
	if b.opts.MaxStartups != "" {
		line("MaxStartups %s", b.opts.MaxStartups)
	}
	if n := b.opts.MaxSessions; n > 0 {
		line("MaxSessions %d", n)
	}
	for _, l := range b.opts.ExtraConfig {
		line("%s", l)
	}
	line("LogLevel VERBOSE")
	// No Subsystem lines: no sftp.
	return c.String()
}

// findSSHD returns the absolute path of sshd.
func findSSHD() (string, error) {
	const debian = "/usr/sbin/sshd"
	if _, err := os.Stat(debian); err == nil {
		return debian, nil
	}
	path, err := exec.LookPath("sshd")
	if err != nil {
		return "", fmt.Errorf("OpenSSH server not found (no %s, no sshd on PATH)", debian)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("absolute path of %s: %w", path, err)
	}
	return abs, nil
}

// ensurePrivsepDir makes sshd's privilege separation directory, /run/sshd
// (mode 0755, owned by root), when it is missing.
func ensurePrivsepDir() error {
	const dir = "/run/sshd"
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("make sshd privilege separation directory: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("chmod %s: %w", dir, err)
	}
	return nil
}

// checkAccountUnlocked fails if name's password field in /etc/shadow
// starts with "!" (locked), which sshd with UsePAM no refuses even for
// public key logins. It needs root to read /etc/shadow; a missing file or
// entry is no error.
func checkAccountUnlocked(name string) error {
	f, err := os.Open("/etc/shadow")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("read /etc/shadow: %w", err)
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.SplitN(sc.Text(), ":", 3)
		if len(fields) < 2 || fields[0] != name {
			continue
		}
		if strings.HasPrefix(fields[1], "!") {
			return fmt.Errorf("OS account %q is locked (\"!\" in /etc/shadow) and sshd refuses it; unlock it without allowing password login: usermod -p '*' %s", name, name)
		}
		return nil
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read /etc/shadow: %w", err)
	}
	return nil
}
