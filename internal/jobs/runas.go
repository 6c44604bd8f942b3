package jobs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// RunAs is the unprivileged OS user command steps run as (`--run-as`).
type RunAs struct {
	// Name is the user's login name.
	Name string
	// UID and GID are the user's IDs; Groups its supplementary groups.
	UID, GID uint32
	Groups   []uint32
	// Home is the user's home directory when it exists, else "" (commands
	// then get the run's directory as HOME).
	Home string
}

// LookupRunAs looks up the user command steps are to run as, and checks
// that this process may start and stop processes as that user: it must run
// as root with RunAsCapabilities (a container may have dropped some), and
// the user must be another user than this process's and not root. It also
// keeps the files this process was started with from the programs it
// starts (see closeInheritedFiles), which run as that user.
func LookupRunAs(name string) (*RunAs, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("--run-as %s: %w (create the user, e.g. useradd --system --no-create-home --shell /usr/sbin/nologin %s)", name, err, name)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("--run-as %s: user and group IDs %s:%s: %w", name, u.Uid, u.Gid, err)
	}
	switch {
	case uid == 0:
		return nil, fmt.Errorf("--run-as %s: that is root; give an unprivileged user that cannot read pgrelay's data dir", name)
	case uid == uint64(os.Geteuid()):
		return nil, fmt.Errorf("--run-as %s: pgrelay itself runs as that user, so commands would keep its access to the data dir; give another, unprivileged user", name)
	}
	if err := checkCanSwitchUser(); err != nil {
		return nil, fmt.Errorf("--run-as %s: %w", name, err)
	}
	if err := closeInheritedFiles(); err != nil {
		return nil, fmt.Errorf("--run-as %s: %w", name, err)
	}
	r := &RunAs{Name: u.Username, UID: uint32(uid), GID: uint32(gid)}
	gids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("--run-as %s: groups: %w", name, err)
	}
	for _, g := range gids {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--run-as %s: group ID %s: %w", name, g, err)
		}
		if n == 0 {
			return nil, fmt.Errorf("--run-as %s: the user is in the root group (GID 0); give a user outside it", name)
		}
		r.Groups = append(r.Groups, uint32(n))
	}
	if fi, err := os.Stat(u.HomeDir); err == nil && fi.IsDir() && u.HomeDir != "/" {
		r.Home = u.HomeDir
	}
	return r, nil
}

// Capabilities in /proc/self/status's CapEff mask.
const (
	capChown  = 0
	capKill   = 5
	capSetGID = 6
	capSetUID = 7
)

// RunAsCapabilities names the capabilities --run-as needs, as root: to
// start commands as the user (CAP_SETUID, CAP_SETGID), give them the run's
// files (CAP_CHOWN) and stop them (CAP_KILL: without it no signal reaches
// them, so cancels, time limits and the end of a step would leave them
// running).
const RunAsCapabilities = "CAP_SETUID CAP_SETGID CAP_CHOWN CAP_KILL"

// checkCanSwitchUser returns nil when this process runs as root with
// RunAsCapabilities.
func checkCanSwitchUser() error {
	return checkRunAsCaps(os.Geteuid(), func() (io.ReadCloser, error) { return os.Open("/proc/self/status") })
}

