package jobs

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// runDirPrefix starts the name of a run's directory in the temporary
// directory; runDirLockSuffix ends the name of its lock file beside it.
const (
	runDirPrefix     = "pgrelay-run-"
	runDirLockSuffix = ".lock"
	// newLockSuffix ends the name of a lock file while it is being
	// locked, before it is renamed into place (newRunDir).
	newLockSuffix = ".lock-new"
)

// runDir is a run's directory (its dbt profile, CA certificate and
// TMPDIR) and the lock that marks it in use: a file beside it, locked
// (flock) by the process that made it for as long as the run holds it.
// The kernel drops the lock when that process dies, so a process killed
// before it removed the directory leaves it unlocked for SweepRunDirs.
// The lock file is beside the directory, not in it: the directory may be
// given to the user of --run-as, whose commands could remove a file in
// it, and the temporary directory is sticky, so they cannot remove one
// of pgrelay's there.
type runDir struct {
	path string
	lock *os.File
	once sync.Once
}

// newRunDir makes a run's directory in the temporary directory, with its
// lock taken. The lock file is locked under another name and then renamed
// into place, so that it is never to be seen unlocked: a sweep (another
// process's serve starting) that found it between its creation and its
// lock took it for a dead run's, and the run failed.
func newRunDir() (*runDir, error) {
	dir, err := os.MkdirTemp("", runDirPrefix)
	if err != nil {
		return nil, fmt.Errorf("create run directory: %w", err)
	}
	lock, err := os.OpenFile(dir+newLockSuffix, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err == nil {
		err = syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			// In the sticky temporary directory no other user's file can
			// be replaced, and the name is this directory's.
			err = os.Rename(dir+newLockSuffix, dir+runDirLockSuffix)
		}
		if err != nil {
			_ = lock.Close()
			_ = os.Remove(dir + newLockSuffix)
		}
	}
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("create run directory: lock: %w", err)
	}
	return &runDir{path: dir, lock: lock}, nil
}

// remove deletes the directory, then its lock file, and drops the lock;
// once (a nil runDir has nothing to remove).
func (d *runDir) remove() {
	if d == nil {
		return
	}
	d.once.Do(func() {
		_ = os.RemoveAll(d.path)
		_ = os.Remove(d.path + runDirLockSuffix)
		_ = d.lock.Close()
	})
}

// SweepRunDirs removes the run directories, in the temporary directory,
// left by pgrelay processes that died before their runs ended (SIGKILL, a
// crash, the machine's power): those whose lock file is this user's and
// no process holds. The directories of runs still going on, in this
// process or another, are locked and stay. It returns how many it
// removed, and logs them.
func SweepRunDirs(logger *slog.Logger) int {
	locks, err := filepath.Glob(filepath.Join(os.TempDir(), runDirPrefix+"*"+runDirLockSuffix))
	if err != nil {
		return 0
	}
	removed := 0
	for _, lockPath := range locks {
		if sweepRunDir(lockPath) {
			removed++
			logger.Info("removed the directory of a run whose process ended without removing it",
				"dir", strings.TrimSuffix(lockPath, runDirLockSuffix))
		}
	}
	return removed
}

// sweepRunDir removes the run directory of lockPath when its lock is this
// user's file and free; it reports whether it did.
func sweepRunDir(lockPath string) bool {
	f, err := os.OpenFile(lockPath, os.O_RDWR|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); !ok || !fi.Mode().IsRegular() || int(st.Uid) != os.Getuid() {
		return false // not one of this user's lock files
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return false // its run goes on
	}
	dir := strings.TrimSuffix(lockPath, runDirLockSuffix)
	// Only the directory itself (a symlink put in its place is removed
	// as a link, never followed).
	if di, err := os.Lstat(dir); err == nil && di.IsDir() {
		if err := os.RemoveAll(dir); err != nil {
			return false
		}
	} else if err == nil {
		_ = os.Remove(dir)
	} else if !errors.Is(err, os.ErrNotExist) {
		return false
	}
	_ = os.Remove(lockPath)
	return true
}
