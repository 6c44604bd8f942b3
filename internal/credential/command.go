package credential

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pgrelay/pgrelay/internal/childenv"
	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/secret"
)

// Limits of a credential command's output.
const (
	maxStdout = 64 << 10
	maxStderr = 64 << 10
	// StderrShown is how much of a failed command's stderr (its end) an
	// error shows.
	StderrShown = 1024
	// MaxTokenLen is the longest token accepted.
	MaxTokenLen = 16 << 10
)

// CommandConfig configures a [CommandSource].
type CommandConfig struct {
	// Program is a name looked up on PATH or an absolute path.
	Program string
	// Args are passed to the program as they are; no shell is involved.
	Args []string
	// Timeout bounds one run (default connection.DefaultCommandTimeout).
	// At the timeout the program's whole process group is killed.
	Timeout time.Duration
	// Lifetime is how long a token printed without expires_at is valid
	// (default connection.DefaultCommandLifetime).
	Lifetime time.Duration
	// AllowCommand vets the program before each run (the server's
	// allowlist) and returns the path it runs as (the allowlist's
	// absolute path, resolved when the list was made: not looked up on
	// PATH again); it returns an error to refuse. Nil refuses every
	// program: the caller decides which programs may run.
	AllowCommand func(program string) (string, error)
	// Env is the program's environment; nil means this process's,
	// without pgrelay's own variables (PGRELAY_*).
	Env []string
	// Dir is the working directory; empty means this process's.
	Dir string
	// Credential is the user and groups the program runs as; nil means
	// this process's.
	Credential *syscall.Credential
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// CommandSource runs a program and reads a token from its stdout: the
// token alone, or JSON {"token": "...", "expires_at": "RFC 3339"}.
type CommandSource struct {
	cfg CommandConfig

	mu   sync.Mutex
	last string // the last token returned, masked in later stderr
}

// NewCommandSource returns a source for cfg.
func NewCommandSource(cfg CommandConfig) *CommandSource {
	if cfg.Timeout <= 0 {
		cfg.Timeout = connection.DefaultCommandTimeout
	}
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = connection.DefaultCommandLifetime
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Args = append([]string(nil), cfg.Args...)
	return &CommandSource{cfg: cfg}
}

// Kind returns connection.AuthCommand.
func (s *CommandSource) Kind() connection.AuthKind { return connection.AuthCommand }

// Describe names the program.
func (s *CommandSource) Describe() string { return "command " + s.cfg.Program }

// CommandNotAllowedError means the server's allowlist refused the program.
type CommandNotAllowedError struct {
	Program string
	Err     error
}

// Error names the program and the allowlist's reason.
func (e *CommandNotAllowedError) Error() string {
	if strings.Contains(e.Err.Error(), e.Program) {
		// The allowlist's error names the program already.
		return "command credential: " + e.Err.Error()
	}
	return fmt.Sprintf("command credential: program %q is not allowed: %v", e.Program, e.Err)
}

// Unwrap returns the allowlist's error.
func (e *CommandNotAllowedError) Unwrap() error { return e.Err }

// Hint says how to allow it.
func (e *CommandNotAllowedError) Hint() string {
	return fmt.Sprintf("pgrelay runs only the programs allowed where connections are opened: start `pgrelay serve` (or a local "+
		"`pgrelay job run`) with --allow-command %s, or for local commands (connection test, query, exec, proxy) set %s=%s; "+
		"or use a program that is allowed.", e.Program, "PGRELAY_ALLOW_COMMANDS", e.Program)
}

// CommandFailedError means the program could not start or exited with a
// non-zero status.
type CommandFailedError struct {
	Program string
	// ExitCode is the exit status; -1 when it did not start or was killed
	// by a signal.
	ExitCode int
	// Stderr is the end of what it wrote to stderr, the token masked. It
	// is not part of Error (see ProgramStderr).
	Stderr string
	// Err is the start or wait error.
	Err error
}

// Error names the program and the exit status, not its stderr.
func (e *CommandFailedError) Error() string {
	var msg string
	switch {
	case errors.Is(e.Err, exec.ErrNotFound):
		msg = fmt.Sprintf("command credential: program %q not found on PATH", e.Program)
	case e.pathRefused() != "":
		msg = "command credential: program " + pathProblem(e.pathRefused(), e.Err)
	case e.ExitCode < 0:
		msg = fmt.Sprintf("command credential: %s failed: %v", e.Program, e.Err)
	default:
		msg = fmt.Sprintf("command credential: %s exited with code %d", e.Program, e.ExitCode)
	}
	return msg
}

// Unwrap returns the start or wait error.
func (e *CommandFailedError) Unwrap() error { return e.Err }

// pathRefused returns the path of the program when exec.LookPath refused
// it before it started (it does not exist, is a directory or may not be
// executed), else "". A path is never looked up on PATH. (A start error,
// such as a missing #! interpreter, is an *fs.PathError instead.)
func (e *CommandFailedError) pathRefused() string {
	var ee *exec.Error
	if errors.As(e.Err, &ee) && strings.ContainsRune(ee.Name, '/') {
		return ee.Name
	}
	return ""
}

// pathProblem says why exec.LookPath refused prog, a path (never looked up
// on PATH): it does not exist, is a directory or may not be executed.
func pathProblem(prog string, err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return prog + " does not exist"
	case errors.Is(err, syscall.EISDIR):
		return prog + " is a directory, not a program"
	case errors.Is(err, fs.ErrPermission):
		return prog + " is not executable by pgrelay's user"
	}
	return fmt.Sprintf("%s cannot be run: %v", prog, err)
}

