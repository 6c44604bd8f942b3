package jobs

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
)

// AllowCommandsEnv is the environment variable that lists, comma-separated,
// the programs command steps may run when --allow-command is not given.
const AllowCommandsEnv = "PGRELAY_ALLOW_COMMANDS"

// Allowlist is the set of programs command steps may run (`--allow-command`),
// each resolved once, when the list is made, to an absolute path: the path
// is what runs, so a later change of PATH, or a program of the same name in
// a step's working directory, cannot stand in for it. The nil *Allowlist
// allows nothing.
type Allowlist struct {
	byName map[string]string // how a step may name a program → its absolute path
	given  []string          // the programs as configured, for messages
}

// NewAllowlist resolves programs (names looked up on PATH, or absolute
// paths) and returns the list, or an error naming each program that cannot
// be found. A program given by absolute path may also be named by its base
// name in a step, unless another entry has that name.
func NewAllowlist(programs []string) (*Allowlist, error) {
	a := &Allowlist{byName: map[string]string{}}
	var errs []error
	var absolute [][2]string
	for _, p := range programs {
		p = strings.TrimSpace(p)
		if p == "" || slices.Contains(a.given, p) {
			continue
		}
		if strings.ContainsRune(p, '/') && !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("--allow-command %q: give a program name looked up on PATH (dbt) or an absolute path (/opt/dbt/bin/dbt), not a relative path", p))
			continue
		}
		path, err := exec.LookPath(p)
		if err == nil && !filepath.IsAbs(path) {
			err = fmt.Errorf("it resolves to the relative path %s", path)
		}
		switch {
		case err != nil && filepath.IsAbs(p):
			// Not looked up on PATH: the file itself is missing or no
			// program.
			errs = append(errs, fmt.Errorf("--allow-command %s: %s", p, PathProblem(p, err)))
			continue
		case err != nil:
			errs = append(errs, fmt.Errorf("--allow-command %s: not found as an executable (PATH=%s): install it or give its absolute path: %w",
				p, os.Getenv("PATH"), err))
			continue
		}
		a.byName[p] = path
		a.given = append(a.given, p)
		if filepath.IsAbs(p) {
			absolute = append(absolute, [2]string{filepath.Base(p), path})
		}
	}
	for _, np := range absolute {
		if _, ok := a.byName[np[0]]; !ok {
			a.byName[np[0]] = np[1]
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return a, nil
}

// ParseAllowCommands returns the programs of flags when any were given, else
// those listed (comma-separated) in env, the value of AllowCommandsEnv.
func ParseAllowCommands(flags []string, env string) []string {
	if len(flags) > 0 {
		return flags
	}
	var out []string
	for _, p := range strings.Split(env, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// NotAllowedError is why a command step's program may not run.
type NotAllowedError struct {
	// Program is the program as the step names it.
	Program string
	// Allowed are the programs allowed, as configured.
	Allowed []string
	// AllowedAs is the path a program of the same base name is allowed
	// as, when the step named another path.
	AllowedAs string
}

func (e *NotAllowedError) Error() string {
	now := "none"
	if len(e.Allowed) > 0 {
		now = strings.Join(e.Allowed, ", ")
	}
	msg := fmt.Sprintf("program %q is not allowed: pgrelay runs only the programs given with --allow-command or %s (now: %s)",
		e.Program, AllowCommandsEnv, now)
	if e.AllowedAs != "" {
		return msg + fmt.Sprintf("; %s is allowed as %s: name it %s or by that path", filepath.Base(e.Program), e.AllowedAs, filepath.Base(e.Program))
	}
	return msg + fmt.Sprintf("; to allow it, add --allow-command %s (or %s=%s where the command has no such flag)", e.Program, AllowCommandsEnv, e.Program)
}

// Allow returns nil when program may run, else a *NotAllowedError.
func (a *Allowlist) Allow(program string) error {
	_, err := a.Path(program)
	return err
}

// Path returns the absolute path program runs as: the resolved path of an
// allowed name, or an absolute path equal to one. Anything else is a
// *NotAllowedError.
func (a *Allowlist) Path(program string) (string, error) {
	if a != nil {
		if p, ok := a.byName[program]; ok {
			return p, nil
		}
		if filepath.IsAbs(program) {
			for _, p := range a.byName {
				if p == program {
					return p, nil
				}
			}
		}
	}
	e := &NotAllowedError{Program: program, Allowed: a.Programs()}
	if a != nil && filepath.IsAbs(program) {
		e.AllowedAs = a.byName[filepath.Base(program)]
	}
	return "", e
}

// Programs returns the allowed programs as configured.
func (a *Allowlist) Programs() []string {
	if a == nil {
		return nil
	}
	return slices.Clone(a.given)
}

// LogValue lists each allowed name with the path it runs.
func (a *Allowlist) LogValue() slog.Value {
	if a == nil || len(a.byName) == 0 {
		return slog.StringValue("none")
	}
	names := make([]string, 0, len(a.byName))
	for n := range a.byName {
		names = append(names, n)
	}
	sort.Strings(names)
	attrs := make([]slog.Attr, 0, len(names))
	for _, n := range names {
		attrs = append(attrs, slog.String(n, a.byName[n]))
	}
	return slog.GroupValue(attrs...)
}

// CommandPolicy is how command steps may run: which programs, as which OS
// user, in which directories. The zero value runs no program.
type CommandPolicy struct {
	// Allow are the programs command steps may run.
	Allow *Allowlist
	// AnyProgram lets any program found on PATH when its step starts run,
	// for `pgrelay exec`, where the local user runs their own command.
	AnyProgram bool
	// RunAs, when set, runs commands as that OS user with a minimal
	// environment and a private temporary directory.
	RunAs *RunAs
	// Workdirs, when not empty, are the directories (symlinks resolved, see
	// ResolveWorkdirs) that a step's working directory must be inside.
	Workdirs []string
}

// ResolveWorkdirs resolves each directory's symlinks (`--allow-workdir`):
// each must exist and be a directory.
func ResolveWorkdirs(dirs []string) ([]string, error) {
	var out []string
	var errs []error
	for _, d := range dirs {
		if !filepath.IsAbs(d) {
			errs = append(errs, fmt.Errorf("--allow-workdir %q: give an absolute path", d))
			continue
		}
		r, err := filepath.EvalSymlinks(d)
		if err == nil {
			var fi os.FileInfo
			if fi, err = os.Stat(r); err == nil && !fi.IsDir() {
				err = errors.New("not a directory")
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("--allow-workdir %s: %w", d, err))
			continue
		}
		out = append(out, r)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// LogAttrs describe the policy for the log.
func (p CommandPolicy) LogAttrs() []any {
	attrs := []any{slog.Any("allowed_programs", p.Allow)}
	if p.RunAs != nil {
		attrs = append(attrs, slog.String("run_as", p.RunAs.Name), slog.Uint64("run_as_uid", uint64(p.RunAs.UID)))
	}
	if len(p.Workdirs) > 0 {
		attrs = append(attrs, slog.Any("allowed_workdirs", p.Workdirs))
	}
	return attrs
}

// program returns the absolute path a step's program runs as.
func (p CommandPolicy) program(prog string) (string, error) {
	if !p.AnyProgram {
		return p.Allow.Path(prog)
	}
	path, err := exec.LookPath(prog)
	if err == nil && !filepath.IsAbs(path) {
		path, err = filepath.Abs(path)
	}
	switch {
	case err != nil && strings.ContainsRune(prog, '/'):
		// A path is not looked up on PATH.
		return "", fmt.Errorf("program %s", PathProblem(prog, err))
	case err != nil:
		return "", fmt.Errorf("program %q not found on PATH: install it or give its full path", prog)
	}
	return path, nil
}

// PathProblem says why exec.LookPath refused prog, a path (which it does
// not look up on PATH), with err: the file does not exist, is a directory,
// or may not be executed; and what is accepted.
func PathProblem(prog string, err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("%s does not exist: give the full path of an installed program, or a program name looked up on PATH", prog)
	case errors.Is(err, syscall.EISDIR):
		return fmt.Sprintf("%s is a directory: give the full path of a program file, or a program name looked up on PATH", prog)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Sprintf("%s is not executable by this user (uid %d): make it executable (chmod +x) and its directories searchable, or give another program", prog, os.Getuid())
	}
	return fmt.Sprintf("%s cannot be run: %v", prog, err)
}

// WorkdirError is why a step may not run in its working directory.
type WorkdirError struct {
	Workdir string
	// Resolved is Workdir with its symlinks resolved ("" when it could not
	// be resolved).
	Resolved string
	Allowed  []string
	Err      error
	// User is the user commands run as (--run-as) when Workdir was
	// resolved with that user's permissions, else "".
	User string
}

func (e *WorkdirError) Error() string {
	if e.Err != nil {
		if e.User != "" && errors.Is(e.Err, fs.ErrPermission) {
			return fmt.Sprintf("workdir %s: %v: user %s must be able to enter the workdir (search permission on it and on every directory above it)",
				e.Workdir, e.Err, e.User)
		}
		return fmt.Sprintf("workdir %s: %v", e.Workdir, e.Err)
	}
	via := ""
	if e.Resolved != e.Workdir {
		via = " (it resolves to " + e.Resolved + ")"
	}
	return fmt.Sprintf("workdir %s is not allowed%s: command steps run only inside the directories given with --allow-workdir (%s)",
		e.Workdir, via, strings.Join(e.Allowed, ", "))
}

func (e *WorkdirError) Unwrap() error { return e.Err }

// workdir checks a step's working directory against Workdirs and returns
// it with its symlinks resolved ("" for an empty workdir). A workdir that
// does not exist yet is accepted when mayNotExist (an earlier step may make
// it; it is checked again when its step starts).
//
// With RunAs, the workdir is resolved with that user's permissions (see
// RunAs.asUser), not this process's: the editor who wrote the step learns
// from the answer no more than a command of the user could, not whether a
// path exists or where a symlink points in a directory the user cannot
// enter, and a step cannot run in a directory the user reaches only
// through a path it cannot follow. A workdir the user cannot reach is then
// also accepted when mayNotExist (an earlier step may open it up).
//
// Without Workdirs nothing is checked here: the command's own change to
// its workdir is the check, with RunAs made by the child process after it
// became the user (in os/exec, SysProcAttr.Credential is applied before
// the chdir: syscall's forkAndExecInChild1 on Linux).
func (p CommandPolicy) workdir(dir string, mayNotExist bool) (string, error) {
	if dir == "" || len(p.Workdirs) == 0 {
		return dir, nil
	}
	var resolved, user string
	var err error
	if p.RunAs == nil {
		resolved, err = filepath.EvalSymlinks(dir)
	} else {
		user = p.RunAs.Name
		if serr := p.RunAs.asUser(func() { resolved, err = filepath.EvalSymlinks(dir) }); serr != nil {
			return "", &WorkdirError{Workdir: dir, Err: serr}
		}
	}
	if err != nil {
		if mayNotExist && (errors.Is(err, fs.ErrNotExist) || user != "" && errors.Is(err, fs.ErrPermission)) {
			return "", nil
		}
		return "", &WorkdirError{Workdir: dir, Err: err, User: user}
	}
	for _, root := range p.Workdirs {
		if within(root, resolved) {
			return resolved, nil
		}
	}
	return "", &WorkdirError{Workdir: dir, Resolved: resolved, Allowed: p.Workdirs}
}

// within reports whether path is root or below it (both clean, absolute).
func within(root, path string) bool {
	rel, err := filepath.Rel(root, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel)
}
