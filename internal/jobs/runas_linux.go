package jobs

import (
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// Capabilities that let a process past file permissions.
const (
	capDACOverride   = 1
	capDACReadSearch = 2
)

// asUser calls f on an OS thread whose file system identity is the user's
// while f runs: the thread's file system UID and GID and its supplementary
// groups are the user's, which also clears from it the capabilities that
// let root past file permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH).
// What f looks up in the file system, it sees as a command run as the user
// would, permission errors included. When the thread cannot take on the
// user's identity, f is not called.
//
// Only that thread changes: the raw system calls used here, unlike
// syscall.Setuid and syscall.Setgroups, do not apply to the whole process;
// and the goroutine that calls f is locked to the thread, so nothing else
// runs on it meanwhile. Afterwards the thread's own identity is restored
// and checked before the thread runs anything else; if that fails, the
// thread stays locked to the goroutine, and the Go runtime ends it with the
// goroutine.
func (r *RunAs) asUser(f func()) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := threadIdentity()
		if err != nil {
			runtime.UnlockOSThread() // nothing changed
			done <- fmt.Errorf("take on the file permissions of user %s: %w", r.Name, err)
			return
		}
		err = r.becomeOnThread()
		if err == nil {
			f()
		}
		if own.restoreOnThread() == nil {
			runtime.UnlockOSThread()
		} // else never unlocked: the thread ends with this goroutine
		if err != nil {
			err = fmt.Errorf("take on the file permissions of user %s: %w", r.Name, err)
		}
		done <- err
	}()
	return <-done
}

// identity is the file system identity of a thread.
type identity struct {
	fsuid, fsgid int
	groups       []int
	caps         uint64 // effective capabilities
}

// threadIdentity returns the calling thread's identity.
func threadIdentity() (identity, error) {
	var id identity
	var err error
	if id.groups, err = unix.Getgroups(); err != nil {
		return id, fmt.Errorf("getgroups: %w", err)
	}
	// -1 changes nothing and returns the current ID.
	id.fsuid, _ = unix.SetfsuidRetUid(-1)
	id.fsgid, _ = unix.SetfsgidRetGid(-1)
	if id.caps, err = threadCaps(); err != nil {
		return id, err
	}
	return id, nil
}

// threadCaps returns the calling thread's effective capabilities.
func threadCaps() (uint64, error) {
	f, err := os.Open("/proc/thread-self/status")
	if err != nil {
		return 0, fmt.Errorf("read the thread's capabilities: %w", err)
	}
	defer f.Close()
	caps, err := effectiveCaps(f)
	if err != nil {
		return 0, fmt.Errorf("read the thread's capabilities: %w", err)
	}
	return caps, nil
}

// becomeOnThread gives the calling thread (locked to its goroutine) the
// user's file system identity, and checks that it has no capability left
// that would let it past file permissions.
func (r *RunAs) becomeOnThread() error {
	groups := make([]int, len(r.Groups))
	for i, g := range r.Groups {
		groups[i] = int(g)
	}
	if err := unix.Setgroups(groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if _, err := unix.SetfsgidRetGid(int(r.GID)); err != nil {
		return fmt.Errorf("setfsgid %d: %w", r.GID, err)
	}
	if _, err := unix.SetfsuidRetUid(int(r.UID)); err != nil {
		return fmt.Errorf("setfsuid %d: %w", r.UID, err)
	}
	id, err := threadIdentity()
	if err != nil {
		return err
	}
	// setfsuid and setfsgid may fail by leaving the ID as it was.
	if id.fsgid != int(r.GID) {
		return fmt.Errorf("setfsgid %d: the file system GID is still %d", r.GID, id.fsgid)
	}
	if id.fsuid != int(r.UID) {
		return fmt.Errorf("setfsuid %d: the file system UID is still %d", r.UID, id.fsuid)
	}
	// The kernel clears them with the change from UID 0, unless the
	// process's securebits keep them (SECBIT_NO_SETUID_FIXUP).
	if id.caps&(1<<capDACOverride|1<<capDACReadSearch) != 0 {
		return fmt.Errorf("the thread kept CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH (CapEff %016x) with the user's file system UID", id.caps)
	}
	return nil
}

// restoreOnThread gives the calling thread identity id again (its own,
// from threadIdentity), and returns an error unless it has exactly that
// identity after.
func (id identity) restoreOnThread() error {
	// The UID first: back to 0, it gives back the capabilities the
	// change to the user cleared, CAP_SETGID included.
	_, _ = unix.SetfsuidRetUid(id.fsuid)
	_, _ = unix.SetfsgidRetGid(id.fsgid)
	err := unix.Setgroups(id.groups)
	now, nerr := threadIdentity()
	switch {
	case err != nil:
		return fmt.Errorf("setgroups: %w", err)
	case nerr != nil:
		return nerr
	case now.fsuid != id.fsuid || now.fsgid != id.fsgid || now.caps != id.caps || !slices.Equal(now.groups, id.groups):
		return fmt.Errorf("the thread's identity is %+v, not %+v", now, id)
	}
	return nil
}

// closeInheritedFiles marks every file descriptor of this process above
// standard error close-on-exec. Go opens its own so, but not those this
// process was started with: a file or pipe its parent left open (a master
// key given as /dev/fd/3, a supervisor's or a shell's pipe) would pass on
// to every program pgrelay starts, as the user of --run-as too, who could
// read through it what its own permissions do not let it open.
func closeInheritedFiles() error {
	switch err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); {
	case err == nil:
		return nil
	case !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL):
		return fmt.Errorf("mark inherited files close-on-exec: %w", err)
	}
	// A kernel before 5.11 (no close_range, or not its CLOEXEC flag): one
	// descriptor at a time.
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("mark inherited files close-on-exec: %w", err)
	}
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil || fd <= 2 {
			continue
		}
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
		if err != nil || flags&unix.FD_CLOEXEC != 0 {
			continue // closed since it was listed (the listing's own), or already marked
		}
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFD, flags|unix.FD_CLOEXEC); err != nil {
			return fmt.Errorf("mark inherited file descriptor %d close-on-exec: %w", fd, err)
		}
	}
	return nil
}