// Hint says where to look.
func (e *CommandFailedError) Hint() string {
	switch {
	case errors.Is(e.Err, exec.ErrNotFound):
		return fmt.Sprintf("Install %s on the machine that runs pgrelay, or give its absolute path.", e.Program)
	case e.pathRefused() != "" && errors.Is(e.Err, fs.ErrNotExist):
		return fmt.Sprintf("Install the program at %s on the machine that runs pgrelay, or set auth.program to the full path of an installed program "+
			"(or a name found on PATH), and allow that.", e.pathRefused())
	case e.pathRefused() != "" && errors.Is(e.Err, syscall.EISDIR):
		return fmt.Sprintf("%s is a directory: set auth.program to the full path of the program file in it, and allow that.", e.pathRefused())
	case errors.Is(e.Err, os.ErrPermission):
		return fmt.Sprintf("%s is not executable by pgrelay's user: check its mode (chmod +x) and its directory's permissions.", e.Program)
	case e.ExitCode < 0:
		return fmt.Sprintf("%s was killed before it finished (out of memory, or by another process): run it by hand as pgrelay's user to see why.", e.Program)
	}
	return fmt.Sprintf("%s reported a failure. %s", e.Program, stderrHint)
}

// stderrHint says where a failed program's stderr is shown.
const stderrHint = "What it wrote to stderr is shown only by a pgrelay command run on this machine " +
	"(`pgrelay connection test NAME` without --server), never stored, logged or sent, as it may quote a secret; " +
	"or run the program by hand as pgrelay's user (under --run-as, as that user), with the same arguments and environment."

// ProgramStderr returns the program and the end of what it wrote to
// stderr (its token masked) when err is a token program's failure. Its
// stderr is not in the error's message, which is logged, stored in a
// connection's health and sent to API clients: a program's diagnostics
// may quote a secret (curl -v prints the Authorization header). Only the
// terminal of a local command shows it.
func ProgramStderr(err error) (program, stderr string) {
	var failed *CommandFailedError
	var timeout *CommandTimeoutError
	switch {
	case errors.As(err, &failed):
		return failed.Program, failed.Stderr
	case errors.As(err, &timeout):
		return timeout.Program, timeout.Stderr
	}
	return "", ""
}

// CommandTimeoutError means the program did not finish within the timeout
// and was killed.
type CommandTimeoutError struct {
	Program string
	Timeout time.Duration
	// Stderr is the end of what it wrote to stderr, the token masked. It
	// is not part of Error (see ProgramStderr).
	Stderr string
}

