package jobs_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgrelay/pgrelay/internal/jobs"
)

func TestAllowlist(t *testing.T) {
	t.Parallel()
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Fatal(err)
	}
	a := allowlist(t, "sh", "psql")
	if p, err := a.Path("sh"); err != nil || p != sh || !filepath.IsAbs(p) {
		t.Fatalf("sh resolves to %q, %v; want %s", p, err, sh)
	}
	// An absolute path is allowed when it is the resolved one.
	if err := a.Allow(sh); err != nil {
		t.Fatalf("the resolved path of sh: %v", err)
	}
	for _, tt := range []struct{ program, want string }{
		{"rm", `program "rm" is not allowed: pgrelay runs only the programs given with --allow-command or PGRELAY_ALLOW_COMMANDS (now: sh, psql); to allow it, add --allow-command rm (or PGRELAY_ALLOW_COMMANDS=rm where the command has no such flag)`},
		{"/tmp/sh", `program "/tmp/sh" is not allowed`},
		{"./sh", `program "./sh" is not allowed`},
		{"bin/sh", `program "bin/sh" is not allowed`},
	} {
		err := a.Allow(tt.program)
		var ne *jobs.NotAllowedError
		if !errors.As(err, &ne) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Allow(%q) = %v, want %q", tt.program, err, tt.want)
		}
	}
	if err := a.Allow("/tmp/sh"); !strings.Contains(err.Error(), "sh is allowed as "+sh) {
		t.Errorf("another path of an allowed name: %v", err)
	}
	// Nothing allowed: every program is refused, saying so.
	var none *jobs.Allowlist
	if err := none.Allow("sh"); err == nil || !strings.Contains(err.Error(), "(now: none)") {
		t.Errorf("nil allowlist: %v", err)
	}
	// An allowed program given by path may be named by its base name.
	b := allowlist(t, sh)
	if p, err := b.Path("sh"); err != nil || p != sh {
		t.Errorf("sh with %s allowed: %q, %v", sh, p, err)
	}
	// Programs that cannot be found, or relative paths, refuse the list.
	if _, err := jobs.NewAllowlist([]string{"sh", "no-such-program-pgrelay", "bin/dbt"}); err == nil ||
		!strings.Contains(err.Error(), "--allow-command no-such-program-pgrelay: not found") ||
		!strings.Contains(err.Error(), `--allow-command "bin/dbt": give a program name`) {
		t.Errorf("bad programs: %v", err)
	}
	if got := jobs.ParseAllowCommands(nil, " dbt, psql,,"); strings.Join(got, "|") != "dbt|psql" {
		t.Errorf("from the environment: %q", got)
	}
	if got := jobs.ParseAllowCommands([]string{"sh"}, "dbt"); strings.Join(got, "|") != "sh" {
		t.Errorf("flags win over the environment: %q", got)
	}
}

