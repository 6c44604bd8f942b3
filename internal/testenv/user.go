package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"testing"
	"time"
)

// OSUser is a throwaway unprivileged OS account, made by NewOSUser.
type OSUser struct {
	// Name is the login name, "pgrt" and random hex.
	Name string
	// UID and GID are its user and primary group IDs.
	UID, GID int
}

// NewOSUser creates a system account (useradd --system) without a home
// directory, a login shell or a password, and removes it (userdel) when the
// test ends: for tests of what another, unprivileged user can do. Only root
// can create accounts, so it skips the test, saying why, when not run as
// root.
func NewOSUser(tb testing.TB) *OSUser {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("testenv: this test creates a throwaway OS user, which needs root; run it as root (as CI does)")
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	name := "pgrt" + hex.EncodeToString(b)
	// useradd fails while another holds the lock on /etc/passwd (tests in
	// parallel): try again for a while.
	var out []byte
	var err error
	for deadline := time.Now().Add(20 * time.Second); ; {
		out, err = exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
			"--shell", "/usr/sbin/nologin", "--user-group", name).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "lock") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		tb.Fatalf("testenv: useradd %s: %v: %s", name, err, out)
	}
	tb.Cleanup(func() {
		for deadline := time.Now().Add(20 * time.Second); ; {
			out, err := exec.Command("userdel", name).CombinedOutput()
			if err == nil {
				return
			}
			if !strings.Contains(string(out), "lock") || time.Now().After(deadline) {
				tb.Errorf("testenv: userdel %s: %v: %s", name, err, out)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	u, err := user.Lookup(name)
	if err != nil {
		tb.Fatalf("testenv: look up the user just made: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &OSUser{Name: name, UID: uid, GID: gid}
}