// checkRunAsCaps is checkCanSwitchUser for a process running as euid whose
// /proc/self/status status opens.
//
// Not root is refused even with the capabilities: a process that is not
// root passes ambient capabilities on to what it starts, and a change
// between two users other than root keeps them, so every command would
// hold CAP_SETUID and could make itself any user, root included. From
// root, the change to the user drops every capability.
func checkRunAsCaps(euid int, status func() (io.ReadCloser, error)) error {
	if euid != 0 {
		return fmt.Errorf("starting commands as another user needs pgrelay to run as root (it runs as UID %d): "+
			"given capabilities instead, pgrelay would pass them on to the commands, which could then become any user", euid)
	}
	f, err := status()
	if err != nil {
		return fmt.Errorf("starting commands as another user needs %s; pgrelay's capabilities could not be read: %w",
			RunAsCapabilities, err)
	}
	defer f.Close()
	caps, err := effectiveCaps(f)
	if err != nil {
		return fmt.Errorf("starting commands as another user needs %s; pgrelay's capabilities could not be read: %w",
			RunAsCapabilities, err)
	}
	need := []struct {
		bit  uint
		name string
	}{{capSetUID, "CAP_SETUID"}, {capSetGID, "CAP_SETGID"}, {capChown, "CAP_CHOWN"}, {capKill, "CAP_KILL"}}
	var missing []string
	for _, c := range need {
		if caps&(1<<c.bit) == 0 {
			missing = append(missing, c.name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("starting commands as another user needs %s; pgrelay runs as root without %s "+
		"(a container or a service manager took them away: give them back, e.g. podman --cap-add)",
		RunAsCapabilities, strings.Join(missing, ", "))
}

// effectiveCaps reads the CapEff mask of a /proc/PID/status file.
func effectiveCaps(status io.Reader) (uint64, error) {
	sc := bufio.NewScanner(status)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("no CapEff line")
}

// ChildEnv returns env, the environment of a program pgrelay starts as the
// user on a connection's behalf (a proxy command, a token command), with
// the user's HOME, USER and LOGNAME in place of this process's (no HOME
// when the user has none): such a program finds its configuration, and
// the credentials given to that user, where the user keeps them.
func (r *RunAs) ChildEnv(env []string) []string {
	out := make([]string, 0, len(env)+3)
	for _, kv := range env {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "HOME", "USER", "LOGNAME":
			continue
		}
		out = append(out, kv)
	}
	if r.Home != "" {
		out = append(out, "HOME="+r.Home)
	}
	return append(out, "USER="+r.Name, "LOGNAME="+r.Name)
}

// ChildDir is the working directory of a program pgrelay starts as the
// user on a connection's behalf: the user's home, or "/" (this process's
// own, often its data dir, is closed to the user).
func (r *RunAs) ChildDir() string {
	if r.Home != "" {
		return r.Home
	}
	return "/"
}

// Credential is the process credential of commands run as the user.
func (r *RunAs) Credential() *syscall.Credential {
	return &syscall.Credential{Uid: r.UID, Gid: r.GID, Groups: append([]uint32(nil), r.Groups...)}
}

// inGroup reports whether the user is in group gid.
func (r *RunAs) inGroup(gid uint32) bool {
	if gid == r.GID {
		return true
	}
	for _, g := range r.Groups {
		if g == gid {
			return true
		}
	}
	return false
}

// AccessError says that the user can reach a path it must not.
type AccessError struct {
	User string
	Path string
	// Why names the permission that lets the user in.
	Why string
	// Owned is true when the user owns Path: a mode change alone does not
	// close it (the owner may change it back), its owner must change.
	Owned bool
}

func (e *AccessError) Error() string {
	return fmt.Sprintf("user %s can read %s (%s)", e.User, e.Path, e.Why)
}

// CheckNoAccess returns an *AccessError when the user could list or read
// path, or reach anything below it: path must be a directory or file that
// the user cannot open, judged by the permission bits of it and of every
// directory above it, and no ACL on it. A path that does not exist passes.
func (r *RunAs) CheckNoAccess(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	resolved, err := filepath.EvalSymlinks(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check access of %s: %w", path, err)
	}
	// The directories above must all be searchable for the user to reach
	// the path; one that is not protects everything below it.
	dirs := []string{}
	for d := filepath.Dir(resolved); ; d = filepath.Dir(d) {
		dirs = append(dirs, d)
		if d == "/" {
			break
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		ok, err := r.may(dirs[i], 1)
		if err != nil {
			return fmt.Errorf("check access of %s: %w", path, err)
		}
		if !ok {
			return nil
		}
	}
	fi, err := os.Stat(resolved)
	if err != nil {
		return fmt.Errorf("check access of %s: %w", path, err)
	}
	if acl, err := hasACL(resolved); err != nil || acl {
		return &AccessError{User: r.Name, Path: path, Why: "it has an ACL, which may grant access: remove it with setfacl -b"}
	}
	// A directory is open to the user when it may list (r) or search (x)
	// it; a file when it may read it.
	st, _ := fi.Sys().(*syscall.Stat_t)
	owned := st != nil && st.Uid == r.UID
	if owned {
		// The owner may change the mode: owning it is access enough.
		return &AccessError{User: r.Name, Path: path, Why: "owned by " + r.Name + ", " + describeMode(fi), Owned: true}
	}
	if ok, _ := r.may(resolved, 4); ok {
		return &AccessError{User: r.Name, Path: path, Why: describeMode(fi)}
	}
	if fi.IsDir() {
		if ok, _ := r.may(resolved, 1); ok {
			return &AccessError{User: r.Name, Path: path, Why: describeMode(fi)}
		}
	}
	return nil
}

// may reports whether the user has permission bit want (4 read, 1
// search/execute) on path, by its owner, group and mode.
func (r *RunAs) may(path string, want os.FileMode) (bool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true, nil // cannot tell: assume it may
	}
	if acl, err := hasACL(path); err != nil || acl {
		return true, nil // an ACL may grant it
	}
	perm := fi.Mode().Perm()
	switch {
	case st.Uid == r.UID:
		return perm&(want<<6) != 0, nil
	case r.inGroup(st.Gid):
		return perm&(want<<3) != 0, nil
	}
	return perm&want != 0, nil
}

func describeMode(fi os.FileInfo) string {
	s := fmt.Sprintf("mode %04o", fi.Mode().Perm())
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s += fmt.Sprintf(", owner %d:%d", st.Uid, st.Gid)
	}
	return s
}
