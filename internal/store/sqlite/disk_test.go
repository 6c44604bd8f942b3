package sqlite_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/pgrelay/pgrelay/internal/store"
	"github.com/pgrelay/pgrelay/internal/store/sqlite"
)

// nsEnv names the test that a child process runs inside its own mount
// namespace (see inMountNamespace).
const nsEnv = "PGRELAY_TEST_MOUNT_NAMESPACE"

// inMountNamespace runs the calling test again in a child process in a new
// mount namespace (unshare --mount, as root), where the test can mount a
// small tmpfs and make it full or read-only without touching the host; it
// reports whether this process is that child, which then runs the test's
// body. The parent fails when the child does.
func inMountNamespace(t *testing.T) bool {
	t.Helper()
	if os.Getenv(nsEnv) == t.Name() {
		return true
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root, to mount a tmpfs in a mount namespace of its own")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("needs unshare (util-linux)")
	}
	cmd := exec.Command(unshare, "--mount", "--propagation", "private", os.Args[0],
		"-test.run", "^"+t.Name()+"$", "-test.count", "1", "-test.v")
	cmd.Env = append(os.Environ(), nsEnv+"="+t.Name())
	out, err := cmd.CombinedOutput()
	t.Logf("in a mount namespace of its own:\n%s", out)
	if err != nil {
		t.Fatalf("the test in its mount namespace: %v", err)
	}
	return false
}

// smallDisk mounts a tmpfs of size bytes on a new temporary directory,
// unmounted when the test ends.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=700"); err != nil {
		t.Fatalf("mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// fillDisk writes a file into dir until its disk is full and returns the
// file's path.
func fillDisk(t *testing.T, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill the disk: %v", err)
			}
			return path
		}
	}
}

// remount makes the file system at dir read-only (or writable again).
func remount(t *testing.T, dir string, readOnly bool) {
	t.Helper()
	flags := uintptr(syscall.MS_REMOUNT)
	if readOnly {
		flags |= syscall.MS_RDONLY
	}
	if err := syscall.Mount("", dir, "", flags, ""); err != nil {
		t.Fatalf("remount %s (read-only %v): %v", dir, readOnly, err)
	}
}

func connectionNames(t *testing.T, s store.Store) []string {
	t.Helper()
	cs, err := s.ListConnections(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, c := range cs {
		out = append(out, c.Spec.Name)
	}
	return out
}

// TestMigrationOnFullDisk upgrades a store whose disk is full, both with
// the store closed (SQLite cannot even create its -shm file) and while
// another process has it open: the upgrade fails with store.ErrFull, an
// error that names the store and says to free space, nothing is changed,
// and once space is freed the store opens, is upgraded and holds
// everything saved before.
func TestMigrationOnFullDisk(t *testing.T) {
	if !inMountNamespace(t) {
		return
	}
	ctx := context.Background()
	all, err := sqlite.Embedded()
	if err != nil {
		t.Fatal(err)
	}
	// The newer pgrelay's migration writes more than the disk holds.
	newer := append(all[:len(all):len(all)], store.Migration{Version: all[len(all)-1].Version + 1, Name: "9999_scratch.sql",
		SQL: `CREATE TABLE scratch AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
			SELECT i, randomblob(200) AS b FROM n`})
	for _, held := range []bool{false, true} {
		dir := smallDisk(t, "1m")
		path := filepath.Join(dir, "data", sqlite.FileName)
		old, err := sqlite.Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range []string{"a", "b", "c"} {
			addConnection(t, old, n)
		}
		if !held {
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(path + "-shm"); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("-shm of a closed store: %v, want none", err)
			}
		}
		filler := fillDisk(t, dir)

		_, err = sqlite.Open(ctx, path, sqlite.WithMigrations(newer))
		if !errors.Is(err, store.ErrFull) {
			t.Fatalf("upgrade on a full disk (store held open: %v): %v, want store.ErrFull", held, err)
		}
		for _, want := range []string{path, "no space left", "free space"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("upgrade on a full disk: %q does not say %q", err, want)
			}
		}
		t.Logf("store held open %v: %v", held, err)
		if held {
			if got := connectionNames(t, old); strings.Join(got, " ") != "a b c" {
				t.Fatalf("connections after the failed upgrade: %v", got)
			}
			if err := old.Close(); err != nil {
				t.Fatal(err)
			}
		}

		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		s, err := sqlite.Open(ctx, path, sqlite.WithMigrations(newer))
		if err != nil {
			t.Fatalf("open once space is freed: %v", err)
		}
		if got := applied(t, s); len(got) != len(newer) {
			t.Errorf("migrations once space is freed: %v, want all %d", got, len(newer))
		}
		if got := connectionNames(t, s); strings.Join(got, " ") != "a b c" {
			t.Errorf("connections once space is freed: %v", got)
		}
		_ = s.Close()
	}
}

// TestBackupToFullDisk writes a copy of a store (as `pgrelay backup` does)
// to a full disk other than the store's: the error names the copy's
// directory and says to free space there, not where the store lives;
// nothing is left behind, and the store is as it was.
func TestBackupToFullDisk(t *testing.T) {
	if !inMountNamespace(t) {
		return
	}
	ctx := context.Background()
	s := open(t)
	for _, n := range []string{"a", "b"} {
		addConnection(t, s, n)
	}
	dir := smallDisk(t, "64k")
	fillDisk(t, dir)
	out := filepath.Join(dir, "backup.db")
	err := s.VacuumInto(ctx, out)
	if err == nil {
		t.Fatal("copy to a full disk: no error")
	}
	t.Logf("copy to a full disk: %v", err)
	for _, want := range []string{"no space left", dir, "free space"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("copy to a full disk: %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "where the store lives") {
		t.Errorf("copy to a full disk: %q sends the operator to the store's disk, which is not full", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("copy to a full disk left %s: %v", out, err)
	}
	if got := connectionNames(t, s); strings.Join(got, " ") != "a b" {
		t.Errorf("connections after the failed copy: %v", got)
	}
	addConnection(t, s, "c")
}

// TestReadOnlyDataDir opens a store whose data dir is on a read-only file
// system, for use and for a backup: each error says that the directory
// is read-only and that it must be writable; once it is, the store opens
// with everything saved before.
func TestReadOnlyDataDir(t *testing.T) {
	if !inMountNamespace(t) {
		return
	}
	ctx := context.Background()
	dir := smallDisk(t, "4m")
	data := filepath.Join(dir, "data")
	path := filepath.Join(data, sqlite.FileName)
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	addConnection(t, s, "a")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	remount(t, dir, true)

	_, err = sqlite.Open(ctx, path)
	t.Logf("open: %v", err)
	if err == nil || !strings.Contains(err.Error(), "read-only") || !strings.Contains(err.Error(), "writable") {
		t.Errorf("open a store in a read-only directory: %v, want an error saying it must be writable", err)
	}
	_, err = sqlite.OpenReadOnly(ctx, path)
	t.Logf("open for a backup: %v", err)
	if err == nil || !strings.Contains(err.Error(), "read-only") || !strings.Contains(err.Error(), "writable") ||
		errors.Is(err, sqlite.ErrNotAStore) {
		t.Errorf("open a store in a read-only directory for a backup: %v, want an error saying it must be writable", err)
	}

	remount(t, dir, false)
	s, err = sqlite.Open(ctx, path)
	if err != nil {
		t.Fatalf("open once writable: %v", err)
	}
	defer s.Close()
	if got := connectionNames(t, s); strings.Join(got, " ") != "a" {
		t.Errorf("connections once writable: %v", got)
	}
}