// Error names the program and the timeout, not its stderr.
func (e *CommandTimeoutError) Error() string {
	return fmt.Sprintf("command credential: %s did not finish within %v and was killed", e.Program, e.Timeout)
}

// Hint names the usual causes.
func (e *CommandTimeoutError) Hint() string {
	return fmt.Sprintf("%s waited for something: an interactive prompt (it gets no terminal and an empty stdin), a network call, "+
		"or a lock. Make it non-interactive, or raise auth.timeout (now %v, at most %v).", e.Program, e.Timeout, connection.MaxCommandTimeout)
}

// Token runs the program once and parses its stdout.
func (s *CommandSource) Token(ctx context.Context) (Token, error) {
	prog := s.cfg.Program
	if prog == "" {
		return Token{}, &ConfigError{Kind: connection.AuthCommand, Field: "auth.program", Problem: "no program is set"}
	}
	if s.cfg.AllowCommand == nil {
		return Token{}, &CommandNotAllowedError{Program: prog, Err: errors.New("no program is allowed to supply credentials here")}
	}
	allowed, err := s.cfg.AllowCommand(prog)
	if err != nil {
		return Token{}, &CommandNotAllowedError{Program: prog, Err: err}
	}
	path, err := exec.LookPath(allowed)
	if err != nil {
		return Token{}, &CommandFailedError{Program: prog, ExitCode: -1, Err: err}
	}
	runCtx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	cmd := exec.CommandContext(runCtx, path, s.cfg.Args...)
	cmd.Env = s.cfg.Env
	if cmd.Env == nil {
		cmd.Env = childenv.Clean(os.Environ())
	}
	cmd.Dir = s.cfg.Dir
	// Its own process group, so that a timeout kills what it started too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: s.cfg.Credential}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	var stdout, stderr limitedBuffer
	stdout.max, stderr.max, stderr.keepTail = maxStdout, maxStderr, true
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := s.cfg.Now()
	runErr := cmd.Run()
	out := stdout.Bytes()
	// Whatever the program printed on stdout may be a token: masked
	// wherever stderr repeats it.
	masks := strings.Fields(string(out))
	s.mu.Lock()
	masks = append(masks, s.last)
	s.mu.Unlock()
	errText := func() string { return tail(mask(stderr.text(), masks), StderrShown) }
	switch {
	case ctx.Err() != nil:
		return Token{}, fmt.Errorf("command credential: %s: %w", prog, context.Cause(ctx))
	case runCtx.Err() != nil:
		// cmd.Cancel killed its whole process group.
		return Token{}, &CommandTimeoutError{Program: prog, Timeout: s.cfg.Timeout, Stderr: errText()}
	case runErr != nil:
		code := -1
		if cmd.ProcessState != nil {
			code = cmd.ProcessState.ExitCode()
		}
		return Token{}, &CommandFailedError{Program: prog, ExitCode: code, Stderr: errText(), Err: runErr}
	}
	from := "the output of " + prog
	if stdout.truncated {
		return Token{}, &MalformedError{Kind: connection.AuthCommand, From: from, Problem: fmt.Sprintf("more than %d bytes on stdout", maxStdout)}
	}
	tok, err := parseCommandOutput(out, from, start, s.cfg.Lifetime)
	if err == nil {
		s.mu.Lock()
		s.last = tok.Value.Reveal()
		s.mu.Unlock()
	}
	return tok, err
}

