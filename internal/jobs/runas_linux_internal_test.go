package jobs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pgrelay/pgrelay/internal/testenv"
)

// taskIDs returns the file system UID and GID (the fourth field of the
// Uid and Gid lines) of thread tid of this process, ok false when the
// thread is gone.
func taskIDs(t *testing.T, tid string) (fsuid, fsgid string, ok bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc/self/task", tid, "status"))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return "", "", false
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, found := strings.CutPrefix(l, "Uid:"); found && len(strings.Fields(v)) == 4 {
			fsuid = strings.Fields(v)[3]
		}
		if v, found := strings.CutPrefix(l, "Gid:"); found && len(strings.Fields(v)) == 4 {
			fsgid = strings.Fields(v)[3]
		}
	}
	return fsuid, fsgid, true
}

// TestAsUserOnlyItsOwnThread: asUser runs its function with the user's
// file permissions (root's private directory is closed to it), on one
// thread: the rest of the process keeps root's, and when asUser returns,
// no thread of the process has the user's identity any more.
// (Not parallel: it looks at every thread of the process.)
func TestAsUserOnlyItsOwnThread(t *testing.T) {
	u := testenv.NewOSUser(t)
	ra, err := LookupRunAs(u.Name)
	if err != nil {
		t.Fatal(err)
	}
	private := t.TempDir()
	if err := os.Chmod(private, 0o700); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		var tid, fsuid, fsgid string
		var readErr error
		if err := ra.asUser(func() {
			tid = strconv.Itoa(unix.Gettid())
			fsuid, fsgid, _ = taskIDs(t, tid)
			_, readErr = os.ReadDir(private)
		}); err != nil {
			t.Fatal(err)
		}
		if fsuid != strconv.Itoa(u.UID) || fsgid != strconv.Itoa(u.GID) {
			t.Errorf("thread %s: file system IDs %s:%s, want the user's %d:%d", tid, fsuid, fsgid, u.UID, u.GID)
		}
		if !errors.Is(readErr, fs.ErrPermission) {
			t.Errorf("as user %s, root's private directory: %v, want permission denied", u.Name, readErr)
		}
		if _, err := os.ReadDir(private); err != nil {
			t.Errorf("the process lost root's access to its private directory: %v", err)
		}
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			if uid, gid, ok := taskIDs(t, task.Name()); ok && (uid != "0" || gid != "0") {
				t.Errorf("after asUser (on thread %s), thread %s has file system IDs %s:%s", tid, task.Name(), uid, gid)
			}
		}
	}
}
