package credential_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/connection"
	"github.com/pgrelay/pgrelay/internal/credential"
)

// script writes an executable shell script and returns its path.
func script(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	src, path := filepath.Join(dir, "get-token.txt"), filepath.Join(dir, "get-token")
	if err := os.WriteFile(src, []byte("#!/bin/sh\n"+body), 0o644); err != nil {
		t.Fatal(err)
	}
	// The executable is written by another process: a file this process
	// held open for writing could be inherited by a program that a
	// parallel test forks at that moment, and executing it would then
	// fail with "text file busy".
	if out, err := exec.Command("install", "-m", "0755", src, path).CombinedOutput(); err != nil {
		t.Fatalf("install %s: %v %s", path, err, out)
	}
	return path
}

func allowAll(p string) (string, error) { return p, nil }

func command(prog string, args ...string) *credential.CommandSource {
	return credential.NewCommandSource(credential.CommandConfig{Program: prog, Args: args, AllowCommand: allowAll,
		Timeout: 5 * time.Second})
}

// noSecret fails when err's text, hint or outcome holds one of secrets.
func noSecret(t *testing.T, err error, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		for what, text := range map[string]string{"error": err.Error(), "hint": credential.Hint(err), "%+v": fmt.Sprintf("%+v", err)} {
			if strings.Contains(text, s) {
				t.Errorf("%s reveals a secret: %s", what, text)
			}
		}
	}
}

func TestCommandPlainToken(t *testing.T) {
	t.Parallel()
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	// No shell: the argument with spaces and '$' arrives as it is.
	src := credential.NewCommandSource(credential.CommandConfig{
		Program: script(t, `[ "$1" = 'a b $HOME' ] || { echo "arg: $1" >&2; exit 3; }`+"\necho '  tok-plain-123  '\n"),
		Args:    []string{"a b $HOME"}, AllowCommand: allowAll, Lifetime: 7 * time.Minute, Now: func() time.Time { return now }})
	tok, err := src.Token(context.Background())
	if err != nil {
		t.Fatalf("Token: %v (hint: %s)", err, credential.Hint(err))
	}
	if tok.Value.Reveal() != "tok-plain-123" || !tok.ExpiresAt.Equal(now.Add(7*time.Minute)) {
		t.Fatalf("token %q expires %v; want tok-plain-123 at %v", tok.Value.Reveal(), tok.ExpiresAt, now.Add(7*time.Minute))
	}
	if src.Kind() != connection.AuthCommand || !strings.Contains(src.Describe(), "get-token") {
		t.Errorf("kind %q describe %q", src.Kind(), src.Describe())
	}
}

func TestCommandJSON(t *testing.T) {
	t.Parallel()
	src := command(script(t, `echo '{"token": "tok-json", "expires_at": "2099-01-02T15:04:05.5+01:00", "other": 1}'`))
	tok, err := src.Token(context.Background())
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	want := time.Date(2099, 1, 2, 14, 4, 5, 5e8, time.UTC)
	if tok.Value.Reveal() != "tok-json" || !tok.ExpiresAt.Equal(want) {
		t.Fatalf("token %q expires %v; want %v", tok.Value.Reveal(), tok.ExpiresAt, want)
	}
	// Without expires_at: the configured lifetime.
	src = command(script(t, `echo '{"token":"tok-json"}'`))
	start := time.Now()
	tok, err = src.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if d := tok.ExpiresAt.Sub(start); d < connection.DefaultCommandLifetime-time.Second || d > connection.DefaultCommandLifetime+5*time.Second {
		t.Errorf("lifetime without expires_at = %v, want about %v", d, connection.DefaultCommandLifetime)
	}
}