// parseCommandOutput reads a token from a command's stdout. Problems
// describe the output's shape, never its content.
func parseCommandOutput(out []byte, from string, start time.Time, lifetime time.Duration) (Token, error) {
	bad := func(format string, args ...any) (Token, error) {
		return Token{}, &MalformedError{Kind: connection.AuthCommand, From: from, Problem: fmt.Sprintf(format, args...)}
	}
	text := strings.TrimSpace(string(out))
	if text == "" {
		return bad("printed nothing on stdout")
	}
	if strings.HasPrefix(text, "{") {
		var v struct {
			Token     *string `json:"token"`
			ExpiresAt *string `json:"expires_at"`
		}
		dec := json.NewDecoder(strings.NewReader(text))
		if err := dec.Decode(&v); err != nil {
			return bad("stdout starts with '{' but is not a JSON object")
		}
		if _, err := dec.Token(); err != io.EOF {
			return bad("stdout has more after the JSON object")
		}
		switch {
		case v.Token == nil:
			return bad(`the JSON has no "token" field`)
		case *v.Token == "":
			return bad(`the JSON's "token" is empty`)
		}
		if err := checkToken(*v.Token); err != "" {
			return bad(`the JSON's "token" %s`, err)
		}
		tok := Token{Value: secret.New(*v.Token), ExpiresAt: start.Add(lifetime)}
		if v.ExpiresAt != nil {
			at, err := time.Parse(time.RFC3339Nano, *v.ExpiresAt)
			if err != nil {
				return bad(`"expires_at" %q is not an RFC 3339 time such as 2025-01-02T15:04:05Z`, cleanText(*v.ExpiresAt, 40))
			}
			if !at.After(start) {
				return bad(`"expires_at" %s is not in the future (now %s): the token has already expired, or a clock is wrong`,
					at.UTC().Format(time.RFC3339), start.UTC().Format(time.RFC3339))
			}
			tok.ExpiresAt = at
		}
		return tok, nil
	}
	if n := strings.Count(text, "\n") + 1; n > 1 {
		return bad("printed %d lines on stdout: expected the token alone on one line, or one JSON object", n)
	}
	if err := checkToken(text); err != "" {
		return bad("the token on stdout %s", err)
	}
	return Token{Value: secret.New(text), ExpiresAt: start.Add(lifetime)}, nil
}

// checkToken returns what is wrong with a token, or "".
func checkToken(t string) string {
	switch {
	case len(t) > MaxTokenLen:
		return fmt.Sprintf("is %d bytes long: at most %d are accepted", len(t), MaxTokenLen)
	case strings.ContainsAny(t, "\x00\r\n"):
		return "contains a NUL or line break"
	case strings.TrimSpace(t) != t || strings.ContainsAny(t, " \t"):
		return "contains spaces"
	}
	return ""
}

// mask replaces each of secrets (of at least 4 bytes) in text.
func mask(text string, secrets []string) string {
	for _, s := range secrets {
		if len(s) >= 4 {
			text = strings.ReplaceAll(text, s, secret.Redacted)
		}
	}
	return text
}

// tail returns the last n bytes of text, its lines kept and each cleaned
// of control characters, marked when cut.
func tail(text string, n int) string {
	lines := strings.Split(strings.TrimSpace(text), "\n")
	kept := lines[:0]
	for _, l := range lines {
		if l = cleanText(l, len(l)+1); l != "" {
			kept = append(kept, l)
		}
	}
	text = strings.Join(kept, "\n")
	if len(text) <= n {
		return text
	}
	cut := len(text) - n
	for cut < len(text) && (text[cut]&0xC0) == 0x80 {
		cut++
	}
	return "…" + text[cut:]
}

// limitedBuffer keeps the first max bytes written (or, with keepTail, the
// last max to 2*max), so that a chatty program cannot exhaust memory.
type limitedBuffer struct {
	bytes.Buffer
	max       int
	keepTail  bool
	truncated bool
}

// Write implements io.Writer; it never fails, so the program never sees
// a broken pipe because of the limit.
func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.keepTail {
		b.Buffer.Write(p)
		if b.Len() > 2*b.max {
			b.truncated = true
			b.Next(b.Len() - b.max)
		}
		return len(p), nil
	}
	if room := b.max - b.Len(); room < len(p) {
		b.truncated = true
		if room > 0 {
			b.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return b.Buffer.Write(p)
}

// text returns the kept text; for a tail that was cut, from the first
// whole line on, so that no fragment of a secret (which mask could not
// recognise) is shown.
func (b *limitedBuffer) text() string {
	s := b.String()
	if b.keepTail && b.truncated {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			return s[i+1:]
		}
		return ""
	}
	return s
}
