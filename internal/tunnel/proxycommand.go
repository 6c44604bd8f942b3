package tunnel

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ProxyCommand runs a program whose standard input and output carry the
// SSH connection to the first hop, instead of a TCP connection (OpenSSH's
// ProxyCommand; e.g. `aws ssm start-session --document-name
// AWS-StartSSHSession ...`, `cloudflared access ssh --hostname ...`,
// `socat STDIO TCP:bastion:22`). It runs without a shell, in its own
// process group, killed with the connection. Host key verification is
// the same as over TCP.
type ProxyCommand struct {
	// Path is the program's absolute path (already allowed by the caller's
	// policy).
	Path string
	// Args are its arguments, as they are.
	Args []string
	// Env is its environment (nil: none).
	Env []string
	// Credential is the user and groups it runs as (nil: this process's);
	// Dir its working directory (empty: this process's).
	Credential *syscall.Credential
	Dir        string
}

// String is the command line, for messages.
func (p ProxyCommand) String() string {
	return strings.Join(append([]string{p.Path}, p.Args...), " ")
}

// stderrKeep is how much of a proxy command's standard error is kept for
// its error message.
const stderrKeep = 2 << 10

// Dial starts the command and returns its standard input and output as a
// connection. network and addr are ignored (the command knows where to
// go); ctx bounds only the start.
func (p ProxyCommand) Dial(ctx context.Context, _, _ string) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("proxy command %s: %w", p.Path, err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		_ = inR.Close()
		_ = inW.Close()
		return nil, fmt.Errorf("proxy command %s: %w", p.Path, err)
	}
	c := &cmdConn{stdin: inW, stdout: outR, exited: make(chan struct{}), cmdline: p.String()}
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Env = p.Env
	if cmd.Env == nil {
		cmd.Env = []string{}
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, &c.stderr
	cmd.Dir = p.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: p.Credential}
	err = cmd.Start()
	_ = inR.Close()
	_ = outW.Close()
	if err != nil {
		_ = inW.Close()
		_ = outR.Close()
		return nil, fmt.Errorf("start proxy command %s: %w", c.cmdline, err)
	}
	c.cmd = cmd
	go func() {
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// cmdConn is a proxy command's standard input and output as a net.Conn.
type cmdConn struct {
	stdin   *os.File
	stdout  *os.File
	cmd     *exec.Cmd
	cmdline string
	stderr  tailBuffer

	exited  chan struct{}
	waitErr error

	closeOnce sync.Once
}

// Read reads the command's output; at its end the error says how the
// command ended and what it wrote to standard error.
func (c *cmdConn) Read(p []byte) (int, error) {
	n, err := c.stdout.Read(p)
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, os.ErrClosed) {
		return n, c.exitError(err)
	}
	return n, err
}

func (c *cmdConn) Write(p []byte) (int, error) {
	n, err := c.stdin.Write(p)
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, os.ErrClosed) {
		return n, c.exitError(err)
	}
	return n, err
}

// exitError describes the end of the command's stream: its exit status
// (waited for briefly) and the tail of its standard error.
func (c *cmdConn) exitError(err error) error {
	select {
	case <-c.exited:
	case <-time.After(500 * time.Millisecond):
	}
	msg := "proxy command " + c.cmdline + " ended the connection"
	select {
	case <-c.exited:
		if c.waitErr != nil {
			msg += " (" + c.waitErr.Error() + ")"
		} else {
			msg += " (exit status 0)"
		}
	default:
	}
	if tail := strings.TrimSpace(c.stderr.String()); tail != "" {
		msg += "; its standard error: " + tail
	}
	return &ProxyCommandError{Command: c.cmdline, Message: msg, Err: err}
}

// Close closes the pipes and ends the command (its whole process group):
// SIGTERM, then SIGKILL if it has not exited within a second.
func (c *cmdConn) Close() error {
	c.closeOnce.Do(func() {
		_ = c.stdin.Close()
		_ = c.stdout.Close()
		pgid := c.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-c.exited
		}
	})
	return nil
}

func (c *cmdConn) LocalAddr() net.Addr  { return cmdAddr("pgrelay") }
func (c *cmdConn) RemoteAddr() net.Addr { return cmdAddr(c.cmdline) }

func (c *cmdConn) SetDeadline(t time.Time) error {
	return errors.Join(c.stdin.SetWriteDeadline(t), c.stdout.SetReadDeadline(t))
}
func (c *cmdConn) SetReadDeadline(t time.Time) error  { return c.stdout.SetReadDeadline(t) }
func (c *cmdConn) SetWriteDeadline(t time.Time) error { return c.stdin.SetWriteDeadline(t) }

// cmdAddr is the address of a proxy command's connection.
type cmdAddr string

func (a cmdAddr) Network() string { return "proxy-command" }
func (a cmdAddr) String() string  { return string(a) }

// ProxyCommandError means a proxy command ended the connection (it
// exited, or closed its output).
type ProxyCommandError struct {
	// Command is the command line.
	Command string
	// Message says how it ended and what it wrote to standard error.
	Message string
	// Err is the read or write error.
	Err error
}

func (e *ProxyCommandError) Error() string { return e.Message }

// Unwrap returns the read or write error.
func (e *ProxyCommandError) Unwrap() error { return e.Err }

// tailBuffer keeps the last stderrKeep bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > stderrKeep {
		b.buf = append(b.buf[:0], b.buf[len(b.buf)-stderrKeep:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
