package canary_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgrelay/pgrelay/internal/auth"
	"github.com/pgrelay/pgrelay/internal/e2e/e2etest"
	"github.com/pgrelay/pgrelay/internal/secret"
	"github.com/pgrelay/pgrelay/internal/testenv"
)

// TestSecretsOperations runs the secrets canary over the operations of a
// store: a backup (taken while a server runs) and its restore, a copy to a
// PostgreSQL store, and master key rotations stopped at each of their
// points (the data dir is searched while the rotation waits there, and
// after it was killed) and run to their end. The backup file, the data
// dirs at every point, the temporary directory of the processes and every
// output must hold the passwords, private keys and tokens only sealed or
// hashed, and the master keys only in their key files.
func TestSecretsOperations(t *testing.T) {
	t.Parallel()
	ev, cn := &evidence{}, &canaries{}
	pg := testenv.SharedPostgres(t, testenv.PostgresOptions{})
	bastion := testenv.SharedBastion(t, testenv.BastionOptions{})
	pw := newPassword("ops")
	cn.addText("password", pw)
	ops := pg.NewDatabase(t)
	ops.SetPassword(t, pw)
	storePW := newPassword("store")
	cn.addText("store password", storePW)
	opsStore := pg.NewDatabase(t)
	opsStore.SetPassword(t, storePW)
	storeURL := opsStore.ConnString()

	dataDir, tmpDir := t.TempDir(), t.TempDir()
	env := e2etest.ProcessEnv("PGRELAY_DATA_DIR="+dataDir, "TMPDIR="+tmpDir)
	c := &pgrelayCLI{t: t, ev: ev, mode: "operations", env: env}
	base := []string{"--host", pg.Host, "--port", strconv.Itoa(pg.Port), "--database", ops.Name, "--user", ops.User,
		"--password-env", "DB_PASSWORD"}
	c.okWith(withPW(pw), append([]string{"connection", "create", "direct"}, base...)...)
	c.okWith(withPW(pw), append([]string{"connection", "create", "tun", "--ssh-host", bastion.Host,
		"--ssh-port", strconv.Itoa(bastion.Port), "--ssh-user", bastion.User}, base...)...)
	r := c.okWith(cmdOpts{allow: []string{"token admin"}}, "token", "create", "--role", "admin", "--name", "admin", "-o", "json")
	var nt struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &nt); err != nil || !auth.LooksLikeToken(nt.Token) {
		t.Fatalf("token create: %q, %v", r.stdout, err)
	}
	cn.addText("token admin", nt.Token)
	master, _ := readMasterKey(t, dataDir, cn)
	keys := openKeys(t, dataDir, master)
	if n := keys.collect(t, cn); n != 1 {
		t.Fatalf("%d private keys, want 1", n)
	}
	pub := strings.TrimSpace(c.ok("connection", "public-key", "tun").stdout)
	bastion.Authorize(t, pub)
	c.ok("query", "tun", "select 1") // pins the host key

	// The master keys may be in their key files only; every key a rotation
	// makes is a canary too.
	keyNames := []string{"master key"}
	allowKeys := func(path string) []string {
		switch filepath.Base(path) {
		case secret.MasterKeyFile, secret.NextMasterKeyFile:
			return keyNames
		}
		return nil
	}
	addKey := func(name, path string) {
		k, err := secret.ReadKeyFile(path)
		if err != nil {
			t.Fatal(err)
		}
		cn.add(name, "raw bytes", k)
		cn.addEncodings(name, k)
		keyNames = append(keyNames, name)
	}

	// A backup while a server runs, and its restore.
	srv := e2etest.StartServer(t, binary, "ops", e2etest.Options{Env: env, Args: []string{"--log-level", "debug"}})
	backupDir := t.TempDir()
	backup := filepath.Join(backupDir, "pgrelay.backup")
	c.ok("backup", "--out", backup)
	stopAndRecord(t, srv, ev)
	if ev.addTree(t, "backup dir", backupDir, nil) != 1 {
		t.Error("the backup dir holds more than the backup")
	}
	restored := t.TempDir()
	data, err := os.ReadFile(filepath.Join(dataDir, secret.MasterKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(restored, secret.MasterKeyFile), data, 0o600); err != nil {
		t.Fatal(err)
	}
	rc := &pgrelayCLI{t: t, ev: ev, mode: "restored", env: e2etest.ProcessEnv("PGRELAY_DATA_DIR="+restored, "TMPDIR="+tmpDir)}
	rc.ok("restore", backup)
	rc.ok("query", "direct", "select 1")
	ev.addTree(t, "restored data dir", restored, allowKeys)

	// A copy to PostgreSQL, and a refused second copy.
	c.ok("store", "copy", "--from", dataDir, "--to", storeURL)
	c.fail(2, "store", "copy", "--from", dataDir, "--to", storeURL)
	if left, _ := filepath.Glob(filepath.Join(tmpDir, "pgrelay-copy-*")); len(left) > 0 {
		t.Errorf("store copy left its snapshot behind: %v", left)
	}

	// Rotations stopped at each point: the data dir while the rotation
	// waits there and after it was killed, then the command that finishes
	// or undoes it.
	for i, point := range []string{"rotate:key-written", "rotate:resealed", "rotate:committed"} {
		cmd := exec.Command(binary, "--log-level", "debug", "master-key", "rotate")
		cmd.Env = append(append([]string(nil), env...), "PGRELAY_TEST_PAUSE_AT="+point)
		var stdout, stderr e2etest.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		waitFor(t, "rotation at "+point, 30*time.Second, func() bool { return strings.Contains(stderr.String(), "paused at "+point) })
		addKey("master key of rotation "+strconv.Itoa(i), filepath.Join(dataDir, secret.NextMasterKeyFile))
		ev.addTree(t, "data dir while the rotation waits at "+point, dataDir, allowKeys)
		if err := e2etest.KillTree(cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
		<-done
		ev.add("rotation killed at "+point+" stdout", stdout.Bytes())
		ev.add("rotation killed at "+point+" stderr", stderr.Bytes())
		ev.addTree(t, "data dir after the rotation was killed at "+point, dataDir, allowKeys)
		c.ok("query", "tun", "select 1")
	}
	c.ok("master-key", "rotate")
	addKey("master key after rotation", filepath.Join(dataDir, secret.MasterKeyFile))
	c.ok("query", "tun", "select 1")
	c.ok("query", "direct", "select 1")
	ev.addTree(t, "data dir after the rotations", dataDir, allowKeys)
	ev.addTree(t, "TMPDIR of pgrelay processes", tmpDir, nil)
	for _, f := range []string{"pgrelay.db", "pgrelay.db-wal"} {
		if !ev.has("data dir while the rotation waits at rotate:resealed file " + f) {
			t.Errorf("the data dir had no %s to search during the rotation", f)
		}
	}
	ev.check(t, cn)
}