func TestCommandMalformed(t *testing.T) {
	t.Parallel()
	const leak = "s3cr3t-tok"
	for _, tt := range []struct {
		name, out, want string
	}{
		{"nothing", "", "printed nothing"},
		{"two lines", leak + "\n" + leak, "printed 2 lines"},
		{"spaces", leak + " " + leak, "contains spaces"},
		{"not JSON", "{" + leak, "not a JSON object"},
		{"JSON without token", `{"access_token":"` + leak + `"}`, `no "token" field`},
		{"empty token", `{"token":""}`, `"token" is empty`},
		{"bad expires_at", `{"token":"` + leak + `","expires_at":"tomorrow"}`, `"expires_at" "tomorrow" is not an RFC 3339 time`},
		{"expired", `{"token":"` + leak + `","expires_at":"2001-01-01T00:00:00Z"}`, "not in the future"},
		{"trailing", `{"token":"` + leak + `"} {}`, "more after the JSON"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := command(script(t, "printf '%s' '"+strings.ReplaceAll(tt.out, "'", `'\''`)+"'\n")).Token(context.Background())
			var me *credential.MalformedError
			if !errors.As(err, &me) {
				t.Fatalf("err = %v (%T), want *MalformedError", err, err)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(credential.Hint(err), "RFC 3339") {
				t.Errorf("err %q (hint %q) lacks %q", err, credential.Hint(err), tt.want)
			}
			if credential.OutcomeOf(err) != credential.OutcomeMalformed || credential.Transient(err) {
				t.Errorf("outcome %s transient %v", credential.OutcomeOf(err), credential.Transient(err))
			}
			noSecret(t, err, leak)
		})
	}
}