// TestAllowedProgramResolvedAtStart: a program named like an allowed one
// earlier on a later PATH does not run in its place.
func TestAllowedProgramResolvedAtStart(t *testing.T) {
	e := setup(t, 30*time.Second, 10)
	r := e.runner(t) // sh resolved now
	fake := t.TempDir()
	if err := os.WriteFile(filepath.Join(fake, "sh"), []byte("#!/bin/dash\necho impostor\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", fake+string(filepath.ListSeparator)+os.Getenv("PATH"))
	var rec recorder
	res := r.Run(context.Background(), job("direct", jobs.Step{Command: []string{"sh", "-c", "echo the real sh"}}), rec.hooks())
	if res.Status != jobs.Succeeded || strings.Contains(rec.text(), "impostor") || !strings.Contains(rec.text(), "the real sh") {
		t.Fatalf("run %+v\n%s", res, rec.text())
	}
}

// TestRefusedStepStopsRunBeforeAnything: a step whose program is not
// allowed (behind a harmless name) fails the run before the connection is
// opened or any earlier step runs.
func TestRefusedStepStopsRunBeforeAnything(t *testing.T) {
	t.Parallel()
	e := setup(t, 30*time.Second, 10)
	r := e.runner(t)
	var opened atomic.Int32
	open := r.Open
	r.Open = func(ctx context.Context, name string) (jobs.Conn, error) {
		opened.Add(1)
		return open(ctx, name)
	}
	var rec recorder
	res := r.Run(context.Background(), job("wh",
		jobs.Step{SQL: "create table public.refused_marker (n int)"},
		jobs.Step{Name: "refresh models", Command: []string{"rm", "-rf", "/nothing"}},
		jobs.Step{Command: []string{"sh", "-c", "echo after"}}), rec.hooks())
	if res.Status != jobs.Failed || !strings.Contains(res.Reason, `step 2 (refresh models) refused, nothing was run: program "rm" is not allowed`) ||
		!strings.Contains(res.Reason, "--allow-command rm") {
		t.Fatalf("result %+v", res)
	}
	if n := opened.Load(); n != 0 {
		t.Errorf("the connection was opened %d times", n)
	}
	if res.Steps[0].Status != jobs.Skipped || res.Steps[1].Status != jobs.Failed || res.Steps[2].Status != jobs.Skipped ||
		!strings.Contains(res.Steps[1].Error, `program "rm" is not allowed`) {
		t.Errorf("steps %+v", res.Steps)
	}
	conn, err := pgx.Connect(context.Background(), e.pg.ConnString(e.user, e.pw, e.db))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(context.Background(), "select to_regclass('public.refused_marker') is not null").Scan(&exists); err != nil || exists {
		t.Errorf("the SQL step before the refused one ran (table exists: %v, %v)", exists, err)
	}
}

// TestStepErrorsAndReasonMasked: a failed step's error and the run's
// reason quote the password only as [redacted].
func TestStepErrorsAndReasonMasked(t *testing.T) {
	t.Parallel()
	e := setup(t, 30*time.Second, 10)
	var stepErrs []string
	hooks := jobs.Hooks{Step: func(s jobs.RunStep) { stepErrs = append(stepErrs, s.Error) }}
	for _, st := range []jobs.Step{
		{SQL: "select 'x' || $$" + e.pw + "$$::int"},                                   // the server quotes the value
		{Command: []string{"sh", "-c", `echo "no luck with $PGPASSWORD" >&2; exit 2`}}, // last words
	} {
		res := e.runner(t).Run(context.Background(), job("direct", st), hooks)
		all := res.Reason + "\n" + res.Steps[0].Error + "\n" + strings.Join(stepErrs, "\n")
		if res.Status != jobs.Failed || strings.Contains(all, e.pw) || !strings.Contains(res.Reason, "[redacted]") ||
			!strings.Contains(res.Steps[0].Error, "[redacted]") {
			t.Errorf("step %s: the password is not masked:\n%s", st.Label(), all)
		}
	}
}

// TestWorkdirMustBeAllowed: with --allow-workdir, a workdir outside the
// allowed directories (through a symlink, too) is refused, before the run
// starts or, for a symlink an earlier step made, when its step starts.
func TestWorkdirMustBeAllowed(t *testing.T) {
	t.Parallel()
	e := setup(t, 30*time.Second, 10)
	allowed, outside := t.TempDir(), t.TempDir()
	if err := os.Mkdir(filepath.Join(allowed, "project"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(allowed, "escape")); err != nil {
		t.Fatal(err)
	}
	// The allowed directory is itself named through a symlink.
	link := filepath.Join(t.TempDir(), "allowed-link")
	if err := os.Symlink(allowed, link); err != nil {
		t.Fatal(err)
	}
	wds, err := jobs.ResolveWorkdirs([]string{link})
	if err != nil {
		t.Fatal(err)
	}
	r := e.runner(t)
	r.Commands.Workdirs = wds
	realAllowed, _ := filepath.EvalSymlinks(allowed)
	realOutside, _ := filepath.EvalSymlinks(outside)

	var rec recorder
	res := r.Run(context.Background(), job("direct", jobs.Step{Command: []string{"sh", "-c", "pwd"}, Workdir: filepath.Join(link, "project")}), rec.hooks())
	if res.Status != jobs.Succeeded || !strings.Contains(rec.text(), "[0 stdout] "+filepath.Join(realAllowed, "project")) {
		t.Fatalf("allowed workdir: %+v\n%s", res, rec.text())
	}

	marker := filepath.Join(outside, "ran")
	res = r.Run(context.Background(), job("direct",
		jobs.Step{Command: []string{"sh", "-c", "touch " + marker}},
		jobs.Step{Command: []string{"sh", "-c", "pwd"}, Workdir: filepath.Join(allowed, "escape")}), jobs.Hooks{})
	if res.Status != jobs.Failed || !strings.Contains(res.Reason, "step 2 (sh -c pwd) refused, nothing was run: workdir "+filepath.Join(allowed, "escape")+
		" is not allowed (it resolves to "+realOutside+")") || !strings.Contains(res.Reason, "--allow-workdir") {
		t.Fatalf("symlink out: %+v", res)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("the step before the refused one ran")
	}

	// A symlink made by an earlier step is checked when its step starts.
	late := filepath.Join(allowed, "late")
	r.Commands.Allow = allowlist(t, "sh", "ln")
	res = r.Run(context.Background(), job("direct",
		jobs.Step{Command: []string{"ln", "-s", outside, late}},
		jobs.Step{Command: []string{"sh", "-c", "touch ran-late"}, Workdir: late}), jobs.Hooks{})
	if res.Status != jobs.Failed || res.Steps[0].Status != jobs.Succeeded || res.Steps[1].Status != jobs.Failed ||
		!strings.Contains(res.Reason, "workdir "+late+" is not allowed") {
		t.Fatalf("late symlink: %+v", res)
	}
	if _, err := os.Stat(filepath.Join(outside, "ran-late")); err == nil {
		t.Error("a step ran in a directory outside --allow-workdir")
	}
}

// TestProgramPathThatDoesNotExist: a program given by its full path is not
// looked up on PATH, so a missing one is reported as a file that does not
// exist (or is no program), never as "not found on PATH": in the
// allowlist and for the proxy commands and steps of a local command.
func TestProgramPathThatDoesNotExist(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	missing := filepath.Join(dir, "bin", "get-token")
	_, err := jobs.NewAllowlist([]string{missing})
	if err == nil || !strings.Contains(err.Error(), "--allow-command "+missing+": "+missing+" does not exist") ||
		strings.Contains(err.Error(), "PATH=") || strings.Contains(err.Error(), "give its absolute path") {
		t.Errorf("allowlist with a missing path: %v", err)
	}
	if _, err := jobs.NewAllowlist([]string{dir}); err == nil || !strings.Contains(err.Error(), dir+" is a directory") {
		t.Errorf("allowlist with a directory: %v", err)
	}
	local := jobs.CommandPolicy{AnyProgram: true}
	_, err = local.Program(missing)
	if err == nil || !strings.Contains(err.Error(), "program "+missing+" does not exist") || strings.Contains(err.Error(), "on PATH:") {
		t.Errorf("any program, a missing path: %v", err)
	}
	if _, err := local.Program("pgrelay-no-such-program"); err == nil || !strings.Contains(err.Error(), "not found on PATH") {
		t.Errorf("any program, a missing name: %v", err)
	}
}