func TestCommandFails(t *testing.T) {
	t.Parallel()
	// The program printed its token, then failed and repeated it on
	// stderr: the error shows stderr's end with the token masked.
	src := command(script(t, `echo tok-leaked-on-stderr
i=0; while [ $i -lt 200 ]; do echo "noise line $i" >&2; i=$((i+1)); done
echo "error: role etl: token tok-leaked-on-stderr rejected" >&2
exit 7
`))
	_, err := src.Token(context.Background())
	var fe *credential.CommandFailedError
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v (%T), want *CommandFailedError", err, err)
	}
	if fe.ExitCode != 7 || !strings.Contains(err.Error(), "exited with code 7") ||
		!strings.Contains(fe.Stderr, "error: role etl: token [redacted] rejected") {
		t.Errorf("err = %v", err)
	}
	if len(fe.Stderr) > credential.StderrShown+len("…") || !strings.HasPrefix(fe.Stderr, "…") || strings.Contains(fe.Stderr, "noise line 0 ") {
		t.Errorf("stderr not cut to its end (%d bytes): %q", len(fe.Stderr), fe.Stderr)
	}
	if !strings.Contains(credential.Hint(err), "stderr") || credential.OutcomeOf(err) != credential.OutcomeCommandFailed {
		t.Errorf("hint %q outcome %s", credential.Hint(err), credential.OutcomeOf(err))
	}
	noSecret(t, err, "tok-leaked-on-stderr")

	// The last token returned is masked too, when a later run repeats it.
	dir := t.TempDir()
	flag := filepath.Join(dir, "second")
	src = command(script(t, fmt.Sprintf(`if [ -e %[1]s ]; then echo "old token tok-first-run expired" >&2; exit 1; fi
touch %[1]s; echo tok-first-run`, flag)))
	if _, err := src.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err = src.Token(context.Background())
	if !errors.As(err, &fe) || !strings.Contains(fe.Stderr, "old token [redacted] expired") {
		t.Errorf("second run: %v", err)
	}
	noSecret(t, err, "tok-first-run")

	// Not found, not executable.
	_, err = command("pgrelay-no-such-program").Token(context.Background())
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "not found") || !strings.Contains(credential.Hint(err), "Install") {
		t.Errorf("missing program: %v / %s", err, credential.Hint(err))
	}
	noexec := filepath.Join(t.TempDir(), "noexec")
	if err := os.WriteFile(noexec, []byte("#!/bin/sh\necho x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = command(noexec).Token(context.Background())
	if !errors.As(err, &fe) || fe.ExitCode != -1 {
		t.Errorf("program without x bit: %v", err)
	}
}

func TestCommandTimeoutKillsGroup(t *testing.T) {
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "pid")
	// The child keeps stdout open: without the group kill, Run would wait
	// for it.
	src := credential.NewCommandSource(credential.CommandConfig{AllowCommand: allowAll, Timeout: 500 * time.Millisecond,
		Program: script(t, fmt.Sprintf(`echo "asking for a password" >&2
sleep 60 & echo $! > %s
wait`, pidFile))})
	start := time.Now()
	_, err := src.Token(context.Background())
	took := time.Since(start)
	var te *credential.CommandTimeoutError
	if !errors.As(err, &te) {
		t.Fatalf("err = %v (%T), want *CommandTimeoutError", err, err)
	}
	if took > 4*time.Second {
		t.Errorf("Token returned after %v; the timeout is 500ms", took)
	}
	if !strings.Contains(err.Error(), "did not finish within 500ms") || !strings.Contains(te.Stderr, "asking for a password") ||
		!strings.Contains(credential.Hint(err), "auth.timeout") || credential.OutcomeOf(err) != credential.OutcomeCommandTimeout {
		t.Errorf("err %v, hint %s", err, credential.Hint(err))
	}
	b, rerr := os.ReadFile(pidFile)
	if rerr != nil {
		t.Fatal(rerr)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("child %d of the timed-out command still runs", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCommandAllowlist(t *testing.T) {
	t.Parallel()
	marker := filepath.Join(t.TempDir(), "ran")
	prog := script(t, "touch "+marker+"\necho tok\n")
	for name, allow := range map[string]func(string) (string, error){
		"nil refuses all": nil,
		"refused":         func(p string) (string, error) { return "", fmt.Errorf("program %q is not in --allow-command", p) },
	} {
		_, err := credential.NewCommandSource(credential.CommandConfig{Program: prog, AllowCommand: allow}).Token(context.Background())
		var ne *credential.CommandNotAllowedError
		if !errors.As(err, &ne) || !strings.Contains(credential.Hint(err), "--allow-command "+prog) ||
			credential.OutcomeOf(err) != credential.OutcomeNotAllowed {
			t.Errorf("%s: err = %v, hint %s", name, err, credential.Hint(err))
		}
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a refused program ran")
	}
	var asked string
	_, err := credential.NewCommandSource(credential.CommandConfig{Program: prog,
		AllowCommand: func(p string) (string, error) { asked = p; return p, nil }}).Token(context.Background())
	if err != nil || asked != prog {
		t.Fatalf("allowed: err %v, allowlist asked about %q", err, asked)
	}
	// The path the allowlist returns is what runs, not the name looked up
	// on PATH again.
	resolved := script(t, "echo tok-of-the-allowed-path\n")
	tok, err := credential.NewCommandSource(credential.CommandConfig{Program: "get-token",
		AllowCommand: func(string) (string, error) { return resolved, nil }}).Token(context.Background())
	if err != nil || tok.Value.Reveal() != "tok-of-the-allowed-path" {
		t.Fatalf("allowed as %s: token %v, err %v", resolved, tok.Value, err)
	}
}

func TestCommandEnvironment(t *testing.T) {
	t.Setenv("PGRELAY_MASTER_KEY", "master-key-canary")
	// The store's password may come from PGPASSWORD (pgrelay store copy,
	// --store): a token command, which an editor may name, must not see it.
	t.Setenv("PGPASSWORD", "store-password-canary")
	t.Setenv("CRED_TEST_VISIBLE", "yes")
	src := command(script(t, `[ -z "$PGRELAY_MASTER_KEY" ] || { echo "master key visible" >&2; exit 1; }
[ -z "$PGPASSWORD" ] || { echo "store password visible" >&2; exit 1; }
[ "$CRED_TEST_VISIBLE" = yes ] || { echo "environment lost" >&2; exit 1; }
echo tok`))
	if _, err := src.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestCommandPathThatDoesNotExist: a program given (or allowed) by its
// full path that is not there is reported as a file that does not exist,
// not as a program missing on PATH or one that was killed.
func TestCommandPathThatDoesNotExist(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "get-token")
	_, err := command(missing).Token(context.Background())
	var fe *credential.CommandFailedError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "program "+missing+" does not exist") ||
		!strings.Contains(credential.Hint(err), "Install the program at "+missing) || strings.Contains(credential.Hint(err), "killed") {
		t.Errorf("missing path: %v / %s", err, credential.Hint(err))
	}
	// Named get-token, allowed as a path that has gone since.
	src := credential.NewCommandSource(credential.CommandConfig{Program: "get-token", Timeout: 5 * time.Second,
		AllowCommand: func(string) (string, error) { return missing, nil }})
	if _, err := src.Token(context.Background()); !strings.Contains(err.Error(), "program "+missing+" does not exist") {
		t.Errorf("allowed path gone: %v / %s", err, credential.Hint(err))
	}
	dir := t.TempDir()
	if _, err := command(dir).Token(context.Background()); !strings.Contains(err.Error(), dir+" is a directory") ||
		!strings.Contains(credential.Hint(err), "is a directory") {
		t.Errorf("directory: %v / %s", err, credential.Hint(err))
	}
}
